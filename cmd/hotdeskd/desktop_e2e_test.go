package main

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"image"
	"image/png"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"github.com/hotdesk/hotdesk/internal/testutil"
)

// diff is the mean absolute difference (0..255) of two images below the
// panel (the top 40 rows hold the clock).
func diff(a, b image.Image) float64 {
	var sum, n float64
	for y := 40; y < 600; y += 2 {
		for x := 0; x < 800; x += 2 {
			ar, ag, ab, _ := a.At(x, y).RGBA()
			br, bg, bb, _ := b.At(x, y).RGBA()
			sum += abs(int(ar>>8)-int(br>>8)) + abs(int(ag>>8)-int(bg>>8)) + abs(int(ab>>8)-int(bb>>8))
			n += 3
		}
	}
	return sum / n
}

func abs(v int) float64 {
	if v < 0 {
		return float64(-v)
	}
	return float64(v)
}

// runTerm starts hotdesk-term on display disp with the RDP client and
// returns its events and stdin.
func (e *e2e) runTerm(ctx context.Context, id, ks, disp string) (<-chan map[string]any, io.WriteCloser) {
	e.t.Helper()
	cmd := exec.CommandContext(ctx, filepath.Join(e.bin, "hotdesk-term"), "-server", e.addr, "-pin", e.pin, "-id", id,
		"-keystore", ks, "-json", "-display", "xfreerdp /v:{addr} /cert:ignore /u:x /p:x /size:800x600 /bpp:24", "run")
	cmd.Env = append(os.Environ(), "DISPLAY="+disp)
	stdin, _ := cmd.StdinPipe()
	stdout, _ := cmd.StdoutPipe()
	if err := cmd.Start(); err != nil {
		e.t.Fatal(err)
	}
	e.t.Cleanup(func() { stdin.Close(); cmd.Wait() })
	evs := make(chan map[string]any, 64)
	go func() {
		defer close(evs)
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			var ev map[string]any
			if json.Unmarshal(sc.Bytes(), &ev) == nil {
				evs <- ev
			}
		}
	}()
	return evs, stdin
}

func next(t *testing.T, evs <-chan map[string]any, want string) map[string]any {
	t.Helper()
	timeout := time.After(30 * time.Second)
	for {
		select {
		case ev, ok := <-evs:
			if !ok {
				t.Fatalf("terminal exited waiting for %q", want)
			}
			if ev["event"] == want {
				return ev
			}
			if ev["event"] == "error" {
				t.Fatalf("waiting for %q: %v", want, ev)
			}
		case <-timeout:
			t.Fatalf("no %q in 30 s", want)
		}
	}
}

// TestDesktopFollowsToken: a real weston RDP desktop, seen by FreeRDP under
// Xvfb through the broker's attach gateway; an application is started in
// it; the token moves to a second terminal and the same desktop, with the
// same application, is seen there.
func TestDesktopFollowsToken(t *testing.T) {
	t.Parallel() // its own daemon, data dir, ports and terminals
	testutil.NeedTools(t, "xfreerdp", "Xvfb", "xwd", "convert", "weston-flower")
	e := startE2EWith(t, "", "kiosk", false, "", "compositor {\n  backend = \"rdp\"\n}")
	ks := e.enroll("alice")
	d1, d2 := testutil.StartXvfb(t), testutil.StartXvfb(t)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	ev1, in1 := e.runTerm(ctx, "t-1", ks, d1)
	ev2, in2 := e.runTerm(ctx, "t-2", ks, d2)
	next(t, ev1, "connected")
	next(t, ev2, "connected")

	blank := testutil.Screenshot(t, d1) // Xvfb before anything is shown: black
	fmt.Fprintln(in1, "insert default")
	att := next(t, ev1, "attached")
	next(t, ev1, "display")
	session := att["session"].(string)
	var before image.Image
	waitFor := func(what string, cond func() bool) {
		t.Helper()
		deadline := time.Now().Add(40 * time.Second)
		for !cond() {
			if time.Now().After(deadline) {
				t.Fatalf("timed out: %s", what)
			}
			time.Sleep(500 * time.Millisecond)
		}
	}
	waitFor("the desktop shown at terminal 1", func() bool {
		before = testutil.Screenshot(t, d1)
		return diff(before, blank) > 20
	})

	// An application in the session.
	run := filepath.Join(e.dir, "data", "sessions", session, "run")
	app := exec.Command("weston-flower")
	app.Env = append(os.Environ(), "XDG_RUNTIME_DIR="+run, "WAYLAND_DISPLAY=wayland-hd")
	if err := app.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { app.Process.Kill(); app.Wait() })
	var withApp image.Image
	waitFor("the application visible at terminal 1", func() bool {
		withApp = testutil.Screenshot(t, d1)
		return diff(withApp, before) > 1
	})

	// The token moves: terminal 1 loses the picture, terminal 2 shows the
	// same desktop with the same application.
	fmt.Fprintln(in1, "remove default")
	next(t, ev1, "detached")
	waitFor("the desktop gone from terminal 1", func() bool {
		return diff(testutil.Screenshot(t, d1), blank) < 1
	})
	fmt.Fprintln(in2, "insert default")
	if a := next(t, ev2, "attached"); a["session"] != session {
		t.Fatalf("terminal 2 attached %v; want %s", a["session"], session)
	}
	var there image.Image
	waitFor("the same desktop at terminal 2", func() bool {
		there = testutil.Screenshot(t, d2)
		return diff(there, withApp) < 1 && diff(there, before) > 1
	})
	if app.ProcessState != nil {
		t.Fatal("the application ended")
	}
	if dir := os.Getenv("HOTDESK_SHOTS"); dir != "" { // for a person to look at
		for name, img := range map[string]image.Image{"1-desktop": before, "2-app": withApp, "3-terminal2": there} {
			if f, err := os.Create(filepath.Join(dir, name+".png")); err == nil {
				png.Encode(f, img)
				f.Close()
			}
		}
	}
}
