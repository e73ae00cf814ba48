package testutil

import "sync"

// handedOut holds every address FreeAddr returned in this process.
var handedOut struct {
	mu    sync.Mutex
	addrs map[string]bool
}

// handOut records addr as handed out; it reports false if it was already.
func handOut(addr string) bool {
	handedOut.mu.Lock()
	defer handedOut.mu.Unlock()
	if handedOut.addrs[addr] {
		return false
	}
	if handedOut.addrs == nil {
		handedOut.addrs = map[string]bool{}
	}
	handedOut.addrs[addr] = true
	return true
}
