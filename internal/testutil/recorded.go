package testutil

import "sync"

// Recorded keeps the values added to it, from any goroutine, for a test to
// read (a fake sink or screen embeds it). The zero value is ready to use.
type Recorded[T any] struct {
	mu   sync.Mutex
	vals []T
}

// Add records v.
func (r *Recorded[T]) Add(v T) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.vals = append(r.vals, v)
}

// All returns a copy of the values recorded so far, oldest first.
func (r *Recorded[T]) All() []T {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]T(nil), r.vals...)
}

// Last returns the value recorded last that match accepts (nil: any), and
// whether there is one.
func (r *Recorded[T]) Last(match func(T) bool) (T, bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for i := len(r.vals) - 1; i >= 0; i-- {
		if match == nil || match(r.vals[i]) {
			return r.vals[i], true
		}
	}
	var zero T
	return zero, false
}
