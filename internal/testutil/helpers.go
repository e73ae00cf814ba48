package testutil

import (
	"os"
	"testing"
	"time"
)

// ShortTempDir returns a new directory right under the system's temporary
// directory (named prefix plus a random suffix), removed when t ends. Tests
// whose directory holds unix sockets use it: a socket's path must fit in 108
// bytes, and t.TempDir's paths, which carry the test's name, often do not.
func ShortTempDir(t testing.TB, prefix string) string {
	t.Helper()
	dir, err := os.MkdirTemp("", prefix)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	return dir
}

// Recv returns the next value received from ch, or fails t with the message
// missing if none arrives within d (a bound on a failure, never a timing
// assertion).
func Recv[T any](t testing.TB, ch <-chan T, d time.Duration, missing string) T {
	t.Helper()
	select {
	case v := <-ch:
		return v
	case <-time.After(d):
		t.Fatalf("%s (waited %v)", missing, d)
		panic("unreachable") // Fatalf does not return
	}
}
