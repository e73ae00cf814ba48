package greeter

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/hotdesk/hotdesk/internal/testutil"
)

// xvfb starts a virtual X screen and points $DISPLAY at it.
func xvfb(t *testing.T) string {
	t.Helper()
	testutil.NeedTools(t, "xdotool")
	disp := testutil.StartXvfb(t)
	t.Setenv("DISPLAY", disp)
	return disp
}

type submission struct {
	kind InputKind
	text string
}

// TestGreeterStates drives a real window on Xvfb through its states and
// checks what each frame drew; typed keys (xdotool, through the X
// server) reach Submit and are masked on screen.
func TestGreeterStates(t *testing.T) {
	disp := xvfb(t)
	frames := make(chan Frame, 256)
	subs := make(chan submission, 8)
	g, err := New(Options{
		Submit:  func(k InputKind, s string) { subs <- submission{k, s} },
		OnFrame: func(f Frame) { frames <- f },
	})
	if err != nil {
		t.Fatal(err)
	}
	defer g.Close()
	waitFrame := func(what string, ok func(Frame) bool) Frame {
		t.Helper()
		return nextFrame(t, g, frames, what, ok)
	}
	// submitted waits for the submission Enter makes, which must be text
	// of kind.
	submitted := func(kind InputKind, text string) {
		t.Helper()
		select {
		case s := <-subs:
			if s.kind != kind || s.text != text {
				t.Fatalf("submitted %+v; want %v %q", s, kind, text)
			}
		case <-time.After(20 * time.Second):
			t.Fatalf("Enter did not submit %q", text)
		}
	}
	f := waitFrame("connecting", func(f Frame) bool { return f.Screen == Unavailable })
	if f.Width != 1024 || f.Height != 768 {
		t.Errorf("window %dx%d; want full screen 1024x768", f.Width, f.Height)
	}
	g.Show(State{Screen: Idle, Title: "Insert your card or tap your badge"})
	waitFrame("idle", func(f Frame) bool { return f.Screen == Idle && f.Title == "Insert your card or tap your badge" })

	g.Show(State{Screen: Prompt, Title: "Welcome", Label: "PIN:", Secret: true, PromptID: 1})
	waitFrame("prompt", func(f Frame) bool { return f.Screen == Prompt && f.Label == "PIN:" })
	if out, err := exec.Command("xdotool", "type", "--delay", "30", "2468").CombinedOutput(); err != nil {
		t.Fatalf("xdotool: %v %s", err, out)
	}
	f = waitFrame("masked input", func(f Frame) bool { return f.Input == "••••" })
	if strings.Contains(f.Input, "2") {
		t.Fatalf("PIN drawn in clear: %q", f.Input)
	}
	shot(t, disp, "pin")
	if out, err := exec.Command("xdotool", "key", "Return").CombinedOutput(); err != nil {
		t.Fatalf("xdotool: %v %s", err, out)
	}
	submitted(Answer, "2468")

	// Pairing: F2 from Idle, a visible code.
	g.Show(State{Screen: Idle, Title: "Insert your card or tap your badge"})
	waitFrame("idle", func(f Frame) bool { return f.Screen == Idle })
	exec.Command("xdotool", "key", "F2").Run()
	waitFrame("pairing", func(f Frame) bool { return f.Screen == Pairing })
	exec.Command("xdotool", "type", "--delay", "30", "ABCD-EFGH").Run()
	waitFrame("code", func(f Frame) bool { return f.Input == "ABCD-EFGH" })
	exec.Command("xdotool", "key", "Return").Run()
	submitted(PairCode, "ABCD-EFGH")
}

// shot saves a screenshot of disp as NAME.xwd in the test's temp dir.
func shot(t *testing.T, disp, name string) []byte {
	t.Helper()
	out, err := exec.Command("xwd", "-root", "-silent", "-display", disp).Output()
	if err != nil {
		t.Fatalf("xwd: %v", err)
	}
	dir := os.Getenv("GREETER_SHOTS") // keep the screenshots there, if set
	if dir == "" {
		dir = t.TempDir()
	}
	os.WriteFile(filepath.Join(dir, name+".xwd"), out, 0o644)
	return out
}

// TestGreeterPairWait: a pairing code's Enter, answered at once with
// PairWait (as the agent's Submit does), goes from the code entry to
// PairWait without drawing Idle between them (the idle screen flashed up
// before "Hold the phone to the reader"); PairWait says Escape cancels,
// and Escape there submits Cancel. Escape in the code entry only closes
// it: nothing is submitted.
func TestGreeterPairWait(t *testing.T) {
	xvfb(t)
	frames := make(chan Frame, 256)
	subs := make(chan submission, 8)
	wait := State{Screen: PairWait, Title: "Hold the phone to the reader"}
	var g *Window
	ready := make(chan struct{})
	g, err := New(Options{
		Submit: func(k InputKind, s string) {
			<-ready
			if k == PairCode {
				g.Show(wait)
			}
			subs <- submission{k, s}
		},
		OnFrame: func(f Frame) { frames <- f },
	})
	if err != nil {
		t.Fatal(err)
	}
	close(ready)
	defer g.Close()
	waitFrame := func(what string, ok func(Frame) bool) Frame {
		t.Helper()
		return nextFrame(t, g, frames, what, ok)
	}
	key := func(k string) {
		t.Helper()
		if out, err := exec.Command("xdotool", "key", k).CombinedOutput(); err != nil {
			t.Fatalf("xdotool key %s: %v %s", k, err, out)
		}
	}
	waitFrame("connecting", func(f Frame) bool { return f.Screen == Unavailable })
	g.Show(State{Screen: Idle, Title: "Insert your card or tap your badge"})
	waitFrame("idle", func(f Frame) bool { return f.Screen == Idle })
	key("F2")
	waitFrame("pairing", func(f Frame) bool { return f.Screen == Pairing })
	if out, err := exec.Command("xdotool", "type", "--delay", "30", "ABCD").CombinedOutput(); err != nil {
		t.Fatalf("xdotool: %v %s", err, out)
	}
	waitFrame("code", func(f Frame) bool { return f.Input == "ABCD" })
	key("Return")
	f := waitFrame("pair_wait or idle", func(f Frame) bool { return f.Screen != Pairing })
	if f.Screen != PairWait {
		t.Fatalf("after the code's Enter the greeter drew %+v; want PairWait, no idle screen before it", f)
	}
	if !strings.Contains(f.Hint, "Esc") {
		t.Errorf("PairWait hint %q; want it to say Esc cancels", f.Hint)
	}
	if s := <-subs; s.kind != PairCode || s.text != "ABCD" {
		t.Fatalf("submitted %+v; want the code", s)
	}
	key("Escape")
	select {
	case s := <-subs:
		if s.kind != Cancel || s.text != "" {
			t.Fatalf("Escape on PairWait submitted %+v; want Cancel", s)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("Escape on PairWait submitted nothing")
	}

	// Escape in the code entry closes it and submits nothing.
	g.Show(State{Screen: Idle, Title: "Insert your card or tap your badge"})
	waitFrame("idle", func(f Frame) bool { return f.Screen == Idle })
	key("F2")
	waitFrame("pairing", func(f Frame) bool { return f.Screen == Pairing })
	key("Escape")
	waitFrame("idle", func(f Frame) bool { return f.Screen == Idle })
	g.Show(State{Screen: Busy, Title: "Reading your card…"})
	waitFrame("busy", func(f Frame) bool { return f.Screen == Busy }) // after any Submit of Escape's frame
	select {
	case s := <-subs:
		t.Fatalf("Escape in the code entry submitted %+v; want nothing", s)
	default:
	}
}

// nextFrame returns the next frame of g (from frames, its OnFrame) for
// which ok holds; the test fails after 20 s without one.
func nextFrame(t *testing.T, g *Window, frames <-chan Frame, what string, ok func(Frame) bool) Frame {
	t.Helper()
	timeout := time.After(20 * time.Second)
	for {
		select {
		case f := <-frames:
			if ok(f) {
				return f
			}
		case <-timeout:
			t.Fatalf("no frame showing %s; last %+v", what, g.Last())
		}
	}
}
