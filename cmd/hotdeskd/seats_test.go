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
	"github.com/hotdesk/hotdesk/internal/testutil"
)

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
		runSeat(ctx, cfg, config.Seat{Name: "kiosk", RemoveGrace: time.Second}, &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 1},
			"pin", hclog.NewNullLogger())
	}()
	defer func() { cancel(); <-done }()
	testutil.WaitFor(t, 30*time.Second, "the seat agent restarted after it exited", func() bool {
		b, _ := os.ReadFile(starts)
		return strings.Count(string(b), "start") >= 2
	})
}
