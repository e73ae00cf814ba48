package testutil

import (
	"flag"
	"strconv"
	"testing"
)

// TestRaiseParallel: the default is raised, never lowered, and a value
// given on the command line is kept; under the race detector nothing
// changes.
func TestRaiseParallel(t *testing.T) {
	f := flag.Lookup("test.parallel")
	if f == nil {
		t.Fatal("no -test.parallel flag in a test binary")
	}
	orig := f.Value.String()
	t.Cleanup(func() { f.Value.Set(orig) })
	set := false
	flag.Visit(func(g *flag.Flag) { set = set || g.Name == f.Name })
	cur, err := strconv.Atoi(orig)
	if err != nil {
		t.Fatal(err)
	}

	RaiseParallel(cur + 3)
	want := strconv.Itoa(cur + 3)
	if set || raceEnabled {
		want = orig // given on the command line, or the race detector: kept
	}
	if got := f.Value.String(); got != want {
		t.Errorf("after RaiseParallel(%d): -test.parallel = %s; want %s", cur+3, got, want)
	}
	f.Value.Set(orig)
	RaiseParallel(1)
	if got := f.Value.String(); got != orig {
		t.Errorf("after RaiseParallel(1): -test.parallel = %s; want %s (never lowered)", got, orig)
	}
}
