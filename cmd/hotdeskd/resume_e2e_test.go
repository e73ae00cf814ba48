package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/hotdesk/hotdesk/internal/testutil"
)

// runAgent starts hotdesk-term as terminal id with the keystore ks,
// answering the first prompts with answers, and returns its events and
// its standard input. It keeps running (and reconnecting) until the test
// ends or its input says quit.
func (e *e2e) runAgent(ctx context.Context, id, ks string, answers ...string) (<-chan map[string]any, io.WriteCloser) {
	e.t.Helper()
	args := []string{"-server", e.addr, "-pin", e.pin, "-id", id, "-keystore", ks, "-json"}
	for _, a := range answers {
		args = append(args, "-answer", a)
	}
	cmd := exec.CommandContext(ctx, filepath.Join(e.bin, "hotdesk-term"), append(args, "run")...)
	return testutil.StartEvents(e.t, cmd, 64)
}

// attachedUnasked waits for the terminal's next attached event, failing the
// test if a prompt comes first; errors that a broker still starting answers
// (unavailable) are passed over.
func attachedUnasked(t *testing.T, evs <-chan map[string]any, what string) map[string]any {
	t.Helper()
	return testutil.AwaitEvent(t, evs, what, time.Minute, func(ev map[string]any) bool {
		switch ev["event"] {
		case "prompt":
			t.Fatalf("%s: prompted %v; want no prompt", what, ev)
		case "error":
			if ev["name"] != "unavailable" {
				t.Fatalf("%s: %v", what, ev)
			}
		}
		return ev["event"] == "attached"
	})
}

// prompted waits for the terminal's next prompt, failing the test if the
// session is attached first.
func prompted(t *testing.T, evs <-chan map[string]any, what string) map[string]any {
	t.Helper()
	return testutil.AwaitEvent(t, evs, what, time.Minute, func(ev map[string]any) bool {
		if ev["event"] == "attached" {
			t.Fatalf("%s: attached %v without a prompt", what, ev)
		}
		return ev["event"] == "prompt"
	})
}

// TestRestartResume: under card+pin, the card left in its reader across a
// restart of hotdeskd that keeps the desktops, a clean stop or a kill -9,
// is back on the same desktop without the PIN: the terminal presents it
// again with the resume key of its last Attached, which the session's
// record kept (as a hash) across the restart. The card at another
// terminal, at the same terminal id without the key (a restarted
// hotdesk-term, or anyone claiming its id), or after the grace asks the
// PIN.
func TestRestartResume(t *testing.T) {
	t.Parallel() // its own daemon, data dir, ports and terminals
	e := startE2EWith(t, "", "card+pin", true, "")
	ks := e.enroll("pat")
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	evs, in := e.runAgent(ctx, "t-1", ks, "2468")
	next(t, evs, "connected")
	fmt.Fprintln(in, "insert default")
	next(t, evs, "prompt") // the PIN, answered
	att := next(t, evs, "attached")
	sid := att["session"]
	before := e.sessions()
	if len(before) != 1 || before[0].ID != sid {
		t.Fatalf("sessions %+v; want %v", before, sid)
	}
	pid := before[0].PID
	sameDesktop := func(what string, a map[string]any) {
		t.Helper()
		if a["session"] != sid || a["resumed"] != true {
			t.Fatalf("%s: %v; want session %v resumed", what, a, sid)
		}
		if ss := e.sessions(); len(ss) != 1 || ss[0].ID != sid || ss[0].PID != pid || ss[0].State != "active" {
			t.Fatalf("%s: sessions %+v; want %v active in compositor %d", what, ss, sid, pid)
		}
	}

	e.stop()
	e.start()
	sameDesktop("after a clean stop", attachedUnasked(t, evs, "the card back after a clean stop"))

	e.d.Stop(syscall.SIGKILL)
	e.start()
	sameDesktop("after a kill -9", attachedUnasked(t, evs, "the card back after a kill -9"))

	// Another terminal presenting the card after a restart: a hot-desk.
	e.stop()
	e.start()
	sameDesktop("after a third restart", attachedUnasked(t, evs, "the card back after a third restart"))
	evs2, in2 := e.runAgent(ctx, "t-2", ks)
	next(t, evs2, "connected")
	fmt.Fprintln(in2, "insert default")
	prompted(t, evs2, "the card at another terminal after a restart")
	fmt.Fprintln(in2, "quit")

	// The same terminal id without the key (hotdesk-term restarted
	// while hotdeskd was down): the PIN.
	fmt.Fprintln(in, "quit")
	e.stop()
	e.start()
	evs3, in3 := e.runAgent(ctx, "t-1", ks)
	next(t, evs3, "connected")
	fmt.Fprintln(in3, "insert default")
	prompted(t, evs3, "the terminal without its key after a restart")
	fmt.Fprintln(in3, "quit")

	// After the grace, counted from the stop: the PIN.
	evs4, in4 := e.runAgent(ctx, "t-4", ks, "2468")
	next(t, evs4, "connected")
	fmt.Fprintln(in4, "insert default")
	next(t, evs4, "prompt")
	sameDesktop("at t-4", next(t, evs4, "attached"))
	cfg, err := os.ReadFile(e.d.Config)
	if err != nil {
		t.Fatal(err)
	}
	short := strings.Replace(string(cfg), "session {\n", "session {\n  reconnect_grace = \"1s\"\n", 1)
	if err := os.WriteFile(e.d.Config, []byte(short), 0o600); err != nil {
		t.Fatal(err)
	}
	e.stop()
	time.Sleep(1500 * time.Millisecond) // the grace over before the next run starts
	e.start()
	prompted(t, evs4, "the card back after the grace")
}
