package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"image"
	"image/draw"
	"io"
	"io/fs"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/hotdesk/hotdesk/compositor/procsup"
	"github.com/hotdesk/hotdesk/internal/testutil"
)

// changed counts the sampled points (every other pixel of every other row
// of the 800x600 desktop, below the panel whose top 40 rows hold the clock)
// where two pictures differ visibly. A mean difference would not do: the
// application's window (weston-flower draws a flower of random size at a
// random place) can cover as little as 1% of the screen, and the pointer
// may be drawn at either terminal.
//
// Screenshots are compared in their pixels (not through At, an interface
// call and a colour per point), without the race detector's instrumentation
// (go:norace: the pictures are this goroutine's own): the test compares
// several a second while it waits for the screens to settle.
//
//go:norace
func changed(a, b image.Image) int {
	ra, aok := a.(*image.RGBA)
	rb, bok := b.(*image.RGBA)
	if !aok || !bok {
		ra, rb = toRGBA(a), toRGBA(b)
	}
	n := 0
	for y := 40; y < 600; y += 2 {
		for x := 0; x < 800; x += 2 {
			pa, pb := ra.Pix[ra.PixOffset(x, y):], rb.Pix[rb.PixOffset(x, y):]
			if abs(int(pa[0])-int(pb[0]))+abs(int(pa[1])-int(pb[1]))+abs(int(pa[2])-int(pb[2])) > 48 {
				n++
			}
		}
	}
	return n
}

// toRGBA returns img as an *image.RGBA of the same bounds.
func toRGBA(img image.Image) *image.RGBA {
	out := image.NewRGBA(img.Bounds())
	draw.Draw(out, out.Bounds(), img, img.Bounds().Min, draw.Src)
	return out
}

// Thresholds for changed, out of 112,000 sampled points: the smallest
// flower weston-flower draws covers about 750, the pointer about 30.
const (
	samePicture    = 150   // at most this many points differ: the same picture
	appVisible     = 300   // at least this many: a window appeared
	desktopVisible = 50000 // a desktop instead of a black screen
)

func abs(v int) int {
	if v < 0 {
		return -v
	}
	return v
}

// runTerm starts hotdesk-term on display disp with the RDP client and
// returns its events and stdin.
func (e *e2e) runTerm(ctx context.Context, id, ks, disp string) (<-chan map[string]any, io.WriteCloser) {
	e.t.Helper()
	return e.runTermWith(ctx, id, ks, disp, "xfreerdp /v:{addr} /cert:ignore /u:x /p:x /size:800x600 /bpp:24")
}

// runTermWith is runTerm with the display command display. When the test
// fails, the terminal's debug log (its display client's starts, relay and
// exits) and the desktops' weston.log are logged.
func (e *e2e) runTermWith(ctx context.Context, id, ks, disp, display string) (<-chan map[string]any, io.WriteCloser) {
	e.t.Helper()
	cmd := exec.CommandContext(ctx, filepath.Join(e.bin, "hotdesk-term"), "-server", e.addr, "-pin", e.pin, "-id", id,
		"-keystore", ks, "-json", "-display", display, "-log-level", "debug", "run")
	cmd.Env = append(os.Environ(), "DISPLAY="+disp)
	var log testutil.LockedBuffer
	cmd.Stderr = &log
	evs, in := testutil.StartEvents(e.t, cmd, 64)
	// Registered after StartEvents: runs before the terminal is stopped.
	e.t.Cleanup(func() {
		if e.t.Failed() {
			e.t.Logf("hotdesk-term %s log (tail):\n%s", id, lastBytes(log.String(), 8<<10))
		}
	})
	e.westonLogs.Do(func() {
		e.t.Cleanup(func() {
			if !e.t.Failed() {
				return
			}
			filepath.WalkDir(e.dir, func(p string, d fs.DirEntry, err error) error {
				if err == nil && d.Name() == "weston.log" {
					// As the daemon quotes it: not waiting on weston's
					// lease, made printable.
					e.t.Logf("%s (tail):\n%s", p, procsup.LogTail(p, 8<<10))
				}
				return nil
			})
		})
	})
	return evs, in
}

// lastBytes is the end of s, at most n bytes of it.
func lastBytes(s string, n int) string {
	if len(s) > n {
		return "…" + s[len(s)-n:]
	}
	return s
}

// next is the terminal's next event want (testutil.NextEvent), within 30 s.
func next(t *testing.T, evs <-chan map[string]any, want string) map[string]any {
	t.Helper()
	return testutil.NextEvent(t, evs, want, 30*time.Second)
}

// TestDesktopFollowsToken: a real weston RDP desktop, seen by FreeRDP under
// Xvfb through the broker's attach gateway; an application is started in
// it; the token moves to a second terminal and the same desktop, with the
// same application, is seen there.
func TestDesktopFollowsToken(t *testing.T) {
	t.Parallel() // its own daemon, data dir, ports and terminals
	testutil.NeedTools(t, "xfreerdp", "Xvfb", "xwd", "convert", "weston-flower", "nft")
	disps := testutil.StartXvfbs(t, 2)
	d1, d2 := disps[0], disps[1]
	e := startE2EWith(t, "", "kiosk", false, "", "compositor {\n  backend = \"rdp\"\n}")
	ks := e.enroll("alice")
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
	var before, withApp, there image.Image
	t.Cleanup(func() {
		testutil.KeepShots(map[string]image.Image{"1-desktop": before, "2-app": withApp, "3-terminal2": there})
	})
	var last string // the figures of the last check, for the failure message
	waitFor := func(what string, cond func() bool) {
		t.Helper()
		deadline := time.Now().Add(40 * time.Second)
		for !cond() {
			if time.Now().After(deadline) {
				t.Fatalf("timed out: %s (last check: %s)", what, last)
			}
			time.Sleep(300 * time.Millisecond)
		}
	}
	// settled is a screenshot of a picture that has stopped changing:
	// weston fades the desktop in and animates windows, and a picture
	// caught mid-animation matches neither the one before nor the one
	// after it.
	settled := func(disp string) image.Image {
		prev := testutil.Screenshot(t, disp)
		for i := 0; i < 20; i++ {
			time.Sleep(250 * time.Millisecond)
			cur := testutil.Screenshot(t, disp)
			if changed(prev, cur) == 0 {
				return cur
			}
			prev = cur
		}
		return prev
	}
	waitFor("the desktop shown at terminal 1", func() bool {
		before = settled(d1)
		n := changed(before, blank)
		last = fmt.Sprintf("%d points differ from the blank screen", n)
		return n >= desktopVisible
	})

	// Terminals reach the desktop through the gateway only: weston's RDP
	// port (no client authentication) refuses every other local user.
	rdpRefusesNobody(t, filepath.Join(e.dir, "data", "sessions", session, "session.json"))

	// An application in the session.
	appDone := e.runInSession(session, "weston-flower")
	waitFor("the application visible at terminal 1", func() bool {
		withApp = settled(d1)
		n := changed(withApp, before)
		last = fmt.Sprintf("%d points differ from the desktop before", n)
		return n >= appVisible
	})

	// The token moves: terminal 1 loses the picture, terminal 2 shows the
	// same desktop with the same application.
	fmt.Fprintln(in1, "remove default")
	next(t, ev1, "detached")
	waitFor("the desktop gone from terminal 1", func() bool {
		n := changed(testutil.Screenshot(t, d1), blank)
		last = fmt.Sprintf("%d points differ from the blank screen", n)
		return n <= samePicture
	})
	fmt.Fprintln(in2, "insert default")
	if a := next(t, ev2, "attached"); a["session"] != session {
		t.Fatalf("terminal 2 attached %v; want %s", a["session"], session)
	}
	waitFor("the same desktop at terminal 2", func() bool {
		there = settled(d2)
		withN, beforeN := changed(there, withApp), changed(there, before)
		last = fmt.Sprintf("%d points differ from terminal 1 with the application, %d from terminal 1 before it", withN, beforeN)
		return withN <= samePicture && beforeN >= appVisible
	})
	select {
	case err := <-appDone:
		t.Fatalf("the application ended: %v", err)
	default:
	}
}

// runInSession runs the Wayland client name in session's desktop until
// the test ends (then it is killed; its output is logged if the test
// failed); done reports its end.
func (e *e2e) runInSession(session, name string) (done <-chan error) {
	t := e.t
	t.Helper()
	app := exec.Command(name)
	app.Env = append(os.Environ(), "XDG_RUNTIME_DIR="+filepath.Join(e.dir, "data", "sessions", session, "run"), "WAYLAND_DISPLAY=wayland-hd")
	var out testutil.LockedBuffer
	app.Stdout, app.Stderr = &out, &out
	if err := app.Start(); err != nil {
		t.Fatal(err)
	}
	ended := make(chan error, 1)
	waited := make(chan struct{})
	go func() {
		err := app.Wait()
		ended <- err
		close(waited)
	}()
	t.Cleanup(func() {
		app.Process.Kill()
		<-waited
		if t.Failed() {
			t.Logf("%s output: %q", name, out.String())
		}
	})
	return ended
}

// TestDesktopTakesTerminalSize: terminals' screens differ in size and the
// display client runs full screen, as hotdesk-term's default does. The
// desktop takes the size of each terminal it is shown at (weston's RDP
// backend follows the client's): it fills a small screen, then a larger
// one with no black margin, then the small one again with nothing cut off.
func TestDesktopTakesTerminalSize(t *testing.T) {
	t.Parallel() // its own daemon, data dir, ports and terminals
	testutil.NeedTools(t, "xfreerdp", "Xvfb", "xwd", "nft")
	disps := testutil.StartXvfbSizes(t, "1024x768x24", "1280x1024x24")
	small, large := disps[0], disps[1]
	e := startE2EWith(t, "", "kiosk", false, "", "compositor {\n  backend = \"rdp\"\n}")
	ks := e.enroll("alice")
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	const fullScreen = "xfreerdp /v:{addr} /cert:ignore /u:x /p:x /f /bpp:24"
	evS, inS := e.runTermWith(ctx, "t-small", ks, small, fullScreen)
	evL, inL := e.runTermWith(ctx, "t-large", ks, large, fullScreen)
	next(t, evS, "connected")
	next(t, evL, "connected")

	var session string
	show := func(name string, ev <-chan map[string]any, in io.Writer, disp string) {
		t.Helper()
		fmt.Fprintln(in, "insert default")
		a := next(t, ev, "attached")
		if session == "" {
			session, _ = a["session"].(string)
		} else if a["session"] != session {
			t.Fatalf("%s attached %v; want %s", name, a["session"], session)
		}
		waitFilled(t, name, disp)
		logDisplayLost(t, name, ev)
	}
	hide := func(ev <-chan map[string]any, in io.Writer) {
		t.Helper()
		fmt.Fprintln(in, "remove default")
		next(t, ev, "detached")
	}
	show("small", evS, inS, small)
	hide(evS, inS)
	show("large", evL, inL, large)
	hide(evL, inL)
	show("small again", evS, inS, small)
}

// waitFilled waits (40 s at most) until the desktop fills the screen of
// display disp, the terminal name's: lit all over, weston's panel clock
// in its top-right corner.
func waitFilled(t *testing.T, name, disp string) {
	t.Helper()
	deadline := time.Now().Add(40 * time.Second)
	for {
		img := testutil.Screenshot(t, disp)
		lit, clock := fills(img)
		if lit >= 0.99 && clock >= 20 {
			return
		}
		if time.Now().After(deadline) {
			b := img.Bounds()
			testutil.KeepShots(map[string]image.Image{"size-" + name: img})
			t.Fatalf("the desktop does not fill the %s terminal's screen: %dx%d screen: %.1f%% of it lit, %d bright points where the panel's clock is",
				name, b.Dx(), b.Dy(), 100*lit, clock)
		}
		time.Sleep(300 * time.Millisecond)
	}
}

// shown is a weston RDP desktop shown full screen by FreeRDP (under Xvfb)
// at hotdesk-term t-1, its token in: showDesktop's.
type shown struct {
	e       *e2e
	ev      <-chan map[string]any // the terminal's events
	disp    string                // its X display
	session any                   // the session attached
	client  float64               // the display client's pid
}

// showDesktop starts hotdeskd (kiosk logins, weston RDP desktops; keep:
// session.keep_on_stop) and a terminal, inserts its token and waits until
// the desktop fills the terminal's screen.
func showDesktop(t *testing.T, keep bool) shown {
	t.Helper()
	testutil.NeedTools(t, "xfreerdp", "Xvfb", "xwd", "nft")
	sh := shown{disp: testutil.StartXvfbSizes(t, "1024x768x24")[0]}
	sh.e = startE2EWith(t, "", "kiosk", keep, "", "compositor {\n  backend = \"rdp\"\n}")
	ks := sh.e.enroll("alice")
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	t.Cleanup(cancel)
	var in io.Writer
	sh.ev, in = sh.e.runTermWith(ctx, "t-1", ks, sh.disp, "xfreerdp /v:{addr} /cert:ignore /u:x /p:x /f /bpp:24")
	next(t, sh.ev, "connected")
	fmt.Fprintln(in, "insert default")
	sh.session = next(t, sh.ev, "attached")["session"]
	sh.client = next(t, sh.ev, "display")["pid"].(float64)
	waitFilled(t, "first", sh.disp)
	return sh
}

// TestDesktopBackAfterDisplayClientDies: the display client (FreeRDP)
// showing a real weston desktop dies — killed here; weston 10 dropping
// its RDP peer on a loaded server ended it the same way and left the
// screen black with the session attached — and the terminal, its token
// still in, brings the same session back on its own with a new client.
func TestDesktopBackAfterDisplayClientDies(t *testing.T) {
	t.Parallel() // its own daemon, data dir, ports and terminal
	sh := showDesktop(t, false)
	ev, disp, session, client := sh.ev, sh.disp, sh.session, sh.client

	if err := syscall.Kill(int(client), syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	if lost := next(t, ev, "display_lost"); lost["session"] != session {
		t.Fatalf("display_lost %v; want session %v", lost, session)
	}
	if a := next(t, ev, "attached"); a["session"] != session || a["resumed"] != true {
		t.Fatalf("attached %v after the loss; want session %v again", a, session)
	}
	if again := next(t, ev, "display")["pid"].(float64); again == client {
		t.Fatalf("the session shown again by the killed client %v", client)
	}
	waitFilled(t, "shown again", disp)
}

// TestDesktopBackAfterBrokerCrash: hotdeskd killed (kill -9) while a
// terminal shows a real weston desktop through FreeRDP. The terminal,
// having lost its broker, takes the desktop off its screen (another
// broker may attach the session elsewhere once the lease is gone); when
// hotdeskd is back, the terminal, its token still in, reconnects and the
// same desktop (the same weston, adopted) fills its screen again, the
// person doing nothing.
func TestDesktopBackAfterBrokerCrash(t *testing.T) {
	t.Parallel() // its own daemon, data dir, ports and terminal
	sh := showDesktop(t, true)
	e, ev, disp, session := sh.e, sh.ev, sh.disp, sh.session
	before := e.sessions()
	if len(before) != 1 {
		t.Fatalf("sessions %+v; want one", before)
	}

	e.d.Stop(syscall.SIGKILL)
	next(t, ev, "disconnected")
	deadline := time.Now().Add(20 * time.Second)
	for {
		lit, _ := fills(testutil.Screenshot(t, disp))
		if lit < 0.01 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the desktop stays on the screen of a terminal without its broker: %.1f%% lit", 100*lit)
		}
		time.Sleep(200 * time.Millisecond)
	}

	e.start()
	if a := next(t, ev, "attached"); a["session"] != session || a["resumed"] != true {
		t.Fatalf("attached %v after the restart; want session %v resumed", a, session)
	}
	next(t, ev, "display")
	waitFilled(t, "after the restart", disp)
	if after := e.sessions(); len(after) != 1 || after[0].ID != before[0].ID || after[0].PID != before[0].PID {
		t.Fatalf("sessions after the restart %+v; want %+v, its compositor adopted", after, before)
	}
}

// logDisplayLost logs the display_lost events among the terminal's events
// received so far (a display client that weston dropped, shown again by
// the terminal), and lets the others go.
func logDisplayLost(t *testing.T, name string, ev <-chan map[string]any) {
	testutil.Drain(ev, func(e map[string]any) {
		if e["event"] == "display_lost" {
			t.Logf("%s terminal: %v", name, e)
		}
	})
}

// fills measures how a desktop fills the screen img: the share of sampled
// points that are lit (Xvfb's screen is black where nothing is drawn), and
// the bright points in the top-right corner, where weston's panel shows its
// right-aligned clock (a desktop wider than the screen is cut off there).
func fills(img image.Image) (lit float64, clock int) {
	r := toRGBA(img)
	b := r.Bounds()
	sum := func(x, y int) int {
		p := r.Pix[r.PixOffset(x, y):]
		return int(p[0]) + int(p[1]) + int(p[2])
	}
	n, on := 0, 0
	for y := b.Min.Y; y < b.Max.Y; y += 8 {
		for x := b.Min.X; x < b.Max.X; x += 8 {
			n++
			if sum(x, y) > 24 {
				on++
			}
		}
	}
	for y := b.Min.Y + 4; y < b.Min.Y+24; y++ {
		for x := b.Max.X - 200; x < b.Max.X-4; x++ {
			if sum(x, y) > 450 {
				clock++
			}
		}
	}
	return float64(on) / float64(n), clock
}

// rdpRefusesNobody fails the test unless the RDP port of the session whose
// record is at recordPath refuses a connection from the account nobody.
func rdpRefusesNobody(t *testing.T, recordPath string) {
	t.Helper()
	b, err := os.ReadFile(recordPath)
	if err != nil {
		t.Fatal(err)
	}
	var rec struct {
		Endpoint string `json:"endpoint"`
	}
	if err := json.Unmarshal(b, &rec); err != nil {
		t.Fatalf("%s: %v", recordPath, err)
	}
	_, port, err := net.SplitHostPort(strings.TrimPrefix(rec.Endpoint, "rdp://"))
	if err != nil || !strings.HasPrefix(rec.Endpoint, "rdp://") {
		t.Fatalf("endpoint %q is not rdp://HOST:PORT", rec.Endpoint)
	}
	n, _ := strconv.Atoi(port)
	uid, gid := testutil.Nobody(t)
	if err := testutil.DialAs(uid, gid, n); !errors.Is(err, testutil.ErrConnRefused) {
		t.Fatalf("nobody's connection to the desktop's RDP port %d: %v; want it refused", n, err)
	}
}
