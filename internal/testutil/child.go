package testutil

import (
	"bytes"
	"context"
	"flag"
	"os"
	"os/exec"
	"regexp"
	"strings"
	"testing"
	"time"
)

// InChild reports whether this process is a child test process that
// RunInChild started with env set to "1".
func InChild(env string) bool { return os.Getenv(env) == "1" }

// RunInChild runs the test t (its subtests as far as -test.run selects
// them) once in a child process, the test binary again with env=1 in its
// environment, and reports the child's result as t's: it fails t if the
// child failed or did not run t, skips t if the child skipped it, and logs
// the child's output when -test.v is given. The caller returns at once
// afterwards; in the child (InChild(env)) it runs the test itself.
//
// Tests use it for what one process can do only once: libpcsclite reads
// the pcscd socket's name once per process, so every run of a test that
// starts a private pcscd (tokens/pcsc/pcscdtest), -count=N included,
// needs a process of its own.
func RunInChild(t *testing.T, env string) {
	t.Helper()
	var elems []string
	for _, e := range strings.Split(t.Name(), "/") {
		elems = append(elems, "^"+regexp.QuoteMeta(e)+"$")
	}
	if f := flag.Lookup("test.run"); f != nil {
		// Keep the selection of deeper subtests: -run TestX/a runs only
		// TestX/a in TestX's child.
		if sel := strings.Split(f.Value.String(), "/"); len(sel) > len(elems) {
			elems = append(elems, sel[len(elems):]...)
		}
	}
	args := []string{"-test.run=" + strings.Join(elems, "/"), "-test.count=1", "-test.v"}
	if testing.Short() {
		args = append(args, "-test.short")
	}
	ctx := context.Background()
	if dl, ok := t.Deadline(); ok {
		// The child's own timeout comes first and prints its goroutines.
		if d := time.Until(dl.Add(-10 * time.Second)); d > 0 {
			args = append(args, "-test.timeout="+d.String())
		}
		var cancel context.CancelFunc
		ctx, cancel = context.WithDeadline(ctx, dl.Add(-5*time.Second))
		defer cancel()
	}
	cmd := exec.CommandContext(ctx, os.Args[0], args...)
	cmd.Env = append(os.Environ(), env+"=1")
	cmd.WaitDelay = 5 * time.Second
	out, err := cmd.CombinedOutput()
	passed := bytes.Contains(out, []byte("--- PASS: "+t.Name()+" ("))
	skipped := bytes.Contains(out, []byte("--- SKIP: "+t.Name()+" ("))
	switch {
	case err != nil || !(passed || skipped):
		t.Fatalf("child test process: %v\n%s", err, out)
	case skipped:
		t.Skipf("child test process skipped:\n%s", out)
	case testing.Verbose():
		t.Logf("child test process:\n%s", out)
	}
}
