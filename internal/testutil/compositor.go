package testutil

import (
	"os"
	"testing"
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
