package broker

import (
	"context"
	"time"

	"github.com/hotdesk/hotdesk/registry"
)

// ClaimWatcher streams the changes of the group's session keys;
// *registry.Store implements it. With one, a hot-desk to a session of this
// server needs no registry read when the stream shows the session's key
// unchanged since the broker last wrote or read it, and has confirmed
// lately that it is current (see claimView).
type ClaimWatcher interface {
	WatchClaims(ctx context.Context) <-chan registry.ClaimChange
}

// maxClaimsSeen bounds claimView.seen: past it the view starts again from
// the next change, as after a Resync (sessions confirm their claims with
// a read once more).
const maxClaimsSeen = 1 << 16

// claimFreshness bounds how long the claim stream is trusted after it last
// confirmed that it is current (a registry.ClaimChange Progress mark): a
// watch cut off from etcd, or on a frozen member, stalls without failing,
// and its silence must not pass for "unchanged" (see holdsLocked).
const claimFreshness = 5 * registry.ClaimProgressInterval

// claimView is what the claim stream has shown, guarded by Broker.mu.
type claimView struct {
	live bool  // a stream is running and has not reported Lost
	from int64 // every change from this revision on is in seen
	seen map[string]claimSeen
	// fresh is when (by the broker's clock) the stream last confirmed
	// that it had reported every change (a Progress mark); zero: not since
	// it (re)started.
	fresh time.Time
}

// claimSeen is the latest change of one session key: fence 0 for a
// deletion, else the claim the key holds.
type claimSeen struct {
	rev, fence      int64
	server, session string
}

// followClaims applies the stream of changes to the view until it closes
// or the broker stops.
func (b *Broker) followClaims(ctx context.Context, changes <-chan registry.ClaimChange) {
	defer func() {
		b.mu.Lock()
		b.claims = claimView{}
		b.mu.Unlock()
	}()
	for {
		select {
		case <-b.stop:
			return
		case <-ctx.Done():
			return
		case ch, ok := <-changes:
			if !ok {
				return
			}
			now := b.clk.Now()
			b.mu.Lock()
			b.claims.apply(ch, now)
			b.mu.Unlock()
		}
	}
}

// apply applies ch, which arrived at now.
func (v *claimView) apply(ch registry.ClaimChange, now time.Time) {
	switch {
	case ch.Lost:
		*v = claimView{}
	case ch.Resync:
		*v = claimView{live: true, from: ch.Rev, seen: map[string]claimSeen{}}
	case !v.live:
	case ch.Progress:
		v.fresh = now
	case len(v.seen) >= maxClaimsSeen && !v.knows(ch.Key):
		*v = claimView{live: true, from: ch.Rev + 1, seen: map[string]claimSeen{}, fresh: v.fresh}
	case ch.Deleted:
		v.seen[ch.Key] = claimSeen{rev: ch.Rev}
	default:
		v.seen[ch.Key] = claimSeen{rev: ch.Rev, fence: ch.Claim.Fence, server: ch.Claim.Session.ServerID, session: ch.Claim.Session.ID}
	}
}

// knows reports whether key has a change in seen.
func (v *claimView) knows(key string) bool {
	_, ok := v.seen[key]
	return ok
}

// holdsLocked reports whether the stream shows c, session id's claim of key
// by server, still in place: the key has not changed since c was written or
// read, or its latest change is a write of that same claim (the fence, a
// key's create revision, names one ownership). False when the stream is
// not live, began after c, or has not confirmed within claimFreshness
// before now that it is current. Caller holds b.mu.
func (v *claimView) holdsLocked(key string, c registry.Claim, server, id string, now time.Time) bool {
	if !v.live || c.ModRev+1 < v.from || v.fresh.IsZero() || now.Sub(v.fresh) > claimFreshness {
		return false
	}
	last, ok := v.seen[key]
	if !ok || last.rev <= c.ModRev {
		return true
	}
	return last.fence == c.Fence && last.server == server && last.session == id
}

// claimHeld reports whether the claim stream shows s's claim in place.
func (b *Broker) claimHeld(s *Session) bool {
	now := b.clk.Now()
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.claims.holdsLocked(s.Token, s.claim, b.cfg.ServerID, s.ID, now)
}
