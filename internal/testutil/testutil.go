// Package testutil holds the helpers hotdesk's tests share: a goroutine leak
// check for TestMain and a bounded wait for conditions outside a test's
// control. It is imported only by _test.go files and test harnesses.
package testutil

import (
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// Leaked waits up to d for every goroutine whose stack mentions one of match
// to end, and returns the stacks of those still running after d.
func Leaked(d time.Duration, match ...string) []string {
	deadline := time.Now().Add(d)
	for {
		leaked := leakedNow(match)
		if len(leaked) == 0 || time.Now().After(deadline) {
			return leaked
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func leakedNow(match []string) []string {
	buf := make([]byte, 1<<20)
	for {
		n := runtime.Stack(buf, true)
		if n < len(buf) {
			buf = buf[:n]
			break
		}
		buf = make([]byte, 2*len(buf))
	}
	var leaked []string
	for _, g := range strings.Split(string(buf), "\n\n") {
		// This check's own goroutine and TestMain's are never leaks.
		if strings.Contains(g, "testutil.leakedNow(") || strings.Contains(g, ".TestMain(") {
			continue
		}
		for _, m := range match {
			if strings.Contains(g, m) {
				leaked = append(leaked, g)
				break
			}
		}
	}
	return leaked
}

// CheckLeaks is the end of a package's TestMain: when the tests passed
// (code 0) and goroutines matching match are still running after d, it
// prints their stacks and returns 1; otherwise it returns code.
//
//	func TestMain(m *testing.M) {
//		os.Exit(testutil.CheckLeaks(m.Run(), 5*time.Second, "hotdesk/proto"))
//	}
func CheckLeaks(code int, d time.Duration, match ...string) int {
	return checkLeaks(os.Stderr, code, d, match...)
}

func checkLeaks(w io.Writer, code int, d time.Duration, match ...string) int {
	if code != 0 {
		return code
	}
	if leaked := Leaked(d, match...); len(leaked) > 0 {
		fmt.Fprintf(w, "leaked %d goroutines:\n\n%s\n", len(leaked), strings.Join(leaked, "\n\n"))
		return 1
	}
	return code
}

// WaitFor polls cond every 10 ms until it holds, failing the test after d.
// It is a bounded wait for a condition outside the test's control (a child
// process started, a key expired), never a timing assertion.
func WaitFor(t testing.TB, d time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("gave up after %v waiting for %s", d, what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

var builds struct {
	mu   sync.Mutex
	root string
	dirs map[string]string // package list → directory holding the binaries
	errs map[string]error
}

// Build builds the main packages pkgs (paths as `go build` takes them,
// relative to the test's package directory) once per test process and
// returns the directory holding the binaries. Later calls with the same
// packages return the same directory at once, so every end-to-end test of a
// package shares one build; the link itself is shared with later test
// processes and other packages' tests building the same binaries (the link
// cache, linkcache.go). A failed build fails the test. The directory
// lives until RemoveBuilds (call it at the end of TestMain).
func Build(t testing.TB, pkgs ...string) string {
	t.Helper()
	key := strings.Join(pkgs, "\x00")
	builds.mu.Lock()
	defer builds.mu.Unlock()
	if dir, ok := builds.dirs[key]; ok {
		return dir
	}
	if err, ok := builds.errs[key]; ok {
		t.Fatal(err)
	}
	if builds.root == "" {
		root, err := os.MkdirTemp("", "hotdesk-bin")
		if err != nil {
			t.Fatal(err)
		}
		builds.root = root
		builds.dirs = map[string]string{}
		builds.errs = map[string]error{}
	}
	dir := filepath.Join(builds.root, strconv.Itoa(len(builds.dirs)+len(builds.errs)))
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := buildInto(dir, pkgs); err != nil {
		builds.errs[key] = err
		t.Fatal(err)
	}
	builds.dirs[key] = dir
	return dir
}

// RunWithBuilds runs a package's tests and then removes what Build built
// for them; it returns m.Run's exit code:
//
//	func TestMain(m *testing.M) {
//		os.Exit(testutil.RunWithBuilds(m))
//	}
func RunWithBuilds(m *testing.M) int {
	defer RemoveBuilds()
	return m.Run()
}

// RemoveBuilds removes what Build built.
func RemoveBuilds() {
	builds.mu.Lock()
	defer builds.mu.Unlock()
	if builds.root != "" {
		os.RemoveAll(builds.root)
		builds.root, builds.dirs, builds.errs = "", nil, nil
	}
}

// OutputRetryingBusy runs the command newCmd makes and returns its combined
// output, running a new one (up to 10 times) while it fails with "text file
// busy": an executable just written is held open for writing by any child
// another goroutine forks meanwhile, until that child execs.
func OutputRetryingBusy(newCmd func() *exec.Cmd) (*exec.Cmd, []byte, error) {
	for attempt := 1; ; attempt++ {
		cmd := newCmd()
		out, err := cmd.CombinedOutput()
		if err == nil || attempt == 10 || !strings.Contains(strings.ToLower(string(out)), "text file busy") {
			return cmd, out, err
		}
		time.Sleep(50 * time.Millisecond)
	}
}
