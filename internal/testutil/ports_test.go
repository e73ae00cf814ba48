package testutil

import (
	"net"
	"sync"
	"testing"
)

// TestFreeAddrNeverRepeats: addresses picked one after the other, and from
// parallel goroutines, are all different (the kernel alone repeats a port
// about once in 5,000 pairs) and can be listened on.
func TestFreeAddrNeverRepeats(t *testing.T) {
	t.Parallel()
	const perWorker, workers = 500, 4
	var mu sync.Mutex
	seen := map[string]bool{}
	var wg sync.WaitGroup
	for range workers {
		wg.Go(func() {
			for range perWorker {
				a := FreeAddr(t)
				mu.Lock()
				if seen[a] {
					t.Errorf("FreeAddr returned %s twice", a)
				}
				seen[a] = true
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	for a := range seen {
		ln, err := net.Listen("tcp", a)
		if err != nil {
			t.Fatalf("listen on %s from FreeAddr: %v", a, err)
		}
		ln.Close()
		break
	}
}
