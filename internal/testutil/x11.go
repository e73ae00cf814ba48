package testutil

import (
	"bufio"
	"bytes"
	"image"
	"image/png"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
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
// Xvfb picks the number itself (-displayfd), under its lock file: a
// number chosen here could belong to another test's X server, which
// would then answer the readiness check in this one's place.
func StartXvfb(t testing.TB) string {
	t.Helper()
	NeedTools(t, "Xvfb", "xwd")
	pr, pw, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	defer pr.Close()
	cmd := exec.Command("Xvfb", "-displayfd", "3", "-screen", "0", "1024x768x24", "-nolisten", "tcp")
	cmd.ExtraFiles = []*os.File{pw} // fd 3
	err = cmd.Start()
	pw.Close()
	if err != nil {
		t.Fatal(err)
	}
	exited := make(chan struct{})
	go func() { cmd.Wait(); close(exited) }()
	stop := func() { cmd.Process.Kill(); <-exited }
	num := make(chan string, 1)
	go func() { // ends when Xvfb writes its number or exits (pw closed)
		line, _ := bufio.NewReader(pr).ReadString('\n')
		num <- strings.TrimSpace(line)
	}()
	var disp string
	select {
	case n := <-num:
		if n == "" {
			stop()
			t.Fatal("Xvfb exited without a display number")
		}
		disp = ":" + n
	case <-time.After(30 * time.Second):
		stop()
		t.Fatal("Xvfb gave no display number in 30 s")
	}
	deadline := time.Now().Add(10 * time.Second)
	for exec.Command("xwd", "-root", "-silent", "-display", disp).Run() != nil {
		select {
		case <-exited:
			t.Fatalf("Xvfb on %s exited", disp)
		case <-time.After(100 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			stop()
			t.Fatalf("Xvfb on %s does not answer", disp)
		}
	}
	t.Cleanup(stop)
	return disp
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
