package registry

import (
	"context"
	"strings"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
)

// ClaimChange is one change of a session key of the group, or a mark in
// the stream of WatchClaims.
type ClaimChange struct {
	// Key is the session key that changed ("" for a mark).
	Key string
	// Rev is the revision of the change; for a Resync mark, the first
	// revision the stream reports changes from.
	Rev int64
	// Deleted: the key is gone (released, or its lease ended). Otherwise
	// Claim is what the key holds now; an undecodable value comes as a
	// Claim with only Key, Fence and ModRev set.
	Deleted bool
	Claim   Claim
	// Resync marks a (re)start: every change from Rev on is reported,
	// changes before it may not have been (those of Rev-1 may come again). Lost marks a failed watch:
	// nothing is reported until the next Resync, so a consumer must stop
	// trusting what it knows from the stream.
	Resync, Lost bool
	// Progress marks that every change up to Rev has been reported: etcd
	// answered one of the progress requests WatchClaims sends every
	// ClaimProgressInterval with its current revision, Rev. A watch can
	// stall without failing (its member cut off or frozen, the client
	// waiting to resume it): then no Progress comes, and a consumer must
	// not take the stream's silence for "unchanged" for longer than a few
	// intervals after the last one.
	Progress bool
}

// ClaimProgressInterval is how often WatchClaims asks etcd to confirm that
// its watch is current (one Progress mark per answer).
const ClaimProgressInterval = 100 * time.Millisecond

// WatchClaims streams every change of the group's session keys, for a
// broker to know without a read that a key is still the claim it wrote
// (see broker.ClaimWatcher). It starts with a Resync mark at the current
// revision. A watch that fails (compaction, a member that lost its leader:
// the watch requires one) is reported as Lost at once, then restarted from
// the current revision with a new Resync, trying each second; changes in
// between are not reported. While the watch runs, Progress marks say how
// far it is known to be complete (a watch that merely stalls is not
// reported otherwise). The channel is closed when ctx ends. A slow
// consumer slows the stream, never loses changes.
func (r *Store) WatchClaims(ctx context.Context) <-chan ClaimChange {
	out := make(chan ClaimChange, 64)
	prefix := r.opts.prefix + "sessions/"
	send := func(ch ClaimChange) bool { return sendCtx(ctx, out, ch) }
	go func() {
		defer close(out)
		for {
			back := r.rw.next()
			rev, ok := r.revisionRetrying(ctx, prefix)
			if !ok || !send(ClaimChange{Resync: true, Rev: rev + 1}) {
				return
			}
			// From rev, not rev+1: its changes are reported again (they
			// are older than what the Resync promises, and harmless), and
			// etcd answers a progress request only for watches that do
			// not start in the future.
			wctx, cancel := r.watchCtx(ctx, back, "session keys")
			wch := r.watcher.Watch(wctx, prefix, clientv3.WithPrefix(), clientv3.WithRev(rev))
			more := r.relayClaims(ctx, wctx, wch, prefix, send)
			cancel()
			if !more {
				return
			}
			if ctx.Err() != nil || !send(ClaimChange{Lost: true}) {
				return
			}
			select {
			case <-ctx.Done():
				return
			case <-time.After(time.Second):
			}
		}
	}()
	return out
}

// relayClaims sends the changes wch reports, and a Progress mark for each
// answer to the progress requests it makes on wctx (the watch's stream) at
// once and every ClaimProgressInterval, until the watch fails or closes
// (true: report it Lost) or ctx ends (false).
func (r *Store) relayClaims(ctx, wctx context.Context, wch clientv3.WatchChan, prefix string, send func(ClaimChange) bool) bool {
	tick := time.NewTicker(ClaimProgressInterval)
	defer tick.Stop()
	r.requestProgress(ctx, wctx)
	for {
		select {
		case <-tick.C:
			r.requestProgress(ctx, wctx)
		case wr, ok := <-wch:
			if !ok {
				return ctx.Err() == nil
			}
			if err := wr.Err(); err != nil {
				r.log.Warn("session key watch failed; restarting it", "error", err)
				return ctx.Err() == nil
			}
			if !r.relayResponse(wr, prefix, send) {
				return false
			}
		}
	}
}

// requestProgress asks etcd, on the stream of wctx's watches, for a
// progress response: it comes once every change up to the member's
// current revision has been sent. Bounded: while the client reconnects the
// request waits, and so would the watch's changes.
func (r *Store) requestProgress(ctx, wctx context.Context) {
	pctx, cancel := context.WithTimeout(wctx, ClaimProgressInterval)
	defer cancel()
	if err := r.watcher.RequestProgress(pctx); err != nil && ctx.Err() == nil {
		r.log.Trace("session key watch progress request failed", "error", err)
	}
}

// relayResponse sends what wr reports: a Progress mark, or its changes;
// false if ctx ended.
func (r *Store) relayResponse(wr clientv3.WatchResponse, prefix string, send func(ClaimChange) bool) bool {
	if wr.IsProgressNotify() {
		return send(ClaimChange{Progress: true, Rev: wr.Header.Revision})
	}
	for _, ev := range wr.Events {
		key := strings.TrimPrefix(string(ev.Kv.Key), prefix)
		ch := ClaimChange{Key: key, Rev: ev.Kv.ModRevision, Deleted: ev.Type == clientv3.EventTypeDelete}
		if !ch.Deleted {
			c, err := decodeClaim(key, ev.Kv)
			if err != nil {
				c = Claim{Key: key, Fence: ev.Kv.CreateRevision, ModRev: ev.Kv.ModRevision}
			}
			ch.Claim = c
		}
		if !send(ch) {
			return false
		}
	}
	return true
}

// revisionRetrying reads the store's current revision (a linearizable
// count of the keys under dir), trying again a second after each failure;
// ok is false if ctx ended first.
func (r *Store) revisionRetrying(ctx context.Context, dir string) (rev int64, ok bool) {
	for {
		m := r.rw.mark()
		lctx, cancel := r.callCtx(ctx)
		resp, err := r.kv.Get(lctx, dir, clientv3.WithPrefix(), clientv3.WithCountOnly())
		cancel()
		if err == nil {
			r.rw.answered(m, resp.Header.Revision)
			return resp.Header.Revision, true
		}
		select {
		case <-ctx.Done():
			return 0, false
		case <-time.After(time.Second):
		}
	}
}
