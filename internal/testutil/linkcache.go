package testutil

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"time"
)

// The link cache keeps what Build linked between test processes: the
// packages' binaries in a directory of their own per list of packages
// (their absolute paths and the build flags), under
// $TMPDIR/hotdesk-testbin-<uid>. `go build -o dir/` relinks only binaries
// whose inputs changed (it compares the build ID stored in the binary with
// its sources'), so a later test process, or another package's tests
// building the same binaries, gets them in a fraction of a link's CPU
// (seconds per daemon on this machine kind). Build copies them from there
// into its own directory, under an exclusive lock held across the build
// and the copy: no test ever runs a binary that another process may
// replace. HOTDESK_LINK_CACHE=off turns the cache off; another value is the
// cache's directory.

// linkCacheEnv names the variable that moves (a path) or disables ("off")
// the link cache.
const linkCacheEnv = "HOTDESK_LINK_CACHE"

// linkCacheUnused is how long an entry may go unused before a Build
// removes it: checkouts come and go (each has entries of its own).
const linkCacheUnused = 72 * time.Hour

// linkCacheRoot is the cache's directory ("" when it is off); a variable
// for the package's own tests.
var linkCacheRoot = func() string {
	switch v := os.Getenv(linkCacheEnv); v {
	case "off":
		return ""
	case "":
		return filepath.Join(os.TempDir(), fmt.Sprintf("hotdesk-testbin-%d", os.Getuid()))
	default:
		return v
	}
}

// goBuild runs `go build -o dir/ args...` and returns its failure with
// its output.
func goBuild(dir string, args []string) error {
	out, err := exec.Command("go", append([]string{"build", "-o", dir + "/"}, args...)...).CombinedOutput()
	if err != nil {
		return fmt.Errorf("go build %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return nil
}

// buildInto builds args (Build's) into dir through the link cache, or
// directly when the cache is off or cannot be used.
func buildInto(dir string, args []string) error {
	root := linkCacheRoot()
	if root == "" {
		return goBuild(dir, args)
	}
	entry, unlock, err := lockCacheEntry(root, args)
	if err != nil {
		// A cache that cannot be trusted or made is passed by, not fatal.
		return goBuild(dir, args)
	}
	defer unlock()
	if err := goBuild(entry, args); err != nil {
		return err
	}
	now := time.Now()
	_ = os.Chtimes(entry, now, now) // in use (pruneLinkCache)
	names, err := os.ReadDir(entry)
	if err != nil {
		return fmt.Errorf("testutil: link cache: %w", err)
	}
	if len(names) == 0 {
		return fmt.Errorf("testutil: link cache: go build %s left nothing in %s", strings.Join(args, " "), entry)
	}
	// A child copies: a descriptor of this process open for writing would
	// be inherited by any child another test forks meanwhile, and running
	// the copy would then fail with "text file busy".
	cp := []string{"-p", "--"}
	for _, n := range names {
		cp = append(cp, filepath.Join(entry, n.Name()))
	}
	if out, err := exec.Command("cp", append(cp, dir+"/")...).CombinedOutput(); err != nil {
		return fmt.Errorf("testutil: link cache: cp: %v\n%s", err, out)
	}
	pruneLinkCache(root, filepath.Base(entry), now)
	return nil
}

// cacheKey names the cache entry of a Build: the module (the checkout)
// the test runs in, the packages as absolute directories (relative ones are
// relative to the test's package), the flags, and what else changes the
// binaries go builds.
func cacheKey(args []string) (string, error) {
	wd, err := os.Getwd()
	if err != nil {
		return "", err
	}
	// The flags in their order, then the packages in any order (the
	// same binaries whichever order a package's tests name them in).
	var flags, pkgs []string
	for _, a := range args {
		switch {
		case strings.HasPrefix(a, "-"):
			flags = append(flags, a)
		case a == "." || a == ".." || strings.HasPrefix(a, "./") || strings.HasPrefix(a, "../") || filepath.IsAbs(a):
			abs, err := filepath.Abs(a)
			if err != nil {
				return "", err
			}
			pkgs = append(pkgs, abs)
		default:
			pkgs = append(pkgs, a)
		}
	}
	slices.Sort(pkgs)
	h := sha256.New()
	fmt.Fprintf(h, "%q\n", moduleRoot(wd))
	for _, a := range append(flags, pkgs...) {
		fmt.Fprintf(h, "%q\n", a)
	}
	for _, v := range []string{"GOFLAGS", "GOOS", "GOARCH", "CGO_ENABLED", "GOEXPERIMENT", "GOTOOLCHAIN", "GOROOT"} {
		fmt.Fprintf(h, "%s=%q\n", v, os.Getenv(v))
	}
	return hex.EncodeToString(h.Sum(nil))[:32], nil
}

// moduleRoot is the directory of the go.mod governing dir (dir itself when
// there is none).
func moduleRoot(dir string) string {
	for d := dir; ; d = filepath.Dir(d) {
		if _, err := os.Stat(filepath.Join(d, "go.mod")); err == nil {
			return d
		}
		if filepath.Dir(d) == d {
			return dir
		}
	}
}

// lockCacheEntry makes the cache (a directory of this user's only) and the
// entry of args, and locks the entry against every other process; unlock
// releases it.
func lockCacheEntry(root string, args []string) (entry string, unlock func(), err error) {
	if err := privateDir(root); err != nil {
		return "", nil, err
	}
	key, err := cacheKey(args)
	if err != nil {
		return "", nil, err
	}
	entry = filepath.Join(root, key)
	lf, err := lockFile(entry + ".lock")
	if err != nil {
		return "", nil, err
	}
	if err := os.Mkdir(entry, 0o700); err != nil && !errors.Is(err, os.ErrExist) {
		lf.Close()
		return "", nil, err
	}
	return entry, func() {
		// Unlock first: a child another test forks meanwhile holds a
		// copy of the descriptor, and with it the lock, until it execs.
		_ = syscall.Flock(int(lf.Fd()), syscall.LOCK_UN)
		lf.Close()
	}, nil
}

// lockWait bounds the wait for an entry's lock: a process stopped while it
// holds one (SIGSTOP, a debugger) must not stall every other test process
// that builds the same binaries; past it, Build builds without the cache.
const lockWait = 2 * time.Minute

// lockFile opens (creating) path and takes an exclusive lock on it,
// waiting for it up to lockWait.
func lockFile(path string) (*os.File, error) {
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, err
	}
	deadline := time.Now().Add(lockWait)
	for {
		err = syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB)
		if err == nil {
			return f, nil
		}
		if (!errors.Is(err, syscall.EWOULDBLOCK) && !errors.Is(err, syscall.EINTR)) || time.Now().After(deadline) {
			f.Close()
			return nil, fmt.Errorf("testutil: link cache: lock %s: %w", path, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// privateDir makes dir (0700) if it is missing and checks that it is a
// directory, not a symbolic link, owned by this user and closed to
// everybody else: binaries another user could replace would run in the
// tests, as root on the CI machine.
func privateDir(dir string) error {
	if err := os.Mkdir(dir, 0o700); err != nil && !errors.Is(err, os.ErrExist) {
		return err
	}
	fi, err := os.Lstat(dir)
	if err != nil {
		return err
	}
	st, ok := fi.Sys().(*syscall.Stat_t)
	switch {
	case !fi.IsDir():
		return fmt.Errorf("testutil: link cache %s is not a directory", dir)
	case !ok || int(st.Uid) != os.Getuid():
		return fmt.Errorf("testutil: link cache %s is not this user's", dir)
	case fi.Mode().Perm()&0o077 != 0:
		return fmt.Errorf("testutil: link cache %s is open to others (%v)", dir, fi.Mode().Perm())
	}
	return nil
}

// pruneLinkCache removes the entries of root, other than keep, unused since
// linkCacheUnused before now and not locked by another process. Their lock
// files stay: a process may be about to lock one.
func pruneLinkCache(root, keep string, now time.Time) {
	ents, err := os.ReadDir(root)
	if err != nil {
		return
	}
	for _, e := range ents {
		if !e.IsDir() || e.Name() == keep {
			continue
		}
		fi, err := e.Info()
		if err != nil || now.Sub(fi.ModTime()) < linkCacheUnused {
			continue
		}
		f, err := os.OpenFile(filepath.Join(root, e.Name()+".lock"), os.O_RDWR|os.O_CREATE, 0o600)
		if err != nil {
			continue
		}
		if syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB) == nil {
			os.RemoveAll(filepath.Join(root, e.Name()))
		}
		f.Close()
	}
}
