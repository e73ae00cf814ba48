package testutil

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"syscall"
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

// probeModule writes a module with one main package, probe, to a new
// directory, makes it the working directory and points the link cache at a
// directory of the test's own, until the test ends (the tests using it are
// serial).
func probeModule(t *testing.T) (src, cache string) {
	src = t.TempDir()
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
	cache = filepath.Join(t.TempDir(), "cache")
	old := linkCacheRoot
	linkCacheRoot = func() string { return cache }
	t.Cleanup(func() {
		RemoveBuilds()
		linkCacheRoot = old
		os.Chdir(wd)
	})
	return src, cache
}

func TestBuildOncePerProcess(t *testing.T) {
	probeModule(t)
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

// TestBuildSharesTheLink: a later test process (RemoveBuilds, then Build)
// gets the binary the first one linked (go build only touches an up to
// date target: the cached file is the same one), unless its sources
// changed; a cache directory open to other users is not used.
func TestBuildSharesTheLink(t *testing.T) {
	src, cache := probeModule(t)
	linked := func() (ino uint64, content []byte) {
		t.Helper()
		ents, err := os.ReadDir(cache)
		if err != nil {
			t.Fatal(err)
		}
		for _, e := range ents {
			if !e.IsDir() {
				continue
			}
			p := filepath.Join(cache, e.Name(), "probe")
			fi, err := os.Stat(p)
			if err != nil {
				t.Fatalf("cache entry %s: %v", e.Name(), err)
			}
			b, _ := os.ReadFile(p)
			return fi.Sys().(*syscall.Stat_t).Ino, b
		}
		t.Fatalf("nothing in the link cache %s", cache)
		return 0, nil
	}
	built := func() []byte {
		t.Helper()
		b, err := os.ReadFile(filepath.Join(Build(t, "."), "probe"))
		if err != nil {
			t.Fatalf("binary not built: %v", err)
		}
		return b
	}
	first := built()
	ino, cached := linked()
	if !bytes.Equal(first, cached) {
		t.Fatal("the build's binary is not the cached one")
	}
	RemoveBuilds()
	if again := built(); !bytes.Equal(again, first) {
		t.Fatal("the second process's binary differs from the first's")
	}
	if ino2, _ := linked(); ino2 != ino {
		t.Fatalf("the second process linked again (inode %d, was %d); want the first link reused", ino2, ino)
	}
	if err := os.WriteFile(filepath.Join(src, "main.go"), []byte("package main\nfunc main() { println(\"changed\") }\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	RemoveBuilds()
	if changed := built(); bytes.Equal(changed, first) || !bytes.Contains(changed, []byte("changed")) {
		t.Fatal("the binary of changed sources is the old link")
	}

	// A cache others may write to is passed by: the build still works.
	if err := os.Chmod(cache, 0o777); err != nil {
		t.Fatal(err)
	}
	ents, _ := os.ReadDir(cache)
	for _, e := range ents {
		os.RemoveAll(filepath.Join(cache, e.Name()))
	}
	RemoveBuilds()
	built()
	if ents, _ := os.ReadDir(cache); len(ents) != 0 {
		t.Fatalf("a cache open to others was used: %d entries", len(ents))
	}
}

func TestXvfbAndScreenshot(t *testing.T) {
	// Three screens (two started at once) are three X servers of their
	// own, each answering on its display.
	disps := append(StartXvfbs(t, 2), StartXvfb(t))
	if disps[0] == disps[1] || disps[1] == disps[2] || disps[0] == disps[2] {
		t.Fatalf("displays %q; want three different ones", disps)
	}
	for _, disp := range disps {
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
