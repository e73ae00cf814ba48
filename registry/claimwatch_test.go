package registry_test

import (
	"context"
	"testing"
	"time"

	"github.com/hotdesk/hotdesk/internal/testutil"
	"github.com/hotdesk/hotdesk/registry"
	"github.com/hotdesk/hotdesk/registry/etcdtest"
)

// nextClaimChange returns the next change or mark of ch but Progress.
func nextClaimChange(t *testing.T, ch <-chan registry.ClaimChange) registry.ClaimChange {
	t.Helper()
	for {
		if c := nextClaimMark(t, ch); !c.Progress {
			return c
		}
	}
}

// nextClaimMark returns the next change or mark of ch.
func nextClaimMark(t *testing.T, ch <-chan registry.ClaimChange) registry.ClaimChange {
	t.Helper()
	c := testutil.Recv(t, ch, 20*time.Second, "no claim change")
	if c == (registry.ClaimChange{}) {
		t.Fatal("claim watch closed")
	}
	return c
}

// TestWatchClaimsProgress: the stream confirms, without any change to
// report, that it is current: Progress marks come after the Resync, and
// one after a change has a revision at least the change's, every change
// up to it reported before it.
func TestWatchClaimsProgress(t *testing.T) {
	t.Parallel()
	eps := etcdtest.Start(t)
	a := newReg(t, etcdtest.Client(t, eps), "pa")
	ctx := tctx(t)
	changes := a.WatchClaims(ctx)
	first := nextClaimMark(t, changes)
	if !first.Resync {
		t.Fatalf("first change = %+v; want a Resync mark", first)
	}
	if p := nextClaimMark(t, changes); !p.Progress || p.Rev < first.Rev-1 {
		t.Fatalf("change = %+v with nothing changed; want a Progress mark at %d or later", p, first.Rev-1)
	}
	c, won, err := a.Claim(ctx, "soft.p1", registry.Session{ID: "s1", ServerID: "pa"})
	if err != nil || !won {
		t.Fatalf("claim: won %v, %v", won, err)
	}
	seen := false
	for {
		got := nextClaimMark(t, changes)
		switch {
		case got.Key == "soft.p1":
			seen = true
		case got.Progress && got.Rev >= c.ModRev:
			if !seen {
				t.Fatalf("Progress at %d before the claim written at %d was reported", got.Rev, c.ModRev)
			}
			return
		case !got.Progress:
			t.Fatalf("change = %+v; want the claim of soft.p1 or a Progress mark", got)
		}
	}
}

// TestWatchClaims: the stream opens with a Resync at the current revision,
// then reports a claim, its fenced update (same fence, later revision) and
// its release, in order, with the revisions etcd gave them.
func TestWatchClaims(t *testing.T) {
	t.Parallel()
	eps := etcdtest.Start(t)
	a := newReg(t, etcdtest.Client(t, eps), "ca")
	b := newReg(t, etcdtest.Client(t, eps), "cb")
	ctx := tctx(t)
	wctx, wcancel := context.WithCancel(ctx)
	changes := b.WatchClaims(wctx)
	first := nextClaimChange(t, changes)
	if !first.Resync || first.Rev <= 0 {
		t.Fatalf("first change = %+v; want a Resync mark", first)
	}
	c, won, err := a.Claim(ctx, "soft.w1", registry.Session{ID: "s1", ServerID: "ca"})
	if err != nil || !won {
		t.Fatalf("claim: won %v, %v", won, err)
	}
	if c.Fence < first.Rev {
		t.Fatalf("claim fence %d before the Resync revision %d", c.Fence, first.Rev)
	}
	c2, err := a.Update(ctx, c, registry.Session{ID: "s1", ServerID: "ca", Terminal: "t1"})
	if err != nil {
		t.Fatal(err)
	}
	if err := a.Release(ctx, c2); err != nil {
		t.Fatal(err)
	}
	got := nextClaimChange(t, changes)
	if got.Key != "soft.w1" || got.Deleted || got.Rev != c.ModRev || got.Claim.Fence != c.Fence || got.Claim.Session.ID != "s1" || got.Claim.Session.ServerID != "ca" {
		t.Fatalf("claim change = %+v; want soft.w1 at %d, fence %d, session s1 of ca", got, c.ModRev, c.Fence)
	}
	got = nextClaimChange(t, changes)
	if got.Key != "soft.w1" || got.Deleted || got.Rev != c2.ModRev || got.Claim.Fence != c.Fence || got.Claim.Session.Terminal != "t1" {
		t.Fatalf("update change = %+v; want soft.w1 at %d with fence %d and terminal t1", got, c2.ModRev, c.Fence)
	}
	got = nextClaimChange(t, changes)
	if got.Key != "soft.w1" || !got.Deleted || got.Rev <= c2.ModRev {
		t.Fatalf("release change = %+v; want soft.w1 deleted after %d", got, c2.ModRev)
	}
	testutil.ClosesOnCancel(t, wcancel, changes, waitBound)
}

// TestWatchClaimsGap: a watch cut off while its history is compacted
// away reports Lost, then a Resync from a revision after the gap, and
// goes on reporting changes.
func TestWatchClaimsGap(t *testing.T) {
	t.Parallel()
	direct, proxy, a, b := cutOffPair(t, "ga", "gb")
	ctx := tctx(t)
	changes := b.WatchClaims(ctx)
	if first := nextClaimChange(t, changes); !first.Resync {
		t.Fatalf("first change = %+v; want a Resync mark", first)
	}
	c, _, err := a.Claim(ctx, "soft.g1", registry.Session{ID: "s1", ServerID: "ga"})
	if err != nil {
		t.Fatal(err)
	}
	if got := nextClaimChange(t, changes); got.Key != "soft.g1" { // the watch is established
		t.Fatalf("change = %+v; want soft.g1", got)
	}
	proxy.Blackhole()
	proxy.CloseConns()
	if err := a.Release(ctx, c); err != nil {
		t.Fatal(err)
	}
	compacted := compactAway(t, ctx, direct)
	proxy.Heal()
	var lost bool
	for {
		got := nextClaimChange(t, changes)
		t.Logf("change %+v", got)
		switch {
		case got.Lost:
			lost = true
		case got.Resync && !lost:
			t.Fatalf("Resync %+v without a Lost before it", got)
		case got.Resync:
			if got.Rev <= compacted {
				t.Fatalf("Resync from %d; want after the compacted revision %d", got.Rev, compacted)
			}
			if _, _, err := a.Claim(ctx, "soft.g2", registry.Session{ID: "s2", ServerID: "ga"}); err != nil {
				t.Fatal(err)
			}
			if got := nextClaimChange(t, changes); got.Key != "soft.g2" {
				t.Fatalf("change after the Resync = %+v; want soft.g2", got)
			}
			return
		case got.Key == "soft.g1" && got.Deleted:
			t.Fatalf("the release inside the gap was reported (%+v): the watch did not break", got)
		}
	}
}
