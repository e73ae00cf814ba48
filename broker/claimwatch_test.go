package broker

import (
	"fmt"
	"testing"
	"time"

	"github.com/hotdesk/hotdesk/registry"
)

// TestClaimViewBound: the view's memory is bounded by maxClaimsSeen keys.
// A change of a key it already holds is recorded in place, full or not; a
// new key past the bound starts the view again after it (claims written
// before then are confirmed by a read once more), fresh as it was.
func TestClaimViewBound(t *testing.T) {
	t.Parallel()
	now := time.Unix(1000, 0)
	var v claimView
	v.apply(registry.ClaimChange{Resync: true, Rev: 1}, now)
	v.apply(registry.ClaimChange{Progress: true}, now)
	for i := range maxClaimsSeen {
		v.apply(registry.ClaimChange{Key: fmt.Sprint("k", i), Rev: int64(i + 1), Deleted: true}, now)
	}
	v.apply(registry.ClaimChange{Key: "k7", Rev: maxClaimsSeen + 1, Deleted: true}, now)
	if v.from != 1 || len(v.seen) != maxClaimsSeen || v.seen["k7"].rev != maxClaimsSeen+1 {
		t.Fatalf("after a known key's change at the bound: from %d, %d keys, k7 at %d; want from 1, %d keys, k7 at %d",
			v.from, len(v.seen), v.seen["k7"].rev, maxClaimsSeen, maxClaimsSeen+1)
	}
	v.apply(registry.ClaimChange{Key: "new", Rev: maxClaimsSeen + 2, Deleted: true}, now)
	if !v.live || v.from != maxClaimsSeen+3 || len(v.seen) != 0 || !v.fresh.Equal(now) {
		t.Fatalf("after a new key past the bound: live %v, from %d, %d keys, fresh %v; want a live, fresh view from %d, empty",
			v.live, v.from, len(v.seen), v.fresh, maxClaimsSeen+3)
	}
	old := registry.Claim{Fence: 5, ModRev: 5}
	if v.holdsLocked("k7", old, "b1", "s1", now) {
		t.Error("a claim written before the restart of the view is vouched for; want a read")
	}
}
