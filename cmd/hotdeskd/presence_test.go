package main

import (
	"context"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"

	"github.com/hotdesk/hotdesk/broker"
	"github.com/hotdesk/hotdesk/internal/clock"
	"github.com/hotdesk/hotdesk/internal/event"
	"github.com/hotdesk/hotdesk/internal/testutil"
	"github.com/hotdesk/hotdesk/registry"
	"github.com/hotdesk/hotdesk/registry/etcdtest"
)

// presenceRegistry starts an etcd of the test's own and a registry on it
// (server p1), closed when the test ends. It returns the registry and a
// context for the test's calls that ends after d.
func presenceRegistry(t *testing.T, d time.Duration) (context.Context, *registry.Registry) {
	t.Helper()
	cli := etcdtest.Client(t, etcdtest.Start(t))
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	reg, err := registry.New(ctx, cli, registry.ServerRecord{ID: "p1", Addr: "127.0.0.1:1"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { reg.Close(context.Background()) })
	return ctx, reg
}

// TestPresenceSharedID: terminal ids are the peer's word. A second client
// naming a connected terminal's id (and leaving again) must neither take
// the terminal's record with it nor leave its own address behind.
func TestPresenceSharedID(t *testing.T) {
	p := newPresence(nil, hclog.NewNullLogger())
	conn := func(kind event.Kind, remote, name string) event.Event {
		return event.Event{Kind: kind, Terminal: "term-1", Remote: remote, TerminalName: name}
	}
	p.update(conn(event.TerminalConnected, "10.0.0.5:40000", "Desk 1"), 1)
	put, _ := p.update(conn(event.TerminalConnected, "10.0.0.66:50000", "rogue"), 2)
	if len(put) != 1 || put[0].Addr != "10.0.0.66:50000" {
		t.Fatalf("second connection of term-1: wrote %+v; want its record with the newest address", put)
	}
	put, del := p.update(conn(event.TerminalDisconnected, "10.0.0.66:50000", ""), 3)
	if len(del) != 0 {
		t.Fatalf("the rogue leaving deleted %v; want term-1 kept (still connected)", del)
	}
	if len(put) != 1 || put[0].Addr != "10.0.0.5:40000" || put[0].Name != "Desk 1" {
		t.Fatalf("after the rogue left: wrote %+v; want term-1 at 10.0.0.5:40000, \"Desk 1\"", put)
	}
	if _, del = p.update(conn(event.TerminalDisconnected, "10.0.0.5:40000", ""), 4); len(del) != 1 || del[0] != "term-1" {
		t.Fatalf("the last connection leaving: deleted %v; want term-1", del)
	}
	if p.connected() != 0 {
		t.Fatalf("%d terminals connected; want 0", p.connected())
	}
}

// TestPresenceHeartbeatOnClock: terminal records are stamped on the
// daemon's clock and refreshed every presenceHeartbeat on it, not before.
func TestPresenceHeartbeatOnClock(t *testing.T) {
	t.Parallel()
	// The registry's lease runs in real time: only presence is on clk.
	_, reg := presenceRegistry(t, time.Minute)
	clk := clock.NewFake(time.Unix(1_000_000, 0))
	p := newPresence(&daemon{clk: clk, reg: reg}, testutil.Logger(t, "presence", hclog.Debug))
	bus := broker.NewBus(nil)
	sub := bus.Subscribe("test", 16)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); p.run(ctx, sub) }()
	t.Cleanup(func() { cancel(); <-done })

	seen := func() int64 {
		recs, err := reg.Terminals(ctx)
		if err != nil {
			t.Fatal(err)
		}
		for _, r := range recs {
			if r.ID == "term-1" {
				return r.SeenUnixMs
			}
		}
		return 0
	}
	start := clk.Now().UnixMilli()
	bus.Emit(event.Event{Kind: event.TerminalConnected, Terminal: "term-1", Remote: "10.0.0.5:40000", TerminalName: "Desk 1"})
	testutil.WaitFor(t, time.Minute, "term-1's record stamped on the clock, the heartbeat set on it", func() bool {
		return seen() == start && clk.Pending() == 1
	})
	clk.Advance(presenceHeartbeat - time.Millisecond)
	if n := clk.Pending(); n != 1 {
		t.Fatalf("%v after the start on the clock: %d timers pending; want the heartbeat still pending", presenceHeartbeat-time.Millisecond, n)
	}
	clk.Advance(time.Millisecond)
	testutil.WaitFor(t, time.Minute, "term-1's record refreshed at the heartbeat, the next one set", func() bool {
		return seen() == start+presenceHeartbeat.Milliseconds() && clk.Pending() == 1
	})
}

// TestPresenceDropsMissedDisconnects: the presence subscription loses
// events when it falls behind. A terminal whose TerminalDisconnected was
// lost must leave the registry at the next heartbeat (before, it stayed
// listed, refreshed, for ever), a lost disconnect of one of a terminal's
// connections must not leave that connection's address in its record,
// and the late disconnect of a connection dropped so must not take
// another connection of the same id with it.
func TestPresenceDropsMissedDisconnects(t *testing.T) {
	t.Parallel() // its own etcd
	ctx, reg := presenceRegistry(t, 30*time.Second)
	p := newPresence(&daemon{clk: clock.Real{}, reg: reg}, hclog.NewNullLogger())
	live := []broker.TerminalConn{{ID: "term-1", Remote: "10.0.0.5:40000"}}
	p.live = func() ([]broker.TerminalConn, bool) { return live, true }
	ev := func(kind event.Kind, id, remote string) event.Event {
		return event.Event{Kind: kind, Terminal: id, Remote: remote, TerminalName: remote}
	}
	p.apply(ctx, ev(event.TerminalConnected, "term-1", "10.0.0.5:40000"))
	p.apply(ctx, ev(event.TerminalConnected, "term-1", "10.0.0.66:50000"))
	p.apply(ctx, ev(event.TerminalConnected, "term-2", "10.0.0.7:40000"))
	// The disconnects of term-1's second connection and of term-2 are lost.
	p.refresh(ctx)
	listed := func() map[string]string {
		t.Helper()
		recs, err := reg.Terminals(ctx)
		if err != nil {
			t.Fatal(err)
		}
		out := map[string]string{}
		for _, r := range recs {
			out[r.ID] = r.Addr
		}
		return out
	}
	if got := listed(); len(got) != 1 || got["term-1"] != "10.0.0.5:40000" {
		t.Fatalf("after the heartbeat: terminals %v; want only term-1 at 10.0.0.5:40000", got)
	}
	if n := p.connected(); n != 1 {
		t.Fatalf("%d terminals connected; want 1", n)
	}
	// The lost disconnect comes late after all: term-1 stays.
	p.apply(ctx, ev(event.TerminalDisconnected, "term-1", "10.0.0.66:50000"))
	if got := listed(); len(got) != 1 || got["term-1"] != "10.0.0.5:40000" {
		t.Fatalf("after the late disconnect: terminals %v; want term-1 at 10.0.0.5:40000", got)
	}
	p.apply(ctx, ev(event.TerminalDisconnected, "term-1", "10.0.0.5:40000"))
	if got := listed(); len(got) != 0 || p.connected() != 0 {
		t.Fatalf("after term-1 left: terminals %v, %d connected; want none", got, p.connected())
	}
}

// TestPresenceForgetsMissedDestroys: where a session was last shown is
// kept until its SessionDestroyed. The presence subscription loses events
// when it falls behind: a session whose SessionDestroyed was lost must be
// forgotten at the next heartbeat (before, its entry stayed for ever),
// while the sessions the broker still runs, and every session while there
// is no broker to ask, are kept.
func TestPresenceForgetsMissedDestroys(t *testing.T) {
	t.Parallel() // its own etcd
	ctx, reg := presenceRegistry(t, 30*time.Second)
	p := newPresence(&daemon{clk: clock.Real{}, reg: reg}, hclog.NewNullLogger())
	p.live = func() ([]broker.TerminalConn, bool) { return nil, false }
	runs, asked := []string{"s-1"}, false
	p.sessions = func() ([]string, bool) { return runs, asked }
	for _, e := range []event.Event{
		{Kind: event.SessionAttached, Session: "s-1", Terminal: "term-1"},
		{Kind: event.SessionAttached, Session: "s-2", Terminal: "term-2"},
		{Kind: event.SessionSuspended, Session: "s-2", Terminal: "term-2"},
		// s-2's SessionDestroyed is lost.
	} {
		p.apply(ctx, e)
	}
	check := func(when, want1, want2 string) {
		t.Helper()
		if got1, got2 := p.lastTerminal("s-1"), p.lastTerminal("s-2"); got1 != want1 || got2 != want2 {
			t.Fatalf("%s: s-1 last shown at %q, s-2 at %q; want %q, %q", when, got1, got2, want1, want2)
		}
	}
	check("before the heartbeats", "term-1", "term-2")
	p.refresh(ctx)
	check("after a heartbeat without a broker to ask", "term-1", "term-2")
	asked = true
	p.refresh(ctx)
	check("after a heartbeat with the broker running s-1 only", "term-1", "")
	p.mu.Lock()
	n := len(p.lastTerm)
	p.mu.Unlock()
	if n != 1 {
		t.Fatalf("%d sessions remembered; want 1 (s-1)", n)
	}
	// The lost SessionDestroyed comes late after all: nothing else goes.
	p.apply(ctx, event.Event{Kind: event.SessionDestroyed, Session: "s-2"})
	check("after the late destroy", "term-1", "")
}

// TestPresenceBadRecordKeepsHeartbeat: the registry refuses a terminal's
// record for what it holds (the peer's word): a record over
// registry.MaxTerminalRecordBytes (that terminal is listed without its
// tokens). It is logged once, and every other terminal's record is still
// refreshed on every heartbeat (before, the first refusal ended the
// round: the terminals after it went stale, the big one kept its old
// record). An id that is no valid etcd key name ("bad id": PROTOCOL.md §5
// allows spaces) is listed like any other (before, it was refused and the
// terminal never listed).
func TestPresenceBadRecordKeepsHeartbeat(t *testing.T) {
	t.Parallel() // its own etcd
	ctx, reg := presenceRegistry(t, 60*time.Second)
	clk := clock.NewFake(time.Unix(1_000_000, 0))
	var out testutil.LockedBuffer
	p := newPresence(&daemon{clk: clk, reg: reg}, hclog.New(&hclog.LoggerOptions{Output: &out, Level: hclog.Info}))
	live := []broker.TerminalConn{{ID: "big", Remote: "10.0.0.66:1"}, {ID: "bad id", Remote: "10.0.0.67:1"},
		{ID: "good", Remote: "10.0.0.5:1"}}
	p.live = func() ([]broker.TerminalConn, bool) { return live, true }
	for _, c := range live {
		p.apply(ctx, event.Event{Kind: event.TerminalConnected, Terminal: c.ID, Remote: c.Remote})
	}
	for _, c := range "ab" {
		p.apply(ctx, event.Event{Kind: event.TokenInserted, Terminal: "big", Token: strings.Repeat(string(c), registry.MaxTerminalRecordBytes/2)})
	}
	// The round's order is the map's: random. Ten rounds put "good" after
	// a refused record in one of them but for a chance of 1 in 2^10 or less.
	for round := range 10 {
		clk.Advance(presenceHeartbeat)
		p.refresh(ctx)
		recs, err := reg.Terminals(ctx)
		if err != nil {
			t.Fatal(err)
		}
		var ids []string
		for _, r := range recs {
			ids = append(ids, r.ID)
			if r.SeenUnixMs != clk.Now().UnixMilli() || len(r.Tokens) != 0 {
				t.Fatalf("heartbeat %d: %s seen at %d with %d tokens; want %d (refreshed), none", round, r.ID, r.SeenUnixMs, len(r.Tokens), clk.Now().UnixMilli())
			}
		}
		slices.Sort(ids)
		if !slices.Equal(ids, []string{"bad id", "big", "good"}) {
			t.Fatalf("heartbeat %d: terminals %v listed; want [bad id big good]", round, ids)
		}
	}
	log := out.String()
	for id, want := range map[string]int{"terminal=big": 1, `terminal="bad id"`: 0} {
		if n := strings.Count(log, id); n != want {
			t.Errorf("%s logged %d times in 10 heartbeats; want %d:\n%s", id, n, want, log)
		}
	}
}
