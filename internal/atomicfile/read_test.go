package atomicfile

import (
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestReadPrivate(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "state.json")
	if _, err := ReadPrivate(path, 10, 0o077, true); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("missing file: %v; want fs.ErrNotExist", err)
	}
	if err := Write(path, []byte("hello"), 0o600); err != nil {
		t.Fatal(err)
	}
	if b, err := ReadPrivate(path, 10, 0o077, true); err != nil || string(b) != "hello" {
		t.Fatalf("ReadPrivate = %q, %v; want hello", b, err)
	}
	if _, err := ReadPrivate(path, 4, 0o077, true); err == nil || !strings.Contains(err.Error(), "larger than 4 bytes") {
		t.Errorf("oversized: %v", err)
	}
	os.Chmod(path, 0o640)
	if _, err := ReadPrivate(path, 10, 0o077, true); err == nil || !strings.Contains(err.Error(), "may read it") {
		t.Errorf("group-readable with 077 forbidden: %v", err)
	}
	if _, err := ReadPrivate(path, 10, 0o022, true); err != nil {
		t.Errorf("group-readable with only 022 forbidden: %v", err)
	}
	os.Chmod(path, 0o666)
	if _, err := ReadPrivate(path, 10, 0o022, true); err == nil || !strings.Contains(err.Error(), "may write it") {
		t.Errorf("world-writable: %v", err)
	}
	if _, err := ReadPrivate(dir, 10, 0o000, true); err == nil || !strings.Contains(err.Error(), "not a regular file") {
		t.Errorf("directory: %v", err)
	}
	if os.Geteuid() == 0 {
		os.Chmod(path, 0o600)
		os.Chown(path, 65534, 65534)
		if _, err := ReadPrivate(path, 10, 0o077, true); err == nil || !strings.Contains(err.Error(), "owned by uid 65534") {
			t.Errorf("another user's file: %v", err)
		}
		if _, err := ReadPrivate(path, 10, 0o077, false); err != nil {
			t.Errorf("another user's file, owner not checked: %v", err)
		}
	}
}

// TestReadLimited: a file an administrator names is read whole up to the
// limit; a larger one, a device or a directory is refused with its name.
func TestReadLimited(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "ca.crt")
	if err := os.WriteFile(p, []byte("12345"), 0o644); err != nil {
		t.Fatal(err)
	}
	if b, err := ReadLimited(p, 5); err != nil || string(b) != "12345" {
		t.Errorf("ReadLimited(5 bytes, limit 5) = %q, %v; want the file", b, err)
	}
	for path, want := range map[string]string{
		p:           p + " is larger than 4 bytes",
		"/dev/zero": "/dev/zero is not a regular file",
		dir:         dir + " is not a regular file",
	} {
		if _, err := ReadLimited(path, 4); err == nil || err.Error() != want {
			t.Errorf("ReadLimited(%s, 4) = %v; want %q", path, err, want)
		}
	}
}
