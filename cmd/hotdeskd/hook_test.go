package main

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"

	"github.com/hotdesk/hotdesk/broker"
	"github.com/hotdesk/hotdesk/cmd/hotdeskd/config"
	"github.com/hotdesk/hotdesk/cmd/internal/adminapi"
	"github.com/hotdesk/hotdesk/internal/clock"
	"github.com/hotdesk/hotdesk/internal/event"
	"github.com/hotdesk/hotdesk/internal/testutil"
)

// TestHookTimeoutKillsItsChildren: event_hook_timeout bounds the hook, not
// only the process hotdeskd started. A hook that hangs in a child (a shell
// script waiting for curl, sleep, ...) must have that child killed at the
// timeout too, and the log must say it timed out; before, only the shell
// was killed and every timed-out event left its children running. The
// timeout is on the daemon's clock: the hook runs on until it is over.
func TestHookTimeoutKillsItsChildren(t *testing.T) {
	dir := t.TempDir()
	pidFile := filepath.Join(dir, "child.pid")
	// The child keeps the hook's stdout open, as any command it waits
	// for does.
	hook := writeHook(t, dir, "#!/bin/sh\nsleep 300 &\necho $! > "+pidFile+"\nwait\n")
	logBuf, logger := hookLogger()

	clk := clock.NewFake(time.Unix(1_000_000, 0))
	sub := queuedEvents(event.ServerDraining, 1)
	done := make(chan struct{})
	go func() {
		defer close(done)
		runHook(context.Background(), clk, hook, time.Second, sub, logger)
	}()

	pid := 0
	testutil.WaitFor(t, time.Minute, "the hook's child started, the timeout set on the clock", func() bool {
		b, _ := os.ReadFile(pidFile)
		pid, _ = strconv.Atoi(strings.TrimSpace(string(b)))
		return pid > 0 && clk.Pending() == 1
	})
	t.Cleanup(func() { _ = syscallKill(pid) })
	clk.Advance(time.Second - time.Millisecond)
	select {
	case <-done:
		t.Fatal("the hook ended before event_hook_timeout on the clock")
	default:
	}
	if !alive(pid) {
		t.Fatalf("the hook's child (pid %d) killed before event_hook_timeout on the clock", pid)
	}
	clk.Advance(time.Millisecond)
	select {
	case <-done:
	case <-time.After(time.Minute):
		t.Fatal("the hook still runs at event_hook_timeout on the clock")
	}
	// Killed, it may take a moment to exit (its pipe to the hook closes
	// first).
	testutil.WaitFor(t, time.Minute, "the hook's child killed with the hook", func() bool { return !alive(pid) })
	if log := logBuf.String(); !strings.Contains(log, "event hook failed") || !strings.Contains(log, "timed out after 1s") {
		t.Errorf("log %q; want an \"event hook failed\" line saying it timed out after 1s", log)
	}
}

// TestHookLeftChildKilled: a hook that exits leaving a process that holds
// its output (a job put in the background) has that process killed a
// second later, and the log says what happened in words (before, the
// process stayed, one per event, and the log said "exec: WaitDelay
// expired before I/O complete").
func TestHookLeftChildKilled(t *testing.T) {
	dir := t.TempDir()
	pidFile := filepath.Join(dir, "child.pid")
	hook := writeHook(t, dir, "#!/bin/sh\nsleep 300 &\necho $! > "+pidFile+"\nexit 0\n")
	logBuf, logger := hookLogger()
	runHook(context.Background(), clock.Real{}, hook, time.Minute, queuedEvents(event.ServerDraining, 1), logger)
	b, _ := os.ReadFile(pidFile)
	pid, _ := strconv.Atoi(strings.TrimSpace(string(b)))
	if pid <= 0 {
		t.Fatalf("the hook's child pid %q", b)
	}
	t.Cleanup(func() { _ = syscallKill(pid) })
	testutil.WaitFor(t, time.Minute, "the child the hook left killed", func() bool { return !alive(pid) })
	if log := logBuf.String(); !strings.Contains(log, "leaving a process that held its output") {
		t.Errorf("log %q; want it to say the hook left a process holding its output", log)
	}
}

// queuedEvents returns a closed subscription holding n events of kind from
// server s1: runHook returns once it has handled them.
func queuedEvents(kind event.Kind, n int) *broker.Subscription {
	bus := broker.NewBus(nil)
	sub := bus.Subscribe("hook", n)
	for range n {
		bus.Emit(event.Event{Kind: kind, Server: "s1", Time: time.Unix(1_000_000, 0)})
	}
	sub.Close()
	return sub
}

// hookLogger returns a debug logger into the buffer it returns.
func hookLogger() (*testutil.LockedBuffer, hclog.Logger) {
	var b testutil.LockedBuffer
	return &b, hclog.New(&hclog.LoggerOptions{Output: &b, Level: hclog.Debug})
}

// writeHook writes script as the executable dir/hook.sh and returns its path.
func writeHook(t *testing.T, dir, script string) string {
	t.Helper()
	hook := filepath.Join(dir, "hook.sh")
	if err := os.WriteFile(hook, []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	return hook
}

// alive reports whether pid is a process that has not exited (a zombie has).
func alive(pid int) bool {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return false
	}
	// pid (comm) S ...: the state follows the last ')'.
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	return i >= 0 && i+2 < len(s) && s[i+2] != 'Z' && s[i+2] != 'X'
}

func syscallKill(pid int) error {
	p, err := os.FindProcess(pid)
	if err != nil {
		return err
	}
	return p.Kill()
}

// TestHookGetsServerLeft runs the real binary with a hook that appends
// every event to a file: a clean stop gives the hook the stop's last
// event, this server's server_left (sites script reactions to it), before
// hotdeskd exits. Before, the hook's runner ended with the run context,
// ahead of the stop steps that emit it.
func TestHookGetsServerLeft(t *testing.T) {
	t.Parallel() // its own daemon, data dir, ports and hook
	dir := t.TempDir()
	got := filepath.Join(dir, "events.jsonl")
	hook := writeHook(t, dir, "#!/bin/sh\ncat >> "+got+"\n")
	cfg := testutil.DaemonConfig(t, "hook-left", dir, testutil.FreeAddr(t), "") + fmt.Sprintf("event_hook = %q\n", hook)
	d := testutil.NewDaemon(t, buildBinaries(t), dir, testutil.AdminSocket(dir), cfg)
	d.Start()
	testutil.WaitFor(t, 60*time.Second, "hotdeskd ready", func() bool {
		return adminapi.NewClient(d.Socket).Ready(context.Background()) == nil
	})
	exited := d.Exited()
	d.Stop(syscall.SIGTERM)
	<-exited
	if err := d.ExitErr(); err != nil {
		t.Fatalf("exit after SIGTERM: %v; want status 0", err)
	}

	b, err := os.ReadFile(got)
	if err != nil {
		t.Fatalf("the hook never ran: %v", err)
	}
	var kinds []string
	for _, line := range strings.Split(strings.TrimSpace(string(b)), "\n") {
		var e event.Event
		if err := json.Unmarshal([]byte(line), &e); err != nil {
			t.Fatalf("hook input %q: %v", line, err)
		}
		if e.Server == "hook-left" {
			kinds = append(kinds, string(e.Kind))
		}
	}
	if len(kinds) == 0 || kinds[0] != string(event.ServerJoined) || !slices.Contains(kinds, string(event.ServerLeft)) {
		t.Fatalf("the hook got %v; want server_joined first, and server_left", kinds)
	}
}

// TestHookStoppedDropsTheRest: once its bound at a stop is over (its
// context ends), runHook runs no more hooks and says in one warn line how
// many events it dropped, not one failure per event.
func TestHookStoppedDropsTheRest(t *testing.T) {
	dir := t.TempDir()
	ran := filepath.Join(dir, "ran")
	hook := writeHook(t, dir, "#!/bin/sh\necho x >> "+ran+"\n")
	logBuf, logger := hookLogger()
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	runHook(ctx, clock.NewFake(time.Unix(1_000_000, 0)), hook, time.Second, queuedEvents(event.ServerLeft, 3), logger)
	if _, err := os.Stat(ran); err == nil {
		t.Error("the hook ran after its context ended")
	}
	log := logBuf.String()
	if strings.Contains(log, "event hook failed") || strings.Count(log, "events not given to the event hook") != 1 || !strings.Contains(log, "events=3") {
		t.Errorf("log %q; want one line counting 3 events not given to the hook", log)
	}
}

// TestHookStopBoundOnClock: a stop waits for the hook to run what is
// queued for one event_hook_timeout on the daemon's clock, not longer:
// with a hook that hangs and a second event behind it, the stop step
// still waits a moment before its bound and returns at it, having killed
// the hook.
func TestHookStopBoundOnClock(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	ran := filepath.Join(dir, "ran")
	hook := writeHook(t, dir, "#!/bin/sh\necho x >> "+ran+"\nexec sleep 300\n")
	clk := clock.NewFake(time.Unix(1_000_000, 0))
	d := &daemon{cfg: &config.Config{EventHook: hook, EventHookTimeout: time.Hour}, clk: clk,
		log: testutil.Logger(t, "hook", hclog.Debug)}
	bus := broker.NewBus(nil)
	d.subs.hook = bus.Subscribe("hook", 4)
	d.startHook()
	for range 2 {
		bus.Emit(event.Event{Kind: event.ServerLeft, Server: "s1", Time: clk.Now()})
	}
	bus.Close() // as the stop does before the hook's step
	testutil.WaitFor(t, time.Minute, "the hook running", func() bool {
		_, err := os.Stat(ran)
		return err == nil
	})
	timers := clk.Pending()
	stopped := make(chan struct{})
	go func() {
		defer close(stopped)
		d.stops[len(d.stops)-1](t.Context())
	}()
	testutil.WaitFor(t, time.Minute, "the stop's bound set on the daemon's clock", func() bool {
		return clk.Pending() == timers+1
	})
	clk.Advance(time.Hour - time.Millisecond)
	select {
	case <-stopped:
		t.Fatal("the stop step returned before event_hook_timeout, with the hook still running")
	default:
	}
	clk.Advance(time.Millisecond)
	select {
	case <-stopped:
	case <-time.After(time.Minute):
		t.Fatal("the stop step did not return at event_hook_timeout on the daemon's clock")
	}
}
