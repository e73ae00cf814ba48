package main

import (
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/hotdesk/hotdesk/internal/testutil"
)

// TestMakeTestShowsAdversarialFigures: `make test` runs TestAdversarial
// verbosely, so that its figures (fmt.Printf) are printed: go test shows a
// passing package's output only with -v. Every other run of this package
// in `make test` skips it, so it runs once.
func TestMakeTestShowsAdversarialFigures(t *testing.T) {
	t.Parallel()
	testutil.NeedTools(t, "make")
	cmd := exec.Command("make", "-n", "--no-print-directory", "GO=go", "test")
	cmd.Dir = "../.."
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("make -n test: %v\n%s", err, out)
	}
	verbose, others := 0, 0
	for _, l := range strings.Split(string(out), "\n") {
		if !isGoTest(l) || !strings.Contains(l, "./cmd/hotdeskd") {
			continue
		}
		switch {
		case strings.Contains(l, "-run '^TestAdversarial$'"):
			if !strings.Contains(l, " -v ") {
				t.Errorf("make test runs TestAdversarial without -v (its figures are not shown): %s", l)
			}
			verbose++
		case strings.Contains(l, "grep -vxF"):
			// The plain run: every package but RACE_PKGS (cmd/hotdeskd among them).
		case strings.Contains(l, "-skip '^TestAdversarial$'"):
			others++
		default:
			t.Errorf("make test runs TestAdversarial quietly (no -v, no figures): %s", l)
		}
	}
	if verbose != 1 {
		t.Errorf("make test runs TestAdversarial verbosely %d times; want once\n%s", verbose, out)
	}
	if others == 0 {
		t.Errorf("make test never runs the other tests of ./cmd/hotdeskd\n%s", out)
	}
}

// isGoTest reports whether the shell line l runs go test: directly, or
// through .ci/gotest (go test that repeats what failed at the end), after
// any VAR=value assignments.
func isGoTest(l string) bool {
	f := strings.Fields(l)
	for len(f) > 0 && strings.Contains(f[0], "=") {
		f = f[1:]
	}
	switch {
	case len(f) >= 2 && f[0] == "go" && f[1] == "test":
		return true
	case len(f) >= 1 && f[0] == "./.ci/gotest":
		return true
	}
	return false
}

// TestGotestRepeatsWhatFailed: .ci/gotest repeats at the end of a failing
// run what failed and why: a test's own messages, a data race the race
// detector failed a test for, and a package's compile errors (a package
// that does not build fails CI as surely as a test, and its errors come
// first, where e2e logs push them out of a CI log's tail). Daemon log
// lines a test message carries are left out, and the exit code is go
// test's.
func TestGotestRepeatsWhatFailed(t *testing.T) {
	t.Parallel()
	testutil.NeedTools(t, "bash")
	// A go that prints what a failing run of three packages prints.
	fake := filepath.Join(t.TempDir(), "go")
	script := `#!/bin/sh
cat <<'OUT'
# example.com/broken
broken/a.go:3:2: undefined: foo
FAIL	example.com/broken [build failed]
==================
WARNING: DATA RACE
Write at 0x00c000012345 by goroutine 7:
  example.com/racy.f()
      /src/racy/racy.go:10 +0x44
==================
--- FAIL: TestRacy (0.00s)
    testing.go:1490: race detected during execution of test
FAIL	example.com/racy	0.1s
=== RUN   TestE2E
--- FAIL: TestE2E (1.00s)
    e2e_test.go:42: login: EOF
    e2e_test.go:43: 2026-12-02T10:00:00.000Z [INFO]  b1: terminal connected
FAIL	example.com/e2e	1.0s
FAIL
OUT
exit 3
`
	if err := os.WriteFile(fake, []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command("./.ci/gotest", "./...")
	cmd.Dir = "../.."
	cmd.Env = append(os.Environ(), "GO="+fake)
	out, err := cmd.CombinedOutput()
	var ee *exec.ExitError
	if !errors.As(err, &ee) || ee.ExitCode() != 3 {
		t.Fatalf(".ci/gotest: %v; want exit status 3 (go test's)\n%s", err, out)
	}
	_, summary, ok := strings.Cut(string(out), "=== what failed")
	if !ok {
		t.Fatalf("no summary of what failed\n%s", out)
	}
	for _, want := range []string{
		"broken/a.go:3:2: undefined: foo",
		"FAIL\texample.com/broken [build failed]",
		"WARNING: DATA RACE",
		"--- FAIL: TestRacy",
		"testing.go:1490: race detected during execution of test",
		"--- FAIL: TestE2E",
		"e2e_test.go:42: login: EOF",
	} {
		if !strings.Contains(summary, want) {
			t.Errorf("summary lacks %q\n%s", want, summary)
		}
	}
	if strings.Contains(summary, "terminal connected") {
		t.Errorf("summary repeats a daemon log line\n%s", summary)
	}
}

// TestREADMEMakeTargets: every make target the README shows (`make X`, or
// a command line "make X") is a target of the Makefile.
func TestREADMEMakeTargets(t *testing.T) {
	t.Parallel()
	readme, err := os.ReadFile("../../README.md")
	if err != nil {
		t.Fatal(err)
	}
	makefile, err := os.ReadFile("../../Makefile")
	if err != nil {
		t.Fatal(err)
	}
	targets := map[string]bool{}
	for _, m := range regexp.MustCompile(`(?m)^([a-z][a-z-]*):`).FindAllStringSubmatch(string(makefile), -1) {
		targets[m[1]] = true
	}
	shown := regexp.MustCompile("(?m)(?:`|^)make ([a-z][a-z-]*)").FindAllStringSubmatch(string(readme), -1)
	if len(shown) < 5 {
		t.Fatalf("README.md: only %d make command lines found", len(shown))
	}
	for _, m := range shown {
		if !targets[m[1]] {
			t.Errorf("README.md shows `make %s`; the Makefile has no target %s", m[1], m[1])
		}
	}
}
