// Package trustpath tells whether a path from a configuration names
// something only root and this process's user can change: what root runs
// (an event hook, a seat agent), reads its PAM configuration from, or
// starts as every desktop's user. A file another user may write, or one
// in a directory they may write, or one reached through their link, is
// theirs to replace, and with it what root runs.
package trustpath

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
)

// maxLinkDepth bounds how deep Check follows links to links.
const maxLinkDepth = 40

// Check returns an error unless only root and this process's user can
// change what path names:
//   - path itself, when it exists, belongs to root or this process's user
//     and is writable by neither group nor others;
//   - every directory above it, on the path as given and once links are
//     resolved, belongs to root or this process's user and is writable by
//     neither group nor others, but for one with the sticky bit (/tmp:
//     others cannot replace an entry that is not theirs there); when path
//     does not exist, its directory has no such exception (anyone could
//     create it there);
//   - every link on the way, and on the way where one leads, belongs to
//     root or this process's user (its owner may point it elsewhere), and
//     so does every directory above it, writable by neither group nor
//     others but for a sticky one (they may replace a link there).
func Check(path string) error {
	abs, err := physical(path)
	if err != nil {
		return err
	}
	if err := checkLinks(abs, 0); err != nil {
		return err
	}
	resolved, err := resolve(abs)
	if err != nil {
		return err
	}
	for _, p := range []string{abs, resolved} {
		fi, err := os.Stat(p)
		exists := err == nil
		switch {
		case errors.Is(err, fs.ErrNotExist):
		case err != nil:
			return err
		default:
			if err := owned(p, fi); err != nil {
				return err
			}
			if fi.Mode().Perm()&0o022 != 0 {
				return fmt.Errorf("%s (mode %v) may be written by others than its owner", p, fi.Mode())
			}
		}
		for a := filepath.Dir(p); ; a = filepath.Dir(a) {
			fi, err := os.Stat(a)
			if err != nil {
				return err
			}
			if err := owned(a, fi); err != nil {
				return err
			}
			sticky := fi.Mode()&fs.ModeSticky != 0 && (exists || a != filepath.Dir(p))
			if fi.Mode().Perm()&0o022 != 0 && !sticky {
				return fmt.Errorf("%s (mode %v), above %s, may be written by others than its owner", a, fi.Mode(), p)
			}
			if a == filepath.Dir(a) {
				break
			}
		}
	}
	return nil
}

// resolve is filepath.EvalSymlinks of path, or of its directory when path
// does not exist.
func resolve(path string) (string, error) {
	r, err := filepath.EvalSymlinks(path)
	if errors.Is(err, fs.ErrNotExist) {
		if _, lerr := os.Lstat(path); errors.Is(lerr, fs.ErrNotExist) {
			dir, err := filepath.EvalSymlinks(filepath.Dir(path))
			if err != nil {
				return "", err
			}
			return filepath.Join(dir, filepath.Base(path)), nil
		}
	}
	return r, err
}

// OwnerError is the error of a path (or a directory above it, or a link
// on the way) that belongs to neither root nor this process's user.
type OwnerError struct {
	Path string
	UID  uint32 // its owner
}

func (e *OwnerError) Error() string {
	return fmt.Sprintf("%s belongs to uid %d, neither root nor this process's user", e.Path, e.UID)
}

// owned refuses fi (at path) unless it belongs to root or this process's
// user.
func owned(path string, fi fs.FileInfo) error {
	st, ok := fi.Sys().(*syscall.Stat_t)
	switch {
	case !ok:
		return fmt.Errorf("%s: no owner to check", path)
	case st.Uid != 0 && int(st.Uid) != os.Geteuid():
		return &OwnerError{Path: path, UID: st.Uid}
	}
	return nil
}

// checkLinks refuses a link on path (path itself or a directory above it),
// or on the way one of them leads, that belongs to neither root nor this
// process's user. A missing path is not an error here. depth counts the
// links followed to get to path.
func checkLinks(path string, depth int) error {
	for a := path; ; a = filepath.Dir(a) {
		fi, err := os.Lstat(a)
		if errors.Is(err, fs.ErrNotExist) && a == path {
			a = filepath.Dir(a)
			fi, err = os.Lstat(a)
		}
		if err != nil {
			return err
		}
		if fi.Mode()&fs.ModeSymlink != 0 {
			if err := owned(a, fi); err != nil {
				return fmt.Errorf("a link on the way to %s: %w", path, err)
			}
			// Whoever may write the directory holding the link may
			// replace it, root's or not; that directory need not be
			// above path or what it resolves to.
			if err := checkDirs(filepath.Dir(a)); err != nil {
				return fmt.Errorf("a link on the way to %s, %s: %w", path, a, err)
			}
			if depth >= maxLinkDepth {
				return fmt.Errorf("%s: too many levels of links", a)
			}
			to, err := os.Readlink(a)
			if err != nil {
				return err
			}
			if !filepath.IsAbs(to) {
				// Relative to the directory the link is in, as the
				// kernel resolves it (not lexically: that path may hold
				// links, whose ".." differs).
				in, err := filepath.EvalSymlinks(filepath.Dir(a))
				if err != nil {
					return err
				}
				to = filepath.Join(in, to)
			}
			if err := checkLinks(to, depth+1); err != nil {
				return err
			}
		}
		if a == filepath.Dir(a) {
			return nil
		}
	}
}

// physical returns path, absolute, with each ".." resolved as the kernel does:
// against where the path before it leads once its links are followed,
// not lexically (filepath.Abs, Clean): "/opt/link/../hook" is the hook
// next to where link points. What comes before a ".." is checked as a
// path on the way: its links (checkLinks) and the directories above it.
func physical(path string) (string, error) {
	elems := strings.Split(filepath.ToSlash(path), "/")
	if !slices.Contains(elems, "..") {
		return filepath.Abs(path)
	}
	cur := "/"
	if !filepath.IsAbs(path) {
		wd, err := os.Getwd()
		if err != nil {
			return "", err
		}
		cur = wd
	}
	for _, e := range elems {
		switch e {
		case "", ".":
		case "..":
			if err := checkLinks(cur, 0); err != nil {
				return "", err
			}
			if err := checkDirs(filepath.Dir(cur)); err != nil {
				return "", fmt.Errorf("above %s, on the way to %s: %w", cur, path, err)
			}
			r, err := filepath.EvalSymlinks(cur)
			if err != nil {
				return "", err
			}
			cur = filepath.Dir(r)
		default:
			cur = filepath.Join(cur, e)
		}
	}
	return cur, nil
}

// checkDirs refuses dir, or a directory above it, that belongs to
// another user or that others may write (but for a sticky one: an entry
// there that exists and is not theirs is not theirs to replace).
func checkDirs(dir string) error {
	for a := dir; ; a = filepath.Dir(a) {
		fi, err := os.Stat(a)
		if err != nil {
			return err
		}
		if err := owned(a, fi); err != nil {
			return err
		}
		if fi.Mode().Perm()&0o022 != 0 && fi.Mode()&fs.ModeSticky == 0 {
			return fmt.Errorf("%s (mode %v) may be written by others than its owner", a, fi.Mode())
		}
		if a == filepath.Dir(a) {
			return nil
		}
	}
}

// CheckDir is Check for a directory that may not exist yet, which the
// caller creates with its missing parents (os.MkdirAll, which takes an
// existing directory as it is): the deepest existing directory on its
// path must pass Check and, if anything below it is missing, be writable
// by neither group nor others, sticky or not (in /tmp anyone could create
// the missing directory first, and it would be theirs).
func CheckDir(path string) error {
	abs, err := physical(path)
	if err != nil {
		return err
	}
	a := abs
	for {
		_, err := os.Lstat(a)
		if err == nil {
			break
		}
		if !errors.Is(err, fs.ErrNotExist) || a == filepath.Dir(a) {
			return err
		}
		a = filepath.Dir(a)
	}
	if a == abs {
		return Check(abs)
	}
	// The first missing directory: Check refuses it in a directory others
	// may write, sticky or not.
	next := abs
	for filepath.Dir(next) != a {
		next = filepath.Dir(next)
	}
	return Check(next)
}
