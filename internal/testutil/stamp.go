package testutil

import "testing"

// VersionVar is the variable the Makefile stamps the version into
// (-ldflags -X).
const VersionVar = "github.com/hotdesk/hotdesk/internal/version.Version"

// BuildStamped is Build with the binaries stamped with version stamp as the
// Makefile stamps a release, so that a package's tests of --version and
// its end-to-end tests share one build (a link of a daemon costs seconds of
// CPU). Builds with different stamps, or none, are kept apart.
func BuildStamped(t testing.TB, stamp string, pkgs ...string) string {
	t.Helper()
	return Build(t, append([]string{"-ldflags=-X " + VersionVar + "=" + stamp}, pkgs...)...)
}
