// Package procsup is the process supervision every compositor backend
// shares: reading a process's identity from /proc (state, process group,
// start time), telling a live process from a gone one or from a reused pid,
// the kernel's boot id (a record from an earlier boot names no process of
// this one), signalling a session's process group with guards against
// the groups that must never be signalled, and the exclusive file locks
// that keep two backends off one state directory.
//
// A pid alone never identifies a process: every check takes the start time
// recorded with it, so a pid reused by another process is never signalled
// as the session's.
package procsup

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"
	"unicode"
)

var (
	// ErrProcessGone: the recorded process no longer runs (a zombie counts
	// as gone).
	ErrProcessGone = errors.New("process gone")
	// ErrPIDReused: the recorded pid now belongs to another process.
	ErrPIDReused = errors.New("pid reused")
)

// Stat is the part of /proc/<pid>/stat supervision relies on.
type Stat struct {
	State      byte   // field 3: R, S, D, Z, X, ...
	Pgrp       int    // field 5
	StartTicks uint64 // field 22: start time in clock ticks since boot
}

// Live reports whether the process is running (not a zombie or dead).
func (s Stat) Live() bool { return s.State != 'Z' && s.State != 'X' && s.State != 'x' }

// ReadStat reads /proc/<pid>/stat below procRoot ("/proc" in production). A
// missing process is reported as an error satisfying
// errors.Is(err, os.ErrNotExist).
func ReadStat(procRoot string, pid int) (Stat, error) {
	f, err := os.Open(procRoot + "/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return Stat{}, err
	}
	defer f.Close()
	// The stat line is well under 1 KiB; the comm field is at most 16 bytes.
	buf, err := io.ReadAll(io.LimitReader(f, 4096))
	if err != nil {
		return Stat{}, err
	}
	return ParseStat(buf)
}

// ParseStat parses a /proc/<pid>/stat line. The comm field (2) may hold
// spaces and parentheses, so fields are counted from the last ')'.
func ParseStat(buf []byte) (Stat, error) {
	i := bytes.LastIndexByte(buf, ')')
	if i < 0 {
		return Stat{}, errors.New("procsup: malformed stat: no comm field")
	}
	fields := strings.Fields(string(buf[i+1:]))
	// fields[0] is field 3 (state); field N is fields[N-3].
	if len(fields) < 20 {
		return Stat{}, fmt.Errorf("procsup: malformed stat: %d fields", len(fields)+2)
	}
	if len(fields[0]) != 1 {
		return Stat{}, fmt.Errorf("procsup: malformed stat: state %q", fields[0])
	}
	pgrp, err := strconv.Atoi(fields[2])
	if err != nil {
		return Stat{}, fmt.Errorf("procsup: malformed stat: pgrp: %w", err)
	}
	start, err := strconv.ParseUint(fields[19], 10, 64)
	if err != nil {
		return Stat{}, fmt.Errorf("procsup: malformed stat: starttime: %w", err)
	}
	return Stat{State: fields[0][0], Pgrp: pgrp, StartTicks: start}, nil
}

// Check reports whether pid is still the process that started at
// startTicks: nil if so, ErrProcessGone if no live process has that pid,
// ErrPIDReused if another process has it now.
func Check(procRoot string, pid int, startTicks uint64) error {
	if pid <= 1 {
		return fmt.Errorf("procsup: pid %d: %w", pid, ErrProcessGone)
	}
	st, err := ReadStat(procRoot, pid)
	if errors.Is(err, os.ErrNotExist) || errors.Is(err, syscall.ESRCH) {
		return ErrProcessGone
	}
	if err != nil {
		return fmt.Errorf("procsup: read stat of pid %d: %w", pid, err)
	}
	if st.StartTicks != startTicks {
		return ErrPIDReused
	}
	if !st.Live() {
		return ErrProcessGone
	}
	return nil
}

// BootID returns the kernel's boot id, which changes on every boot.
func BootID(procRoot string) (string, error) {
	b, err := os.ReadFile(procRoot + "/sys/kernel/random/boot_id")
	if err != nil {
		return "", fmt.Errorf("procsup: boot id: %w", err)
	}
	id := strings.TrimSpace(string(b))
	if id == "" {
		return "", errors.New("procsup: boot id: empty")
	}
	return id, nil
}

// SignalGroup sends sig to the process group pgid; a group that no longer
// exists is not an error. It refuses the groups no session can have: 0 (our
// own), 1 and negative numbers (kill(-1) signals every process).
func SignalGroup(pgid int, sig syscall.Signal) error {
	if pgid <= 1 {
		return fmt.Errorf("procsup: refusing to signal process group %d", pgid)
	}
	if pgid == syscall.Getpgrp() {
		return fmt.Errorf("procsup: refusing to signal our own process group %d", pgid)
	}
	err := syscall.Kill(-pgid, sig)
	if errors.Is(err, syscall.ESRCH) {
		return nil
	}
	return err
}

// GroupAlive reports whether any process of process group pgid is still
// running (zombies, whose descriptors are already closed, do not count).
func GroupAlive(procRoot string, pgid int) bool {
	ents, err := os.ReadDir(procRoot)
	if err != nil {
		return false
	}
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		if st, err := ReadStat(procRoot, pid); err == nil && st.Pgrp == pgid && st.Live() {
			return true
		}
	}
	return false
}

// WaitGroupGone polls until no live process of group pgid is left, for at
// most d, and reports whether the group is gone. done, when closed, ends
// the wait early (reported as not gone).
func WaitGroupGone(procRoot string, pgid int, d time.Duration, done <-chan struct{}) bool {
	deadline := time.Now().Add(d)
	for GroupAlive(procRoot, pgid) {
		if time.Now().After(deadline) {
			return false
		}
		select {
		case <-time.After(5 * time.Millisecond):
		case <-done:
			return false
		}
	}
	return true
}

// ErrLocked means another process, or another holder in this one, has the lock.
var ErrLocked = errors.New("locked")

// FileLock is an exclusive flock held on a file: a backend's hold on its
// state directory (two backends supervising one directory would adopt,
// reap and remove each other's sessions), or a daemon's on a shared kiosk
// account.
type FileLock struct {
	f    *os.File
	path string
}

// lockAttempts bounds LockFile's retries when the file it locked was
// removed meanwhile: a path that keeps changing is in use.
const lockAttempts = 10

// lockOpened, if set (by tests), runs between LockFile's open and flock.
var lockOpened func(path string)

// LockFile takes an exclusive lock on path (created 0600; a symbolic link
// is refused, for locks in a world-writable directory such as /run/lock)
// without waiting: ErrLocked if it is held. The lock lasts until Unlock
// or Remove, or until the process exits.
//
// A lock file may be removed (Remove) by its holder: LockFile then checks,
// once it holds the flock, that path still names the file it locked. One
// that lost the race to a Remove (it opened the file before the unlink and
// got its flock after) holds a lock on a file no path names, that the next
// LockFile, creating the file anew, would not see; it tries again instead.
func LockFile(path string) (*FileLock, error) {
	for attempt := 1; ; attempt++ {
		f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE|syscall.O_NOFOLLOW, 0o600)
		if err != nil {
			return nil, fmt.Errorf("procsup: lock: %w", err)
		}
		if lockOpened != nil {
			lockOpened(path)
		}
		if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
			f.Close()
			if errors.Is(err, syscall.EWOULDBLOCK) {
				return nil, fmt.Errorf("procsup: lock %s: %w", path, ErrLocked)
			}
			return nil, fmt.Errorf("procsup: lock %s: %w", path, err)
		}
		l := &FileLock{f: f, path: path}
		same, err := l.named()
		if err != nil {
			l.Unlock()
			return nil, fmt.Errorf("procsup: lock %s: %w", path, err)
		}
		if same {
			return l, nil
		}
		l.Unlock()
		if attempt == lockAttempts {
			return nil, fmt.Errorf("procsup: lock %s: removed and recreated under every attempt: %w", path, ErrLocked)
		}
	}
}

// named reports whether l's path still names l's file.
func (l *FileLock) named() (bool, error) {
	held, err := l.f.Stat()
	if err != nil {
		return false, err
	}
	cur, err := os.Lstat(l.path)
	if errors.Is(err, fs.ErrNotExist) {
		return false, nil
	}
	if err != nil {
		return false, err
	}
	return os.SameFile(held, cur), nil
}

// Fd is the lock file's descriptor (for tests that copy it as a forked
// child would).
func (l *FileLock) Fd() uintptr { return l.f.Fd() }

// Unlock releases the lock and closes its file. Closing alone is not
// enough: a child that another goroutine forked meanwhile holds a copy of
// the descriptor until it execs, and with it the lock; unlocking releases
// it for every copy.
func (l *FileLock) Unlock() error {
	uerr := syscall.Flock(int(l.f.Fd()), syscall.LOCK_UN)
	if err := l.f.Close(); err != nil {
		return fmt.Errorf("procsup: unlock: %w", err)
	}
	if uerr != nil {
		return fmt.Errorf("procsup: unlock: %w", uerr)
	}
	return nil
}

// Remove removes the lock file and then releases the lock: for a lock of
// something that comes and goes (a pooled account), whose files would
// otherwise pile up. The file goes while the lock is held, so a LockFile
// that opened it before sees, once it gets the lock, that the path no
// longer names it and starts over (see LockFile): two holders never hold
// one path at once.
func (l *FileLock) Remove() error {
	var rerr error
	if same, err := l.named(); err != nil {
		rerr = err
	} else if same {
		rerr = os.Remove(l.path)
	}
	if err := l.Unlock(); err != nil {
		return errors.Join(err, rerr)
	}
	if rerr != nil {
		return fmt.Errorf("procsup: remove lock: %w", rerr)
	}
	return nil
}

// RemoveStaleLocks removes every lock file in dir whose name matches
// pattern (filepath.Match) and that nobody holds: those of processes that
// ended without removing them. A held one stays. It returns how many it
// removed.
func RemoveStaleLocks(dir, pattern string) (int, error) {
	paths, err := filepath.Glob(filepath.Join(dir, pattern))
	if err != nil {
		return 0, fmt.Errorf("procsup: stale locks: %w", err)
	}
	n := 0
	var errs []error
	for _, p := range paths {
		l, err := LockFile(p)
		if errors.Is(err, ErrLocked) {
			continue
		}
		if err != nil {
			errs = append(errs, err)
			continue
		}
		if err := l.Remove(); err != nil {
			errs = append(errs, err)
			continue
		}
		n++
	}
	return n, errors.Join(errs...)
}

// LogTail returns the last n bytes of the log at path (a compositor's
// output), made printable (invalid UTF-8 and control characters but
// newlines and tabs become '?'), or "" if there is none: what a crash
// report quotes before the session's directory, and the log with it, goes.
func LogTail(path string, n int64) string {
	// Without waiting: a lease its owner holds on it would hold this
	// open up for the lease break time (see weston's rotateLog).
	f, err := os.OpenFile(path, os.O_RDONLY|syscall.O_NONBLOCK|syscall.O_NOFOLLOW, 0)
	if err != nil {
		return ""
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return ""
	}
	off := max(fi.Size()-n, 0)
	b, err := io.ReadAll(io.NewSectionReader(f, off, n))
	if err != nil && !errors.Is(err, io.EOF) {
		return ""
	}
	s := strings.ToValidUTF8(string(b), "?")
	s = strings.Map(func(r rune) rune {
		if r == '\n' || r == '\t' || unicode.IsPrint(r) {
			return r
		}
		return '?'
	}, s)
	return strings.TrimSpace(s)
}
