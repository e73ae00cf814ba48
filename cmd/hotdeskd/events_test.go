package main

import (
	"context"
	"encoding/json"
	"fmt"
	"testing"

	"github.com/hashicorp/go-hclog"

	"github.com/hotdesk/hotdesk/broker"
	"github.com/hotdesk/hotdesk/internal/event"
	"github.com/hotdesk/hotdesk/registry/etcdtest"
)

// TestStorePendingInBatches: the events queued at a stop are stored 64
// to an etcd transaction (150 cost 3 revisions: one put each made a
// broker with 40 terminals take seconds to stop), all of them, in their
// order.
func TestStorePendingInBatches(t *testing.T) {
	t.Parallel()
	eps := etcdtest.Start(t)
	cli := etcdtest.Client(t, eps)
	store := newTestStore(t, eps, "a")
	bus := broker.NewBus(nil)
	sub := bus.Subscribe("registry", publishBuffer)
	for i := range 150 {
		bus.Emit(event.Event{Kind: event.TerminalDisconnected, Terminal: fmt.Sprintf("desk-%03d", i)})
	}
	ctx := context.Background()
	before := etcdtest.Revision(t, cli)
	storePending(ctx, store.NewEventLog(), sub, hclog.NewNullLogger())
	if n := etcdtest.Revision(t, cli) - before; n != 3 {
		t.Errorf("150 events stored in %d revisions; want 3 (64 to a transaction)", n)
	}
	stored, err := store.RecentEvents(ctx, 200)
	if err != nil || len(stored) != 150 {
		t.Fatalf("stored %d events, %v; want 150", len(stored), err)
	}
	for i, b := range stored {
		var e event.Event
		if err := json.Unmarshal(b, &e); err != nil || e.Terminal != fmt.Sprintf("desk-%03d", i) {
			t.Fatalf("stored event %d = %s, %v; want desk-%03d's (in their order)", i, b, err, i)
		}
	}
}
