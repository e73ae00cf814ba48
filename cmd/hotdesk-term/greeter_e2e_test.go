package main

import (
	"errors"
	"fmt"
	"image"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/hotdesk/hotdesk/internal/testutil"
	"github.com/hotdesk/hotdesk/proto"
)

// startXvfb starts a virtual X screen, 1024x768, for a terminal whose
// greeter is driven with xdotool.
func startXvfb(t *testing.T) string {
	t.Helper()
	testutil.NeedTools(t, "xdotool", "convert")
	return testutil.StartXvfb(t)
}

// xdotool runs xdotool with args on X screen disp, as a person at the
// terminal types.
func xdotool(t *testing.T, disp string, args ...string) {
	t.Helper()
	c := exec.Command("xdotool", args...)
	c.Env = append(os.Environ(), "DISPLAY="+disp)
	if out, err := c.CombinedOutput(); err != nil {
		t.Fatalf("xdotool %v: %v %s", args, err, out)
	}
}

// cardPINBlocks returns the configuration blocks of a broker, after its
// etcd block, that asks for a card and a PIN, checked by the PAM services
// in pamDir, and shows weston RDP desktops; authExtra goes into the auth
// block.
func cardPINBlocks(etcd, pamDir, authExtra string) string {
	return fmt.Sprintf(`%s
session {
  auth = "card+pin"
  keep_on_stop = false
}
compositor {
  backend = "rdp"
}
auth {
  pam_dir = %q
  open_session = false
%s}`, etcd, pamDir, authExtra)
}

// startGreeterAgent starts hotdesk-term as terminal id, homed at home,
// with the greeter and FreeRDP full screen as its display client on the X
// screen env names (DISPLAY=…; env is added to this process's
// environment); args (more options, then the command) follow those
// options. It returns the agent's standard input and events. When the test
// ends the agent is stopped, and its log shown if the test failed.
func startGreeterAgent(t *testing.T, bin string, env []string, id string, home *groupBroker, args ...string) (io.WriteCloser, *events) {
	t.Helper()
	common := []string{"-server", home.addr, "-pin", home.Pin, "-id", id, "-json", "-greeter",
		"-min-backoff", "200ms", "-max-backoff", "1s", "-display", "xfreerdp /f /v:{addr} /cert:ignore /u:x /p:x /bpp:24"}
	cmd := exec.Command(filepath.Join(bin, "hotdesk-term"), append(common, args...)...)
	cmd.Env = append(os.Environ(), env...)
	logPath := filepath.Join(t.TempDir(), id+".log")
	logf, err := os.Create(logPath)
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stderr = logf
	t.Cleanup(func() { // after StartEvents' cleanup has stopped the agent
		logf.Close()
		if t.Failed() {
			l, _ := os.ReadFile(logPath)
			t.Logf("agent %s log:\n%s", id, l)
		}
	})
	evs, stdin := testutil.StartEvents(t, cmd, 4096)
	return stdin, &events{t: t, ch: evs}
}

// meanDiff is the mean absolute difference (0..255) of two screenshots.
func meanDiff(a, b image.Image) float64 {
	var sum, n float64
	r := a.Bounds().Intersect(b.Bounds())
	for y := r.Min.Y; y < r.Max.Y; y += 2 {
		for x := r.Min.X; x < r.Max.X; x += 2 {
			ar, ag, ab, _ := a.At(x, y).RGBA()
			br, bg, bb, _ := b.At(x, y).RGBA()
			for _, d := range []int{int(ar>>8) - int(br>>8), int(ag>>8) - int(bg>>8), int(ab>>8) - int(bb>>8)} {
				sum += float64(max(d, -d))
			}
			n += 3
		}
	}
	return sum / n
}

// greeterShare is the share of pixels in the greeter's background colour.
func greeterShare(img image.Image) float64 {
	return pixelShare(img, func(r, g, b uint32) bool { return r == 0x1d && g == 0x2b && b == 0x3a })
}

// pixelShare is the share of pixels of img (a sample: every 4th pixel of
// every 4th row) whose 8-bit colour satisfies is.
func pixelShare(img image.Image, is func(r, g, b uint32) bool) float64 {
	var hit, n float64
	bounds := img.Bounds()
	for y := bounds.Min.Y; y < bounds.Max.Y; y += 4 {
		for x := bounds.Min.X; x < bounds.Max.X; x += 4 {
			r, g, b, _ := img.At(x, y).RGBA()
			if is(r>>8, g>>8, b>>8) {
				hit++
			}
			n++
		}
	}
	return hit / n
}

// TestGreeterE2E: the terminal's greeter on an X screen (Xvfb), driven by
// the real agent against a real hotdeskd with a real PAM PIN stack
// (pam_matrix) and a weston RDP desktop. Each state is checked in the
// greeter's widget state (its "greeter" events: what the frame drew) and
// screenshot: insert card, the PIN prompt with masked input, a wrong PIN,
// locked out, server unavailable. Then the right PIN, typed through the X
// server with xdotool, logs in through PAM and the FreeRDP desktop covers
// the greeter. Screenshots are kept in $HOTDESK_SHOTS if set. Budget:
// about 40 s.
func TestGreeterE2E(t *testing.T) {
	t.Parallel()
	testutil.NeedTools(t, "weston", "xfreerdp", "nft") // nft: the RDP port guard
	testutil.NeedMatrix(t)
	disp := startXvfb(t) // while another test builds the binaries
	bin := buildBinaries(t)

	pamDir := testutil.MatrixServices(t, t.TempDir(), "pat:2468:hotdesk-pin\n", "", "hotdesk", "hotdesk-pin")
	etcd := fmt.Sprintf(`etcd {
  embedded {
    client_url = "http://%s"
    peer_url = "http://%s"
  }
}`, testutil.FreeAddr(t), testutil.FreeAddr(t))
	b := newBroker(t, bin, "greeter", cardPINBlocks(etcd, pamDir, `  max_failures = 2
  lockout = "3s"
  max_lockout = "3s"
`))
	b.Start()

	ks, key := newKeystore(t)
	b.pair("pat", ks, key)

	stdin, evs := startGreeterAgent(t, bin, []string{"DISPLAY=" + disp}, "desk-g", b, "-keystore", ks.Path(), "run")
	say := func(line string) {
		t.Helper()
		if _, err := io.WriteString(stdin, line+"\n"); err != nil {
			t.Fatal(err)
		}
	}
	xdo := func(args ...string) {
		t.Helper()
		xdotool(t, disp, args...)
	}
	// drawn waits until the greeter drew a frame that ok accepts.
	drawn := func(what string, ok func(ev map[string]any) bool) map[string]any {
		t.Helper()
		for {
			ev := evs.next("greeter")
			if ok(ev) {
				return ev
			}
			t.Logf("greeter: %v (waiting for %s)", ev, what)
		}
	}
	shots := map[string]image.Image{}
	var prev image.Image
	snap := func(name string) {
		t.Helper()
		img := testutil.Screenshot(t, disp)
		if prev != nil && meanDiff(img, prev) < 0.05 {
			t.Errorf("screen %s looks like the previous one (mean diff %.3f)", name, meanDiff(img, prev))
		}
		if share := greeterShare(img); share < 0.5 {
			t.Errorf("screen %s: greeter background on %.0f%% of the screen; want most of it", name, 100*share)
		}
		prev = img
		shots[name] = img
	}
	screenIs := func(screen string, in ...string) func(map[string]any) bool {
		return func(ev map[string]any) bool {
			if ev["screen"] != screen {
				return false
			}
			text := fmt.Sprint(ev["title"], " ", ev["message"], " ", ev["label"])
			for _, s := range in {
				if !strings.Contains(text, s) {
					return false
				}
			}
			return true
		}
	}

	// 1. Insert card.
	fr := drawn("insert card", screenIs("idle", textInsert))
	if fr["width"] != 1024.0 || fr["height"] != 768.0 {
		t.Errorf("greeter %vx%v; want the whole 1024x768 screen", fr["width"], fr["height"])
	}
	snap("1-insert-card")

	// 2. The PIN prompt, with masked input typed through the X server.
	say("insert default")
	drawn("PIN prompt", screenIs("prompt"))
	xdo("type", "--delay", "40", "1357")
	drawn("masked PIN", func(ev map[string]any) bool { return ev["screen"] == "prompt" && ev["input"] == "••••" })
	snap("2-pin-masked")

	// 3. A wrong PIN.
	xdo("key", "Return")
	drawn("wrong PIN", screenIs("idle", "Wrong PIN"))
	snap("3-wrong-pin")

	// 4. Locked out: wrong PINs until the broker refuses the card.
	locked := false
	for try := 0; try < 4 && !locked; try++ {
		say("remove default")
		say("insert default")
		for {
			ev := evs.next("greeter")
			if screenIs("idle", "Locked out")(ev) {
				locked = true
				break
			}
			if ev["screen"] == "prompt" {
				xdo("type", "--delay", "40", "0000")
				xdo("key", "Return")
				drawn("another wrong PIN", screenIs("idle", "Wrong PIN"))
				break
			}
		}
	}
	if !locked {
		t.Fatal("never locked out")
	}
	snap("4-locked-out")

	// 5. Server unavailable: the broker stops; the greeter says so.
	say("remove default")
	b.Stop(os.Interrupt)
	drawn("reconnecting", screenIs("unavailable", "reconnecting"))
	snap("5-reconnecting")
	b.Start()
	drawn("back", screenIs("idle", textInsert))

	// 6. The right PIN, once the lockout ended: the desktop replaces the
	// greeter.
	for {
		say("insert default")
		ev := evs.next("prompt", "error")
		if ev["event"] == "prompt" {
			break
		}
		say("remove default")
		time.Sleep(500 * time.Millisecond) // the lockout is the broker's
	}
	drawn("PIN prompt", screenIs("prompt"))
	xdo("type", "--delay", "40", "2468")
	drawn("masked PIN", func(ev map[string]any) bool { return ev["input"] == "••••" })
	xdo("key", "Return")
	att := evs.next("attached")
	if att["user"] != "pat" {
		t.Fatalf("attached %v; want user pat", att)
	}
	evs.next("display")
	deadline := time.Now().Add(60 * time.Second)
	var desktop image.Image
	for {
		desktop = testutil.Screenshot(t, disp)
		if greeterShare(desktop) < 0.05 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the desktop never covered the greeter (greeter background on %.0f%%)", 100*greeterShare(desktop))
		}
		time.Sleep(500 * time.Millisecond)
	}
	shots["6-desktop"] = desktop

	// Pulling the card brings the greeter back.
	say("remove default")
	drawn("greeter back", screenIs("idle", textInsert))
	for deadline := time.Now().Add(30 * time.Second); greeterShare(testutil.Screenshot(t, disp)) < 0.5; {
		if time.Now().After(deadline) {
			t.Fatal("the greeter did not come back after the card was pulled")
		}
		time.Sleep(200 * time.Millisecond)
	}

	testutil.KeepShots(shots)
}

// TestGreeterWaitsForDisplay: a terminal whose agent starts before its X
// server (a kiosk booting: hotdesk-term.service and the X server start
// together) shows its greeter once the server is up; the window the
// display refused is opened again, not left closed with the agent running
// behind a blank screen. No broker is needed: the greeter says it is
// looking for the server.
func TestGreeterWaitsForDisplay(t *testing.T) {
	t.Parallel()
	testutil.NeedTools(t, "Xvfb", "xwd")
	bin := buildBinaries(t)
	n := freeDisplay(t)
	nowhere := &groupBroker{Daemon: &testutil.Daemon{Pin: proto.FormatFingerprint(make([]byte, 32))}, addr: "127.0.0.1:1"}
	_, evs := startGreeterAgent(t, bin, []string{fmt.Sprintf("DISPLAY=:%d", n)}, "boot-1", nowhere, "-keystore", filepath.Join(t.TempDir(), "none.json"), "agent")
	time.Sleep(2 * time.Second) // the agent runs, its window refused: no X server yet
	x := exec.Command("Xvfb", fmt.Sprintf(":%d", n), "-screen", "0", "1024x768x24", "-nolisten", "tcp")
	if err := x.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { x.Process.Kill(); x.Wait() })
	if ev := evs.next("greeter"); ev["screen"] != "unavailable" {
		t.Fatalf("first greeter frame %v; want the unavailable screen (no broker)", ev)
	}
}

// freeDisplay returns an X display number no server uses now.
func freeDisplay(t *testing.T) int {
	t.Helper()
	for n := 90 + os.Getpid()%300; n < 1000; n++ {
		if _, err := os.Stat(fmt.Sprintf("/tmp/.X11-unix/X%d", n)); errors.Is(err, os.ErrNotExist) {
			if _, err := os.Stat(fmt.Sprintf("/tmp/.X%d-lock", n)); errors.Is(err, os.ErrNotExist) {
				return n
			}
		}
	}
	t.Fatal("no free X display number")
	return 0
}
