package main

import (
	"encoding/json"
	"testing"
	"time"

	"github.com/hotdesk/hotdesk/internal/event"
	"github.com/hotdesk/hotdesk/registry"
)

func TestCurrentTerminals(t *testing.T) {
	t.Parallel()
	now := time.UnixMilli(1_000_000)
	ms := func(d time.Duration) int64 { return now.Add(d).UnixMilli() }
	recs := []registry.TerminalRecord{
		// t-2 left b1 (its record not yet deleted) and is now on b2.
		{ID: "t-2", ServerID: "b1", ConnectedUnixMs: ms(-20 * time.Second), SeenUnixMs: ms(-time.Second)},
		{ID: "t-1", ServerID: "b1", ConnectedUnixMs: ms(-time.Minute), SeenUnixMs: ms(-2 * time.Second)},
		{ID: "t-2", ServerID: "b2", ConnectedUnixMs: ms(-5 * time.Second), SeenUnixMs: ms(-3 * time.Second)},
		// Stale: not refreshed within the window.
		{ID: "t-3", ServerID: "b3", ConnectedUnixMs: ms(-time.Hour), SeenUnixMs: ms(-time.Minute)},
		{ID: "t-1", ServerID: "b3", ConnectedUnixMs: ms(time.Second), SeenUnixMs: ms(-time.Minute)},
	}
	got := currentTerminals(recs, now.Add(-30*time.Second))
	want := []struct{ id, server string }{{"t-2", "b2"}, {"t-1", "b1"}}
	if len(got) != len(want) {
		t.Fatalf("got %d records %+v; want %v", len(got), got, want)
	}
	for i, w := range want {
		if got[i].ID != w.id || got[i].ServerID != w.server {
			t.Errorf("record %d = %s on %s; want %s on %s", i, got[i].ID, got[i].ServerID, w.id, w.server)
		}
	}
	if len(recs) != 5 || recs[2].ServerID != "b2" {
		t.Error("the input was modified")
	}
}

// TestGroupEventLeftOnce: a server's record vanishing within a minute of
// its own server_left makes no second event; one vanishing a minute or
// more after it (a later run that died) does.
func TestGroupEventLeftOnce(t *testing.T) {
	t.Parallel()
	start := time.Unix(1_000_000, 0)
	for _, tc := range []struct {
		after time.Duration
		want  bool
	}{
		{0, false},
		{time.Minute - time.Millisecond, false},
		{time.Minute, true},
	} {
		left := map[string]time.Time{}
		said, _ := json.Marshal(event.Event{Kind: event.ServerLeft, Server: "b1", Reason: "stopped"})
		if e, ok := groupEvent(registry.GroupChange{Event: said}, left, start); !ok || e.Kind != event.ServerLeft {
			t.Fatalf("b1's own server_left: %+v, %v; want it passed on", e, ok)
		}
		e, ok := groupEvent(registry.GroupChange{ServerID: "b1", Left: true, At: start.Add(tc.after)}, left, start.Add(tc.after))
		if ok != tc.want || ok && (e.Kind != event.ServerLeft || e.Server != "b1") {
			t.Errorf("b1's record vanished %v after its server_left: %+v, %v; want an event %v", tc.after, e, ok, tc.want)
		}
	}
}
