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
// second desktop of one token (of the same age) is kept as an orphan, the
// first adopted as its session.
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
	// a desktop without a token label (a race detector's case: noted lost
	// while the others are adopted).
	dup := compositor.Info{SessionID: "s-adoptdup", User: "kiosk", Labels: map[string]string{labelToken: "uid.00000001"}}
	unlabelled := compositor.Info{SessionID: "s-adoptnolabel", User: "kiosk"}
	all := append(append(append([]compositor.Info{}, infos[:2*adoptWorkers]...), unlabelled, dup), infos[2*adoptWorkers:]...)
	adopted, lost := e.b.Adopt(e.ctx, all)
	lostIDs := map[string]bool{}
	for _, l := range lost {
		lostIDs[l.SessionID] = true
	}
	if len(adopted) != len(infos)+1 || len(lost) != 1 || !lostIDs[unlabelled.SessionID] {
		t.Fatalf("adopted %d, lost %+v; want %d adopted, %s lost", len(adopted), lost, len(infos)+1, unlabelled.SessionID)
	}
	for _, si := range adopted {
		if orphan := si.ID == dup.SessionID; si.Orphaned != orphan {
			t.Fatalf("adopted %+v; want only %s orphaned (the token's first desktop its session)", si, dup.SessionID)
		}
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

// TestAdoptOrphanBesideSession: a broker that kept an orphan (its token
// claimed elsewhere while it had lost its lease) and later created a new
// session for the token when it came back has two desktops of the token
// when it restarts. Both are kept: the newer is the token's session
// (claimed, not orphaned), the older an orphan again, whatever order the
// backend lists them in. The chaos harness found the newer one stopped
// ("belongs to no token") and the user given an empty desktop.
func TestAdoptOrphanBesideSession(t *testing.T) {
	t.Parallel()
	for _, olderFirst := range []bool{true, false} {
		t.Run(fmt.Sprintf("older_first=%v", olderFirst), func(t *testing.T) {
			t.Parallel()
			e := newEnv(t, "b1", nil)
			const tok = "uid.0000beef"
			desktop := func(id string, created int64) compositor.Info {
				return compositor.Info{SessionID: id, User: "kiosk", Labels: map[string]string{
					labelToken: tok, labelCreated: fmt.Sprint(created)}}
			}
			older, newer := desktop("s-orphan", 1_000), desktop("s-current", 2_000)
			infos := []compositor.Info{newer, older}
			if olderFirst {
				infos = []compositor.Info{older, newer}
			}
			adopted, lost := e.b.Adopt(e.ctx, infos)
			if len(lost) != 0 || len(adopted) != 2 {
				t.Fatalf("adopted %+v, lost %+v; want both adopted, none lost", adopted, lost)
			}
			for _, si := range adopted {
				if orphan := si.ID == older.SessionID; si.Orphaned != orphan || si.State != Suspended {
					t.Fatalf("adopted %+v; want %s its session, %s an orphan, both suspended", si, newer.SessionID, older.SessionID)
				}
			}
			if c := e.claim(t, tok); c.Session.ID != newer.SessionID || c.Session.ServerID != "b1" {
				t.Fatalf("claim %+v; want session %s of b1", c, newer.SessionID)
			}
		})
	}
}
