package main

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/hashicorp/go-hclog"

	"github.com/hotdesk/hotdesk/cmd/hotdeskd/config"
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
	w := newDiskWatch(log, cfg)
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
	// With the embedded etcd in data_dir, a full data_dir stops the daemon.
	w.embedded = true
	free["/data"] = 100 << 20
	if warns := w.warnings(); len(warns) != 2 || !strings.Contains(warns[0], "the embedded etcd (in data_dir) stops hotdeskd") {
		t.Fatalf("warnings = %q", warns)
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

// TestDiskFull runs the real daemon with its data_dir on a small
// filesystem and fills it: the error is logged, a new desktop is refused
// with a clear answer, but a person hot-desking to the desktop they
// already have still gets it; with room again, desktops start.
func TestDiskFull(t *testing.T) {
	t.Parallel() // its own daemon, data dir, ports and terminals
	testutil.NeedRoot(t, "mounts a tmpfs")
	testutil.NeedMatrix(t)
	testutil.NeedTools(t, "weston", "mount", "umount")
	bin := buildBinaries(t)
	dir := t.TempDir()
	data := filepath.Join(dir, "data")
	if err := os.MkdirAll(data, 0o700); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command("mount", "-t", "tmpfs", "-o", "size=320m,mode=0700", "tmpfs", data).CombinedOutput(); err != nil {
		testutil.SkipOrFail(t, "mount a tmpfs: %v: %s", err, out)
	}
	t.Cleanup(func() { _ = exec.Command("umount", "-l", data).Run() })
	pamDir := filepath.Join(dir, "pam.d")
	if err := os.MkdirAll(pamDir, 0o755); err != nil {
		t.Fatal(err)
	}
	// The registry on its own etcd: the embedded one, in a full data_dir,
	// stops the daemon (etcd's choice; the log says so in advance).
	eps := etcdtest.Start(t)
	addr := testutil.FreeAddr(t)
	cfg := testutil.DaemonConfig(t, "e2e", dir, addr, fmt.Sprintf("etcd {\n  endpoints = [%q]\n}", eps[0])) + fmt.Sprintf(`
session {
  auth = "kiosk"
  keep_on_stop = false
}
auth {
  pam_dir = %q
  open_session = false
}
`, pamDir)
	e := newE2E(t, bin, dir, addr, cfg)
	e.start()
	kss := e.enrollAll("alice", "bob")
	first := e.present("t-1", kss[0])
	if first["event"] != "attached" {
		t.Fatalf("insert: %v", first)
	}
	// Over diskspace.Low, so that freeing it is "room again".
	filler, err := os.Create(filepath.Join(data, "filler"))
	if err != nil {
		t.Fatal(err)
	}
	chunk := make([]byte, 1<<20)
	for {
		if _, err := filler.Write(chunk); err != nil {
			break // full
		}
	}
	filler.Close()
	logged := func(s string) func() bool {
		return func() bool {
			b, _ := os.ReadFile(filepath.Join(dir, "hotdeskd.log"))
			return strings.Contains(string(b), s)
		}
	}
	waitUntil(t, "the full disk logged", logged("the disk is full or nearly"))

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
	waitUntil(t, "room again logged", logged("the disk has room again"))
	if ev := e.present("t-3", kss[1]); ev["event"] != "attached" {
		t.Fatalf("a new desktop with room again: %v; want attached", ev)
	}
}
