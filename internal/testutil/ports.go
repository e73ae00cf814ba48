package testutil

import (
	"math/rand/v2"
	"net"
	"os"
	"strconv"
	"strings"
	"sync"
)

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

// lowPortMin is the lowest port FreeAddr picks: above the well-known and
// common service ports.
const lowPortMin = 10000

// ephemeralLow is the first port of the kernel's ephemeral range (the
// ports of port 0 listeners and outgoing connections).
func ephemeralLow() int {
	b, err := os.ReadFile("/proc/sys/net/ipv4/ip_local_port_range")
	if err != nil {
		return 0
	}
	f := strings.Fields(string(b))
	if len(f) != 2 {
		return 0
	}
	n, err := strconv.Atoi(f[0])
	if err != nil {
		return 0
	}
	return n
}

// pickPort returns a loopback address free at this moment: a random port
// between lowPortMin and the ephemeral range, or, when that range starts
// too low to leave room, one the kernel picks. It returns "" when the port
// it tried is taken.
func pickPort() (string, error) {
	if low := ephemeralLow(); low-lowPortMin >= 1000 {
		addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(lowPortMin+rand.IntN(low-lowPortMin)))
		ln, err := net.Listen("tcp", addr)
		if err != nil {
			return "", nil // taken: try another
		}
		ln.Close()
		return addr, nil
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	ln.Close()
	return ln.Addr().String(), nil
}
