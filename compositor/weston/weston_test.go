package weston

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"reflect"
	"regexp"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"
	"golang.org/x/sys/unix"

	"github.com/hotdesk/hotdesk/compositor"
	"github.com/hotdesk/hotdesk/compositor/procsup"
	"github.com/hotdesk/hotdesk/internal/clock"
	"github.com/hotdesk/hotdesk/internal/portguard"
	"github.com/hotdesk/hotdesk/internal/rlimit"
	"github.com/hotdesk/hotdesk/internal/testutil"
)

// waitLimit bounds every wait for something asynchronous; it is a failure
// limit, never a timing assertion.
const waitLimit = 20 * time.Second

var epoch = time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)

// requireWeston returns the weston binary; it fails the test when CI=true
// and weston is missing, and skips it otherwise.
func requireWeston(t *testing.T) string {
	t.Helper()
	return testutil.NeedTool(t, "weston")
}

// stateDir is a short state directory (unix socket paths are limited).
func stateDir(t *testing.T) string { return testutil.ShortTempDir(t, "hdw") }

func testLogger(t *testing.T) hclog.Logger { return testutil.Logger(t, "weston", hclog.Debug) }

// newBackend builds a Backend on a fake clock, closed at cleanup.
func newBackend(t *testing.T, cfg Config) (*Backend, *clock.Fake) {
	t.Helper()
	fc := clock.NewFake(epoch)
	if cfg.Clock == nil {
		cfg.Clock = fc
	}
	if cfg.Logger == nil {
		cfg.Logger = testLogger(t)
	}
	if !cfg.RunAsUser {
		// The fake compositor runs as the test's user, root in CI.
		cfg.AllowRoot = true
	}
	b, err := New(cfg)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	t.Cleanup(func() { b.Close() })
	return b, fc
}

// helperConfig runs this test binary as a fake compositor.
func helperConfig(t *testing.T) Config {
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	return Config{Binary: exe, StateDir: stateDir(t)}
}

func helperSpec(id, mode string) compositor.Spec {
	return compositor.Spec{SessionID: id, User: "root", Env: []string{helperEnv + "=" + mode}}
}

// track kills pid's process group at cleanup if it is still the same
// process, so no test leaves compositors behind.
func track(t *testing.T, pid int) {
	t.Helper()
	st, err := procsup.ReadStat("/proc", pid)
	if err != nil {
		return
	}
	t.Cleanup(func() {
		switch err := procsup.Check("/proc", pid, st.StartTicks); {
		case err == nil:
			syscall.Kill(-pid, syscall.SIGKILL)
			syscall.Kill(pid, syscall.SIGKILL) // in case it is not a group leader
		case errors.Is(err, ErrProcessGone):
			syscall.Kill(-pid, syscall.SIGKILL) // what is left of its group
		}
	})
}

// destroy calls Destroy with a failure limit, so a broken Destroy fails the
// test instead of hanging it.
func destroy(t *testing.T, b *Backend, id string) error {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), waitLimit)
	defer cancel()
	return b.Destroy(ctx, id)
}

func create(t *testing.T, b *Backend, spec compositor.Spec) compositor.Info {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), waitLimit)
	defer cancel()
	info, err := b.Create(ctx, spec)
	if err != nil {
		t.Fatalf("Create(%s): %v", spec.SessionID, err)
	}
	track(t, info.PID)
	return info
}

func alive(pid int) bool {
	st, err := procsup.ReadStat("/proc", pid)
	return err == nil && st.State != 'Z' && st.State != 'X'
}

// groupGone waits until no live process is left in process group pgid.
// Zombies do not count: orphans are reaped by init, at its own pace.
func groupGone(t *testing.T, pgid int) {
	t.Helper()
	deadline := time.Now().Add(waitLimit)
	for {
		left := liveInGroup(pgid)
		if len(left) == 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("process group %d still has live processes %v", pgid, left)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func liveInGroup(pgid int) []int {
	ents, _ := os.ReadDir("/proc")
	var pids []int
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		if st, err := procsup.ReadStat("/proc", pid); err == nil && st.Pgrp == pgid && st.State != 'Z' && st.State != 'X' {
			pids = append(pids, pid)
		}
	}
	return pids
}

func dial(t *testing.T, endpoint string) {
	t.Helper()
	path, ok := strings.CutPrefix(endpoint, "wayland:")
	if !ok || !filepath.IsAbs(path) {
		t.Fatalf("endpoint = %q; want wayland:<absolute path>", endpoint)
	}
	c, err := net.DialTimeout("unix", path, 5*time.Second)
	if err != nil {
		t.Fatalf("dial %s: %v", path, err)
	}
	c.Close()
}

func perm(t *testing.T, path string) os.FileMode {
	t.Helper()
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	return fi.Mode().Perm()
}

func readRec(t *testing.T, dir string) record {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(dir, recordName))
	if err != nil {
		t.Fatal(err)
	}
	var r record
	if err := json.Unmarshal(b, &r); err != nil {
		t.Fatal(err)
	}
	return r
}

func noExit(t *testing.T, b *Backend) {
	t.Helper()
	select {
	case e := <-b.Exits():
		t.Fatalf("unexpected exit %+v", e)
	default:
	}
}

func environ(t *testing.T, pid int) []string {
	t.Helper()
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/environ")
	if err != nil {
		t.Fatal(err)
	}
	env := strings.Split(strings.TrimRight(string(b), "\x00"), "\x00")
	slices.Sort(env)
	return env
}

func TestLifecycle(t *testing.T) {
	requireWeston(t)
	t.Setenv("HOTDESK_BROKER_SECRET", "must-not-leak")
	dir := stateDir(t)
	b, _ := newBackend(t, Config{StateDir: dir})
	ctx := context.Background()

	labels := map[string]string{"token": "soft.abc", "created": "1795338000000"}
	info := create(t, b, compositor.Spec{SessionID: "s-1", User: "root", Env: []string{"LANG=de_DE.UTF-8", "FROM_PAM=1"}, Labels: labels})
	sdir := filepath.Join(dir, "s-1")
	sock := filepath.Join(sdir, "run", socketName)
	want := compositor.Info{SessionID: "s-1", User: "root", PID: info.PID, Endpoint: "wayland:" + sock, Started: epoch, Labels: labels}
	if !reflect.DeepEqual(info, want) {
		t.Fatalf("Create = %+v; want %+v", info, want)
	}
	dial(t, info.Endpoint)
	if !alive(info.PID) {
		t.Fatalf("pid %d not alive after Create", info.PID)
	}
	if pg, err := syscall.Getpgid(info.PID); err != nil || pg != info.PID {
		t.Fatalf("pgid of %d = %d, %v; want its own group %d", info.PID, pg, err, info.PID)
	}
	if got := perm(t, sdir); got != 0o700 {
		t.Fatalf("state dir mode = %v; want 0700", got)
	}
	if got := perm(t, filepath.Join(sdir, "run")); got != 0o700 {
		t.Fatalf("run dir mode = %v; want 0700", got)
	}
	if fi, err := os.Stat(filepath.Join(sdir, logName)); err != nil || fi.Size() == 0 {
		t.Fatalf("weston.log: %v, %v; want a non-empty log", fi, err)
	}
	gotEnv := environ(t, info.PID)
	home := "/root"
	if u, err := user.Lookup("root"); err == nil {
		home = u.HomeDir
	}
	wantEnv := []string{"FROM_PAM=1", "HOME=" + home, "LANG=de_DE.UTF-8", "LOGNAME=root", "PATH=/usr/local/bin:/usr/bin:/bin", "USER=root", "XDG_RUNTIME_DIR=" + filepath.Join(sdir, "run")}
	if !slices.Equal(gotEnv, wantEnv) {
		t.Fatalf("environ = %q; want %q", gotEnv, wantEnv)
	}

	bootID, _ := procsup.BootID("/proc")
	st, _ := procsup.ReadStat("/proc", info.PID)
	rec := readRec(t, sdir)
	wantRec := record{Version: 1, SessionID: "s-1", User: "root", PID: info.PID, StartTicks: st.StartTicks, BootID: bootID, Endpoint: info.Endpoint, Started: epoch, Labels: labels}
	if !reflect.DeepEqual(rec, wantRec) {
		t.Fatalf("session.json = %+v; want %+v", rec, wantRec)
	}

	if list, err := b.List(ctx); err != nil || !reflect.DeepEqual(list, []compositor.Info{info}) {
		t.Fatalf("List = %+v, %v; want [%+v]", list, err, info)
	}
	if _, err := b.Create(ctx, compositor.Spec{SessionID: "s-1", User: "root"}); !errors.Is(err, ErrExists) {
		t.Fatalf("second Create err = %v; want ErrExists", err)
	}

	// Suspend: same process, still running (not stopped), flag recorded.
	if err := b.Suspend(ctx, "s-1"); err != nil {
		t.Fatalf("Suspend: %v", err)
	}
	st2, err := procsup.ReadStat("/proc", info.PID)
	if err != nil || st2.StartTicks != st.StartTicks || st2.State == 'T' || st2.State == 't' {
		t.Fatalf("after Suspend stat = %+v, %v; want the same running process", st2, err)
	}
	dial(t, info.Endpoint)
	if list, _ := b.List(ctx); len(list) != 1 || !list[0].Suspended {
		t.Fatalf("List after Suspend = %+v; want one suspended", list)
	}
	if !readRec(t, sdir).Suspended {
		t.Fatalf("session.json suspended = false; want true")
	}

	got, err := b.Resume(ctx, "s-1")
	if err != nil {
		t.Fatalf("Resume: %v", err)
	}
	if !reflect.DeepEqual(got, info) {
		t.Fatalf("Resume = %+v; want %+v", got, info)
	}
	if readRec(t, sdir).Suspended {
		t.Fatalf("session.json suspended = true; want false")
	}

	if err := destroy(t, b, "s-1"); err != nil {
		t.Fatalf("Destroy: %v", err)
	}
	if alive(info.PID) {
		t.Fatalf("pid %d alive after Destroy", info.PID)
	}
	groupGone(t, info.PID)
	if _, err := os.Stat(sdir); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("state dir after Destroy: %v; want it removed", err)
	}
	if list, _ := b.List(ctx); len(list) != 0 {
		t.Fatalf("List after Destroy = %+v; want none", list)
	}
	if err := destroy(t, b, "s-1"); err != nil {
		t.Fatalf("second Destroy = %v; want nil", err)
	}
	for name, err := range map[string]error{
		"Suspend": b.Suspend(ctx, "s-1"),
		"Resume":  func() error { _, err := b.Resume(ctx, "s-1"); return err }(),
	} {
		if !errors.Is(err, compositor.ErrNotFound) {
			t.Fatalf("%s after Destroy = %v; want ErrNotFound", name, err)
		}
	}
	noExit(t, b)
}

func TestUnexpectedExit(t *testing.T) {
	requireWeston(t)
	dir := stateDir(t)
	b, _ := newBackend(t, Config{StateDir: dir})
	ctx := context.Background()
	keep := create(t, b, compositor.Spec{SessionID: "keep", User: "root"})
	info := create(t, b, compositor.Spec{SessionID: "victim", User: "root"})

	if err := syscall.Kill(info.PID, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	e := testutil.Recv(t, b.Exits(), waitLimit, "no exit reported after SIGKILL")
	if e.SessionID != "victim" || e.PID != info.PID || e.Err == nil || e.Err.Error() != "signal: killed" {
		t.Fatalf("exit = %+v; want {victim %d signal: killed}", e, info.PID)
	}
	// Forgotten: gone from List, dir and helpers gone, id reusable.
	if list, _ := b.List(ctx); len(list) != 1 || list[0].SessionID != "keep" {
		t.Fatalf("List = %+v; want only keep", list)
	}
	if _, err := os.Stat(filepath.Join(dir, "victim")); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("state dir of victim: %v; want removed", err)
	}
	groupGone(t, info.PID)
	again := create(t, b, compositor.Spec{SessionID: "victim", User: "root"})
	if again.PID == info.PID {
		t.Fatalf("recreated pid = %d; want a new process", again.PID)
	}
	if !alive(keep.PID) {
		t.Fatalf("unrelated compositor %d died", keep.PID)
	}
	for _, id := range []string{"keep", "victim"} {
		if err := destroy(t, b, id); err != nil {
			t.Fatalf("Destroy(%s): %v", id, err)
		}
	}
	noExit(t, b)
}

func TestExitKillsGroup(t *testing.T) {
	b, _ := newBackend(t, helperConfig(t))
	info := create(t, b, helperSpec("grp", "with-child"))
	deadline := time.Now().Add(waitLimit)
	for len(liveInGroup(info.PID)) < 2 {
		if time.Now().After(deadline) {
			t.Fatalf("helper child did not start")
		}
		time.Sleep(5 * time.Millisecond)
	}
	if err := syscall.Kill(info.PID, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	if e := testutil.Recv(t, b.Exits(), waitLimit, "no exit reported"); e.SessionID != "grp" {
		t.Fatalf("exit = %+v; want session grp", e)
	}
	// The application left in the group was killed with the session.
	groupGone(t, info.PID)
}

// writeStale writes a session dir with a hand-made record.
func writeStale(t *testing.T, dir, id string, r *record) {
	t.Helper()
	d := filepath.Join(dir, id)
	if err := os.MkdirAll(filepath.Join(d, "run"), 0o700); err != nil {
		t.Fatal(err)
	}
	if r != nil {
		r.Version, r.SessionID = 1, id
		if err := writeRecord(d, *r); err != nil {
			t.Fatal(err)
		}
	}
}

func TestAdopt(t *testing.T) {
	requireWeston(t)
	dir := stateDir(t)
	ctx := context.Background()
	b1, _ := newBackend(t, Config{StateDir: dir})
	live := create(t, b1, compositor.Spec{SessionID: "live", User: "root"})
	other := create(t, b1, compositor.Spec{SessionID: "other", User: "root"})
	if err := b1.Suspend(ctx, "live"); err != nil {
		t.Fatal(err)
	}

	// Records that must not be adopted.
	bootID, _ := procsup.BootID("/proc")
	deadPID, deadTicks := deadProcess(t)
	self, _ := procsup.ReadStat("/proc", os.Getpid())
	writeStale(t, dir, "dead", &record{PID: deadPID, StartTicks: deadTicks, BootID: bootID})
	writeStale(t, dir, "reused", &record{PID: os.Getpid(), StartTicks: self.StartTicks + 1, BootID: bootID})
	writeStale(t, dir, "oldboot", &record{PID: os.Getpid(), StartTicks: self.StartTicks, BootID: "00000000-old"})
	writeStale(t, dir, "norecord", nil)
	if err := os.WriteFile(filepath.Join(dir, "not a session"), []byte("x"), 0o600); err != nil {
		t.Fatal(err)
	}

	if _, err := New(Config{StateDir: dir}); !errors.Is(err, ErrLocked) {
		t.Fatalf("New on a held state dir err = %v; want ErrLocked", err)
	}
	if err := b1.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	if _, ok := <-b1.Exits(); ok {
		t.Fatalf("Exits not closed after Close")
	}
	if !alive(live.PID) || !alive(other.PID) {
		t.Fatalf("Close killed compositors")
	}
	if _, err := b1.List(ctx); !errors.Is(err, ErrClosed) {
		t.Fatalf("List after Close err = %v; want ErrClosed", err)
	}

	b2, fc := newBackend(t, Config{StateDir: dir, PollInterval: time.Second})
	adopted, lost, err := b2.Adopt(ctx)
	if err != nil {
		t.Fatalf("Adopt: %v", err)
	}
	wantLive := live
	wantLive.Suspended = true
	if want := []compositor.Info{wantLive, other}; !reflect.DeepEqual(adopted, want) {
		t.Fatalf("adopted = %+v; want %+v", adopted, want)
	}
	wantLost := map[string]struct {
		pid int
		err error
	}{
		"dead":     {deadPID, ErrProcessGone},
		"reused":   {os.Getpid(), ErrPIDReused},
		"oldboot":  {os.Getpid(), ErrRebooted},
		"norecord": {0, ErrBadRecord},
	}
	if len(lost) != len(wantLost) {
		t.Fatalf("lost = %+v; want %d entries", lost, len(wantLost))
	}
	for _, e := range lost {
		w, ok := wantLost[e.SessionID]
		if !ok || e.PID != w.pid || !errors.Is(e.Err, w.err) {
			t.Fatalf("lost %+v; want pid %d err %v", e, w.pid, w.err)
		}
		if _, err := os.Stat(filepath.Join(dir, e.SessionID)); !errors.Is(err, os.ErrNotExist) {
			t.Fatalf("dir of lost %s: %v; want removed", e.SessionID, err)
		}
	}
	if list, _ := b2.List(ctx); !reflect.DeepEqual(list, adopted) {
		t.Fatalf("List = %+v; want %+v", list, adopted)
	}
	if again, lost, err := b2.Adopt(ctx); len(again) != 0 || len(lost) != 0 || err != nil {
		t.Fatalf("second Adopt = %+v, %+v, %v; want nothing", again, lost, err)
	}
	if _, err := b2.Resume(ctx, "live"); err != nil {
		t.Fatalf("Resume adopted: %v", err)
	}
	dial(t, live.Endpoint)

	// An adopted compositor that dies is found by polling on the clock.
	if err := syscall.Kill(other.PID, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	var e compositor.Exit
	deadline := time.Now().Add(waitLimit)
	for e.SessionID == "" {
		if time.Now().After(deadline) {
			t.Fatalf("no exit reported for adopted compositor")
		}
		fc.Advance(time.Second)
		select {
		case e = <-b2.Exits():
		case <-time.After(10 * time.Millisecond):
		}
	}
	if e.SessionID != "other" || e.PID != other.PID || !errors.Is(e.Err, ErrProcessGone) {
		t.Fatalf("exit = %+v; want {other %d %v}", e, other.PID, ErrProcessGone)
	}
	if _, err := os.Stat(filepath.Join(dir, "other")); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("dir of exited adopted: %v; want removed", err)
	}

	if err := destroy(t, b2, "live"); err != nil {
		t.Fatalf("Destroy adopted: %v", err)
	}
	if alive(live.PID) {
		t.Fatalf("adopted pid %d alive after Destroy", live.PID)
	}
	groupGone(t, live.PID)
	if list, _ := b2.List(ctx); len(list) != 0 {
		t.Fatalf("List after Destroy = %+v; want none", list)
	}
	noExit(t, b2)
}

func TestInvalidSpec(t *testing.T) {
	b, _ := newBackend(t, helperConfig(t))
	long := strings.Repeat("a", 65)
	tests := []struct {
		name string
		spec compositor.Spec
		want error
	}{
		{"empty id", compositor.Spec{SessionID: "", User: "root"}, ErrInvalidSessionID},
		{"slash", compositor.Spec{SessionID: "a/b", User: "root"}, ErrInvalidSessionID},
		{"dotdot", compositor.Spec{SessionID: "..", User: "root"}, ErrInvalidSessionID},
		{"space", compositor.Spec{SessionID: "a b", User: "root"}, ErrInvalidSessionID},
		{"underscore", compositor.Spec{SessionID: "a_b", User: "root"}, ErrInvalidSessionID},
		{"non-ascii", compositor.Spec{SessionID: "ä", User: "root"}, ErrInvalidSessionID},
		{"too long", compositor.Spec{SessionID: long, User: "root"}, ErrInvalidSessionID},
		{"no user", compositor.Spec{SessionID: "a", User: ""}, ErrInvalidSpec},
		{"user path", compositor.Spec{SessionID: "a", User: "../root"}, ErrInvalidSpec},
		{"env no =", compositor.Spec{SessionID: "a", User: "root", Env: []string{"NOEQ"}}, ErrInvalidSpec},
		{"env empty key", compositor.Spec{SessionID: "a", User: "root", Env: []string{"=x"}}, ErrInvalidSpec},
		{"env runtime dir", compositor.Spec{SessionID: "a", User: "root", Env: []string{"XDG_RUNTIME_DIR=/tmp"}}, ErrInvalidSpec},
		{"env too many", compositor.Spec{SessionID: "a", User: "root", Env: slices.Repeat([]string{"A=1"}, maxEnvEntries+1)}, ErrInvalidSpec},
		{"env too big", compositor.Spec{SessionID: "a", User: "root", Env: []string{"A=" + strings.Repeat("x", maxEnvEntry)}}, ErrInvalidSpec},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := b.Create(context.Background(), tt.spec)
			if !errors.Is(err, tt.want) {
				t.Fatalf("Create err = %v; want %v", err, tt.want)
			}
		})
	}
	if ents, _ := os.ReadDir(b.cfg.StateDir); len(ents) != 1 || ents[0].Name() != lockName {
		t.Fatalf("state dir holds %v; want only %s", ents, lockName)
	}
	if err := ValidateSessionID(strings.Repeat("a", 64)); err != nil {
		t.Fatalf("ValidateSessionID(64 chars) = %v; want nil", err)
	}
}

func TestNewErrors(t *testing.T) {
	tests := []struct {
		name string
		cfg  Config
	}{
		{"no state dir", Config{}},
		{"unknown backend", Config{StateDir: "/tmp/x", Backend: "vnc"}},
		{"missing binary", Config{StateDir: "/tmp/x", Binary: "/nonexistent/weston"}},
		{"state dir too long", Config{StateDir: "/" + strings.Repeat("d", 100), Binary: "/bin/true"}},
		{"negative max", Config{StateDir: "/tmp/x", MaxSessions: -1}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if b, err := New(tt.cfg); err == nil {
				b.Close()
				t.Fatalf("New(%+v) err = nil; want an error", tt.cfg)
			}
		})
	}
	if _, err := New(Config{StateDir: "/tmp/x", Backend: "vnc"}); !errors.Is(err, ErrUnsupportedBackend) {
		t.Fatalf("New(vnc) err = %v; want ErrUnsupportedBackend", err)
	}
}

// rdpGuard is a real port guard on an nftables table of the test's own,
// deleted at cleanup. It fails the test when CI=true and nftables is not
// usable here, and skips it otherwise.
func rdpGuard(t *testing.T) *portguard.Guard {
	t.Helper()
	if _, err := portguard.LookNFT(""); err != nil {
		testutil.SkipOrFail(t, "nft: %v", err)
	}
	testutil.NeedRoot(t, "the RDP guard needs root")
	table := fmt.Sprintf("hdtest_w%d_%d", os.Getpid(), time.Now().UnixNano()%1e9)
	ctx, cancel := context.WithTimeout(context.Background(), waitLimit)
	defer cancel()
	g, err := portguard.New(ctx, portguard.Config{Table: table, Logger: testLogger(t).Named("rdpguard")})
	if err != nil {
		t.Fatalf("portguard: %v", err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), waitLimit)
		defer cancel()
		if err := portguard.Delete(ctx, "", table); err != nil {
			t.Errorf("delete table %s: %v", table, err)
		}
	})
	return g
}

// nobodyReaches reports whether the account nobody can open a connection
// to port (true) or is refused (false); anything else fails the test.
func nobodyReaches(t *testing.T, port int) bool {
	t.Helper()
	uid, gid := testutil.Nobody(t)
	err := testutil.DialAs(uid, gid, port)
	if err != nil && !errors.Is(err, testutil.ErrConnRefused) {
		t.Fatalf("dial as nobody: %v", err)
	}
	return err == nil
}

func guardedPorts(t *testing.T, g *portguard.Guard) []int {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), waitLimit)
	defer cancel()
	ports, err := g.Ports(ctx)
	if err != nil {
		t.Fatalf("guarded ports: %v", err)
	}
	return ports
}

// TestRDPBackend: weston's RDP backend bound to loopback with its own key
// pair per session; the endpoint accepts the daemon's TCP connections
// until destroyed, and refuses every other local user's (weston 10
// authenticates no RDP client): guarded before weston starts, still
// guarded after the daemon restarts and adopts the session, restored when
// a firewall reload removed the guard's table, unguarded once destroyed.
// Budget: two real westons' start and stop, a few seconds.
func TestRDPBackend(t *testing.T) {
	requireWeston(t)
	guard := rdpGuard(t)
	dir := stateDir(t)
	b, _ := newBackend(t, Config{StateDir: dir, Backend: "rdp", RDPGuard: guard})
	info := create(t, b, compositor.Spec{SessionID: "s-rdp", User: "root"})
	port := rdpPortOf(info.Endpoint)
	if port == 0 || info.Endpoint != fmt.Sprintf("rdp://127.0.0.1:%d", port) {
		t.Fatalf("endpoint = %q; want rdp://127.0.0.1:PORT", info.Endpoint)
	}
	c, err := net.DialTimeout("tcp", fmt.Sprintf("127.0.0.1:%d", port), 5*time.Second)
	if err != nil {
		t.Fatalf("RDP listener: %v", err)
	}
	c.Close()
	if nobodyReaches(t, port) {
		t.Fatalf("nobody connected to the session's RDP port %d", port)
	}
	if got := guardedPorts(t, guard); !slices.Equal(got, []int{port}) {
		t.Fatalf("guarded ports = %v; want [%d]", got, port)
	}
	if fi, err := os.Stat(filepath.Join(dir, "s-rdp", "rdp.key")); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("rdp.key: %v, %v; want mode 0600", fi, err)
	}

	// A restarted daemon: a new Backend and a new Guard on the same table.
	if err := b.Close(); err != nil {
		t.Fatal(err)
	}
	if nobodyReaches(t, port) {
		t.Fatal("nobody connected once the backend was closed")
	}
	ctx, cancel := context.WithTimeout(context.Background(), waitLimit)
	defer cancel()
	guard2, err := portguard.New(ctx, portguard.Config{Table: guard.Table()})
	if err != nil {
		t.Fatal(err)
	}
	// Sessions that died meanwhile: one whose port is free now (unguarded
	// by Adopt) and one whose port the live session uses (left alone).
	bootID, _ := procsup.BootID("/proc")
	deadPID, deadTicks := deadProcess(t)
	const freePort = 1 // never a session's: only root may listen there
	if err := guard.Add(ctx, freePort); err != nil {
		t.Fatal(err)
	}
	for id, p := range map[string]int{"a-dead": freePort, "z-dead": port} {
		writeStale(t, dir, id, &record{PID: deadPID, StartTicks: deadTicks, BootID: bootID,
			Endpoint: fmt.Sprintf("rdp://127.0.0.1:%d", p)})
	}
	b2, fc := newBackend(t, Config{StateDir: dir, Backend: "rdp", RDPGuard: guard2, PollInterval: time.Second})
	if adopted, lost, err := b2.Adopt(ctx); err != nil || len(adopted) != 1 || adopted[0].Endpoint != info.Endpoint || len(lost) != 2 {
		t.Fatalf("Adopt = %+v, %+v, %v; want s-rdp at %s adopted, 2 lost", adopted, lost, err, info.Endpoint)
	}
	if got := guardedPorts(t, guard2); !slices.Equal(got, []int{port}) {
		t.Fatalf("guarded ports after Adopt = %v; want [%d] (the dead sessions' free port unguarded)", got, port)
	}
	if nobodyReaches(t, port) {
		t.Fatal("nobody connected to an adopted session's RDP port")
	}

	// A firewall reload drops the table; the next check restores it.
	if err := portguard.Delete(ctx, "", guard.Table()); err != nil {
		t.Fatal(err)
	}
	if !nobodyReaches(t, port) {
		t.Fatal("nobody refused with the guard's table deleted: the test cannot show a restore")
	}
	fc.Advance(guardCheckEvery + time.Second)
	testutil.WaitFor(t, waitLimit, "the guard restored", func() bool {
		ports, err := guard2.Ports(ctx)
		return err == nil && slices.Equal(ports, []int{port})
	})
	if nobodyReaches(t, port) {
		t.Fatal("nobody connected after the guard was restored")
	}

	if err := destroy(t, b2, "s-rdp"); err != nil {
		t.Fatal(err)
	}
	if c, err := net.DialTimeout("tcp", fmt.Sprintf("127.0.0.1:%d", port), time.Second); err == nil {
		c.Close()
		t.Fatal("RDP listener still open after destroy")
	}
	if got := guardedPorts(t, guard2); len(got) != 0 {
		t.Fatalf("guarded ports after destroy = %v; want none", got)
	}
}

// TestRDPDefaultGuard: without Config.RDPGuard the backend guards its
// sessions on the table of its state directory, which Close removes once
// no session is left.
func TestRDPDefaultGuard(t *testing.T) {
	requireWeston(t)
	rdpGuard(t) // nftables usable here
	dir := stateDir(t)
	table := portguard.TableName(dir)
	t.Cleanup(func() { portguard.Delete(context.Background(), "", table) })
	b, _ := newBackend(t, Config{StateDir: dir, Backend: "rdp"})
	ctx, cancel := context.WithTimeout(context.Background(), waitLimit)
	defer cancel()
	view, err := portguard.New(ctx, portguard.Config{Table: table}) // the same table, to read it
	if err != nil {
		t.Fatal(err)
	}
	info := create(t, b, compositor.Spec{SessionID: "s-rdp", User: "root"})
	port := rdpPortOf(info.Endpoint)
	if got := guardedPorts(t, view); !slices.Equal(got, []int{port}) {
		t.Fatalf("ports in table %s = %v; want [%d]", table, got, port)
	}
	if nobodyReaches(t, port) {
		t.Fatalf("nobody connected to the session's RDP port %d", port)
	}
	if err := destroy(t, b, "s-rdp"); err != nil {
		t.Fatal(err)
	}
	if err := b.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := view.Ports(ctx); err == nil {
		t.Fatalf("table %s still there after Close with no session left", table)
	}
}

// failingGuard is a PortGuard whose Add fails: the case of an nft that
// stops working after the guard was set up, which real nftables cannot be
// made to show on demand.
type failingGuard struct{ removed []int }

func (f *failingGuard) Add(ctx context.Context, port int) error {
	return errors.New("nft: exit status 1")
}

func (f *failingGuard) Remove(ctx context.Context, port int) error {
	f.removed = append(f.removed, port)
	return nil
}

// TestRDPUnguarded: a port that cannot be guarded means no session (and
// no weston, no state left); InsecureUnguardedRDP starts it unguarded.
func TestRDPUnguarded(t *testing.T) {
	requireWeston(t)
	dir := stateDir(t)
	fg := &failingGuard{}
	b, _ := newBackend(t, Config{StateDir: dir, Backend: "rdp", RDPGuard: fg})
	ctx, cancel := context.WithTimeout(context.Background(), waitLimit)
	defer cancel()
	_, err := b.Create(ctx, compositor.Spec{SessionID: "s-rdp", User: "root"})
	if !errors.Is(err, ErrRDPUnguarded) {
		t.Fatalf("Create with a failing guard err = %v; want ErrRDPUnguarded", err)
	}
	if _, err := os.Stat(filepath.Join(dir, "s-rdp")); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("state dir after a refused create: %v; want none", err)
	}
	if out, _ := exec.Command("pgrep", "-f", filepath.Join(dir, "s-rdp")).Output(); len(out) > 0 {
		t.Fatalf("processes of the refused session: %s", out)
	}
	if list, _ := b.List(ctx); len(list) != 0 {
		t.Fatalf("List = %+v; want none", list)
	}

	b2, _ := newBackend(t, Config{StateDir: stateDir(t), Backend: "rdp", InsecureUnguardedRDP: true, RDPGuard: fg})
	info := create(t, b2, compositor.Spec{SessionID: "s-open", User: "root"})
	if err := destroy(t, b2, info.SessionID); err != nil {
		t.Fatal(err)
	}
	if len(fg.removed) != 0 {
		t.Fatalf("unguarded session removed ports %v from the guard", fg.removed)
	}
}

func TestStartFailure(t *testing.T) {
	tests := []struct {
		name    string
		mode    string
		advance bool // move the fake clock past StartTimeout
		cancel  bool // cancel Create's context instead
		want    error
		tail    string
	}{
		{name: "exits", mode: "exit1", want: ErrStartFailed, tail: "boom"},
		{name: "timeout", mode: "hang", advance: true, want: ErrStartFailed, tail: "started"},
		{name: "cancelled", mode: "hang", cancel: true, want: context.Canceled, tail: "started"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := helperConfig(t)
			cfg.StartTimeout = time.Minute
			b, fc := newBackend(t, cfg)
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			errc := make(chan error, 1)
			go func() {
				_, err := b.Create(ctx, helperSpec("f", tt.mode))
				errc <- err
			}()
			if tt.advance || tt.cancel {
				// Wait until the helper runs and Create waits for it.
				logPath := filepath.Join(cfg.StateDir, "f", logName)
				deadline := time.Now().Add(waitLimit)
				for {
					if b, _ := os.ReadFile(logPath); bytes.Contains(b, []byte("started")) && fc.Pending() >= 2 {
						break
					}
					if time.Now().After(deadline) {
						t.Fatalf("helper did not start")
					}
					time.Sleep(5 * time.Millisecond)
				}
				if tt.advance {
					fc.Advance(cfg.StartTimeout)
				} else {
					cancel()
				}
			}
			err := testutil.Recv(t, errc, waitLimit, "Create did not return")
			if !errors.Is(err, tt.want) || !strings.Contains(err.Error(), tt.tail) {
				t.Fatalf("Create err = %v; want %v with log tail %q", err, tt.want, tt.tail)
			}
			if _, err := os.Stat(filepath.Join(cfg.StateDir, "f")); !errors.Is(err, os.ErrNotExist) {
				t.Fatalf("state dir after failed Create: %v; want removed", err)
			}
			if list, _ := b.List(context.Background()); len(list) != 0 {
				t.Fatalf("List = %+v; want none", list)
			}
			noExit(t, b)
		})
	}
}

func TestDestroyEscalates(t *testing.T) {
	cfg := helperConfig(t)
	cfg.StopGrace = time.Minute
	b, fc := newBackend(t, cfg)
	info := create(t, b, helperSpec("stubborn", "ignore-term"))
	pending := fc.Pending() // the poll tick
	errc := make(chan error, 1)
	go func() { errc <- destroy(t, b, "stubborn") }()
	deadline := time.Now().Add(waitLimit)
	for fc.Pending() <= pending {
		if time.Now().After(deadline) {
			t.Fatalf("Destroy did not start its grace timer")
		}
		time.Sleep(5 * time.Millisecond)
	}
	if !alive(info.PID) {
		t.Fatalf("pid %d died of SIGTERM; the helper should ignore it", info.PID)
	}
	fc.Advance(cfg.StopGrace)
	if err := testutil.Recv(t, errc, waitLimit, "Destroy did not return after the grace period"); err != nil {
		t.Fatalf("Destroy: %v", err)
	}
	if alive(info.PID) {
		t.Fatalf("pid %d alive after Destroy", info.PID)
	}
	noExit(t, b)
}

func TestMaxSessions(t *testing.T) {
	cfg := helperConfig(t)
	cfg.MaxSessions = 1
	b, _ := newBackend(t, cfg)
	create(t, b, helperSpec("one", "listen"))
	if _, err := b.Create(context.Background(), helperSpec("two", "listen")); !errors.Is(err, ErrTooManySessions) || !errors.Is(err, compositor.ErrFull) {
		t.Fatalf("Create over the limit err = %v; want ErrTooManySessions wrapping compositor.ErrFull", err)
	}
	if err := destroy(t, b, "one"); err != nil {
		t.Fatal(err)
	}
	create(t, b, helperSpec("two", "listen"))
	if err := destroy(t, b, "two"); err != nil {
		t.Fatal(err)
	}
}

func TestCreateOverLeftover(t *testing.T) {
	cfg := helperConfig(t)
	b, _ := newBackend(t, cfg)
	writeStale(t, cfg.StateDir, "left", &record{PID: 12345, BootID: "x"})
	if _, err := b.Create(context.Background(), helperSpec("left", "listen")); !errors.Is(err, ErrExists) {
		t.Fatalf("Create over a leftover dir err = %v; want ErrExists", err)
	}
	if _, err := os.Stat(filepath.Join(cfg.StateDir, "left", recordName)); err != nil {
		t.Fatalf("leftover record: %v; want it untouched for Adopt", err)
	}
	if list, _ := b.List(context.Background()); len(list) != 0 {
		t.Fatalf("List = %+v; want none", list)
	}
}

func TestLogRotation(t *testing.T) {
	cfg := helperConfig(t)
	cfg.LogMaxBytes = 1024
	cfg.PollInterval = time.Second
	b, fc := newBackend(t, cfg)
	create(t, b, helperSpec("chatty", "chatty"))
	logPath := filepath.Join(cfg.StateDir, "chatty", logName)
	if fi, err := os.Stat(logPath); err != nil || fi.Size() != 4096 {
		t.Fatalf("weston.log = %v, %v; want 4096 bytes", fi, err)
	}
	fc.Advance(time.Second)
	if fi, err := os.Stat(logPath); err != nil || fi.Size() != 0 {
		t.Fatalf("weston.log after rotation = %v, %v; want 0 bytes", fi, err)
	}
	if fi, err := os.Stat(logPath + ".1"); err != nil || fi.Size() != cfg.LogMaxBytes {
		t.Fatalf("weston.log.1 = %v, %v; want %d bytes", fi, err, cfg.LogMaxBytes)
	}
	// The next tick leaves a small log alone and the tick keeps running.
	fc.Advance(time.Second)
	if fc.Pending() != 1 {
		t.Fatalf("pending timers = %d; want the poll tick", fc.Pending())
	}
	if err := destroy(t, b, "chatty"); err != nil {
		t.Fatal(err)
	}
}

func TestClosed(t *testing.T) {
	b, _ := newBackend(t, helperConfig(t))
	if err := b.Close(); err != nil {
		t.Fatal(err)
	}
	if err := b.Close(); err != nil {
		t.Fatalf("second Close = %v; want nil", err)
	}
	ctx := context.Background()
	if _, err := b.Create(ctx, helperSpec("x", "listen")); !errors.Is(err, ErrClosed) {
		t.Fatalf("Create err = %v; want ErrClosed", err)
	}
	if err := destroy(t, b, "x"); !errors.Is(err, ErrClosed) {
		t.Fatalf("Destroy err = %v; want ErrClosed", err)
	}
	if err := b.Suspend(ctx, "x"); !errors.Is(err, ErrClosed) {
		t.Fatalf("Suspend err = %v; want ErrClosed", err)
	}
	if _, ok := <-b.Exits(); ok {
		t.Fatalf("Exits open after Close")
	}
}

// procUID returns the real and effective uid of pid.
func procUID(t *testing.T, pid int) (string, string) {
	t.Helper()
	status, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/status")
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range strings.Split(string(status), "\n") {
		if f := strings.Fields(l); len(f) >= 3 && f[0] == "Uid:" {
			return f[1], f[2]
		}
	}
	t.Fatalf("no Uid line for pid %d", pid)
	return "", ""
}

// TestRunAsUser: a regular local user's desktop runs as that user; root,
// nobody, system accounts and users unknown to NSS get a pooled kiosk
// account with a fresh home; nothing ever runs as uid 0.
func TestRunAsUser(t *testing.T) {
	requireWeston(t)
	testutil.NeedRoot(t, "needs root")
	const regular = "hdwestonuser"
	if _, err := user.Lookup(regular); err != nil {
		testutil.RemoveAccountAfter(t, regular)
		if out, err := exec.Command("useradd", "--user-group", "--no-create-home", "--shell", "/usr/sbin/nologin", regular).CombinedOutput(); err != nil {
			t.Fatalf("useradd: %v: %s", err, out)
		}
	}
	u, err := user.Lookup(regular)
	if err != nil {
		t.Fatal(err)
	}
	// A state dir below a 0700 parent, like the default data_dir.
	parent := filepath.Join(stateDir(t), "data")
	if err := os.Mkdir(parent, 0o700); err != nil {
		t.Fatal(err)
	}
	pool := testutil.KioskAccountPrefix(t) // its accounts removed after the backend closes
	var logs testutil.LockedBuffer
	b, _ := newBackend(t, Config{StateDir: filepath.Join(parent, "sessions"), RunAsUser: true, KioskAccountPrefix: pool, MaxKioskAccounts: 8, MaxUserTasks: 777,
		Logger: hclog.New(&hclog.LoggerOptions{Output: &logs, Level: hclog.Info})})
	// The PAM session's limits (pam_limits): applied, within the daemon's
	// own hard limits (nofile's "unlimited"), the task limit the lower
	// of the session's and MaxUserTasks.
	var own unix.Rlimit
	if err := unix.Getrlimit(unix.RLIMIT_NOFILE, &own); err != nil {
		t.Fatal(err)
	}
	info := create(t, b, compositor.Spec{SessionID: "u", User: regular, Limits: []rlimit.Limit{
		{Resource: "nofile", Soft: 900, Hard: rlimit.Infinity}, {Resource: "nproc", Soft: 500, Hard: 1000}, {Resource: "bogus", Soft: 1, Hard: 1}}})
	dial(t, info.Endpoint)
	if r, e := procUID(t, info.PID); r != u.Uid || e != u.Uid {
		t.Fatalf("weston uid %s/%s; want %s", r, e, u.Uid)
	}
	lim, err := os.ReadFile(fmt.Sprintf("/proc/%d/limits", info.PID))
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{fmt.Sprintf(`(?m)^Max open files\s+900\s+%d\s`, own.Max), `(?m)^Max processes\s+500\s+777\s`} {
		if !regexp.MustCompile(want).Match(lim) {
			t.Errorf("weston's limits with the session's:\n%s\nwant %s", lim, want)
		}
	}
	// Said at info, and what was kept lower than asked at warn.
	if l := logs.String(); !strings.Contains(l, "[INFO]  desktop resource limits from its PAM session") ||
		!strings.Contains(l, "asked=--nofile=900:unlimited") {
		t.Errorf("the log does not say the desktop's limits and the one kept lower:\n%s", l)
	}
	sdir := filepath.Join(b.cfg.StateDir, "u")
	if got := perm(t, sdir); got != 0o710 {
		t.Fatalf("session dir mode = %v; want 0710", got)
	}
	if err := destroy(t, b, "u"); err != nil {
		t.Fatal(err)
	}
	if alive(info.PID) {
		t.Fatalf("pid %d alive after Destroy", info.PID)
	}

	// Pooled: two at once get two accounts, never root.
	seen := map[string]bool{}
	for _, who := range []string{"root", "nobody", "no-such-user-hd"} {
		id := "p-" + strings.ReplaceAll(who, "-", "")
		info := create(t, b, compositor.Spec{SessionID: id, User: who})
		r, e := procUID(t, info.PID)
		if r == "0" || e == "0" || r == u.Uid {
			t.Fatalf("%s: weston uid %s/%s; want a pooled account", who, r, e)
		}
		acct, err := user.LookupId(r)
		if err != nil || !strings.HasPrefix(acct.Username, pool) {
			t.Fatalf("%s: weston runs as %v, %v; want a %s account", who, acct, err, pool)
		}
		if seen[acct.Username] {
			t.Fatalf("%s: account %s handed out twice", who, acct.Username)
		}
		seen[acct.Username] = true
		home := filepath.Join(b.cfg.StateDir, id, "home")
		if fi, err := os.Stat(home); err != nil || fi.Sys().(*syscall.Stat_t).Uid != mustAtoi(t, r) {
			t.Fatalf("%s: home %s: %v; want owned by the account", who, home, err)
		}
		// Its tasks are bounded (RLIMIT_NPROC), not hotdeskd's service's.
		if lim, err := os.ReadFile(fmt.Sprintf("/proc/%d/limits", info.PID)); err != nil || !regexp.MustCompile(`(?m)^Max processes\s+777\s+777\s`).Match(lim) {
			t.Fatalf("%s: weston's limits %s, %v; want Max processes 777", who, lim, err)
		}
		// Its log counts against the account's quota, not root's reserve.
		logPath := filepath.Join(b.cfg.StateDir, id, logName)
		if fi, err := os.Stat(logPath); err != nil || fi.Sys().(*syscall.Stat_t).Uid != mustAtoi(t, r) || fi.Mode().Perm() != 0o600 {
			t.Fatalf("%s: %s: %v, %v; want mode 0600, owned by the account", who, logPath, fi, err)
		}
		// Its weston.ini too: weston reads it as the account.
		iniPath := filepath.Join(b.cfg.StateDir, id, iniName)
		if fi, err := os.Stat(iniPath); err != nil || fi.Sys().(*syscall.Stat_t).Uid != mustAtoi(t, r) || fi.Mode().Perm() != 0o600 {
			t.Fatalf("%s: %s: %v, %v; want mode 0600, owned by the account", who, iniPath, fi, err)
		}
	}
	for id := range map[string]bool{"p-root": true, "p-nobody": true, "p-nosuchuserhd": true} {
		if err := destroy(t, b, id); err != nil {
			t.Fatal(err)
		}
	}

	// Without run_as_user, a daemon running as root refuses.
	cfg := helperConfig(t)
	cfg.AllowRoot = false
	strict, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer strict.Close()
	if _, err := strict.Create(context.Background(), helperSpec("r", "serve")); !errors.Is(err, ErrRootDesktop) {
		t.Fatalf("Create as root err = %v; want ErrRootDesktop", err)
	}
}

// TestPooledAccountLeavesNoFiles: a pooled account serves one person's
// session after another's, so what a session left in the shared temporary
// directories (/tmp, /var/tmp, /dev/shm) as that account is removed when
// the session ends: the next session of the account, someone else's,
// cannot read it (downloads, documents, browser caches) nor find files
// planted for it. Only the account's own entries go; a link it left is
// removed, never followed.
func TestPooledAccountLeavesNoFiles(t *testing.T) {
	needPooledAccounts(t)
	b, uid, acct := pooledKioskSession(t)

	// What the session leaves, written as its account.
	victim := filepath.Join(t.TempDir(), "victim")
	if err := os.WriteFile(victim, []byte("root's"), 0o600); err != nil {
		t.Fatal(err)
	}
	name := func(dir, what string) string { return filepath.Join(dir, acct.Username+"-"+what) }
	left := []string{name("/tmp", "file"), name("/tmp", "dir"), name("/tmp", "link"), name("/var/tmp", "file"), name("/dev/shm", "file")}
	theirs := name("/tmp", "roots") // root's own entry: stays
	t.Cleanup(func() {
		for _, p := range append(left, theirs) {
			os.RemoveAll(p)
		}
	})
	script := fmt.Sprintf("set -e; echo secret > %s; mkdir -p %s/sub; echo secret > %s/sub/f; chmod 0777 %s; ln -s %s %s; echo secret > %s; echo secret > %s",
		left[0], left[1], left[1], left[1], victim, left[2], left[3], left[4])
	if out, err := exec.Command("setpriv", "--reuid="+uid, "--regid="+acct.Gid, "--clear-groups", "sh", "-c", script).CombinedOutput(); err != nil {
		t.Fatalf("as %s: %v: %s", acct.Username, err, out)
	}
	if err := os.WriteFile(theirs, []byte("x"), 0o600); err != nil {
		t.Fatal(err)
	}

	if err := destroy(t, b, "k"); err != nil {
		t.Fatal(err)
	}
	for _, p := range left {
		if _, err := os.Lstat(p); !errors.Is(err, fs.ErrNotExist) {
			t.Errorf("%s left by the session's account: %v; want it removed with the session", p, err)
		}
	}
	if _, err := os.Stat(theirs); err != nil {
		t.Errorf("root's %s: %v; want it kept", theirs, err)
	}
	if b, err := os.ReadFile(victim); err != nil || string(b) != "root's" {
		t.Errorf("the link's target %s: %q, %v; want it untouched", victim, b, err)
	}
}

// TestPooledAccountLeavesNoIPC: System V shared memory, message queues and
// semaphores outlive their processes; those of a pooled account are
// removed when its session ends (as logind's RemoveIPC does for a user),
// so the account's next session cannot attach a segment the last one left
// (a window's pixels). Other users' objects stay.
func TestPooledAccountLeavesNoIPC(t *testing.T) {
	needPooledAccounts(t)
	testutil.NeedTools(t, "ipcmk", "ipcrm")
	b, uid, acct := pooledKioskSession(t)
	// ipcmk prints "Shared memory id: N" (and the like); N is the object.
	mk := func(as []string, flags ...string) string {
		t.Helper()
		out, err := exec.Command(as[0], append(as[1:], append([]string{"ipcmk"}, flags...)...)...).CombinedOutput()
		i := strings.LastIndex(string(out), ": ")
		if err != nil || i < 0 {
			t.Fatalf("ipcmk %v: %v: %s", flags, err, out)
		}
		return strings.TrimSpace(string(out[i+2:]))
	}
	asAcct := []string{"setpriv", "--reuid=" + uid, "--regid=" + acct.Gid, "--clear-groups"}
	asRoot := []string{"env"}
	left := map[string]string{"shm": mk(asAcct, "-M", "4096"), "msg": mk(asAcct, "-Q"), "sem": mk(asAcct, "-S", "1")}
	rootShm := mk(asRoot, "-M", "4096")
	t.Cleanup(func() {
		exec.Command("ipcrm", "-m", rootShm).Run()
		exec.Command("ipcrm", "-m", left["shm"], "-q", left["msg"], "-s", left["sem"]).Run()
	})
	// listed reports whether /proc/sysvipc/kind lists object id.
	listed := func(kind, id string) bool {
		b, err := os.ReadFile("/proc/sysvipc/" + kind)
		if err != nil {
			t.Fatal(err)
		}
		for _, l := range strings.Split(string(b), "\n")[1:] {
			if f := strings.Fields(l); len(f) > 1 && f[1] == id {
				return true
			}
		}
		return false
	}
	for kind, id := range left {
		if !listed(kind, id) {
			t.Fatalf("%s %s not listed after ipcmk", kind, id)
		}
	}

	if err := destroy(t, b, "k"); err != nil {
		t.Fatal(err)
	}
	for kind, id := range left {
		if listed(kind, id) {
			t.Errorf("%s %s of the session's account left after the session; want it removed", kind, id)
		}
	}
	if !listed("shm", rootShm) {
		t.Errorf("root's shm %s removed; want it kept", rootShm)
	}
}

// hopperSource is a process that keeps changing its pid (it forks, the
// parent exits, the child waits 0.2 ms and does it again), appending a byte
// to its standard output at every step; every copy gives up after 30 s.
const hopperSource = `#include <unistd.h>
#include <time.h>
int main(void) {
	time_t end = time(0) + 30;
	setsid();
	for (;;) {
		struct timespec ts = {0, 200000};
		if (time(0) > end) _exit(0);
		if (write(1, "x", 1) < 0) _exit(0);
		pid_t p = fork();
		if (p > 0) _exit(0);
		nanosleep(&ts, 0);
	}
}
`

// TestPooledAccountKillsHoppingProcess: a process of a pooled account that
// keeps changing its pid is killed with the session all the same (scanning
// /proc and killing pid by pid never caught it: it lived on into the
// account's next session, someone else's, whose desktop it may use). The
// check: its output stops growing once the session is destroyed.
func TestPooledAccountKillsHoppingProcess(t *testing.T) {
	needPooledAccounts(t)
	testutil.NeedTools(t, "cc")
	dir := t.TempDir()
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	src, hopper, out := filepath.Join(dir, "hopper.c"), filepath.Join(dir, "hopper"), filepath.Join(dir, "out")
	if err := os.WriteFile(src, []byte(hopperSource), 0o644); err != nil {
		t.Fatal(err)
	}
	if b, err := exec.Command("cc", "-O2", "-o", hopper, src).CombinedOutput(); err != nil {
		t.Fatalf("cc: %v: %s", err, b)
	}
	b, uid, acct := pooledKioskSession(t)
	f, err := os.OpenFile(out, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o666)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	cmd := exec.Command("setpriv", "--reuid="+uid, "--regid="+acct.Gid, "--clear-groups", hopper)
	cmd.Stdout = f
	if err := cmd.Run(); err != nil { // its first copy exits at once
		t.Fatalf("hopper: %v", err)
	}
	t.Cleanup(func() { // whatever the outcome: every process of the account
		exec.Command("setpriv", "--reuid="+uid, "--regid="+acct.Gid, "--clear-groups", "/bin/sh", "-c", "kill -9 -1").Run()
	})
	size := func() int64 {
		fi, err := f.Stat()
		if err != nil {
			t.Fatal(err)
		}
		return fi.Size()
	}
	for start := size(); size() == start; {
		runtime.Gosched() // it runs
	}

	if err := destroy(t, b, "k"); err != nil {
		t.Fatal(err)
	}
	// A live hopper writes every 0.2 ms or so; one second of silence
	// means none is left.
	after := size()
	deadline := time.Now().Add(time.Second)
	for time.Now().Before(deadline) {
		if size() != after {
			t.Fatalf("a process of %s still runs after its session was destroyed (its output grew from %d to %d bytes)", acct.Username, after, size())
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func mustAtoi(t *testing.T, s string) uint32 {
	t.Helper()
	n, err := strconv.Atoi(s)
	if err != nil {
		t.Fatal(err)
	}
	return uint32(n)
}

// TestCloseReleasesLockHeldByChild: a child forked by another goroutine
// holds a copy of the lock's descriptor until it execs (here: a dup of
// it). Close must release the lock all the same, so a new Backend on the
// same state directory (a restart within the process) gets it at once.
func TestCloseReleasesLockHeldByChild(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	b1, _ := newBackend(t, Config{StateDir: dir})
	child, err := syscall.Dup(int(b1.lock.Fd()))
	if err != nil {
		t.Fatal(err)
	}
	defer syscall.Close(child)
	if err := b1.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	b2, _ := newBackend(t, Config{StateDir: dir})
	b2.Close()
}

// TestAccountLockDirPrivate: the pooled accounts' locks live only in a
// directory no other user can write to (in one they could, any user could
// take every account's lock and refuse every pooled desktop).
func TestAccountLockDirPrivate(t *testing.T) {
	t.Parallel()
	base := t.TempDir()
	ok := filepath.Join(base, "new")
	if err := privateDir(ok); err != nil {
		t.Fatalf("a new directory: %v", err)
	}
	if fi, err := os.Stat(ok); err != nil || fi.Mode().Perm() != 0o700 {
		t.Fatalf("created %v, %v; want mode 0700", fi.Mode(), err)
	}
	open := filepath.Join(base, "open")
	os.Mkdir(open, 0o700)
	os.Chmod(open, 0o1777)
	link := filepath.Join(base, "link")
	os.Symlink(ok, link)
	bad := map[string]string{"world-writable": open, "a symbolic link": link}
	if os.Geteuid() == 0 {
		theirs := filepath.Join(base, "theirs")
		os.Mkdir(theirs, 0o700)
		os.Chown(theirs, 65534, 65534)
		bad["another user's"] = theirs
	}
	for what, dir := range bad {
		if err := privateDir(dir); err == nil {
			t.Errorf("%s directory accepted for account locks", what)
		}
	}
}

// deadProcess runs a process to its end and returns its pid and start
// time: a record of it names a process that is gone.
func deadProcess(t *testing.T) (pid int, startTicks uint64) {
	t.Helper()
	dead := exec.Command("/bin/true")
	if err := dead.Start(); err != nil {
		t.Fatal(err)
	}
	st, _ := procsup.ReadStat("/proc", dead.Process.Pid)
	dead.Wait()
	return dead.Process.Pid, st.StartTicks
}

// needPooledAccounts ends t (testutil.SkipOrFail) unless it can run
// pooledKioskSession and act as its account: weston, root (useradd) and
// setpriv.
func needPooledAccounts(t *testing.T) {
	t.Helper()
	requireWeston(t)
	testutil.NeedRoot(t, "needs root")
	testutil.NeedTools(t, "setpriv")
}

// pooledKioskSession starts session "k" of a backend with a pool of two
// kiosk accounts (removed afterwards), as a kiosk login of nobody gets one,
// and returns the backend and the pooled account weston runs as.
func pooledKioskSession(t *testing.T) (b *Backend, uid string, acct *user.User) {
	t.Helper()
	pool := testutil.KioskAccountPrefix(t)
	b, _ = newBackend(t, Config{StateDir: filepath.Join(stateDir(t), "sessions"), RunAsUser: true, KioskAccountPrefix: pool, MaxKioskAccounts: 2})
	info := create(t, b, compositor.Spec{SessionID: "k", User: "nobody"})
	uid, _ = procUID(t, info.PID)
	acct, err := user.LookupId(uid)
	if err != nil || !strings.HasPrefix(acct.Username, pool) {
		t.Fatalf("weston runs as %v, %v; want a %s account", acct, err, pool)
	}
	return b, uid, acct
}

// TestAccountLockFilesRemoved: a pooled account's lock file goes when the
// account is released, and a new pool removes the lock files nobody holds
// (a dead daemon's): they piled up in /run/hotdesk-accounts, one per
// account of every prefix ever used. A lock another process holds stays.
func TestAccountLockFilesRemoved(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "locks")
	if err := os.Mkdir(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	lockPath := func(account string) string { return filepath.Join(dir, "hotdesk-"+account+".lock") }
	exists := func(account string) bool {
		_, err := os.Lstat(lockPath(account))
		if err != nil && !errors.Is(err, fs.ErrNotExist) {
			t.Fatal(err)
		}
		return err == nil
	}
	if err := os.WriteFile(lockPath("hdtdead1"), nil, 0o600); err != nil {
		t.Fatal(err)
	}
	held, err := procsup.LockFile(lockPath("hdtheld1"))
	if err != nil {
		t.Fatal(err)
	}
	defer held.Unlock()

	prefix := testutil.KioskAccountPrefix(t)
	p := newAccountPoolIn(dir, prefix, 2, testLogger(t))
	if p.lockErr != nil {
		t.Fatal(p.lockErr)
	}
	if exists("hdtdead1") {
		t.Error("a lock nobody holds survived a new pool")
	}
	if !exists("hdtheld1") {
		t.Error("a held lock was removed by a new pool")
	}

	// An adopted session's account (no such account here: nothing to kill).
	acct := prefix + "1"
	p.markUsed(acct, "s")
	if !exists(acct) {
		t.Fatalf("no lock file for %s in use", acct)
	}
	p.release(acct, t.TempDir(), nil)
	if exists(acct) {
		t.Errorf("lock file of %s left after its release", acct)
	}

	testutil.NeedRoot(t, "acquiring a pooled account needs root (useradd)")
	u, err := p.acquire("s2")
	if err != nil {
		t.Fatal(err)
	}
	if !exists(u.Username) {
		t.Fatalf("no lock file for %s in use", u.Username)
	}
	p.release(u.Username, "/proc", nil)
	if exists(u.Username) {
		t.Errorf("lock file of %s left after its release", u.Username)
	}
}

// TestOwnSession: a desktop runs in a session of its own, without a
// controlling terminal. In hotdeskd's session it would share the daemon's
// controlling terminal (a root shell's, when an administrator runs
// `sudo hotdeskd` or hotdeskd from a root shell), and any program of the
// desktop's user could open /dev/tty and push commands into that root
// shell's input (TIOCSTI); it could also move its processes into another
// desktop's process group (setpgid works within a session, whatever the
// uid), which that desktop's end then waits for and kills.
func TestOwnSession(t *testing.T) {
	b, _ := newBackend(t, helperConfig(t))
	info := create(t, b, helperSpec("sess", "listen"))
	st, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", info.PID))
	if err != nil {
		t.Fatal(err)
	}
	// pid (comm) state ppid pgrp session tty_nr ...; comm may hold spaces.
	f := strings.Fields(string(st[bytes.LastIndexByte(st, ')')+1:]))
	if len(f) < 5 {
		t.Fatalf("/proc/%d/stat: %q", info.PID, st)
	}
	pgrp, sid, tty := f[2], f[3], f[4]
	if want := strconv.Itoa(info.PID); sid != want || pgrp != want {
		t.Fatalf("compositor pid %d: process group %s, session %s; want both its own, not hotdeskd's", info.PID, pgrp, sid)
	}
	if tty != "0" {
		t.Fatalf("compositor pid %d has controlling terminal %s; want none", info.PID, tty)
	}
	if err := destroy(t, b, "sess"); err != nil {
		t.Fatal(err)
	}
	groupGone(t, info.PID) // the group (= session) is still what Destroy kills
}

// TestPooledAccountLeavesNoCrontab: a pooled account serves one person's
// session after another's, and cron runs an account's table whether or
// not a session of it runs: a job a session left (crontab from a terminal
// of the desktop) would run, as the account, during the account's next
// session, someone else's: their fresh home and their desktop's socket are
// the account's. The table goes with the session.
func TestPooledAccountLeavesNoCrontab(t *testing.T) {
	needPooledAccounts(t)
	crontab := testutil.NeedTool(t, "crontab") // Debian package cron
	b, uid, acct := pooledKioskSession(t)
	t.Cleanup(func() { exec.Command(crontab, "-u", acct.Username, "-r").Run() })
	cmd := exec.Command("setpriv", "--reuid="+uid, "--regid="+acct.Gid, "--clear-groups", crontab, "-")
	cmd.Stdin = strings.NewReader("* * * * * cat /proc/[0-9]*/environ > /dev/null\n")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("crontab as %s: %v: %s", acct.Username, err, out)
	}
	if out, err := exec.Command(crontab, "-u", acct.Username, "-l").CombinedOutput(); err != nil {
		t.Fatalf("the session's crontab is not there: %v: %s", err, out)
	}
	if err := destroy(t, b, "k"); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command(crontab, "-u", acct.Username, "-l").CombinedOutput(); err == nil {
		t.Fatalf("%s's crontab after its session ended:\n%s\nwant none", acct.Username, out)
	}
}

// TestPooledAccountLeavesNoAtJob: as with a cron table, a job a session
// queued with at(1) (or batch) runs as the account whenever it is due,
// during the account's next session, someone else's. It goes with the
// session.
func TestPooledAccountLeavesNoAtJob(t *testing.T) {
	needPooledAccounts(t)
	at := testutil.NeedTool(t, "at") // Debian package at
	b, uid, acct := pooledKioskSession(t)
	jobs := func() []string {
		t.Helper()
		out, err := exec.Command("atq").CombinedOutput()
		if err != nil {
			t.Fatalf("atq: %v: %s", err, out)
		}
		var ids []string
		for _, l := range strings.Split(string(out), "\n") {
			if f := strings.Fields(l); len(f) > 1 && f[len(f)-1] == acct.Username {
				ids = append(ids, f[0])
			}
		}
		return ids
	}
	t.Cleanup(func() {
		if ids := jobs(); len(ids) > 0 {
			exec.Command("atrm", ids...).Run()
		}
	})
	cmd := exec.Command("setpriv", "--reuid="+uid, "--regid="+acct.Gid, "--clear-groups", at, "now", "+", "1", "hour")
	cmd.Stdin = strings.NewReader("cat /proc/[0-9]*/environ > /dev/null\n")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("at as %s: %v: %s", acct.Username, err, out)
	}
	if len(jobs()) != 1 {
		t.Fatalf("the session's at job is not queued")
	}
	if err := destroy(t, b, "k"); err != nil {
		t.Fatal(err)
	}
	if ids := jobs(); len(ids) > 0 {
		t.Fatalf("%s's at jobs %v after its session ended; want none", acct.Username, ids)
	}
}

// TestAccountToolsFoundAtStart: the tools the account pool runs as root
// (or as a pooled account) are the ones PATH held when it started: one
// put later in a directory of PATH ahead of them is never run. Not
// parallel: it sets PATH.
func TestAccountToolsFoundAtStart(t *testing.T) {
	newAccountPoolIn(t.TempDir(), "hdtools", 1, hclog.NewNullLogger()) // a start
	want, err := tool("ipcrm")
	if err != nil {
		t.Fatal(err) // util-linux: always there
	}
	planted := t.TempDir()
	if err := os.WriteFile(filepath.Join(planted, "ipcrm"), []byte("#!/bin/sh\nexit 0\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	t.Setenv("PATH", planted+":"+os.Getenv("PATH"))
	if got, err := tool("ipcrm"); err != nil || got != want {
		t.Errorf("ipcrm after one was planted ahead in PATH: %q, %v; want %q, found at start", got, err, want)
	}
	if _, err := tool("no-such-tool"); !errors.Is(err, exec.ErrNotFound) {
		t.Errorf("a tool not found: err = %v; want %v", err, exec.ErrNotFound)
	}
}

// TestRotateLogLeased: a log its owner holds a lease on (F_SETLEASE: an
// open by anyone else then waits for the lease break time, 45 s, and every
// session's tick with it) is not waited for: busy this time (EWOULDBLOCK;
// the kernel tells the holder to give the lease up), rotated at a later
// tick.
func TestRotateLogLeased(t *testing.T) {
	t.Parallel()
	path := filepath.Join(t.TempDir(), logName)
	if err := os.WriteFile(path, bytes.Repeat([]byte("x"), 100), 0o600); err != nil {
		t.Fatal(err)
	}
	f, err := os.OpenFile(path, os.O_WRONLY, 0) // the file's only descriptor, as a lease needs
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := unix.FcntlInt(f.Fd(), unix.F_SETLEASE, unix.F_WRLCK); err != nil {
		t.Fatalf("F_SETLEASE: %v", err)
	}
	rotated, err := rotateLog(path, 10)
	if rotated || !errors.Is(err, syscall.EWOULDBLOCK) {
		t.Errorf("rotateLog of a leased log = %v, %v; want not rotated, %v", rotated, err, syscall.EWOULDBLOCK)
	}
	if _, err := unix.FcntlInt(f.Fd(), unix.F_SETLEASE, unix.F_UNLCK); err != nil {
		t.Fatal(err)
	}
	if rotated, err := rotateLog(path, 10); !rotated || err != nil {
		t.Errorf("rotateLog once the lease is gone = %v, %v; want rotated", rotated, err)
	}
}

// TestRunAsUserWithoutPrlimit: without prlimit(1) in the PATH, desktops
// run as their users without a task limit (max_user_tasks = 0) start as
// they did before the PAM session's limits were applied: New succeeds
// (the session's limits are then not applied, and said so); with a task
// limit New refuses, as before.
func TestRunAsUserWithoutPrlimit(t *testing.T) {
	testutil.NeedRoot(t, "run_as_user needs root")
	cfg := helperConfig(t)
	cfg.RunAsUser = true
	t.Setenv("PATH", t.TempDir()) // no prlimit; the binary is a path
	b, err := New(cfg)
	if err != nil {
		t.Fatalf("New without prlimit, max_user_tasks 0: %v; want a backend (desktops start without the session's limits)", err)
	}
	b.Close()
	cfg.StateDir = stateDir(t)
	cfg.MaxUserTasks = 10
	if b, err := New(cfg); err == nil {
		b.Close()
		t.Fatal("New without prlimit, max_user_tasks 10: err = nil; want the task limit's error")
	}
}

// TestSuspendRecordUnwritable: a session record that cannot be written (a
// full disk) does not fail a hot-desk. The flag is the only change Suspend
// and Resume make to it, and the broker's own state is what counts: the
// session goes on, and the record is written again at the next change.
func TestSuspendRecordUnwritable(t *testing.T) {
	requireWeston(t)
	dir := stateDir(t)
	b, _ := newBackend(t, Config{StateDir: dir})
	ctx := context.Background()
	info := create(t, b, compositor.Spec{SessionID: "s-1", User: "root"})
	t.Cleanup(func() { _ = destroy(t, b, "s-1") })
	rec := filepath.Join(dir, "s-1", recordName)
	unblock := testutil.BlockFile(t, rec)
	if err := b.Suspend(ctx, "s-1"); err != nil {
		t.Fatalf("Suspend with the record unwritable: %v; want the session suspended", err)
	}
	got, err := b.Resume(ctx, "s-1")
	if err != nil || got.PID != info.PID || got.Suspended {
		t.Fatalf("Resume with the record unwritable = %+v, %v; want the session resumed", got, err)
	}
	unblock()
	// The disk has room again: the next Resume (no change of the flag)
	// writes the record it could not write before.
	if _, err := b.Resume(ctx, "s-1"); err != nil {
		t.Fatalf("Resume: %v", err)
	}
	if r := readRec(t, filepath.Join(dir, "s-1")); r.PID != info.PID || r.Suspended {
		t.Fatalf("session.json = %+v; want pid %d, not suspended", r, info.PID)
	}
	noExit(t, b)
}

// groupCommands returns the command names (argv[0]'s base) of the live
// processes of process group pgid, sorted.
func groupCommands(pgid int) []string {
	var names []string
	for _, pid := range liveInGroup(pgid) {
		b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/cmdline")
		if err != nil {
			continue
		}
		arg0, _, _ := strings.Cut(string(b), "\x00")
		names = append(names, filepath.Base(arg0))
	}
	slices.Sort(names)
	return names
}

// waitCommands waits until the commands of weston's (pid) process group
// are want (sorted): a helper being launched shows for a moment under
// another name (a fork not yet exec'd), so one look is not enough.
func waitCommands(t *testing.T, pid int, want []string) {
	t.Helper()
	deadline := time.Now().Add(waitLimit)
	for {
		names := groupCommands(pid)
		if slices.Equal(names, want) {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("weston's (pid %d) group runs %q; want %q", pid, names, want)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestHelperClients: a desktop runs weston and its desktop shell, not the
// on-screen keyboard (weston-keyboard, the input method weston starts by
// default): thin clients have keyboards, and each helper is a process per
// desktop and one more client weston 10's RDP backend can kill (it dies of
// "invalid global wl_seat" when an RDP peer leaves right after it came).
// The session's weston.ini says so; an administrator's own -c/--config is
// used as it is, and no weston.ini is written.
func TestHelperClients(t *testing.T) {
	requireWeston(t)
	b, _ := newBackend(t, Config{StateDir: stateDir(t)})
	info := create(t, b, compositor.Spec{SessionID: "hc", User: "root"})
	sdir := filepath.Join(b.cfg.StateDir, "hc")
	waitCommands(t, info.PID, []string{"weston", "weston-desktop-shell"})
	// And no keyboard after the shell either (weston may launch it last:
	// with the admin's configuration below it shows within milliseconds).
	for end := time.Now().Add(time.Second); time.Now().Before(end); time.Sleep(20 * time.Millisecond) {
		if names := groupCommands(info.PID); slices.Contains(names, "weston-keyboard") {
			t.Fatalf("the desktop runs %q; want no weston-keyboard", names)
		}
	}
	ini := filepath.Join(sdir, iniName)
	if got := perm(t, ini); got != 0o600 {
		t.Errorf("%s mode = %v; want 0600", ini, got)
	}
	if log, _ := os.ReadFile(filepath.Join(sdir, logName)); !bytes.Contains(log, []byte("Using config file '"+ini+"'")) {
		t.Errorf("weston.log does not show %s used:\n%s", ini, log)
	}
	if err := destroy(t, b, "hc"); err != nil {
		t.Fatal(err)
	}

	// The administrator's configuration: theirs, as it is.
	admin := filepath.Join(t.TempDir(), "admin.ini")
	if err := os.WriteFile(admin, []byte("[shell]\npanel-position=none\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	ab, _ := newBackend(t, Config{StateDir: stateDir(t), ExtraArgs: []string{"--config=" + admin}})
	info = create(t, ab, compositor.Spec{SessionID: "ha", User: "root"})
	sdir = filepath.Join(ab.cfg.StateDir, "ha")
	waitCommands(t, info.PID, []string{"weston", "weston-desktop-shell", "weston-keyboard"}) // weston's defaults
	if _, err := os.Stat(filepath.Join(sdir, iniName)); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("with the admin's config: %s: %v; want none written", iniName, err)
	}
	if log, _ := os.ReadFile(filepath.Join(sdir, logName)); !bytes.Contains(log, []byte("Using config file '"+admin+"'")) {
		t.Errorf("weston.log does not show %s used:\n%s", admin, log)
	}
	if err := destroy(t, ab, "ha"); err != nil {
		t.Fatal(err)
	}
}
