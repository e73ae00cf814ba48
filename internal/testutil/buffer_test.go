package testutil

import (
	"sync"
	"testing"
)

// TestLockedBuffer: concurrent writers and readers (run under -race) lose
// no write.
func TestLockedBuffer(t *testing.T) {
	var b LockedBuffer
	var wg sync.WaitGroup
	for range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range 100 {
				b.Write([]byte("0123456789"))
				_ = b.String()
			}
		}()
	}
	wg.Wait()
	if got := len(b.String()); got != 8*100*10 {
		t.Fatalf("len = %d after 800 writes of 10 bytes; want 8000", got)
	}
}
