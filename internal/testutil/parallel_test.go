package testutil

import (
	"flag"
	"testing"
)

func TestRaiseParallel(t *testing.T) {
	t.Parallel()
	for _, c := range []struct {
		name string
		args []string
		def  int
		want int
	}{
		{"default lower: raised", nil, 2, 4},
		{"default higher: kept", nil, 8, 8},
		{"given on the command line: kept", []string{"-test.parallel=1"}, 2, 1},
	} {
		fs := flag.NewFlagSet("test", flag.ContinueOnError)
		p := fs.Int("test.parallel", c.def, "")
		if err := fs.Parse(c.args); err != nil {
			t.Fatal(err)
		}
		raiseParallel(fs, 4)
		if *p != c.want {
			t.Errorf("%s: -test.parallel = %d; want %d", c.name, *p, c.want)
		}
	}
	raiseParallel(flag.NewFlagSet("none", flag.ContinueOnError), 4) // no such flag: nothing to do
}
