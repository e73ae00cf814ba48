package testutil

import (
	"net"
	"strconv"
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

// TestFreeAddrBelowEphemeralRange: the ports are ones no port 0 listener
// or outgoing connection can be given meanwhile.
func TestFreeAddrBelowEphemeralRange(t *testing.T) {
	t.Parallel()
	low := ephemeralLow()
	if low-lowPortMin < 1000 {
		t.Skipf("ephemeral range starts at %d: FreeAddr lets the kernel pick", low)
	}
	for range 100 {
		a := FreeAddr(t)
		_, p, _ := net.SplitHostPort(a)
		port, err := strconv.Atoi(p)
		if err != nil || port < lowPortMin || port >= low {
			t.Fatalf("FreeAddr = %s; want a port in [%d, %d)", a, lowPortMin, low)
		}
	}
}
