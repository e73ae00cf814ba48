package atomicfile

import (
	"os"
	"path/filepath"
	"testing"
)

func TestWrite(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "session.json")
	for _, content := range []string{"first\n", "second, longer\n"} {
		if err := Write(p, []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
		got, err := os.ReadFile(p)
		if err != nil || string(got) != content {
			t.Fatalf("read back %q, %v; want %q", got, err, content)
		}
	}
	fi, err := os.Stat(p)
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("mode = %v, %v; want 0600", fi.Mode().Perm(), err)
	}
	ents, _ := os.ReadDir(dir)
	if len(ents) != 1 {
		t.Fatalf("dir holds %d entries after two writes; want only the file (no temporaries)", len(ents))
	}
	if err := Write(filepath.Join(dir, "missing", "f"), []byte("x"), 0o600); err == nil {
		t.Fatal("write into a missing directory = nil error")
	}
}

func TestWriteMkdir(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "state", "hotdesk")
	p := filepath.Join(dir, "keys.json")
	if err := WriteMkdir(p, []byte("k\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if got, err := os.ReadFile(p); err != nil || string(got) != "k\n" {
		t.Fatalf("read back %q, %v; want %q", got, err, "k\n")
	}
	for _, d := range []string{dir, filepath.Dir(dir)} {
		if fi, err := os.Stat(d); err != nil || fi.Mode().Perm()&0o077 != 0 {
			t.Fatalf("directory %s: %v, %v; want no access for group or others", d, fi.Mode().Perm(), err)
		}
	}
	// An existing directory keeps its mode.
	if err := os.Chmod(dir, 0o750); err != nil {
		t.Fatal(err)
	}
	if err := WriteMkdir(p, []byte("k2\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if fi, err := os.Stat(dir); err != nil || fi.Mode().Perm() != 0o750 {
		t.Fatalf("existing directory: mode %v, %v; want 0750 kept", fi.Mode().Perm(), err)
	}
	// A file where the directory should be is an error.
	if err := WriteMkdir(filepath.Join(p, "f"), []byte("x"), 0o600); err == nil {
		t.Fatal("write below a regular file = nil error")
	}
}

func TestWriteJSON(t *testing.T) {
	p := filepath.Join(t.TempDir(), "state", "members.json")
	if err := WriteJSON(p, map[string]int{"format": 1}, 0o600); err != nil {
		t.Fatal(err)
	}
	want := "{\n  \"format\": 1\n}\n"
	if got, err := os.ReadFile(p); err != nil || string(got) != want {
		t.Fatalf("read back %q, %v; want %q", got, err, want)
	}
	if fi, err := os.Stat(p); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("mode = %v, %v; want 0600", fi.Mode().Perm(), err)
	}
	// A value JSON cannot hold is an error and leaves the file as it was.
	if err := WriteJSON(p, func() {}, 0o600); err == nil {
		t.Fatal("write of a func = nil error")
	}
	if got, err := os.ReadFile(p); err != nil || string(got) != want {
		t.Fatalf("after a failed write: %q, %v; want %q kept", got, err, want)
	}
}
