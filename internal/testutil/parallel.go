package testutil

import (
	"flag"
	"strconv"
)

// RaiseParallel sets -test.parallel to n unless it was given on the
// command line or its default (GOMAXPROCS) is at least n: for a package
// whose tests wait on daemons, etcd and leases far more than they compute.
// Call it from TestMain after flag.Parse:
//
//	func TestMain(m *testing.M) {
//		flag.Parse()
//		testutil.RaiseParallel(4)
//		os.Exit(m.Run())
//	}
func RaiseParallel(n int) { raiseParallel(flag.CommandLine, n) }

func raiseParallel(fs *flag.FlagSet, n int) {
	given := false
	fs.Visit(func(f *flag.Flag) { given = given || f.Name == "test.parallel" })
	f := fs.Lookup("test.parallel")
	if f == nil || given {
		return
	}
	if cur, err := strconv.Atoi(f.Value.String()); err == nil && cur < n {
		_ = f.Value.Set(strconv.Itoa(n))
	}
}
