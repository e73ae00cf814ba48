package main

import (
	"os/exec"
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
	if _, err := exec.LookPath("make"); err != nil {
		testutil.SkipOrFail(t, "make missing")
	}
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
