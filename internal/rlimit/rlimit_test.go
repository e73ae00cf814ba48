package rlimit

import (
	"slices"
	"testing"
)

// TestLimits: Current reads every resource prlimit(1) names; Changed
// lists what a session changed; Within keeps a limit inside a ceiling an
// unprivileged process could not raise; Arg is prlimit's option.
func TestLimits(t *testing.T) {
	cur, err := Current()
	if err != nil {
		t.Fatal(err)
	}
	if len(cur) != len(Names()) || cur[slices.IndexFunc(cur, func(l Limit) bool { return l.Resource == "nofile" })].Hard == 0 {
		t.Fatalf("Current = %+v; want every resource, nofile's hard limit set", cur)
	}
	after := slices.Clone(cur)
	i := slices.IndexFunc(after, func(l Limit) bool { return l.Resource == "core" })
	after[i] = Limit{Resource: "core", Soft: 0, Hard: 0}
	if cur[i] == after[i] {
		after[i].Hard = 1
	}
	if got := Changed(cur, after); !slices.Equal(got, []Limit{after[i]}) {
		t.Errorf("Changed = %+v; want core only", got)
	}
	for _, tc := range []struct {
		l, ceiling, want Limit
		arg              string
	}{
		{Limit{"nofile", 900, 1000}, Limit{"nofile", 1024, 4096}, Limit{"nofile", 900, 1000}, "--nofile=900:1000"},
		{Limit{"nofile", Infinity, Infinity}, Limit{"nofile", 1024, 4096}, Limit{"nofile", 4096, 4096}, "--nofile=4096:4096"},
		{Limit{"core", 0, Infinity}, Limit{"core", 0, Infinity}, Limit{"core", 0, Infinity}, "--core=0:unlimited"},
	} {
		got := Within(tc.l, tc.ceiling)
		if got != tc.want || Arg(got) != tc.arg {
			t.Errorf("Within(%+v, %+v) = %+v, %s; want %+v, %s", tc.l, tc.ceiling, got, Arg(got), tc.want, tc.arg)
		}
	}
	if !Known("nproc") || Known("bogus") {
		t.Error("Known: want nproc known, bogus not")
	}
}
