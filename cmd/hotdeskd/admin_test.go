package main

import (
	"testing"
	"time"

	"github.com/hotdesk/hotdesk/broker"
)

// TestAdminSessionShowsOrphans: an orphaned session is visible as such in
// the admin API (and so in hotdeskctl sessions), with the token's owner.
func TestAdminSessionShowsOrphans(t *testing.T) {
	now := time.Date(2026, 12, 1, 9, 0, 0, 0, time.UTC)
	got := adminSession(broker.SessionInfo{
		ID: "s-1", Token: "uid.01", User: "ann", State: broker.Suspended, ServerID: "b1",
		SuspendedAt: now, ExpiresAt: now.Add(time.Hour), Orphaned: true, OrphanOwner: "b2",
	})
	if !got.Orphaned || got.OrphanOwner != "b2" {
		t.Fatalf("orphaned = %v, owner = %q; want true, b2", got.Orphaned, got.OrphanOwner)
	}
	if got.SuspendedAt == nil || !got.SuspendedAt.Equal(now) || got.State != "suspended" {
		t.Fatalf("got %+v; want suspended since %v", got, now)
	}
}
