package main

import (
	"context"
	"fmt"
	"image"
	"image/png"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"github.com/hotdesk/hotdesk/internal/testutil"

	"github.com/hotdesk/hotdesk/registry/etcdtest"
	"github.com/hotdesk/hotdesk/tokens/pcsc/pcscdtest"
	"github.com/hotdesk/hotdesk/tokens/pcsc/vcard"
)

// desktopDiff compares r of two screenshots (the whole screen below
// weston's panel, whose clock changes, if r is empty).
func desktopDiff(a, b image.Image, r image.Rectangle) float64 {
	if r.Empty() {
		r = image.Rect(0, 40, a.Bounds().Dx(), a.Bounds().Dy())
	}
	type sub interface {
		SubImage(image.Rectangle) image.Image
	}
	sa, oka := a.(sub)
	sb, okb := b.(sub)
	if !oka || !okb {
		return meanDiff(a, b)
	}
	return meanDiff(sa.SubImage(r), sb.SubImage(r))
}

// changed is the bounding box of the pixels (below the panel) that differ
// clearly between a and b.
func changed(a, b image.Image) image.Rectangle {
	var box image.Rectangle
	r := a.Bounds()
	for y := 40; y < r.Max.Y; y++ {
		for x := 0; x < r.Max.X; x++ {
			ar, ag, ab, _ := a.At(x, y).RGBA()
			br, bg, bb, _ := b.At(x, y).RGBA()
			d := max(int(ar>>8)-int(br>>8), int(br>>8)-int(ar>>8)) + max(int(ag>>8)-int(bg>>8), int(bg>>8)-int(ag>>8)) +
				max(int(ab>>8)-int(bb>>8), int(bb>>8)-int(ab>>8))
			if d > 60 {
				box = box.Union(image.Rect(x, y, x+1, y+1))
			}
		}
	}
	return box
}

// fullDesktop reports a screen covered by the desktop: no greeter, no
// black border (FreeRDP full screen, the desktop resized to the screen).
func fullDesktop(img image.Image) bool {
	black := pixelShare(img, func(r, g, b uint32) bool { return r < 8 && g < 8 && b < 8 })
	return greeterShare(img) < 0.05 && black < 0.05
}

// walkTerminal is one thin client of the walk: an X screen, a reader, a
// hotdesk-term agent homed at one broker, with the greeter. disp is its X
// screen (startXvfb).
type walkTerminal struct {
	t    *testing.T
	disp string
	evs  *events
}

func startWalkTerminal(t *testing.T, bin, disp, id string, pcscd *pcscdtest.Daemon, reader string, home *groupBroker) *walkTerminal {
	t.Helper()
	w := &walkTerminal{t: t, disp: disp}
	_, w.evs = startGreeterAgent(t, bin, []string{"DISPLAY=" + w.disp, pcscEnv(pcscd)}, id, home,
		"-keystore", filepath.Join(t.TempDir(), "none.json"), "-pcsc", "-readers", reader, "agent")
	return w
}

// greeter waits for a greeter frame on screen whose title is title ("" for any).
func (w *walkTerminal) greeter(screen, title string) map[string]any {
	w.t.Helper()
	for {
		ev := w.evs.next("greeter")
		if ev["screen"] == screen && (title == "" || ev["title"] == title) {
			return ev
		}
	}
}

// typePIN types pin on the terminal's screen through the X server.
func (w *walkTerminal) typePIN(pin string) {
	w.t.Helper()
	xdotool(w.t, w.disp, "type", "--delay", "40", pin)
	xdotool(w.t, w.disp, "key", "Return")
}

// until polls the screen until ok accepts a screenshot.
func (w *walkTerminal) until(what string, ok func(image.Image) bool) image.Image {
	w.t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for {
		img := testutil.Screenshot(w.t, w.disp)
		if ok(img) {
			return img
		}
		if time.Now().After(deadline) {
			w.t.Fatalf("%s: timed out", what)
		}
		time.Sleep(300 * time.Millisecond)
	}
}

// TestWalkE2E walks a person's whole path on real parts: a virtual card
// (vpcd, real pcscd) in the reader of terminal 1, homed at broker a; the
// PIN typed on the greeter (xdotool) and checked by real PAM; the desktop
// (weston RDP) shown by FreeRDP; an application started in it; the card
// moved to the reader of terminal 2, homed at broker b of the same group;
// the same desktop with the same application shown there (screenshots
// compared). Budget: about 60 s.
func TestWalkE2E(t *testing.T) {
	t.Parallel()
	testutil.NeedTools(t, "weston", "xfreerdp", "weston-flower")
	testutil.NeedMatrix(t)
	// What needs no binaries first: it starts while another test builds
	// them (buildBinaries waits for that build).
	pcscd := startPCSCD(t)
	etcd := etcdtest.Start(t)
	disp1, disp2 := startXvfb(t), startXvfb(t) // the terminals' screens
	pat := newLocalUser(t, "pat")              // hotdeskd registers tokens to local users only
	bin := buildBinaries(t)

	pamDir := testutil.MatrixServices(t, t.TempDir(), pat+":2468:hotdesk-pin\n", "", "hotdesk", "hotdesk-pin")
	blocks := cardPINBlocks(fmt.Sprintf(`etcd {
  endpoints = [%q]
  lease_ttl = "6s" # no broker dies here: a long lease keeps a loaded machine's late renewals from detaching the walk
}`, etcd[0]), pamDir, "")
	a, b := newBroker(t, bin, "a", blocks), newBroker(t, bin, "b", blocks)
	a.Launch() // both start at once
	b.Launch()
	a.WaitReady()
	b.WaitReady()
	if _, err := a.Ctl("token", "register", "uid.04a1b2c3", "-user", pat); err != nil {
		t.Fatalf("token register: %v", err)
	}

	r0, r1 := pcscdtest.Readers[0][len(pcscdtest.Readers[0])-5:], pcscdtest.Readers[1][len(pcscdtest.Readers[1])-5:]
	t1 := startWalkTerminal(t, bin, disp1, "desk-1", pcscd, r0, a)
	t2 := startWalkTerminal(t, bin, disp2, "desk-2", pcscd, r1, b)
	t1.greeter("idle", textInsert)
	t2.greeter("idle", textInsert)

	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	uid := []byte{0x04, 0xa1, 0xb2, 0xc3}

	// Terminal 1: card, PIN on the greeter, the desktop.
	card := insertCard(ctx, t, pcscd, 0, vcard.UIDCard(uid))
	t1.greeter("prompt", "")
	t1.typePIN("2468")
	att := t1.evs.next("attached")
	if att["user"] != pat || att["server"] != "a" {
		t.Fatalf("terminal 1 attached %v; want %s's session on a", att, pat)
	}
	session := att["session"].(string)
	t1.evs.next("display")
	var last image.Image
	before := t1.until("the desktop covers the greeter at terminal 1", func(img image.Image) bool {
		settled := fullDesktop(img) && last != nil && desktopDiff(img, last, image.Rectangle{}) < 0.01
		last = img
		return settled
	})

	// An application in the session.
	run := filepath.Join(a.Dir, "data", "sessions", session, "run")
	app := exec.Command("weston-flower")
	app.Env = append(os.Environ(), "XDG_RUNTIME_DIR="+run, "WAYLAND_DISPLAY=wayland-hd")
	if err := app.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { app.Process.Kill(); app.Wait() })
	var appBox image.Rectangle
	withApp := t1.until("the application at terminal 1", func(img image.Image) bool {
		appBox = changed(before, img)
		return appBox.Dx() > 20 && appBox.Dy() > 20
	})
	t.Logf("the application drew %v", appBox)

	// The card moves to terminal 2, homed at broker b.
	card.Remove()
	if det := t1.evs.next("detached"); det["reason"] != "token_removed" {
		t.Fatalf("terminal 1: %v; want detached token_removed", det)
	}
	t1.until("the greeter back at terminal 1", func(img image.Image) bool { return greeterShare(img) > 0.5 })
	// No pause: the card goes into the other reader, and terminal 1's
	// agent saw it leave through pcscd.
	card = insertCard(ctx, t, pcscd, 1, vcard.UIDCard(uid))
	defer card.Remove()
	for {
		ev := t2.evs.next("attached", "prompt", "redirect")
		if ev["event"] == "redirect" {
			if ev["server"] != "a" {
				t.Fatalf("terminal 2 redirected to %v; want a, the session's broker", ev["server"])
			}
			continue
		}
		if ev["event"] == "prompt" { // a policy may ask again at a new desk
			t2.greeter("prompt", "")
			t2.typePIN("2468")
			continue
		}
		if ev["session"] != session || ev["server"] != "a" {
			t.Fatalf("terminal 2 attached %v; want session %s on a", ev, session)
		}
		break
	}
	there := t2.until("the same desktop and application at terminal 2", func(img image.Image) bool {
		return fullDesktop(img) && desktopDiff(img, withApp, appBox) < 2 && desktopDiff(img, before, appBox) > 10
	})
	if app.ProcessState != nil {
		t.Fatal("the application ended")
	}
	t.Logf("terminal 2 vs terminal 1 with the application: mean diff %.3f (application's area %.3f); vs before the application: %.3f",
		desktopDiff(there, withApp, image.Rectangle{}), desktopDiff(there, withApp, appBox), desktopDiff(there, before, appBox))
	if dir := os.Getenv("HOTDESK_SHOTS"); dir != "" {
		for name, img := range map[string]image.Image{"walk-1-desktop": before, "walk-2-app": withApp, "walk-3-terminal2": there} {
			if f, err := os.Create(filepath.Join(dir, name+".png")); err == nil {
				png.Encode(f, img)
				f.Close()
			}
		}
	}
}
