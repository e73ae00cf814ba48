package testutil

import (
	"bytes"
	"image"
	"image/png"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"
)

// TestKeepShots: pictures are written to $HOTDESK_SHOTS only when it is set.
func TestKeepShots(t *testing.T) {
	img := image.NewRGBA(image.Rect(0, 0, 2, 2))
	t.Setenv("HOTDESK_SHOTS", "")
	KeepShots(map[string]image.Image{"x": img}) // nowhere to write: nothing happens
	dir := t.TempDir()
	t.Setenv("HOTDESK_SHOTS", dir)
	KeepShots(map[string]image.Image{"1-kept": img, "2-none": nil})
	f, err := os.Open(filepath.Join(dir, "1-kept.png"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if got, err := png.Decode(f); err != nil || got.Bounds() != img.Bounds() {
		t.Fatalf("kept picture: %v, %v; want a 2x2 PNG", got, err)
	}
	if _, err := os.Stat(filepath.Join(dir, "2-none.png")); !os.IsNotExist(err) {
		t.Fatalf("a nil picture was written: %v", err)
	}
}

// TestScreenshot: the screen as decoded here is, pixel for pixel, what
// ImageMagick makes of the same dump.
func TestScreenshot(t *testing.T) {
	t.Parallel()
	NeedTools(t, "xlogo", "convert")
	disp := StartXvfb(t)
	logo := exec.Command("xlogo", "-display", disp, "-geometry", "300x200+10+20", "-fg", "#ff7a6e", "-bg", "#1d2b3a")
	if err := logo.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { logo.Process.Kill(); logo.Wait() })
	var dump []byte
	WaitFor(t, 20*time.Second, "xlogo on the screen", func() bool {
		var err error
		if dump, err = exec.Command("xwd", "-root", "-silent", "-display", disp).Output(); err != nil {
			t.Fatalf("xwd: %v", err)
		}
		img, err := decodeXWD(dump)
		if err != nil {
			t.Fatal(err)
		}
		// The window's background first, then the logo drawn on it (a
		// loaded machine showed the background alone).
		r, g, b, _ := img.At(15, 25).RGBA()
		if r>>8 != 0x1d || g>>8 != 0x2b || b>>8 != 0x3a {
			return false
		}
		for y := 20; y < 220; y += 2 {
			for x := 10; x < 310; x += 2 {
				if r, g, b, _ := img.At(x, y).RGBA(); r>>8 == 0xff && g>>8 == 0x7a && b>>8 == 0x6e {
					return true
				}
			}
		}
		return false
	})
	got, _ := decodeXWD(dump)
	conv := exec.Command("convert", "xwd:-", "png:-")
	conv.Stdin = bytes.NewReader(dump)
	out, err := conv.Output()
	if err != nil {
		t.Fatalf("convert: %v", err)
	}
	want, err := png.Decode(bytes.NewReader(out))
	if err != nil {
		t.Fatal(err)
	}
	if got.Bounds() != want.Bounds() {
		t.Fatalf("bounds %v; ImageMagick's %v", got.Bounds(), want.Bounds())
	}
	colours := map[[3]uint32]bool{}
	for y := 0; y < got.Bounds().Dy(); y++ {
		for x := 0; x < got.Bounds().Dx(); x++ {
			r, g, b, a := got.At(x, y).RGBA()
			wr, wg, wb, wa := want.At(x, y).RGBA()
			if r != wr || g != wg || b != wb || a != wa {
				t.Fatalf("pixel %d,%d = %x %x %x %x; ImageMagick's %x %x %x %x", x, y, r, g, b, a, wr, wg, wb, wa)
			}
			colours[[3]uint32{r >> 8, g >> 8, b >> 8}] = true
		}
	}
	if !colours[[3]uint32{0xff, 0x7a, 0x6e}] {
		t.Errorf("no pixel of the logo's colour among %d colours", len(colours))
	}
	// The general path decodes the same dump to the same picture.
	general, err := decodeXWDPath(dump, false)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(general.Pix, got.Pix) {
		t.Error("the general path and the fast path decode the dump differently")
	}
	if _, err := decodeXWD(dump[:len(dump)-1]); err == nil {
		t.Error("a truncated dump: nil error; want an error")
	}
}
