package main

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"

	"github.com/hotdesk/hotdesk/cmd/hotdeskd/config"
	"github.com/hotdesk/hotdesk/internal/clock"
	"github.com/hotdesk/hotdesk/internal/diskspace"
	"github.com/hotdesk/hotdesk/internal/testutil"
	"github.com/hotdesk/hotdesk/registry/etcdtest"
)

// TestDiskWatch: each filesystem is told once per change of level (a warn
// line under diskspace.Low, an error line under Critical, an info line
// when it has room again); two directories on one filesystem are told as
// one; every directory's room is exported.
func TestDiskWatch(t *testing.T) {
	t.Parallel()
	var buf bytes.Buffer
	log := hclog.New(&hclog.LoggerOptions{Output: &buf, Level: hclog.Info})
	cfg := &config.Config{DataDir: "/data"}
	cfg.Etcd.Endpoints = []string{"https://etcd:2379"} // not the embedded etcd
	cfg.Compositor.StateDir = "/data/sessions"
	w := newDiskWatch(log, cfg, clock.NewFake(time.Unix(1e9, 0)))
	free := map[string]uint64{"/data": 1 << 30, "/data/sessions": 1 << 30}
	dev := map[string]uint64{"/data": 1, "/data/sessions": 1}
	files := diskspace.NoFileLimit
	w.free = func(p string) (diskspace.Room, uint64, error) {
		if _, ok := free[p]; !ok {
			return diskspace.Room{}, 0, errors.New("no such directory")
		}
		return diskspace.Room{Bytes: free[p], Files: files}, dev[p], nil
	}
	lines := func() []string {
		out := strings.Split(strings.TrimSpace(buf.String()), "\n")
		buf.Reset()
		if len(out) == 1 && out[0] == "" {
			return nil
		}
		return out
	}
	step := func(data, sessions uint64, want ...string) {
		t.Helper()
		free["/data"], free["/data/sessions"] = data, sessions
		w.check()
		got := lines()
		if len(got) != len(want) {
			t.Fatalf("after free %d/%d: log %q; want %d lines %q", data, sessions, got, len(want), want)
		}
		for i := range want {
			for _, part := range strings.Split(want[i], "…") { // each part in the line
				if !strings.Contains(got[i], part) {
					t.Fatalf("after free %d/%d: line %q; want it to contain %q", data, sessions, got[i], part)
				}
			}
		}
	}
	step(1<<30, 1<<30)
	step(200<<20, 200<<20, "[WARN]  the disk is running out of room") // one filesystem: one line
	step(190<<20, 190<<20)                                            // told already
	step(10<<20, 10<<20, "[ERROR] the disk is full or nearly: no desktop can start there…free=\"10 MiB\"")
	step(20<<20, 20<<20)
	step(100<<20, 100<<20) // from full to low: nothing new to do
	step(1<<30, 1<<30, "[INFO]  the disk has room again")
	// Out of files (inodes) with bytes to spare: as full.
	files = 500
	step(1<<30, 1<<30, "[ERROR] the disk is full or nearly…free=\"1.0 GiB, 500 files\"")
	files = 1 << 20
	step(1<<30, 1<<30, "[INFO]  the disk has room again")
	if got := w.freeBytes(); got["data_dir"] != 1<<30 || got["compositor.state_dir"] != 1<<30 {
		t.Fatalf("freeBytes = %v", got)
	}

	// The desktops' state on a filesystem of its own, full: told apart,
	// with what it means there; -check's warnings name it.
	dev["/data/sessions"] = 2
	step(1<<30, 1<<20, "[ERROR] the disk is full or nearly: no desktop can start there…dir=compositor.state_dir")
	warns := w.warnings()
	if len(warns) != 1 || !strings.HasPrefix(warns[0], "compositor.state_dir /data/sessions: 1 MiB free: the disk is full") {
		t.Fatalf("warnings = %q", warns)
	}
	if _, ok := w.reserveBytes(); ok {
		t.Error("reserveBytes reported with an etcd cluster")
	}
	// With the embedded etcd in data_dir, a full data_dir stops the daemon.
	w.embedded = true
	free["/data"] = 100 << 20
	if warns := w.warnings(); len(warns) != 2 || !strings.Contains(warns[0], "the embedded etcd (in data_dir) stops hotdeskd") {
		t.Fatalf("warnings = %q", warns)
	}
}

// TestDiskWatchReserve: with the embedded etcd, room is set aside in
// data_dir while the disk has it to spare, given back when the disk has
// no room left (an error line saying so) but not while it is only nearly
// full (what fills it may still be writing), and the disk counts as full
// until the reserve is set aside again, however much room it shows
// meanwhile (that room is the etcd's).
func TestDiskWatchReserve(t *testing.T) {
	t.Parallel()
	var buf bytes.Buffer
	log := hclog.New(&hclog.LoggerOptions{Output: &buf, Level: hclog.Info})
	cfg := &config.Config{DataDir: t.TempDir()} // no etcd endpoints: the embedded etcd
	cfg.Compositor.StateDir = filepath.Join(cfg.DataDir, "sessions")
	clk := clock.NewFake(time.Unix(1e9, 0))
	w := newDiskWatch(log, cfg, clk)
	if w.reserve == nil || w.reserve.Path != filepath.Join(cfg.DataDir, reserveName) {
		t.Fatalf("reserve = %+v; want one in data_dir", w.reserve)
	}
	w.reserve.Size = 1 << 20 // the logic, not the size
	free := uint64(1 << 30)
	w.free = func(string) (diskspace.Room, uint64, error) {
		return diskspace.Room{Bytes: free, Files: diskspace.NoFileLimit}, 1, nil
	}
	step := func(f uint64, held bool, want ...string) {
		t.Helper()
		free = f
		w.check()
		got := strings.Split(strings.TrimSpace(buf.String()), "\n")
		buf.Reset()
		if len(got) == 1 && got[0] == "" {
			got = nil
		}
		if len(got) != len(want) {
			t.Fatalf("free %d: log %q; want %d lines %q", f, got, len(want), want)
		}
		for i := range want {
			if !strings.Contains(got[i], want[i]) {
				t.Fatalf("free %d: line %q; want it to contain %q", f, got[i], want[i])
			}
		}
		if w.reserve.Held() != held {
			t.Fatalf("free %d: reserve held %v; want %v", f, !held, held)
		}
		wantBytes := uint64(0)
		if held {
			wantBytes = uint64(w.reserve.Size)
		}
		if n, ok := w.reserveBytes(); n != wantBytes || !ok { // hotdesk_disk_reserve_bytes
			t.Fatalf("free %d: reserveBytes = %d, %v; want %d", f, n, ok, wantBytes)
		}
	}
	step(1<<30, true, "[INFO]  set 1 MiB aside for the embedded etcd")
	step(1<<30, true)
	step(200<<20, true, "[WARN]  the disk is running out of room") // low: kept
	// Full, but a copy may still be filling it: kept for when it is over.
	step(10<<20, true, "[ERROR] the disk is full or nearly")
	step(1<<20, false, "[ERROR] the disk is full: gave back the 1 MiB set aside")
	step(100<<20, false) // the etcd's room: still full, nothing new to say
	step(diskspace.Low+1<<19, false)
	step(diskspace.Low+2<<20, true, "[INFO]  set 1 MiB aside", "[INFO]  the disk has room again")
	// Out of room again with the reserve in place: given back again.
	step(0, false, "[ERROR] the disk is full: gave back", "[ERROR] the disk is full or nearly")
	if !w.near() {
		t.Error("near() = false on a full disk; want the checks every diskCheckNear")
	}
	// Room again, but the reserve cannot be set aside: said once, not at
	// every check, and the room counts as room. It is tried again only
	// holdRetry later (on a filesystem that keeps no room for it, each
	// try writes it whole).
	w.reserve.Path = filepath.Join(cfg.DataDir, "missing", reserveName)
	step(1<<30, false, "[ERROR] could not set room aside for the embedded etcd", "[INFO]  the disk has room again")
	step(1<<30, false)
	if w.near() {
		t.Error("near() = true with room again")
	}
	w.reserve.Path = filepath.Join(cfg.DataDir, reserveName) // it could be now
	clk.Advance(holdRetry - time.Second)
	step(1<<30, false)
	clk.Advance(time.Second)
	step(1<<30, true, "[INFO]  set 1 MiB aside")
	// Room, but not to spare for the reserve: said once (and by -check).
	if _, err := w.reserve.Release(); err != nil {
		t.Fatal(err)
	}
	step(diskspace.Low+1<<19, false, "[WARN]  not enough room on the disk of data_dir to set 1 MiB aside for the embedded etcd (it needs 257 MiB free)")
	step(diskspace.Low+1<<19, false)
	if warns := w.warnings(); len(warns) != 1 || !strings.Contains(warns[0], "not enough room on the disk of data_dir to set 1 MiB aside") {
		t.Errorf("warnings = %q; want the reserve's lack of room", warns)
	}
	step(diskspace.Low+2<<20, true, "[INFO]  set 1 MiB aside")
	if warns := w.warnings(); len(warns) != 0 {
		t.Errorf("warnings = %q with the reserve set aside; want none", warns)
	}
}

// TestDiskWatchExisting: a directory not made yet is measured on the
// nearest one above it.
func TestDiskWatchExisting(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	if got := existing(filepath.Join(dir, "a", "b")); got != dir {
		t.Fatalf("existing = %q; want %q", got, dir)
	}
	if got := existing(dir); got != dir {
		t.Fatalf("existing = %q; want %q", got, dir)
	}
}

// startOnSmallDisk starts the real daemon (kiosk logins, weston desktops)
// with its data_dir on a filesystem of size MiB (smallDataDir) and etcd
// as its etcd block ("": the embedded one); session holds lines for its
// session block. It returns the daemon and data_dir.
func startOnSmallDisk(t *testing.T, size int, etcd, session string) (*e2e, string) {
	t.Helper()
	testutil.NeedRoot(t, "mounts a tmpfs")
	testutil.NeedMatrix(t)
	testutil.NeedTools(t, "weston", "mount", "umount")
	bin := buildBinaries(t)
	dir := t.TempDir()
	data := smallDataDir(t, dir, size)
	pamDir := filepath.Join(dir, "pam.d")
	if err := os.MkdirAll(pamDir, 0o755); err != nil {
		t.Fatal(err)
	}
	addr := testutil.FreeAddr(t)
	cfg := testutil.DaemonConfig(t, "e2e", dir, addr, etcd) + fmt.Sprintf(`
session {
  auth = "kiosk"
%s}
auth {
  pam_dir = %q
  open_session = false
}
`, session, pamDir)
	e := newE2E(t, bin, dir, addr, cfg)
	e.start()
	return e, data
}

// smallDataDir mounts a tmpfs of size MiB on dir/data (mode 0700) for
// the test's life.
func smallDataDir(t *testing.T, dir string, size int) string {
	t.Helper()
	data := filepath.Join(dir, "data")
	if err := os.MkdirAll(data, 0o700); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command("mount", "-t", "tmpfs", "-o", fmt.Sprintf("size=%dm,mode=0700", size), "tmpfs", data).CombinedOutput(); err != nil {
		testutil.SkipOrFail(t, "mount a tmpfs: %v: %s", err, out)
	}
	t.Cleanup(func() { _ = exec.Command("umount", "-l", data).Run() })
	return data
}

// fillDisk writes the file path until its filesystem is full.
func fillDisk(t *testing.T, path string) {
	t.Helper()
	filler, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	defer filler.Close()
	chunk := make([]byte, 1<<20)
	for {
		if _, err := filler.Write(chunk); err != nil {
			return // full
		}
	}
}

// logged reports whether the daemon's log in dir holds s.
func logged(dir, s string) func() bool {
	return func() bool {
		b, _ := os.ReadFile(filepath.Join(dir, "hotdeskd.log"))
		return strings.Contains(string(b), s)
	}
}

// TestDiskFull runs the real daemon with its data_dir on a small
// filesystem and fills it: the error is logged, a new desktop is refused
// with a clear answer, but a person hot-desking to the desktop they
// already have still gets it; with room again, desktops start.
func TestDiskFull(t *testing.T) {
	t.Parallel() // its own daemon, data dir, ports and terminals
	// The registry on its own etcd: the embedded one, in a full data_dir,
	// stops the daemon (etcd's choice; the log says so in advance).
	eps := etcdtest.Start(t)
	e, data := startOnSmallDisk(t, 320, fmt.Sprintf("etcd {\n  endpoints = [%q]\n}", eps[0]), "  keep_on_stop = false\n")
	dir := e.dir
	kss := e.enrollAll("alice", "bob")
	first := e.present("t-1", kss[0])
	if first["event"] != "attached" {
		t.Fatalf("insert: %v", first)
	}
	// Over diskspace.Low, so that freeing it is "room again".
	fillDisk(t, filepath.Join(data, "filler"))
	waitUntil(t, "the full disk logged", logged(dir, "the disk is full or nearly"))

	// Her desktop runs: a hot-desk must not depend on a write to the disk.
	if again := e.present("t-2", kss[0]); again["event"] != "attached" || again["session"] != first["session"] {
		t.Fatalf("hot-desk with the disk full: %v; want session %v attached", again, first["session"])
	}
	if ev := e.present("t-3", kss[1]); ev["event"] != "error" || ev["name"] != "compositor" {
		t.Fatalf("a new desktop with the disk full: %v; want a compositor error", ev)
	}
	if err := os.Remove(filepath.Join(data, "filler")); err != nil {
		t.Fatal(err)
	}
	waitUntil(t, "room again logged", logged(dir, "the disk has room again"))
	if ev := e.present("t-3", kss[1]); ev["event"] != "attached" {
		t.Fatalf("a new desktop with room again: %v; want attached", ev)
	}
}

// TestDiskFullEmbeddedEtcd: the default layout, the embedded etcd in
// data_dir, on a small filesystem filled to its last byte by a copy that
// then stops. The daemon gives back the room it had set aside
// (data_dir/reserve) and goes on: hot-desks, each written to the
// registry, keep working. Should the fill have come between two checks and
// etcd's next write have stopped the daemon, its next start (systemd's
// Restart=on-failure; here the test's) gives the room back before etcd
// starts and adopts the desktop. With room again the reserve is set aside
// again; a daemon stopped, its disk filled meanwhile, starts and goes on.
// Before, the etcd's first commit that needed a new page of its database
// ("failed to commit tx … no space left on device") stopped the daemon,
// which could not start again until someone freed space.
func TestDiskFullEmbeddedEtcd(t *testing.T) {
	t.Parallel() // its own daemon, data dir, ports and terminals
	e, data := startOnSmallDisk(t, 800, "", "")
	dir := e.dir
	reserve := diskspace.Reserve{Path: filepath.Join(data, reserveName), Size: diskspace.ReserveSize}
	waitUntil(t, "the reserve set aside", reserve.Held)
	ks := e.enrollAll("alice")[0]
	first := e.present("t-1", ks)
	if first["event"] != "attached" {
		t.Fatalf("insert: %v", first)
	}
	hotDesks := func(phase string) {
		t.Helper()
		for i := range 30 {
			ev, err := e.presentErr(fmt.Sprintf("t-%d", 2+i%2), ks)
			select {
			case <-e.d.Exited():
				t.Fatalf("%s: hot-desk %d: the daemon stopped: %v", phase, i+1, e.d.ExitErr())
			default:
			}
			if err != nil || ev["event"] != "attached" || ev["session"] != first["session"] {
				t.Fatalf("%s: hot-desk %d: %v (%v); want session %v attached", phase, i+1, ev, err, first["session"])
			}
		}
	}

	fillDisk(t, filepath.Join(data, "filler"))
	gaveBack := logged(dir, "the disk is full: gave back the 128 MiB set aside for the embedded etcd")
	waitUntil(t, "the reserve given back, or the daemon stopped", func() bool {
		select {
		case <-e.d.Exited():
			return true
		default:
			return gaveBack()
		}
	})
	select {
	case <-e.d.Exited():
		// The fill came between two checks and etcd wrote meanwhile.
		t.Logf("the daemon stopped before it gave the room back (%v); started again", e.d.ExitErr())
		e.start()
	default:
	}
	if reserve.Held() {
		t.Fatal("the reserve is still held on a full disk")
	}
	hotDesks("the disk full, the reserve given back")

	if err := os.Remove(filepath.Join(data, "filler")); err != nil {
		t.Fatal(err)
	}
	waitUntil(t, "the reserve set aside again", reserve.Held)

	// Stopped (its desktops kept), the disk filled meanwhile: it starts,
	// giving the room back before the embedded etcd starts.
	e.d.Stop(syscall.SIGTERM)
	fillDisk(t, filepath.Join(data, "filler"))
	e.start()
	if reserve.Held() {
		t.Fatal("started on a full disk with the reserve still held")
	}
	hotDesks("started on a full disk")
}
