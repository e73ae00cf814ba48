// Package version is the one place a hotdesk binary learns its own version.
//
// Release builds set Version with
//
//	go build -ldflags "-X github.com/hotdesk/hotdesk/internal/version.Version=$(git describe --tags --always --dirty)"
//
// (the Makefile does this). A plain `go build` or `go run` leaves it empty and
// String falls back to the VCS revision Go records in the binary, so even an
// unstamped binary says which commit it came from.
package version

import (
	"runtime/debug"
	"sync"
)

// Version is stamped at link time; empty when the build did not stamp it.
var Version string

var (
	once     sync.Once
	computed string
)

// String returns the binary's version: the stamped Version, else "dev-<short
// revision>[-dirty]" from the build info, else "dev".
func String() string {
	once.Do(func() { computed = compute() })
	return computed
}

func compute() string {
	if Version != "" {
		return Version
	}
	info, ok := debug.ReadBuildInfo()
	if !ok {
		return "dev"
	}
	var rev string
	var dirty bool
	for _, s := range info.Settings {
		switch s.Key {
		case "vcs.revision":
			rev = s.Value
		case "vcs.modified":
			dirty = s.Value == "true"
		}
	}
	if rev == "" {
		return "dev"
	}
	if len(rev) > 12 {
		rev = rev[:12]
	}
	v := "dev-" + rev
	if dirty {
		v += "-dirty"
	}
	return v
}
