package main

import (
	"testing"

	"github.com/hashicorp/go-hclog"

	"github.com/hotdesk/hotdesk/internal/event"
)

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
