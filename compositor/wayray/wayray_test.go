package wayray

import (
	"context"
	"errors"
	"net"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/hotdesk/hotdesk/compositor"
)

// TestMain doubles as a conforming compositor: with HOTDESK_TEST_COMPOSITOR
// set, this test binary listens on HOTDESK_CONTROL_SOCKET and speaks the
// control protocol honestly (it tracks rendering and its client), or
// misbehaves as the variable says: "nohello", "garbage", "crash-on-suspend".
func TestMain(m *testing.M) {
	if mode, ok := os.LookupEnv("HOTDESK_TEST_COMPOSITOR"); ok {
		os.Exit(testCompositor(mode))
	}
	os.Exit(m.Run())
}

func testCompositor(mode string) int {
	ln, err := net.Listen("unix", os.Getenv("HOTDESK_CONTROL_SOCKET"))
	if err != nil {
		return 1
	}
	start := time.Now()
	rendering, clients := true, 1
	endpoint := "rdp://127.0.0.1:3390"
	for {
		c, err := ln.Accept()
		if err != nil {
			return 1
		}
		switch mode {
		case "nohello":
			time.Sleep(time.Hour)
		case "garbage":
			c.Write([]byte{0, 0, 0, 3, 0xff, 0xfe, 0xfd})
			time.Sleep(time.Hour)
		}
		WriteMsg(c, msgHello, 0, Hello{Version: ProtocolVersion, Name: "test-compositor 1", PID: os.Getpid(), Endpoint: endpoint})
		for {
			f, err := ReadMsg(c, 0)
			if err != nil {
				break // the broker went away: wait for the next one
			}
			r := Reply{OK: true}
			switch f.Type {
			case msgSuspend:
				if mode == "crash-on-suspend" {
					os.Exit(3)
				}
				rendering, clients = false, 0
			case msgResume:
				rendering, clients = true, 1
				endpoint = "rdp://127.0.0.1:3391" // a new client endpoint
				r.Endpoint = endpoint
			case msgStatus:
				r.Rendering, r.Clients, r.UptimeMs = rendering, clients, uint64(time.Since(start).Milliseconds())
			case msgPing:
			case msgDestroy:
				WriteMsg(c, msgReply, f.ID, r)
				os.Exit(0)
			default:
				r = Reply{Error: "unknown request"}
			}
			WriteMsg(c, msgReply, f.ID, r)
		}
	}
}

// newTestBackend runs this test binary as the compositor in mode.
func newTestBackend(t *testing.T, mode, dir string) *Backend {
	t.Helper()
	b, err := New(Config{Command: []string{"/usr/bin/env", "HOTDESK_TEST_COMPOSITOR=" + mode, os.Args[0]}, StateDir: dir, StartTimeout: 3 * time.Second, StopGrace: 2 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func shortDir(t *testing.T) string {
	t.Helper()
	dir, err := os.MkdirTemp("", "wr")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	return dir
}

func killOnCleanup(t *testing.T, pid int) {
	t.Cleanup(func() { syscall.Kill(-pid, syscall.SIGKILL) })
}

func TestLifecycle(t *testing.T) {
	dir := shortDir(t)
	b := newTestBackend(t, "ok", dir)
	ctx := context.Background()
	info, err := b.Create(ctx, compositor.Spec{SessionID: "s-1", User: "alice", Labels: map[string]string{"k": "v"}})
	if err != nil {
		t.Fatal(err)
	}
	killOnCleanup(t, info.PID)
	if info.Endpoint != "rdp://127.0.0.1:3390" || info.Labels["k"] != "v" {
		t.Fatalf("info = %+v; want the hello's endpoint and the labels", info)
	}
	if err := b.Suspend(ctx, "s-1"); err != nil {
		t.Fatal(err)
	}
	st, err := b.Status(ctx, "s-1")
	if err != nil || st.Rendering || st.Clients != 0 {
		t.Fatalf("status after suspend = %+v, %v; want not rendering, no client", st, err)
	}
	ri, err := b.Resume(ctx, "s-1")
	if err != nil || ri.Endpoint != "rdp://127.0.0.1:3391" || ri.Suspended {
		t.Fatalf("resume = %+v, %v; want the new endpoint", ri, err)
	}
	if st, _ := b.Status(ctx, "s-1"); !st.Rendering || st.Clients != 1 {
		t.Fatalf("status after resume = %+v; want rendering", st)
	}
	if err := b.Ping(ctx, "s-1"); err != nil {
		t.Fatal(err)
	}
	if err := b.Destroy(ctx, "s-1"); err != nil {
		t.Fatal(err)
	}
	if processAlive(info.PID) {
		t.Fatalf("compositor %d alive after destroy", info.PID)
	}
	if err := b.Suspend(ctx, "s-1"); !errors.Is(err, compositor.ErrNotFound) {
		t.Fatalf("suspend after destroy = %v; want ErrNotFound", err)
	}
	select {
	case ex := <-b.Exits():
		t.Fatalf("destroy reported as an exit: %+v", ex)
	default:
	}
}

func TestCrashIsReported(t *testing.T) {
	b := newTestBackend(t, "crash-on-suspend", shortDir(t))
	ctx := context.Background()
	info, err := b.Create(ctx, compositor.Spec{SessionID: "s-c", User: "bob"})
	if err != nil {
		t.Fatal(err)
	}
	killOnCleanup(t, info.PID)
	if err := b.Suspend(ctx, "s-c"); err == nil {
		t.Fatal("suspend of a crashing compositor succeeded")
	}
	select {
	case ex := <-b.Exits():
		if ex.SessionID != "s-c" || ex.PID != info.PID {
			t.Fatalf("exit = %+v; want s-c pid %d", ex, info.PID)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("crash not reported")
	}
}

func TestBadCompositorsRefused(t *testing.T) {
	for _, mode := range []string{"nohello", "garbage"} {
		t.Run(mode, func(t *testing.T) {
			b := newTestBackend(t, mode, shortDir(t))
			good := newTestBackend(t, "ok", shortDir(t))
			ok, err := good.Create(context.Background(), compositor.Spec{SessionID: "s-ok", User: "u"})
			if err != nil {
				t.Fatal(err)
			}
			killOnCleanup(t, ok.PID)
			_, err = b.Create(context.Background(), compositor.Spec{SessionID: "s-bad", User: "u"})
			if !errors.Is(err, ErrStartFailed) {
				t.Fatalf("create with a %s compositor = %v; want ErrStartFailed", mode, err)
			}
			if _, err := os.Stat(filepath.Join(b.cfg.StateDir, "s-bad")); !os.IsNotExist(err) {
				t.Fatalf("state of the failed session left behind: %v", err)
			}
			if err := good.Ping(context.Background(), "s-ok"); err != nil {
				t.Fatalf("another session disturbed: %v", err)
			}
		})
	}
}

func TestAdoptAfterClose(t *testing.T) {
	dir := shortDir(t)
	b := newTestBackend(t, "ok", dir)
	ctx := context.Background()
	info, err := b.Create(ctx, compositor.Spec{SessionID: "s-a", User: "carol"})
	if err != nil {
		t.Fatal(err)
	}
	killOnCleanup(t, info.PID)
	if err := b.Suspend(ctx, "s-a"); err != nil {
		t.Fatal(err)
	}
	b.Close()
	if !processAlive(info.PID) {
		t.Fatal("Close killed the compositor")
	}
	os.MkdirAll(filepath.Join(dir, "s-dead"), 0o700)
	os.WriteFile(filepath.Join(dir, "s-dead", "session.json"), []byte(`{"session_id":"s-dead","pid":999999}`), 0o600)

	b2 := newTestBackend(t, "ok", dir)
	adopted, lost, err := b2.Adopt(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(adopted) != 1 || adopted[0].PID != info.PID || !adopted[0].Suspended {
		t.Fatalf("adopted = %+v; want s-a with pid %d, suspended", adopted, info.PID)
	}
	if len(lost) != 1 || lost[0].SessionID != "s-dead" || !strings.Contains(lost[0].Err.Error(), "gone") {
		t.Fatalf("lost = %+v; want s-dead", lost)
	}
	if st, err := b2.Status(ctx, "s-a"); err != nil || st.Rendering {
		t.Fatalf("status through the re-connected control channel = %+v, %v; want suspended", st, err)
	}
	if err := b2.Destroy(ctx, "s-a"); err != nil {
		t.Fatal(err)
	}
}
