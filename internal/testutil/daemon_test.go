package testutil

import (
	"fmt"
	"os/exec"
	"strings"
	"testing"
	"time"
)

// fatalOf runs f with a fatalRecorder in a goroutine of its own and returns
// the Fatalf message ("" if f returned).
func fatalOf(f func(testing.TB)) string {
	tb := &fatalRecorder{}
	done := make(chan struct{})
	go func() {
		defer close(done)
		f(tb)
	}()
	<-done
	return tb.msg
}

// TestNextEvent: the wanted event is returned past others; an error event,
// the end of the stream or the bound fails the test.
func TestNextEvent(t *testing.T) {
	events := func(evs ...map[string]any) <-chan map[string]any {
		ch := make(chan map[string]any, len(evs))
		for _, ev := range evs {
			ch <- ev
		}
		return ch
	}
	got := NextEvent(t, events(map[string]any{"event": "connected"}, map[string]any{"event": "attached", "session": "s-1"}),
		"attached", time.Minute)
	if got["session"] != "s-1" {
		t.Fatalf("NextEvent = %v; want the attached event", got)
	}
	if got := NextEvent(t, events(map[string]any{"event": "error", "error": "x"}), "error", time.Minute); got["error"] != "x" {
		t.Fatalf("NextEvent(error) = %v; want the error event", got)
	}
	closed := make(chan map[string]any)
	close(closed)
	for _, tc := range []struct {
		name string
		evs  <-chan map[string]any
		want string
	}{
		{"error first", events(map[string]any{"event": "error"}, map[string]any{"event": "attached"}), "error event while waiting"},
		{"stream ended", closed, "process exited"},
		{"bound", make(chan map[string]any), "no event \"attached\" in 10ms"},
	} {
		msg := fatalOf(func(tb testing.TB) { NextEvent(tb, tc.evs, "attached", 10*time.Millisecond) })
		if !strings.Contains(msg, tc.want) {
			t.Errorf("%s: failure = %q; want it to contain %q", tc.name, msg, tc.want)
		}
	}
}

// TestStartEvents: the process's JSON lines arrive as events, what the test
// writes reaches its stdin, and the test's end stops it.
func TestStartEvents(t *testing.T) {
	NeedTools(t, "sh")
	cmd := exec.Command("sh", "-c", `echo '{"event":"hello"}'; read line; echo "{\"event\":\"got\",\"line\":\"$line\"}"; exec sleep 600`)
	t.Run("running", func(t *testing.T) {
		evs, stdin := StartEvents(t, cmd, 64)
		NextEvent(t, evs, "hello", time.Minute)
		fmt.Fprintln(stdin, "ping")
		if got := NextEvent(t, evs, "got", time.Minute); got["line"] != "ping" {
			t.Fatalf("echoed %v; want line ping", got)
		}
	})
	if cmd.ProcessState == nil {
		t.Fatal("the process was not waited for when its test ended")
	}
}

// TestAwaitEvent: the first event match accepts is returned, an error
// event included; the bound fails the test naming what was awaited.
func TestAwaitEvent(t *testing.T) {
	evs := make(chan map[string]any, 3)
	evs <- map[string]any{"event": "card", "uid": "01"}
	evs <- map[string]any{"event": "error", "name": "refused"}
	evs <- map[string]any{"event": "card", "uid": "02"}
	got := AwaitEvent(t, evs, "card 02 or an error", time.Minute, func(ev map[string]any) bool {
		return ev["uid"] == "02" || ev["event"] == "error"
	})
	if got["name"] != "refused" {
		t.Fatalf("AwaitEvent = %v; want the error event, the first match", got)
	}
	msg := fatalOf(func(tb testing.TB) {
		AwaitEvent(tb, make(chan map[string]any), "a refusal", 10*time.Millisecond, func(map[string]any) bool { return true })
	})
	if msg != "no a refusal in 10ms" {
		t.Fatalf("failure = %q; want %q", msg, "no a refusal in 10ms")
	}
}

// TestDrain: Drain hands over the events held now and returns without
// waiting for more, or at once when the stream has closed.
func TestDrain(t *testing.T) {
	evs := make(chan map[string]any, 4)
	evs <- map[string]any{"event": "a"}
	evs <- map[string]any{"event": "b"}
	var got []any
	Drain(evs, func(ev map[string]any) { got = append(got, ev["event"]) })
	if len(got) != 2 || got[0] != "a" || got[1] != "b" {
		t.Errorf("Drain handed %v; want [a b]", got)
	}
	close(evs)
	Drain(evs, func(ev map[string]any) { t.Errorf("Drain of a closed stream handed %v", ev) })
}
