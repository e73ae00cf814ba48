package testutil

import (
	"flag"
	"strconv"
)

// RaiseParallel sets -test.parallel to n when it was not given on the
// command line and its default (GOMAXPROCS) is lower. Call it from TestMain
// of a package whose tests wait (on etcd, leases, daemons, PAM's fail
// delay) far more than they compute, before m.Run; it parses the command
// line first if nobody has. It does nothing outside a test binary, and
// nothing under the race detector: that makes the same tests compute-bound
// (several times the CPU each), and on 2 cores more of them at once only
// pushes each past its bounds.
func RaiseParallel(n int) {
	if raceEnabled {
		return
	}
	if !flag.Parsed() {
		flag.Parse()
	}
	f := flag.Lookup("test.parallel")
	if f == nil {
		return
	}
	set := false
	flag.Visit(func(g *flag.Flag) { set = set || g.Name == f.Name })
	if cur, err := strconv.Atoi(f.Value.String()); err == nil && !set && cur < n {
		_ = f.Value.Set(strconv.Itoa(n))
	}
}
