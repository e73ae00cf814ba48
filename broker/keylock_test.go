package broker

import (
	"sync"
	"testing"
)

func TestKeyLockSerialisesPerKey(t *testing.T) {
	t.Parallel()
	var k keyLock
	var wg sync.WaitGroup
	var na, nb int
	counts := map[string]*int{"a": &na, "b": &nb}
	var mu sync.Mutex
	inside := map[string]int{}
	for i := 0; i < 200; i++ {
		key := []string{"a", "b"}[i%2]
		wg.Add(1)
		go func() {
			defer wg.Done()
			unlock := k.Lock(key)
			mu.Lock()
			inside[key]++
			if inside[key] != 1 {
				t.Errorf("%d holders of %q at once", inside[key], key)
			}
			mu.Unlock()
			*counts[key]++ // guarded by the key lock only
			mu.Lock()
			inside[key]--
			mu.Unlock()
			unlock()
		}()
	}
	wg.Wait()
	if na != 100 || nb != 100 {
		t.Fatalf("counts = %d, %d; want 100 each", na, nb)
	}
	if len(k.locks) != 0 {
		t.Fatalf("%d lock entries left; want 0", len(k.locks))
	}
}
