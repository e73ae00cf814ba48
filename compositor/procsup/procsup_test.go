package procsup

import (
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"syscall"
	"testing"
	"time"
)

func TestParseStat(t *testing.T) {
	// Fields 6 to 21, then starttime (22) and two more.
	tail := " 6 7 8 9 10 11 12 13 14 15 16 17 18 19 20 21 12345 23 24"
	tests := []struct {
		name    string
		line    string
		want    Stat
		wantErr bool
	}{
		{"plain", "42 (weston) S 1 42" + tail, Stat{State: 'S', Pgrp: 42, StartTicks: 12345}, false},
		{"comm with parens", "42 (a) (b) R 1 7" + tail, Stat{State: 'R', Pgrp: 7, StartTicks: 12345}, false},
		{"zombie", "42 (x y) Z 1 9" + tail, Stat{State: 'Z', Pgrp: 9, StartTicks: 12345}, false},
		{"no comm", "42 weston S 1 42", Stat{}, true},
		{"short", "42 (weston) S 1 42 3", Stat{}, true},
		{"bad start", "42 (weston) S 1 42 6 7 8 9 10 11 12 13 14 15 16 17 18 19 20 21 x", Stat{}, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := ParseStat([]byte(tt.line))
			if (err != nil) != tt.wantErr || got != tt.want {
				t.Fatalf("ParseStat(%q) = %+v, %v; want %+v, err %v", tt.line, got, err, tt.want, tt.wantErr)
			}
		})
	}
}

// startGroup starts a shell leading its own process group with a child in
// it, the shape of a compositor with its clients.
func startGroup(t *testing.T) *exec.Cmd {
	t.Helper()
	cmd := exec.Command("sh", "-c", "sleep 60 & sleep 60")
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
		cmd.Wait()
	})
	return cmd
}

func TestCheckTellsLiveGoneAndReused(t *testing.T) {
	cmd := startGroup(t)
	pid := cmd.Process.Pid
	st, err := ReadStat("/proc", pid)
	if err != nil {
		t.Fatal(err)
	}
	if err := Check("/proc", pid, st.StartTicks); err != nil {
		t.Fatalf("Check(live) = %v; want nil", err)
	}
	if err := Check("/proc", pid, st.StartTicks+1); !errors.Is(err, ErrPIDReused) {
		t.Fatalf("Check(other start time) = %v; want ErrPIDReused", err)
	}
	for _, bad := range []int{0, 1, -5} {
		if err := Check("/proc", bad, 0); !errors.Is(err, ErrProcessGone) {
			t.Fatalf("Check(pid %d) = %v; want ErrProcessGone", bad, err)
		}
	}
	syscall.Kill(-pid, syscall.SIGKILL)
	cmd.Wait()
	if err := Check("/proc", pid, st.StartTicks); !errors.Is(err, ErrProcessGone) {
		t.Fatalf("Check(dead) = %v; want ErrProcessGone", err)
	}
}

func TestSignalGroupGuards(t *testing.T) {
	for _, pgid := range []int{-1, 0, 1, syscall.Getpgrp()} {
		if err := SignalGroup(pgid, syscall.Signal(0)); err == nil {
			t.Fatalf("SignalGroup(%d) = nil; want a refusal", pgid)
		}
	}
	// A group that no longer exists is not an error.
	cmd := exec.Command("true")
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Run(); err != nil {
		t.Fatal(err)
	}
	if err := SignalGroup(cmd.Process.Pid, syscall.SIGKILL); err != nil {
		t.Fatalf("SignalGroup(gone group) = %v; want nil", err)
	}
}

// The whole group, not only its leader, must be gone before a backend says
// a session is destroyed.
func TestWaitGroupGoneWaitsForEveryMember(t *testing.T) {
	cmd := startGroup(t)
	pgid := cmd.Process.Pid
	deadline := time.Now().Add(5 * time.Second)
	for !GroupAlive("/proc", pgid) {
		if time.Now().After(deadline) {
			t.Fatal("group never seen alive")
		}
		time.Sleep(5 * time.Millisecond)
	}
	if WaitGroupGone("/proc", pgid, 50*time.Millisecond, nil) {
		t.Fatal("WaitGroupGone = true while the group runs")
	}
	if err := SignalGroup(pgid, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	if !WaitGroupGone("/proc", pgid, 10*time.Second, nil) {
		t.Fatal("WaitGroupGone = false after SIGKILL to the group")
	}
}

func TestBootID(t *testing.T) {
	a, err := BootID("/proc")
	if err != nil || len(a) < 32 {
		t.Fatalf("BootID = %q, %v", a, err)
	}
	if _, err := BootID(t.TempDir()); err == nil {
		t.Fatal("BootID of a tree without one = nil error")
	}
}

// TestLockFile: a held lock refuses a second holder until Unlock, even
// when a copy of its descriptor lives on (a child forked meanwhile); a
// symbolic link planted at the path is refused, not followed.
func TestLockFile(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, ".lock")
	l, err := LockFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := LockFile(path); !errors.Is(err, ErrLocked) {
		t.Fatalf("second LockFile err = %v; want ErrLocked", err)
	}
	child, err := syscall.Dup(int(l.Fd()))
	if err != nil {
		t.Fatal(err)
	}
	defer syscall.Close(child)
	if err := l.Unlock(); err != nil {
		t.Fatal(err)
	}
	l2, err := LockFile(path)
	if err != nil {
		t.Fatalf("LockFile after Unlock with a copy of the descriptor open: %v", err)
	}
	l2.Unlock()

	target := filepath.Join(dir, "victim")
	link := filepath.Join(dir, "link.lock")
	if err := os.Symlink(target, link); err != nil {
		t.Fatal(err)
	}
	if _, err := LockFile(link); err == nil || errors.Is(err, ErrLocked) {
		t.Fatalf("LockFile through a symlink err = %v; want it refused", err)
	}
	if _, err := os.Lstat(target); !os.IsNotExist(err) {
		t.Fatalf("the link's target was created (%v)", err)
	}
}

// TestLockFileRemove: Remove takes the lock file away with the lock, so
// locks of things that come and go leave no files; and a LockFile that
// opened the file just before its holder removed it, and got the flock
// just after, does not count that as holding the lock (a third holder has
// meanwhile created the path anew and locked it): two holders never hold
// one path at once.
func TestLockFileRemove(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "acct.lock")
	l, err := LockFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if err := l.Remove(); err != nil {
		t.Fatalf("Remove: %v", err)
	}
	if _, err := os.Lstat(path); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("lock file after Remove: %v; want it gone", err)
	}

	first, err := LockFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var third *FileLock
	lockOpened = func(string) {
		lockOpened = nil
		// Between the second's open and its flock: the first holder
		// releases the account for good, a third takes it.
		if err := first.Remove(); err != nil {
			t.Errorf("Remove: %v", err)
		}
		if third, err = LockFile(path); err != nil {
			t.Errorf("third LockFile: %v", err)
		}
	}
	t.Cleanup(func() { lockOpened = nil })
	second, err := LockFile(path)
	if third == nil {
		t.Fatal("the hook did not run")
	}
	if err == nil {
		second.Unlock()
		t.Fatal("second LockFile succeeded while a third holds the path's lock")
	}
	if !errors.Is(err, ErrLocked) {
		t.Fatalf("second LockFile err = %v; want ErrLocked", err)
	}
	if err := third.Remove(); err != nil {
		t.Fatal(err)
	}
}

// TestRemoveStaleLocks: lock files nobody holds (left by processes that
// died) are removed; held ones and other files stay.
func TestRemoveStaleLocks(t *testing.T) {
	dir := t.TempDir()
	for _, name := range []string{"hotdesk-a1.lock", "hotdesk-a2.lock", "other"} {
		if err := os.WriteFile(filepath.Join(dir, name), nil, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	held, err := LockFile(filepath.Join(dir, "hotdesk-b1.lock"))
	if err != nil {
		t.Fatal(err)
	}
	defer held.Unlock()
	n, err := RemoveStaleLocks(dir, "hotdesk-*.lock")
	if err != nil || n != 2 {
		t.Fatalf("RemoveStaleLocks = %d, %v; want 2, nil", n, err)
	}
	entries, _ := os.ReadDir(dir)
	var left []string
	for _, e := range entries {
		left = append(left, e.Name())
	}
	if want := []string{"hotdesk-b1.lock", "other"}; !slices.Equal(left, want) {
		t.Fatalf("left %v; want %v", left, want)
	}
}
