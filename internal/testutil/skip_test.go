package testutil

import (
	"fmt"
	"os"
	"strings"
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

func TestNeedRoot(t *testing.T) {
	t.Setenv("CI", "true")
	var e endTB
	NeedRoot(&e, "needs %s", "root")
	if root := os.Geteuid() == 0; root != (e.fatal == "") || (!root && e.fatal != "needs root") || e.skip != "" {
		t.Errorf("as uid %d: failed %q, skipped %q", os.Geteuid(), e.fatal, e.skip)
	}
}

func TestNeedTool(t *testing.T) {
	t.Setenv("CI", "true")
	var e endTB
	if p := NeedTool(&e, "sh"); p == "" || e.fatal != "" || e.skip != "" {
		t.Errorf("NeedTool(sh) = %q; failed %q, skipped %q; want its path", p, e.fatal, e.skip)
	}
	e = endTB{}
	if p := NeedTool(&e, "hotdesk-no-such-tool"); p != "" || !strings.HasPrefix(e.fatal, "hotdesk-no-such-tool not installed: ") {
		t.Errorf("NeedTool of a missing tool = %q; failed %q; want it failed as missing", p, e.fatal)
	}
}
