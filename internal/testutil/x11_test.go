package testutil

import (
	"image"
	"image/png"
	"os"
	"path/filepath"
	"testing"
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

// TestStartXvfb: two screens are two X servers of their own, each
// answering on its display.
func TestStartXvfb(t *testing.T) {
	t.Parallel()
	d1, d2 := StartXvfb(t), StartXvfb(t)
	if d1 == d2 {
		t.Fatalf("displays %q and %q; want two different ones", d1, d2)
	}
	for _, d := range []string{d1, d2} {
		if img := Screenshot(t, d); img.Bounds().Dx() != 1024 || img.Bounds().Dy() != 768 {
			t.Errorf("screen %s is %v; want 1024x768", d, img.Bounds())
		}
	}
}
