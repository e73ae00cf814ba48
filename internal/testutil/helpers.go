package testutil

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"sync"
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

// Concurrently runs fns at once, each in a goroutine of its own, waits for
// all of them and fails the test with the errors of those that failed. It
// is for a test's independent slow steps (starting servers, enrolling
// tokens, logging in at different terminals): fns must not call t.Fatal
// (a goroutine other than the test's may not), they return an error.
func Concurrently(t testing.TB, fns ...func() error) {
	t.Helper()
	errs := make([]error, len(fns))
	var wg sync.WaitGroup
	for i, fn := range fns {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs[i] = fn()
		}()
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		t.Fatal(err)
	}
}

// DiscardConns accepts connections on ln and closes each at once, until
// ln is closed: a listener that is there, for a test (or a test's helper
// process) that needs only a port or socket that answers.
func DiscardConns(ln net.Listener) {
	for {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		c.Close()
	}
}

// ClosesOnCancel calls cancel, which cancels the context of the stream ch,
// and receives from ch, dropping what is left in it, until ch is closed:
// the contract of the project's watch streams. If ch is not closed within
// d, it fails t (without stopping it: it may run in a t.Cleanup).
func ClosesOnCancel[T any](t testing.TB, cancel context.CancelFunc, ch <-chan T, d time.Duration) {
	t.Helper()
	cancel()
	timeout := time.After(d)
	for {
		select {
		case _, ok := <-ch:
			if !ok {
				return
			}
		case <-timeout:
			t.Errorf("channel not closed %v after its context was cancelled", d)
			return
		}
	}
}

// OneWinner checks the errors of concurrent attempts at something only one
// may do (claim a key, consume a code): exactly one nil, every other one
// errors.Is lost. It returns what is wrong, or nil.
func OneWinner(errs []error, lost error) error {
	won := 0
	var wrong []error
	for i, err := range errs {
		switch {
		case err == nil:
			won++
		case !errors.Is(err, lost):
			wrong = append(wrong, fmt.Errorf("attempt %d: err = %w; want nil or %v", i, err, lost))
		}
	}
	if won != 1 {
		wrong = append(wrong, fmt.Errorf("%d of %d attempts succeeded; want 1", won, len(errs)))
	}
	return errors.Join(wrong...)
}

// NobodysDir makes the directory path, mode mode whatever the umask,
// owned by nobody (uid and gid 65534): a directory of another user's, for
// tests of what root must not trust. It needs root, and returns path.
func NobodysDir(t testing.TB, path string, mode os.FileMode) string {
	t.Helper()
	mkdirMode(t, path, mode)
	if err := os.Chown(path, 65534, 65534); err != nil {
		t.Fatal(err)
	}
	return path
}

// StickyDir makes the directory path like /tmp: mode 1777 (sticky, anyone
// may write) whatever the umask. It returns path.
func StickyDir(t testing.TB, path string) string {
	t.Helper()
	mkdirMode(t, path, os.ModeSticky|0o777)
	return path
}

// mkdirMode makes the directory path with mode mode whatever the umask.
func mkdirMode(t testing.TB, path string, mode os.FileMode) {
	t.Helper()
	if err := os.Mkdir(path, mode); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(path, mode); err != nil {
		t.Fatal(err)
	}
}

// BlockFile replaces the file at path with a directory that is not empty,
// so that a write of it by rename (internal/atomicfile) fails as a write to
// a full disk does, without one; unblock gives path back (absent).
func BlockFile(t testing.TB, path string) (unblock func()) {
	t.Helper()
	if err := os.Remove(path); err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(path+"/x", 0o700); err != nil {
		t.Fatal(err)
	}
	return func() {
		t.Helper()
		if err := os.RemoveAll(path); err != nil {
			t.Fatal(err)
		}
	}
}
