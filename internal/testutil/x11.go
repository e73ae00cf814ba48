package testutil

import (
	"bytes"
	"fmt"
	"image"
	"image/png"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"
)

// NeedTools fails the test under CI=true, and skips it otherwise, when one
// of tools is not on $PATH: CI must never pass by skipping what it cannot
// run.
func NeedTools(t testing.TB, tools ...string) {
	t.Helper()
	for _, tool := range tools {
		if _, err := exec.LookPath(tool); err != nil {
			SkipOrFail(t, "%s not installed: %v", tool, err)
		}
	}
}

// StartXvfb starts a virtual X screen of 1024x768x24 on a free display
// number and returns its name (":N"); it is stopped when the test ends.
func StartXvfb(t testing.TB) string {
	t.Helper()
	NeedTools(t, "Xvfb", "xwd")
	for try := 0; try < 5; try++ {
		disp := fmt.Sprintf(":%d", 200+rand.IntN(500))
		cmd := exec.Command("Xvfb", disp, "-screen", "0", "1024x768x24", "-nolisten", "tcp")
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		exited := make(chan struct{})
		go func() { cmd.Wait(); close(exited) }()
		deadline := time.Now().Add(10 * time.Second)
		for time.Now().Before(deadline) {
			if exec.Command("xwd", "-root", "-silent", "-display", disp).Run() == nil {
				t.Cleanup(func() { cmd.Process.Kill(); <-exited })
				return disp
			}
			select {
			case <-exited: // the display number was taken: try another
				deadline = time.Time{}
			case <-time.After(100 * time.Millisecond):
			}
		}
		cmd.Process.Kill()
		<-exited
	}
	t.Fatal("no Xvfb display could be started")
	return ""
}

// Screenshot returns the whole screen of X display disp (xwd, converted by
// ImageMagick).
func Screenshot(t testing.TB, disp string) image.Image {
	t.Helper()
	NeedTools(t, "xwd", "convert")
	xwd := exec.Command("xwd", "-root", "-silent", "-display", disp)
	conv := exec.Command("convert", "xwd:-", "png:-")
	var err error
	if conv.Stdin, err = xwd.StdoutPipe(); err != nil {
		t.Fatal(err)
	}
	var out bytes.Buffer
	conv.Stdout = &out
	if err := conv.Start(); err != nil {
		t.Fatal(err)
	}
	if err := xwd.Run(); err != nil {
		t.Fatalf("xwd: %v", err)
	}
	if err := conv.Wait(); err != nil {
		t.Fatalf("convert: %v", err)
	}
	img, err := png.Decode(&out)
	if err != nil {
		t.Fatal(err)
	}
	return img
}

// KeepShots writes each of shots (a nil one is passed over) to
// $HOTDESK_SHOTS/<name>.png, for a person to look at, when that variable
// is set; it does nothing otherwise. Failures to write are ignored: the
// pictures are not part of the test.
func KeepShots(shots map[string]image.Image) {
	dir := os.Getenv("HOTDESK_SHOTS")
	if dir == "" {
		return
	}
	for name, img := range shots {
		if img == nil {
			continue
		}
		if f, err := os.Create(filepath.Join(dir, name+".png")); err == nil {
			png.Encode(f, img)
			f.Close()
		}
	}
}
