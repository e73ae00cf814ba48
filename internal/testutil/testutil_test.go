package testutil

import (
	"bytes"
	"image"
	"image/png"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

func parkedLeaker(started chan<- struct{}, stop <-chan struct{}) {
	close(started)
	<-stop
}

func TestCheckLeaksReportsARunningGoroutine(t *testing.T) {
	started, stop := make(chan struct{}), make(chan struct{})
	go parkedLeaker(started, stop)
	<-started
	var out bytes.Buffer
	if code := checkLeaks(&out, 0, 50*time.Millisecond, "testutil.parkedLeaker"); code != 1 {
		t.Fatalf("checkLeaks = %d with a goroutine still running; want 1", code)
	}
	if !strings.Contains(out.String(), "parkedLeaker") {
		t.Fatalf("report does not show the leaked stack:\n%s", out.String())
	}
	close(stop)
	out.Reset()
	if code := checkLeaks(&out, 0, 5*time.Second, "testutil.parkedLeaker"); code != 0 {
		t.Fatalf("checkLeaks = %d after the goroutine ended; want 0\n%s", code, out.String())
	}
	if code := checkLeaks(&out, 3, time.Second, "nothing"); code != 3 {
		t.Fatalf("checkLeaks kept code %d; want the failing code 3", code)
	}
}

func TestWaitForPollsUntilTrue(t *testing.T) {
	var n atomic.Int32
	WaitFor(t, 5*time.Second, "three polls", func() bool { return n.Add(1) >= 3 })
	if n.Load() < 3 {
		t.Fatalf("WaitFor returned after %d polls", n.Load())
	}
}

func TestBuildOncePerProcess(t *testing.T) {
	src := t.TempDir()
	if err := os.WriteFile(filepath.Join(src, "main.go"), []byte("package main\nfunc main() {}\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(src, "go.mod"), []byte("module probe\ngo 1.22\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	wd, _ := os.Getwd()
	if err := os.Chdir(src); err != nil {
		t.Fatal(err)
	}
	defer os.Chdir(wd)
	defer RemoveBuilds()
	a := Build(t, ".")
	fi, err := os.Stat(filepath.Join(a, "probe"))
	if err != nil {
		t.Fatalf("binary not built: %v", err)
	}
	b := Build(t, ".")
	fi2, err := os.Stat(filepath.Join(b, "probe"))
	if a != b || err != nil || !fi2.ModTime().Equal(fi.ModTime()) {
		t.Fatalf("second Build = %s (%v); want the first build %s reused", b, err, a)
	}
	RemoveBuilds()
	if _, err := os.Stat(a); !os.IsNotExist(err) {
		t.Fatalf("RemoveBuilds left %s: %v", a, err)
	}
}

func TestXvfbAndScreenshot(t *testing.T) {
	disp := StartXvfb(t)
	img := Screenshot(t, disp)
	if b := img.Bounds(); b.Dx() != 1024 || b.Dy() != 768 {
		t.Fatalf("screenshot of %s is %v; want 1024x768", disp, b)
	}
}

func TestExec(t *testing.T) {
	for _, c := range []struct {
		script string
		out    string
		code   int
	}{
		{"echo hi", "hi\n", 0},
		{"echo oops >&2; exit 3", "oops\n", 3},
	} {
		if out, code := Exec(t, "sh", "-c", c.script); out != c.out || code != c.code {
			t.Errorf("Exec(%q) = %q, %d; want %q, %d", c.script, out, code, c.out, c.code)
		}
	}
}

func TestMatrixServices(t *testing.T) {
	pamDir := MatrixServices(t, t.TempDir(), "u:pw:svc\n", "session optional pam_permit.so\n", "svc", "other")
	for _, svc := range []string{"svc", "other"} {
		b, err := os.ReadFile(filepath.Join(pamDir, svc))
		if err != nil || !strings.Contains(string(b), MatrixModule) || !strings.HasSuffix(string(b), "pam_permit.so\n") {
			t.Errorf("service %s = %q, %v; want pam_matrix then the extra line", svc, b, err)
		}
	}
}

// TestLockedBuffer: concurrent writers and readers (run under -race) lose
// no write.
func TestLockedBuffer(t *testing.T) {
	var b LockedBuffer
	var wg sync.WaitGroup
	for range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range 100 {
				b.Write([]byte("0123456789"))
				_ = b.String()
			}
		}()
	}
	wg.Wait()
	if got := len(b.String()); got != 8*100*10 {
		t.Fatalf("len = %d after 800 writes of 10 bytes; want 8000", got)
	}
}

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
