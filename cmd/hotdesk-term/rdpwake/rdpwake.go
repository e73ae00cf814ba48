// Package rdpwake holds hotdesk-rdpwake, an LD_PRELOAD library that makes
// a FreeRDP 2 client's connection sequence wait on its socket instead of
// in 100 ms sleeps (see hotdesk-rdpwake.c), and finds and builds it.
//
// The library is C and built apart from the Go binaries (`make build`
// writes bin/hotdesk-rdpwake.so); hotdesk-term preloads it into its
// built-in FreeRDP display client when Find finds it. Nothing here links
// C code into a Go binary.
package rdpwake

import (
	"context"
	_ "embed"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
)

// Name is the library's file name.
const Name = "hotdesk-rdpwake.so"

// EnvPath is the environment variable that, when set, names the library
// to preload ("off" preloads none); when unset, Find looks next to the
// executable, in ../lib/hotdesk from it (make install PREFIX=…) and in
// SystemDir.
const EnvPath = "HOTDESK_RDPWAKE"

// SystemDir is where packages install the library.
const SystemDir = "/usr/lib/hotdesk"

// Source is the library's C source.
//
//go:embed hotdesk-rdpwake.c
var Source []byte

// ErrUnsafe means the file could be changed by another user, so it is not
// loaded into a process of this one.
var ErrUnsafe = errors.New("rdpwake: library writable by group or others, or owned by another user")

// Find returns the library to preload, or "" if there is none. exe is the
// running executable ("" to skip the look next to it). A library named by
// EnvPath that does not exist or is unsafe is an error; one found by
// looking is skipped when unsafe.
func Find(exe string) (string, error) {
	if p, ok := os.LookupEnv(EnvPath); ok {
		if p == "off" || p == "" {
			return "", nil
		}
		if err := check(p); err != nil {
			return "", err
		}
		return p, nil
	}
	var dirs []string
	if exe != "" {
		dirs = append(dirs, filepath.Dir(exe), filepath.Join(filepath.Dir(exe), "..", "lib", "hotdesk"))
	}
	dirs = append(dirs, SystemDir)
	for _, d := range dirs {
		p := filepath.Join(d, Name)
		if check(p) == nil {
			return p, nil
		}
	}
	return "", nil
}

// check: p is a regular file owned by root or this user and writable by
// nobody else.
func check(p string) error {
	fi, err := os.Stat(p)
	if err != nil {
		return fmt.Errorf("rdpwake: %w", err)
	}
	if !fi.Mode().IsRegular() {
		return fmt.Errorf("rdpwake: %s: not a regular file", p)
	}
	if fi.Mode().Perm()&0o022 != 0 || !ownedBySelfOrRoot(fi) {
		return fmt.Errorf("%w: %s", ErrUnsafe, p)
	}
	return nil
}

// Build compiles Source with the C compiler cc ("" means "cc") into out.
func Build(ctx context.Context, cc, out string) error {
	if cc == "" {
		cc = "cc"
	}
	dir, err := os.MkdirTemp("", "rdpwake-")
	if err != nil {
		return fmt.Errorf("rdpwake: build: %w", err)
	}
	defer os.RemoveAll(dir)
	src := filepath.Join(dir, "hotdesk-rdpwake.c")
	if err := os.WriteFile(src, Source, 0o600); err != nil {
		return fmt.Errorf("rdpwake: build: %w", err)
	}
	cmd := exec.CommandContext(ctx, cc, "-O2", "-Wall", "-shared", "-fPIC", "-o", out, src)
	if b, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("rdpwake: build: %w: %s", err, b)
	}
	return os.Chmod(out, fs.FileMode(0o755))
}
