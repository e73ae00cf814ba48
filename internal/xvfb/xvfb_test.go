package xvfb_test

import (
	"context"
	"os/exec"
	"testing"
	"time"

	"github.com/hotdesk/hotdesk/internal/testutil"
	"github.com/hotdesk/hotdesk/internal/xvfb"
)

// TestStartTwo: two servers get two displays of their own, each answers
// on its display, and Stop reaps it.
func TestStartTwo(t *testing.T) {
	testutil.NeedTools(t, "Xvfb", "xwd")
	var disps []string
	for range 2 {
		x, err := xvfb.Start(context.Background(), "320x200x24", nil)
		if err != nil {
			t.Fatal(err)
		}
		defer x.Stop()
		testutil.WaitFor(t, 10*time.Second, "Xvfb answering on "+x.Display, func() bool {
			return exec.Command("xwd", "-root", "-silent", "-display", x.Display).Run() == nil
		})
		disps = append(disps, x.Display)
	}
	if disps[0] == disps[1] {
		t.Errorf("both servers on %s", disps[0])
	}
}

// TestStartCancelled: a context that has ended stops the start.
func TestStartCancelled(t *testing.T) {
	testutil.NeedTools(t, "Xvfb")
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if x, err := xvfb.Start(ctx, "320x200x24", nil); err == nil {
		x.Stop()
		t.Fatal("Start with an ended context succeeded")
	}
}
