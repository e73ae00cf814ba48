package rdpwake

import (
	"context"
	"debug/elf"
	"errors"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/hotdesk/hotdesk/internal/testutil"
)

// TestFind: the library named by HOTDESK_RDPWAKE is used (an unsafe or
// missing one is an error, "off" disables it); otherwise the one next to
// the executable, skipped when others could write it.
func TestFind(t *testing.T) {
	dir := t.TempDir()
	exe := filepath.Join(dir, "hotdesk-term")
	lib := filepath.Join(dir, Name)
	if err := os.WriteFile(lib, []byte("x"), 0o755); err != nil {
		t.Fatal(err)
	}
	other := filepath.Join(t.TempDir(), "other.so")
	if err := os.WriteFile(other, []byte("x"), 0o644); err != nil {
		t.Fatal(err)
	}
	t.Setenv(EnvPath, other)
	if got, err := Find(exe); err != nil || got != other {
		t.Errorf("Find with %s=%s = %q, %v; want it, nil", EnvPath, other, got, err)
	}
	t.Setenv(EnvPath, "off")
	if got, err := Find(exe); err != nil || got != "" {
		t.Errorf("Find with %s=off = %q, %v; want none", EnvPath, got, err)
	}
	t.Setenv(EnvPath, filepath.Join(dir, "missing.so"))
	if _, err := Find(exe); err == nil {
		t.Error("Find with a missing library named: nil error; want an error")
	}
	if err := os.Chmod(other, 0o666); err != nil {
		t.Fatal(err)
	}
	t.Setenv(EnvPath, other)
	if _, err := Find(exe); !errors.Is(err, ErrUnsafe) {
		t.Errorf("Find with a world-writable library named: %v; want ErrUnsafe", err)
	}

	os.Unsetenv(EnvPath) // t.Setenv restores it
	if got, err := Find(exe); err != nil || got != lib {
		t.Errorf("Find(%s) = %q, %v; want the library next to it, %q", exe, got, err, lib)
	}
	if err := os.Chmod(lib, 0o775); err != nil {
		t.Fatal(err)
	}
	if got, _ := Find(exe); got == lib {
		t.Errorf("Find(%s) = %q; want a group-writable library skipped", exe, got)
	}
}

// TestBuild: the embedded source compiles into a shared library that
// exports Sleep (the one symbol it replaces).
func TestBuild(t *testing.T) {
	t.Parallel()
	testutil.NeedTools(t, "cc")
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	out := filepath.Join(t.TempDir(), Name)
	if err := Build(ctx, "", out); err != nil {
		t.Fatal(err)
	}
	f, err := elf.Open(out)
	if err != nil {
		t.Fatalf("%s is not an ELF object: %v", out, err)
	}
	defer f.Close()
	syms, err := f.DynamicSymbols()
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range syms {
		if s.Name == "Sleep" && s.Section != elf.SHN_UNDEF && elf.ST_TYPE(s.Info) == elf.STT_FUNC {
			return
		}
	}
	t.Errorf("%s does not export the function Sleep", out)
}
