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
	// changes before it may not have been. Lost marks a failed watch:
	// nothing is reported until the next Resync, so a consumer must stop
	// trusting what it knows from the stream.
	Resync, Lost bool
}

// WatchClaims streams every change of the group's session keys, for a
// broker to know without a read that a key is still the claim it wrote
// (see broker.ClaimWatcher). It starts with a Resync mark at the current
// revision. A watch that fails (compaction, a member that lost its leader:
// the watch requires one) is reported as Lost at once, then restarted from
// the current revision with a new Resync, trying each second; changes in
// between are not reported. The channel is closed when ctx ends. A slow
// consumer slows the stream, never loses changes.
func (r *Store) WatchClaims(ctx context.Context) <-chan ClaimChange {
	out := make(chan ClaimChange, 64)
	prefix := r.opts.prefix + "sessions/"
	send := func(ch ClaimChange) bool {
		select {
		case out <- ch:
			return true
		case <-ctx.Done():
			return false
		}
	}
	go func() {
		defer close(out)
		for {
			rev, ok := r.revisionRetrying(ctx, prefix)
			if !ok || !send(ClaimChange{Resync: true, Rev: rev + 1}) {
				return
			}
			wctx, cancel := context.WithCancel(clientv3.WithRequireLeader(ctx))
			for wr := range r.watcher.Watch(wctx, prefix, clientv3.WithPrefix(), clientv3.WithRev(rev+1)) {
				if err := wr.Err(); err != nil {
					r.log.Warn("session key watch failed; restarting it", "error", err)
					break
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
						cancel()
						return
					}
				}
			}
			cancel()
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

// revisionRetrying reads the store's current revision (a linearizable
// count of the keys under dir), trying again a second after each failure;
// ok is false if ctx ended first.
func (r *Store) revisionRetrying(ctx context.Context, dir string) (rev int64, ok bool) {
	for {
		lctx, cancel := r.callCtx(ctx)
		resp, err := r.kv.Get(lctx, dir, clientv3.WithPrefix(), clientv3.WithCountOnly())
		cancel()
		if err == nil {
			return resp.Header.Revision, true
		}
		select {
		case <-ctx.Done():
			return 0, false
		case <-time.After(time.Second):
		}
	}
}
