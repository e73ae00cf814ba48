package main

import (
	"os"
	"strconv"
	"syscall"
	"testing"
	"time"

	"github.com/hotdesk/hotdesk/internal/clock"
	"github.com/hotdesk/hotdesk/proto"
)

// TestDisplayLostPresentsAgain: the display client showing a session ends
// by itself (killed here; in life FreeRDP failing, or weston dropping its
// RDP peer): the agent presents the session's token again after a pause
// on its clock, and the broker's new Attached (the same session, a new
// ticket) is shown by a fresh client. A loss after a Detached is not
// brought back, and the fourth loss within a minute is not either: a
// display_failed error says so, and nothing more is sent.
func TestDisplayLostPresentsAgain(t *testing.T) {
	t.Parallel()
	home := startBroker(t, "broker-a", 0)
	gw := startGatewayWith(t, home.cert, home.fp)
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	clk := clock.NewFake(time.Now())
	ta := startAgent(t, home, func(c *Config) {
		c.Clock, c.TerminalID, c.Insert = clk, "t-disp", []string{"default"}
		c.Display = []string{"env", displayClientEnv + "=1", exe, "{addr}", dir}
	})
	p := home.accept()
	p.inserted(ta.key.Token)
	shown := map[string]bool{}
	show := func(ticket string) string {
		t.Helper()
		gw.allow(ticket)
		p.send(&proto.Attached{SessionID: "s-1", Token: ta.key.Token, Endpoint: "hotdesk-attach://" + gw.addr,
			Ticket: []byte(ticket), ServerID: "broker-a", Resumed: true})
		ta.out.wait("attached")
		return waitFile(t, dir, ".shown", shown)
	}
	lose := func(pid string) {
		t.Helper()
		n, _ := strconv.Atoi(pid)
		if err := syscall.Kill(n, syscall.SIGKILL); err != nil {
			t.Fatal(err)
		}
	}
	pid := show("ticket-1")
	for i, pause := range []time.Duration{time.Second, 2 * time.Second, 4 * time.Second} {
		lose(pid)
		ev := ta.out.wait("display_lost")
		if ev["session"] != "s-1" || ev["attempt"] != float64(i+1) {
			t.Errorf("display_lost event %v; want session s-1, attempt %d", ev, i+1)
		}
		// Not a moment before the pause on the agent's clock.
		clk.Advance(pause - time.Millisecond)
		p.ping(uint64(10 + i))
		clk.Advance(time.Millisecond)
		p.inserted(ta.key.Token)
		next := show("ticket-" + strconv.Itoa(i+2))
		if next == pid {
			t.Fatalf("the lost client %s shows the session again", pid)
		}
		pid = next
	}
	// The fourth loss within the minute: an error, no presentation.
	lose(pid)
	ev := ta.out.wait("error")
	if ev["name"] != errDisplay {
		t.Errorf("error event %v; want %s", ev, errDisplay)
	}
	// nothing: the broker's Ping is answered, the agent's own (its clock
	// moved past its ping interval) too, and no token is presented.
	nothing := func(seq uint64) {
		t.Helper()
		p.send(&proto.Ping{Seq: seq})
		for {
			switch m := p.recv().(type) {
			case *proto.Ping:
				p.send(&proto.Pong{Seq: m.Seq})
			case *proto.Pong:
				if m.Seq == seq {
					return
				}
			default:
				t.Fatalf("broker got %T %+v; want nothing but pings", m, m)
			}
		}
	}
	clk.Advance(time.Minute)
	nothing(20)

	// A minute later the count starts again; but a session that left the
	// terminal (Detached) is not brought back, its client lost or not.
	lose(show("ticket-9"))
	ta.out.wait("display_lost")
	p.send(&proto.Detached{SessionID: "s-1", Reason: proto.DetachAdmin, Message: "disconnected by an administrator"})
	ta.out.wait("detached")
	clk.Advance(time.Second)
	nothing(21)
}
