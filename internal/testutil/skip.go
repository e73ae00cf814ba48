package testutil

import (
	"os"
	"testing"
)

// SkipOrFail ends t for want of something the test needs and the machine
// lacks (root, a tool, a kernel feature): it fails t under CI=true, where
// everything a test needs is installed, and skips it otherwise. The
// message is fmt.Sprintf(format, args...).
func SkipOrFail(t testing.TB, format string, args ...any) {
	t.Helper()
	if os.Getenv("CI") == "true" {
		t.Fatalf(format, args...)
	} else {
		t.Skipf(format, args...)
	}
}
