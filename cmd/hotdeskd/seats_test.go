package main

import (
	"context"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"

	"github.com/hotdesk/hotdesk/cmd/hotdeskd/config"
	"github.com/hotdesk/hotdesk/internal/clock"
	"github.com/hotdesk/hotdesk/internal/testutil"
)

// TestSeatRestartBackoffOnClock: a seat's agent that exits is started
// again after a backoff on the daemon's clock, 1 s doubled each time, and
// back to 1 s after a run of more than a minute on that clock. The agent
// is a script counting its starts; it runs while a hold file exists.
func TestSeatRestartBackoffOnClock(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	startsFile, hold := filepath.Join(dir, "starts"), filepath.Join(dir, "hold")
	agent := filepath.Join(dir, "agent.sh")
	script := "#!/bin/sh\necho x >> " + startsFile + "\nwhile [ -e " + hold + " ]; do sleep 0.01; done\n"
	if err := os.WriteFile(agent, []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	starts := func() int {
		b, _ := os.ReadFile(startsFile)
		return strings.Count(string(b), "x")
	}
	clk := clock.NewFake(time.Unix(1_000_000, 0))
	cfg := &config.Config{SeatAgent: agent, DataDir: dir}
	seat := config.Seat{Name: "s", Readers: []string{"Virtual PCD 00 00"}}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		runSeat(ctx, clk, cfg, seat, &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 1}, "pin", testutil.Logger(t, "seat", hclog.Info))
	}()
	t.Cleanup(func() { cancel(); <-done })

	// waitExited waits for the agent's nth start to have exited and the
	// restart's backoff to be set on clk.
	waitExited := func(n int) {
		t.Helper()
		testutil.WaitFor(t, time.Minute, "the agent started and exited", func() bool {
			return starts() == n && clk.Pending() == 1
		})
	}
	// restartsAfter checks that the agent, exited after its nth start, is
	// started again after backoff on clk, not before.
	restartsAfter := func(n int, backoff time.Duration) {
		t.Helper()
		clk.Advance(backoff - time.Millisecond)
		if p := clk.Pending(); p != 1 {
			t.Fatalf("after start %d, %v on the clock: %d timers pending; want the backoff of %v still pending", n, backoff-time.Millisecond, p, backoff)
		}
		clk.Advance(time.Millisecond)
		testutil.WaitFor(t, time.Minute, "the agent started again", func() bool { return starts() == n+1 })
	}

	waitExited(1)
	restartsAfter(1, time.Second)
	waitExited(2)
	if err := os.WriteFile(hold, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	restartsAfter(2, 2*time.Second)
	// The third start runs two minutes on the clock: its exit restarts it
	// after 1 s again, not 4 s.
	testutil.WaitFor(t, time.Minute, "the agent running", func() bool { return starts() == 3 })
	clk.Advance(2 * time.Minute)
	if err := os.Remove(hold); err != nil {
		t.Fatal(err)
	}
	waitExited(3)
	restartsAfter(3, time.Second)
}

// TestSeatAgentLongLine: a seat agent that prints a line longer than the
// event reader takes (here 100 kB) must not be left blocked on a full
// pipe: its output goes on being read, it exits, and it is restarted.
// Before, the reading stopped at that line and runSeat waited for an
// agent that waited for it to read, until hotdeskd stopped.
func TestSeatAgentLongLine(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	starts := filepath.Join(dir, "starts")
	agent := filepath.Join(dir, "agent")
	script := fmt.Sprintf("#!/bin/sh\necho start >> %q\nhead -c 100000 /dev/zero | tr '\\0' x\necho\nhead -c 200000 /dev/zero | tr '\\0' y\necho\n", starts)
	if err := os.WriteFile(agent, []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	cfg := config.Default()
	cfg.DataDir, cfg.SeatAgent = dir, agent
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		runSeat(ctx, clock.Real{}, cfg, config.Seat{Name: "kiosk", RemoveGrace: time.Second}, &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 1},
			"pin", hclog.NewNullLogger())
	}()
	defer func() { cancel(); <-done }()
	testutil.WaitFor(t, 30*time.Second, "the seat agent restarted after it exited", func() bool {
		b, _ := os.ReadFile(starts)
		return strings.Count(string(b), "start") >= 2
	})
}
