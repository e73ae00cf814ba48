package testutil

import (
	"fmt"
	"testing"
)

// endTB records how a helper ended a test instead of ending it.
type endTB struct {
	testing.TB
	fatal, skip string
}

func (e *endTB) Helper()                           {}
func (e *endTB) Fatalf(format string, args ...any) { e.fatal = fmt.Sprintf(format, args...) }
func (e *endTB) Fatal(args ...any)                 { e.fatal = fmt.Sprint(args...) }
func (e *endTB) Skipf(format string, args ...any)  { e.skip = fmt.Sprintf(format, args...) }

func TestSkipOrFail(t *testing.T) {
	for _, ci := range []string{"true", "", "false"} {
		t.Setenv("CI", ci)
		var e endTB
		SkipOrFail(&e, "needs %s", "root")
		if ci == "true" && (e.fatal != "needs root" || e.skip != "") {
			t.Errorf("CI=%q: failed %q, skipped %q; want failed %q", ci, e.fatal, e.skip, "needs root")
		}
		if ci != "true" && (e.skip != "needs root" || e.fatal != "") {
			t.Errorf("CI=%q: failed %q, skipped %q; want skipped %q", ci, e.fatal, e.skip, "needs root")
		}
	}
}
