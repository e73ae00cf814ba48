package testutil

import (
	"bytes"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

func parkedLeaker(stop <-chan struct{}) { <-stop }

func TestCheckLeaksReportsARunningGoroutine(t *testing.T) {
	stop := make(chan struct{})
	go parkedLeaker(stop)
	var out bytes.Buffer
	if code := checkLeaks(&out, 0, 50*time.Millisecond, "testutil.parkedLeaker"); code != 1 {
		t.Fatalf("checkLeaks = %d with a goroutine still running; want 1", code)
	}
	if !strings.Contains(out.String(), "parkedLeaker") {
		t.Fatalf("report does not show the leaked stack:\n%s", out.String())
	}
	close(stop)
	out.Reset()
	if code := checkLeaks(&out, 0, 5*time.Second, "testutil.parkedLeaker"); code != 0 {
		t.Fatalf("checkLeaks = %d after the goroutine ended; want 0\n%s", code, out.String())
	}
	if code := checkLeaks(&out, 3, time.Second, "nothing"); code != 3 {
		t.Fatalf("checkLeaks kept code %d; want the failing code 3", code)
	}
}

func TestWaitForPollsUntilTrue(t *testing.T) {
	var n atomic.Int32
	WaitFor(t, 5*time.Second, "three polls", func() bool { return n.Add(1) >= 3 })
	if n.Load() < 3 {
		t.Fatalf("WaitFor returned after %d polls", n.Load())
	}
}
