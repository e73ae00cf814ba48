package wayray

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/fxamacker/cbor/v2"
	"github.com/hashicorp/go-hclog"

	"github.com/hotdesk/hotdesk/compositor"
	"github.com/hotdesk/hotdesk/compositor/procsup"
	"github.com/hotdesk/hotdesk/internal/clock"
	"github.com/hotdesk/hotdesk/internal/testutil"
)

// TestMain doubles as a conforming compositor: with HOTDESK_TEST_COMPOSITOR
// set, this test binary listens on HOTDESK_CONTROL_SOCKET and speaks the
// control protocol honestly (it tracks rendering and its client), or
// misbehaves as the variable says: "nohello", "garbage" (instead of hello),
// "garbage-on-status", "crash-on-suspend", "hangup" (closes the control
// connection after hello but keeps running), "oldversion", "noendpoint" and
// "badendpoint" (a hello without a usable endpoint), "foreignsocket" (a
// wayland: endpoint outside the session directory), "badresume" (answers
// Resume with an unusable endpoint), "child" (runs an application, a sleep
// in its process group, as a desktop does).
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
	switch mode {
	case "noendpoint":
		endpoint = ""
	case "foreignsocket":
		endpoint = "wayland:/run/hotdesk/admin.sock" // outside its session directory
	case "badendpoint":
		endpoint = "127.0.0.1:3390" // no scheme
	case "child":
		if err := exec.Command("sleep", "3600").Start(); err != nil {
			return 1
		}
	}
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
		version := uint16(ProtocolVersion)
		if mode == "oldversion" {
			version = 99
		}
		WriteMsg(c, MsgHello, 0, Hello{Version: version, Name: "test-compositor 1", PID: os.Getpid(), Endpoint: endpoint, Capabilities: []string{"status"}})
		if mode == "hangup" {
			c.Close()
			time.Sleep(time.Hour)
		}
		for {
			f, err := ReadMsg(c, 0)
			if err != nil {
				break // the broker went away: wait for the next one
			}
			if rec := os.Getenv("HOTDESK_TEST_RECORD"); rec != "" {
				recordRequest(rec, f)
			}
			r := Reply{OK: true}
			switch f.Type {
			case MsgSuspend:
				if mode == "crash-on-suspend" {
					fmt.Fprintln(os.Stderr, "test compositor: fatal: out of \x01 memory")
					os.Exit(3)
				}
				rendering, clients = false, 0
			case MsgResume:
				rendering, clients = true, 1
				endpoint = "rdp://127.0.0.1:3391" // a new client endpoint
				if mode == "badresume" {
					endpoint = "rdp://127.0.0.1" // no port
				}
				r.Endpoint = endpoint
			case MsgStatus:
				if mode == "garbage-on-status" {
					c.Write([]byte{0, 0, 0, 2, 0xa1, 0xff})
					continue
				}
				r.Rendering, r.Clients, r.UptimeMs = rendering, clients, uint64(time.Since(start).Milliseconds())
				r.State = "active"
				if !rendering {
					r.State = "suspended"
				}
			case MsgPing:
			case MsgDestroy:
				if mode != "exit-on-destroy" {
					WriteMsg(c, MsgReply, f.ID, r)
				}
				os.Exit(0)
			default:
				r = Reply{Code: CodeUnknownRequest, Error: "unknown request"}
			}
			WriteMsg(c, MsgReply, f.ID, r)
		}
	}
}

// recordRequest appends to file the request's type and the keys of its
// body ("3 1,2": type 3, keys 1 and 2; "2 -": no body).
func recordRequest(file string, f Frame) {
	keys := "-"
	if len(f.Body) > 0 {
		var body map[uint64]cbor.RawMessage
		if err := cbor.Unmarshal(f.Body, &body); err != nil {
			keys = "undecodable"
		} else if len(body) > 0 {
			var ks []string
			for k := range body {
				ks = append(ks, strconv.FormatUint(k, 10))
			}
			slices.Sort(ks)
			keys = strings.Join(ks, ",")
		}
	}
	rf, err := os.OpenFile(file, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o600)
	if err != nil {
		return
	}
	fmt.Fprintf(rf, "%d %s\n", f.Type, keys)
	rf.Close()
}

// newTestBackend runs this test binary as the compositor in mode; opts
// adjust the config (e.g. a fake clock).
func newTestBackend(t *testing.T, mode, dir string, opts ...func(*Config)) *Backend {
	t.Helper()
	cfg := Config{Command: []string{"/usr/bin/env", "HOTDESK_TEST_COMPOSITOR=" + mode, os.Args[0]}, StateDir: dir,
		StartTimeout: 5 * time.Second, StopGrace: 2 * time.Second, CallTimeout: 5 * time.Second,
		Logger: testutil.Logger(t, "wayray", hclog.Debug)}
	for _, o := range opts {
		o(&cfg)
	}
	b, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { b.Close() })
	return b
}

func withClock(c clock.Clock) func(*Config) { return func(cfg *Config) { cfg.Clock = c } }

// shortDir is a short state directory (unix socket paths are limited).
func shortDir(t *testing.T) string { return testutil.ShortTempDir(t, "wr") }

// stopProcess stops pid (SIGSTOP) and waits until every thread of it is
// stopped: the signal only asks, and a loaded machine let a compositor
// answer a health ping sent after kill(2) had returned
// (TestCloseDuringHealthPing failed about once in 30 runs beside two
// CPU hogs).
func stopProcess(t *testing.T, pid int) {
	t.Helper()
	if err := syscall.Kill(pid, syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	testutil.WaitFor(t, 10*time.Second, fmt.Sprintf("process %d stopped", pid), func() bool {
		tasks, err := filepath.Glob(fmt.Sprintf("/proc/%d/task/*/stat", pid))
		if err != nil || len(tasks) == 0 {
			return false
		}
		for _, p := range tasks {
			b, err := os.ReadFile(p)
			// The state follows the command, in parentheses.
			i := bytes.LastIndexByte(b, ')')
			if err != nil || i < 0 || i+2 >= len(b) || (b[i+2] != 'T' && b[i+2] != 't') {
				return false
			}
		}
		return true
	})
}

func killOnCleanup(t *testing.T, pid int) {
	t.Cleanup(func() { syscall.Kill(-pid, syscall.SIGKILL) })
}

// mustCreate creates the desktop spec on b; its compositor's process group
// is killed when the test ends.
func mustCreate(t *testing.T, ctx context.Context, b *Backend, spec compositor.Spec) compositor.Info {
	t.Helper()
	info, err := b.Create(ctx, spec)
	if err != nil {
		t.Fatal(err)
	}
	killOnCleanup(t, info.PID)
	return info
}

func TestLifecycle(t *testing.T) {
	dir := shortDir(t)
	b := newTestBackend(t, "ok", dir)
	ctx := context.Background()
	info := mustCreate(t, ctx, b, compositor.Spec{SessionID: "s-1", User: "alice", Labels: map[string]string{"k": "v"}})
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

// TestCrashIsReported: a compositor that dies is reported on Exits, and
// the log line of its end quotes the end of its output (made printable),
// since its log goes with the session's directory.
func TestCrashIsReported(t *testing.T) {
	var logs testutil.LockedBuffer
	b := newTestBackend(t, "crash-on-suspend", shortDir(t), func(cfg *Config) {
		cfg.Logger = hclog.New(&hclog.LoggerOptions{Output: &logs, Level: hclog.Debug})
	})
	ctx := context.Background()
	info := mustCreate(t, ctx, b, compositor.Spec{SessionID: "s-c", User: "bob"})
	if err := b.Suspend(ctx, "s-c"); err == nil {
		t.Fatal("suspend of a crashing compositor succeeded")
	}
	if ex := testutil.Recv(t, b.Exits(), 10*time.Second, "crash not reported"); ex.SessionID != "s-c" || ex.PID != info.PID {
		t.Fatalf("exit = %+v; want s-c pid %d", ex, info.PID)
	}
	if !strings.Contains(logs.String(), `log_tail="test compositor: fatal: out of ? memory"`) {
		t.Fatalf("the end of the compositor's output is not in the log:\n%s", logs.String())
	}
}

func TestBadCompositorsRefused(t *testing.T) {
	for _, mode := range []string{"nohello", "garbage", "oldversion", "noendpoint", "badendpoint", "foreignsocket"} {
		t.Run(mode, func(t *testing.T) {
			fake := clock.NewFake(time.Unix(1e9, 0))
			b := newTestBackend(t, mode, shortDir(t), withClock(fake))
			good := newTestBackend(t, "ok", shortDir(t))
			mustCreate(t, context.Background(), good, compositor.Spec{SessionID: "s-ok", User: "u"})
			errc := make(chan error, 1)
			go func() {
				_, err := b.Create(context.Background(), compositor.Spec{SessionID: "s-bad", User: "u"})
				errc <- err
			}()
			if mode == "nohello" {
				// The compositor accepts but never says hello: only the
				// start timeout (on the fake clock) ends Create. Wait until
				// the compositor runs and the timer is armed, then expire it.
				testutil.WaitFor(t, 5*time.Second, "condition", func() bool {
					_, err := os.Stat(filepath.Join(b.cfg.StateDir, "s-bad", "control.sock"))
					return err == nil && fake.Pending() > 0
				})
				fake.Advance(b.cfg.StartTimeout)
			}
			err := <-errc
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

// TestBrokenControlChannel: a compositor that sends a malformed frame, or
// whose control connection breaks (found by the health ping), is killed and
// reported on Exits; another session of the same backend is not disturbed.
func TestBrokenControlChannel(t *testing.T) {
	for _, tc := range []struct {
		mode string
		poke func(b *Backend, fake *clock.Fake) error
		want error
	}{
		{"garbage-on-status", func(b *Backend, _ *clock.Fake) error {
			_, err := b.Status(context.Background(), "s-bad")
			return err
		}, ErrProtocol},
		{"hangup", func(b *Backend, fake *clock.Fake) error {
			fake.Advance(b.cfg.HealthInterval) // runs the health ping
			return nil
		}, nil},
		{"badresume", func(b *Backend, _ *clock.Fake) error {
			_, err := b.Resume(context.Background(), "s-bad")
			return err
		}, ErrProtocol},
	} {
		t.Run(tc.mode, func(t *testing.T) {
			fake := clock.NewFake(time.Unix(1e9, 0))
			dir := shortDir(t)
			b := newTestBackend(t, "ok", dir, withClock(fake))
			mustCreate(t, context.Background(), b, compositor.Spec{SessionID: "s-ok", User: "u"})
			// Same backend, same state dir, a misbehaving compositor.
			b.cfg.Command = []string{"/usr/bin/env", "HOTDESK_TEST_COMPOSITOR=" + tc.mode, os.Args[0]}
			bad := mustCreate(t, context.Background(), b, compositor.Spec{SessionID: "s-bad", User: "u"})
			err := tc.poke(b, fake)
			if tc.want != nil && !errors.Is(err, tc.want) {
				t.Fatalf("request to a broken compositor = %v; want %v", err, tc.want)
			}
			ex := testutil.Recv(t, b.Exits(), 10*time.Second, "broken compositor not reported")
			if ex.SessionID != "s-bad" || ex.PID != bad.PID || ex.Err == nil {
				t.Fatalf("exit = %+v; want s-bad pid %d with a reason", ex, bad.PID)
			}
			t.Logf("reported: %v", ex.Err)
			testutil.WaitFor(t, 5*time.Second, "condition", func() bool { return !processAlive(bad.PID) })
			if _, err := os.Stat(filepath.Join(dir, "s-bad")); !os.IsNotExist(err) {
				t.Fatalf("state of the broken session left behind: %v", err)
			}
			if _, err := b.Status(context.Background(), "s-bad"); !errors.Is(err, compositor.ErrNotFound) {
				t.Fatalf("status of the broken session = %v; want ErrNotFound", err)
			}
			if err := b.Ping(context.Background(), "s-ok"); err != nil {
				t.Fatalf("another session disturbed: %v", err)
			}
			fake.Advance(b.cfg.HealthInterval) // a healthy session passes its ping
			if l, _ := b.List(context.Background()); len(l) != 1 || l[0].SessionID != "s-ok" {
				t.Fatalf("list = %+v; want only s-ok", l)
			}
			if err := b.Destroy(context.Background(), "s-ok"); err != nil {
				t.Fatal(err)
			}
		})
	}
}

func TestUnknownRequest(t *testing.T) {
	b := newTestBackend(t, "ok", shortDir(t))
	mustCreate(t, context.Background(), b, compositor.Spec{SessionID: "s-u", User: "u"})
	s, _ := b.get("s-u")
	_, err := b.call(context.Background(), s, 77, nil)
	if !errors.Is(err, ErrRefused) {
		t.Fatalf("unknown request = %v; want ErrRefused", err)
	}
	if err := b.Ping(context.Background(), "s-u"); err != nil {
		t.Fatalf("connection not kept after an unknown request: %v", err)
	}
}

func TestAdoptAfterClose(t *testing.T) {
	dir := shortDir(t)
	b := newTestBackend(t, "ok", dir)
	ctx := context.Background()
	info := mustCreate(t, ctx, b, compositor.Spec{SessionID: "s-a", User: "carol"})
	if err := b.Suspend(ctx, "s-a"); err != nil {
		t.Fatal(err)
	}
	// While b supervises the directory no other Backend may.
	if _, err := New(Config{Command: []string{"/bin/false"}, StateDir: dir}); !errors.Is(err, ErrLocked) {
		t.Fatalf("New on a state dir in use: err = %v; want ErrLocked", err)
	}
	b.Close()
	if !processAlive(info.PID) {
		t.Fatal("Close killed the compositor")
	}
	// A record whose process is gone, and one from an earlier boot whose
	// pid now names a live stranger (our own process): neither is adopted,
	// and the stranger is not signalled.
	bootID, err := procsup.BootID("/proc")
	if err != nil {
		t.Fatal(err)
	}
	os.MkdirAll(filepath.Join(dir, "s-dead"), 0o700)
	os.WriteFile(filepath.Join(dir, "s-dead", "session.json"), []byte(`{"session_id":"s-dead","pid":999999,"boot_id":"`+bootID+`"}`), 0o600)
	self, _ := procsup.ReadStat("/proc", os.Getpid())
	os.MkdirAll(filepath.Join(dir, "s-oldboot"), 0o700)
	os.WriteFile(filepath.Join(dir, "s-oldboot", "session.json"), []byte(fmt.Sprintf(`{"session_id":"s-oldboot","pid":%d,"start_ticks":%d,"boot_id":"earlier-boot"}`, os.Getpid(), self.StartTicks)), 0o600)

	b2 := newTestBackend(t, "ok", dir)
	adopted, lost, err := b2.Adopt(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(adopted) != 1 || adopted[0].PID != info.PID || !adopted[0].Suspended {
		t.Fatalf("adopted = %+v; want s-a with pid %d, suspended", adopted, info.PID)
	}
	reasons := map[string]string{}
	for _, l := range lost {
		reasons[l.SessionID] = l.Err.Error()
	}
	if len(lost) != 2 || !strings.Contains(reasons["s-dead"], "gone") || !strings.Contains(reasons["s-oldboot"], "another boot") {
		t.Fatalf("lost = %+v; want s-dead (gone) and s-oldboot (another boot)", lost)
	}
	if st, err := b2.Status(ctx, "s-a"); err != nil || st.Rendering {
		t.Fatalf("status through the re-connected control channel = %+v, %v; want suspended", st, err)
	}
	if err := b2.Destroy(ctx, "s-a"); err != nil {
		t.Fatal(err)
	}
}

// TestAdoptKillsLeftovers: a compositor that died while no broker ran
// (its record names a process that is gone) is not adopted, and the
// applications it left in its process group are killed, as when a
// supervised compositor dies: they were left running for good.
func TestAdoptKillsLeftovers(t *testing.T) {
	dir := shortDir(t)
	b := newTestBackend(t, "child", dir)
	ctx := context.Background()
	info := mustCreate(t, ctx, b, compositor.Spec{SessionID: "s-l", User: "dave"})
	b.Close()
	if err := syscall.Kill(info.PID, syscall.SIGKILL); err != nil { // the leader alone
		t.Fatal(err)
	}
	testutil.WaitFor(t, 10*time.Second, "compositor gone", func() bool { return !processAlive(info.PID) })
	if !procsup.GroupAlive("/proc", info.PID) {
		t.Fatal("the compositor's application is not running; the test needs it")
	}
	b2 := newTestBackend(t, "child", dir)
	adopted, lost, err := b2.Adopt(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(adopted) != 0 || len(lost) != 1 || lost[0].SessionID != "s-l" || !errors.Is(lost[0].Err, procsup.ErrProcessGone) {
		t.Fatalf("adopted %+v, lost %+v; want s-l lost (gone)", adopted, lost)
	}
	if procsup.GroupAlive("/proc", info.PID) {
		t.Fatal("the gone compositor's application still runs after Adopt")
	}
}

// TestAdoptConcurrently: compositors that accept but do not say hello
// (stopped, here) are waited for at the same time: Adopt took StartTimeout
// for each in turn, and hotdeskd served no terminal meanwhile.
func TestAdoptConcurrently(t *testing.T) {
	dir := shortDir(t)
	b := newTestBackend(t, "ok", dir)
	ctx := context.Background()
	var pids []int
	for _, id := range []string{"s-h1", "s-h2"} {
		info := mustCreate(t, ctx, b, compositor.Spec{SessionID: id, User: "erin"})
		pids = append(pids, info.PID)
	}
	b.Close()
	for _, pid := range pids {
		stopProcess(t, pid)
	}
	fake := clock.NewFake(time.Unix(1e9, 0))
	// The start timeout runs on the fake clock only (its wall-clock
	// backstop, an hour, never fires here).
	b2 := newTestBackend(t, "ok", dir, withClock(fake), func(c *Config) { c.StartTimeout = time.Hour })
	type result struct {
		adopted []compositor.Info
		lost    []compositor.Exit
	}
	done := make(chan result, 1)
	go func() {
		a, l, err := b2.Adopt(ctx)
		if err != nil {
			t.Error(err)
		}
		done <- result{a, l}
	}()
	testutil.WaitFor(t, 10*time.Second, "both compositors waited for at once", func() bool { return fake.Pending() >= 2 })
	fake.Advance(time.Hour)
	r := testutil.Recv(t, done, 30*time.Second, "Adopt did not return")
	if len(r.adopted) != 0 || len(r.lost) != 2 {
		t.Fatalf("adopted %+v, lost %+v; want both lost", r.adopted, r.lost)
	}
	for _, pid := range pids {
		testutil.WaitFor(t, 10*time.Second, "silent compositor killed", func() bool { return !processAlive(pid) })
	}
}

// TestValidEndpoint: the endpoints the attach gateway can connect to.
func TestValidEndpoint(t *testing.T) {
	for ep, want := range map[string]bool{
		"rdp://127.0.0.1:3390": true, "tcp://[::1]:5900": true, "tcp://localhost:1": true,
		"wayland:/run/hotdesk/s-1/wayland-0": true,
		"":                                   false, "garbage": false, "127.0.0.1:3390": false, "rdp://127.0.0.1": false,
		"rdp://:3390": false, "tcp://127.0.0.1:0": false, "tcp://127.0.0.1:65536": false, "tcp://127.0.0.1:x": false,
		"wayland:relative/sock": false, "wayland:/a/../b": false, "vnc://127.0.0.1:5900": false,
	} {
		if got := ValidEndpoint(ep); got != want {
			t.Errorf("ValidEndpoint(%q) = %v; want %v", ep, got, want)
		}
	}
}

// processAlive reports whether pid runs (a zombie does not).
func processAlive(pid int) bool {
	st, err := procsup.ReadStat("/proc", pid)
	return err == nil && st.Live()
}

// TestCloseEndsEverything: Close leaves the compositor running, waits for
// the backend's goroutines and closes Exits; a Destroy racing with Close
// returns (ErrClosed) instead of hanging on a session nobody supervises.
func TestCloseEndsEverything(t *testing.T) {
	dir := shortDir(t)
	b := newTestBackend(t, "ok", dir, func(c *Config) { c.StopGrace, c.CallTimeout = time.Hour, time.Hour })
	ctx := context.Background()
	info := mustCreate(t, ctx, b, compositor.Spec{SessionID: "s-c", User: "carol"})
	// Stop the compositor so it cannot answer or exit on the Destroy
	// request, and give Destroy no deadline: only Close can end its wait
	// (a deadline of its own let a loaded machine's late Close find the
	// compositor killed by Destroy's escalation, and Destroy return nil).
	stopProcess(t, info.PID)
	defer syscall.Kill(info.PID, syscall.SIGCONT)
	destroyed := make(chan error, 1)
	go func() { destroyed <- b.Destroy(ctx, "s-c") }()
	// Close once Destroy has taken the session (a Close first leaves
	// Destroy nothing to destroy: nil).
	testutil.WaitFor(t, 10*time.Second, "Destroy under way", func() bool {
		b.mu.Lock()
		defer b.mu.Unlock()
		s := b.sessions["s-c"]
		return s != nil && s.stopping
	})
	b.Close()
	if err := testutil.Recv(t, destroyed, 30*time.Second, "Destroy hung after Close"); !errors.Is(err, ErrClosed) {
		t.Fatalf("Destroy racing with Close = %v; want %v", err, ErrClosed)
	}
	if !processAlive(info.PID) {
		t.Error("the compositor was killed: Close must leave it for the next broker to adopt")
	}
	select {
	case _, ok := <-b.Exits():
		if ok {
			t.Fatal("Exits delivered an exit after Close; want it closed")
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Exits not closed by Close")
	}
}

// TestCallAfterDeadline: a request whose context has no time left (its
// deadline passed while it waited for the control channel, behind another
// call) fails without touching the channel: the compositor is healthy and
// keeps running. The past write deadline failed the write, taken for a
// broken control channel: the compositor, and the session, were killed.
func TestCallAfterDeadline(t *testing.T) {
	b := newTestBackend(t, "ok", shortDir(t))
	mustCreate(t, context.Background(), b, compositor.Spec{SessionID: "s-d", User: "u"})
	ctx, cancel := context.WithDeadline(context.Background(), time.Now().Add(-time.Second))
	defer cancel()
	if _, err := b.Status(ctx, "s-d"); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("status with an expired context = %v; want its deadline error", err)
	}
	if err := b.Ping(context.Background(), "s-d"); err != nil {
		t.Fatalf("ping after a request that had no time: %v; want the compositor still there", err)
	}
	if err := b.Destroy(context.Background(), "s-d"); err != nil {
		t.Fatal(err)
	}
}

// TestRequestsCarryTheSpecsFields: every request the broker sends carries
// exactly the body keys proto/COMPOSITOR.md gives it (a request without
// fields: none), so a compositor written from the spec gets what it reads.
// Resume's Client was specified and never sent; it was removed from the
// spec (key 1 reserved).
func TestRequestsCarryTheSpecsFields(t *testing.T) {
	spec, err := os.ReadFile("../../proto/COMPOSITOR.md")
	if err != nil {
		t.Fatal(err)
	}
	row := regexp.MustCompile(`^\| (\d+) \| (\w+) \| B → C \| (.*) \|$`)
	field := regexp.MustCompile(`(?:^|, )(\d+) [A-Z]\w* `)
	want := map[string]string{} // type → its keys as recorded
	for _, l := range strings.Split(string(spec), "\n") {
		m := row.FindStringSubmatch(l)
		if m == nil {
			continue
		}
		var keys []string
		for _, f := range field.FindAllStringSubmatch(m[3], -1) {
			keys = append(keys, f[1])
		}
		slices.Sort(keys)
		want[m[1]] = strings.Join(keys, ",")
		if want[m[1]] == "" {
			want[m[1]] = "-"
		}
	}
	if len(want) != 5 {
		t.Fatalf("broker requests in the spec: %v; want the 5 of its table", want)
	}
	// The reserved key stays decodable: a body with it is a Resume.
	old, err := cbor.Marshal(map[uint64]string{1: "t-1"})
	if err != nil {
		t.Fatal(err)
	}
	if err := DecodeBody(Frame{Type: MsgResume, Body: old}, &Resume{}); err != nil {
		t.Errorf("a Resume with the reserved key 1: %v; want it decoded", err)
	}

	rec := filepath.Join(t.TempDir(), "requests")
	b := newTestBackend(t, "ok", shortDir(t), func(cfg *Config) {
		cfg.Command = []string{"/usr/bin/env", "HOTDESK_TEST_COMPOSITOR=ok", "HOTDESK_TEST_RECORD=" + rec, os.Args[0]}
	})
	ctx := context.Background()
	info, err := b.Create(ctx, compositor.Spec{SessionID: "s-1", User: "alice"})
	if err != nil {
		t.Fatal(err)
	}
	killOnCleanup(t, info.PID)
	if err := b.Suspend(ctx, "s-1"); err != nil {
		t.Fatal(err)
	}
	if _, err := b.Resume(ctx, "s-1"); err != nil {
		t.Fatal(err)
	}
	if _, err := b.Status(ctx, "s-1"); err != nil {
		t.Fatal(err)
	}
	if err := b.Ping(ctx, "s-1"); err != nil {
		t.Fatal(err)
	}
	if err := b.Destroy(ctx, "s-1"); err != nil {
		t.Fatal(err)
	}
	got, err := os.ReadFile(rec)
	if err != nil {
		t.Fatal(err)
	}
	seen := map[string]bool{}
	for _, l := range strings.Split(strings.TrimSpace(string(got)), "\n") {
		typ, keys, _ := strings.Cut(l, " ")
		seen[typ] = true
		if w, ok := want[typ]; !ok {
			t.Errorf("request type %s is not in the spec", typ)
		} else if keys != w {
			t.Errorf("request type %s carried body keys %s; the spec gives it %s", typ, keys, w)
		}
	}
	for typ := range want {
		if !seen[typ] {
			t.Errorf("request type %s never sent", typ)
		}
	}
}

// TestCloseDuringHealthPing: a broker that stops (a restart, an upgrade)
// while a health ping waits for its answer leaves the compositor running
// for the next one to adopt: the ping's channel, broken by Close, is not a
// broken compositor. (It was killed: the user got an empty new desktop.)
func TestCloseDuringHealthPing(t *testing.T) {
	fake := clock.NewFake(time.Unix(1e9, 0))
	b := newTestBackend(t, "ok", shortDir(t), withClock(fake), func(c *Config) { c.CallTimeout = time.Hour })
	info := mustCreate(t, context.Background(), b, compositor.Spec{SessionID: "s-h", User: "u"})
	// Stopped, the compositor cannot answer: the ping waits for Close.
	stopProcess(t, info.PID)
	defer syscall.Kill(info.PID, syscall.SIGCONT)
	b.mu.Lock()
	s := b.sessions["s-h"]
	b.mu.Unlock()
	pinged := make(chan struct{})
	go func() { defer close(pinged); fake.Advance(b.cfg.HealthInterval) }()
	testutil.WaitFor(t, 10*time.Second, "the health ping under way", func() bool {
		if s.callMu.TryLock() {
			s.callMu.Unlock()
			return false
		}
		return true
	})
	b.Close()
	<-pinged
	if !processAlive(info.PID) {
		t.Fatal("Close during a health ping killed the compositor; want it left running for the next broker")
	}
}

// TestSuspendRecordUnwritable: once the compositor has suspended or
// resumed, a record that cannot be written (a full disk) fails neither
// call; it is written at the next change.
func TestSuspendRecordUnwritable(t *testing.T) {
	dir := shortDir(t)
	b := newTestBackend(t, "ok", dir)
	ctx := context.Background()
	mustCreate(t, ctx, b, compositor.Spec{SessionID: "s-1", User: "alice"})
	rec := filepath.Join(dir, "s-1", "session.json")
	unblock := testutil.BlockFile(t, rec)
	if err := b.Suspend(ctx, "s-1"); err != nil {
		t.Fatalf("Suspend with the record unwritable: %v; want nil", err)
	}
	if st, err := b.Status(ctx, "s-1"); err != nil || st.Rendering {
		t.Fatalf("status after suspend = %+v, %v; want not rendering", st, err)
	}
	unblock()
	ri, err := b.Resume(ctx, "s-1")
	if err != nil || ri.Suspended {
		t.Fatalf("Resume = %+v, %v", ri, err)
	}
	data, err := os.ReadFile(rec)
	if err != nil || !strings.Contains(string(data), ri.Endpoint) {
		t.Fatalf("session.json = %s, %v; want it written again with endpoint %s", data, err, ri.Endpoint)
	}
	if err := b.Destroy(ctx, "s-1"); err != nil {
		t.Fatal(err)
	}
}

// TestDestroyQuietWhenItEnds: a compositor told to end that ends before
// it answers (or as it answers: the channel closes under the reply) did
// what it was told. A Destroy, an administrator killing a session, said
// "control channel broken; stopping the compositor" at error level.
func TestDestroyQuietWhenItEnds(t *testing.T) {
	var logs testutil.LockedBuffer
	b := newTestBackend(t, "exit-on-destroy", shortDir(t), func(c *Config) {
		c.Logger = hclog.New(&hclog.LoggerOptions{Output: &logs, Level: hclog.Info})
	})
	ctx := context.Background()
	info := mustCreate(t, ctx, b, compositor.Spec{SessionID: "s-1", User: "alice"})
	if err := b.Destroy(ctx, "s-1"); err != nil {
		t.Fatalf("Destroy: %v", err)
	}
	if processAlive(info.PID) {
		t.Fatalf("compositor %d alive after destroy", info.PID)
	}
	if out := logs.String(); strings.Contains(out, "[ERROR]") || strings.Contains(out, "[WARN]") {
		t.Fatalf("a destroy that ended the compositor logged:\n%s", out)
	}
}
