package main

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"

	"github.com/hotdesk/hotdesk/broker"
	"github.com/hotdesk/hotdesk/internal/event"
)

// TestHookTimeoutKillsItsChildren: event_hook_timeout bounds the hook, not
// only the process hotdeskd started. A hook that hangs in a child (a shell
// script waiting for curl, sleep, ...) must have that child killed at the
// timeout too, and the log must say it timed out; before, only the shell
// was killed and every timed-out event left its children running.
func TestHookTimeoutKillsItsChildren(t *testing.T) {
	dir := t.TempDir()
	pidFile := filepath.Join(dir, "child.pid")
	hook := filepath.Join(dir, "hook.sh")
	// The child keeps the hook's stdout open, as any command it waits
	// for does.
	script := "#!/bin/sh\nsleep 300 &\necho $! > " + pidFile + "\nwait\n"
	if err := os.WriteFile(hook, []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	var logBuf bytes.Buffer
	logger := hclog.New(&hclog.LoggerOptions{Output: &logBuf, Level: hclog.Debug})

	bus := broker.NewBus(nil)
	sub := bus.Subscribe(4)
	bus.Emit(event.Event{Kind: event.ServerDraining, Server: "s1", Time: time.Now()})
	sub.Close() // runHook returns once the buffered event is handled
	runHook(context.Background(), hook, time.Second, sub, logger)

	b, err := os.ReadFile(pidFile)
	if err != nil {
		t.Fatalf("the hook did not start its child: %v", err)
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil {
		t.Fatalf("child pid %q: %v", b, err)
	}
	t.Cleanup(func() { _ = syscallKill(pid) })
	if alive(pid) {
		t.Errorf("the hook's child (pid %d) still runs after the hook timed out; want it killed with the hook", pid)
	}
	if log := logBuf.String(); !strings.Contains(log, "event hook failed") || !strings.Contains(log, "timed out after 1s") {
		t.Errorf("log %q; want an \"event hook failed\" line saying it timed out after 1s", log)
	}
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
