package testutil

import "testing"

// VersionVar is the variable the Makefile stamps the version into
// (-ldflags -X).
const VersionVar = "github.com/hotdesk/hotdesk/internal/version.Version"

// Stamp is the version BuildHotdesk stamps the binaries with.
const Stamp = "v9.8.7-test"

// BuildStamped is Build with the binaries stamped with version stamp as the
// Makefile stamps a release, so that a package's tests of --version and
// its end-to-end tests share one build (a link of a daemon costs seconds of
// CPU). Builds with different stamps, or none, are kept apart.
func BuildStamped(t testing.TB, stamp string, pkgs ...string) string {
	t.Helper()
	return Build(t, append([]string{"-ldflags=-X " + VersionVar + "=" + stamp}, pkgs...)...)
}

// BuildHotdesk builds hotdeskd, hotdesk-term and hotdeskctl, stamped with
// Stamp, once per test process and returns their directory. Every package
// whose tests run the three builds them alike, so a whole `go test ./...`
// links them once (the link cache).
func BuildHotdesk(t testing.TB) string {
	t.Helper()
	const cmd = "github.com/hotdesk/hotdesk/cmd/"
	return BuildStamped(t, Stamp, cmd+"hotdeskd", cmd+"hotdesk-term", cmd+"hotdeskctl")
}
