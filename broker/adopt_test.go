package broker

import (
	"context"
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hotdesk/hotdesk/compositor"
	"github.com/hotdesk/hotdesk/registry"
)

// countingLookups counts the claim Lookups in flight at once; each takes a
// while, as a round trip to a loaded etcd does.
type countingLookups struct {
	Registry
	cur, peak atomic.Int32
}

func (c *countingLookups) Lookup(ctx context.Context, key string) (registry.Claim, error) {
	n := c.cur.Add(1)
	defer c.cur.Add(-1)
	for p := c.peak.Load(); n > p && !c.peak.CompareAndSwap(p, n); p = c.peak.Load() {
	}
	time.Sleep(50 * time.Millisecond)
	return c.Registry.Lookup(ctx, key)
}

// TestAdoptSideBySide: a restarted broker takes over the desktops its
// previous run left a few at a time, not one after another (each is two
// etcd round trips: a server with a hundred desktops waited for them in a
// row before it served a terminal), and at most adoptWorkers at once. A
// second desktop of one token is reported, the first adopted, as before.
func TestAdoptSideBySide(t *testing.T) {
	t.Parallel()
	c := &countingLookups{}
	e := newEnvWith(t, "b1", envOptions{wrap: func(r Registry) Registry { c.Registry = r; return c }})
	var infos []compositor.Info
	for i := range 3 * adoptWorkers {
		infos = append(infos, compositor.Info{SessionID: fmt.Sprintf("s-adopt%02d", i), User: "kiosk",
			Labels: map[string]string{labelToken: fmt.Sprintf("uid.%08x", i+1)}})
	}
	// The duplicate comes while the others are being adopted, just after
	// a desktop without a token label (a race detector's case: both are
	// noted lost at once).
	dup := compositor.Info{SessionID: "s-adoptdup", User: "kiosk", Labels: map[string]string{labelToken: "uid.00000001"}}
	unlabelled := compositor.Info{SessionID: "s-adoptnolabel", User: "kiosk"}
	all := append(append(append([]compositor.Info{}, infos[:2*adoptWorkers]...), unlabelled, dup), infos[2*adoptWorkers:]...)
	adopted, lost := e.b.Adopt(e.ctx, all)
	lostIDs := map[string]bool{}
	for _, l := range lost {
		lostIDs[l.SessionID] = true
	}
	if len(adopted) != len(infos) || len(lost) != 2 || !lostIDs[dup.SessionID] || !lostIDs[unlabelled.SessionID] {
		t.Fatalf("adopted %d, lost %+v; want %d adopted, %s and %s lost (the token's first desktop adopted)", len(adopted), lost, len(infos), dup.SessionID, unlabelled.SessionID)
	}
	for _, in := range infos {
		cl, err := e.reg.Lookup(e.ctx, in.Labels[labelToken])
		if err != nil || cl.Session.ID != in.SessionID || cl.Session.ServerID != "b1" {
			t.Fatalf("claim of %s: %+v, %v; want session %s of b1", in.Labels[labelToken], cl, err, in.SessionID)
		}
	}
	if p := c.peak.Load(); p < 2 || p > adoptWorkers {
		t.Errorf("at most %d claims looked up at once; want between 2 and %d", p, adoptWorkers)
	}
}
