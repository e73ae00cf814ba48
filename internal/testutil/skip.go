package testutil

import (
	"os"
	"os/exec"
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

// NeedRoot ends t as SkipOrFail does, with the message
// fmt.Sprintf(format, args...), unless the test runs as root.
func NeedRoot(t testing.TB, format string, args ...any) {
	t.Helper()
	if os.Geteuid() != 0 {
		SkipOrFail(t, format, args...)
	}
}

// NeedTools ends t as SkipOrFail does when one of tools is not on $PATH:
// CI must never pass by skipping what it cannot run.
func NeedTools(t testing.TB, tools ...string) {
	t.Helper()
	for _, tool := range tools {
		NeedTool(t, tool)
	}
}

// NeedTool returns the path of the command name found in $PATH, or ends t
// as SkipOrFail does when there is none.
func NeedTool(t testing.TB, name string) string {
	t.Helper()
	p, err := exec.LookPath(name)
	if err != nil {
		SkipOrFail(t, "%s not installed: %v", name, err)
	}
	return p
}
