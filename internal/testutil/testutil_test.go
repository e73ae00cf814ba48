package testutil

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
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
	// Two screens are two X servers of their own, each answering on its
	// display.
	d1, d2 := StartXvfb(t), StartXvfb(t)
	if d1 == d2 {
		t.Fatalf("displays %q and %q; want two different ones", d1, d2)
	}
	for _, disp := range []string{d1, d2} {
		img := Screenshot(t, disp)
		if b := img.Bounds(); b.Dx() != 1024 || b.Dy() != 768 {
			t.Fatalf("screenshot of %s is %v; want 1024x768", disp, b)
		}
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
