package registry

import (
	"context"
	"strings"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
)

// TokenChange is one change of the token registry.
type TokenChange struct {
	ID      string
	Deleted bool
	Record  TokenRecord // zero if Deleted
}

// WatchTokens streams changes of the token registry from now on, for every
// broker of the group to act on (a disabled or deleted token locks its
// sessions wherever they run). The channel is closed when ctx ends. After a
// watch failure (compaction, lost leader) it lists the whole registry again
// (trying each second until the listing succeeds) and reports every token
// as changed, and every token it knew that is gone from the listing as
// deleted (a deletion inside the gap is never missed), then watches from
// that revision: consumers must be idempotent. A slow consumer slows the
// watch, never loses changes. It remembers the ids of the enrolled tokens
// (a few bytes each) to tell deletions.
func (r *Store) WatchTokens(ctx context.Context) <-chan TokenChange {
	out := make(chan TokenChange, 16)
	prefix := r.opts.prefix + "tokens/"
	// Changes count from the revision current when WatchTokens is called.
	rev := int64(0)
	known := map[string]bool{}
	back := r.rw.next()
	m := r.rw.mark()
	gctx, gcancel := r.callCtx(ctx)
	if resp, err := r.kv.Get(gctx, prefix, clientv3.WithPrefix(), clientv3.WithKeysOnly()); err == nil {
		r.rw.answered(m, resp.Header.Revision)
		rev = resp.Header.Revision + 1
		for _, kv := range resp.Kvs {
			known[strings.TrimPrefix(string(kv.Key), prefix)] = true
		}
	}
	gcancel()
	go func() {
		defer close(out)
		for ctx.Err() == nil {
			opts := []clientv3.OpOption{clientv3.WithPrefix()}
			if rev > 0 {
				opts = append(opts, clientv3.WithRev(rev))
			}
			wctx, cancel := r.watchCtx(ctx, back, "tokens")
			for wr := range r.watcher.Watch(wctx, prefix, opts...) {
				if err := wr.Err(); err != nil {
					r.log.Warn("token watch failed; re-listing", "error", err)
					break
				}
				for _, ev := range wr.Events {
					id := strings.TrimPrefix(string(ev.Kv.Key), prefix)
					ch := TokenChange{ID: id, Deleted: ev.Type == clientv3.EventTypeDelete}
					if ch.Deleted {
						delete(known, id)
					} else {
						known[id] = true
						t, err := decodeToken(id, ev.Kv.Value)
						if err != nil {
							r.log.Warn("skipping undecodable token change", "token_id", id, "error", err)
							continue
						}
						ch.Record = t
					}
					if !sendCtx(ctx, out, ch) {
						cancel()
						return
					}
				}
				rev = wr.Header.Revision + 1
			}
			cancel()
			if ctx.Err() != nil {
				return
			}
			// Re-list: report the current state of every token, then watch on.
			back = r.rw.next()
			resp, ok := r.listRetrying(ctx, prefix)
			if !ok {
				return
			}
			listed := make(map[string]bool, len(resp.Kvs))
			for _, kv := range resp.Kvs {
				id := strings.TrimPrefix(string(kv.Key), prefix)
				listed[id] = true
				t, err := decodeToken(id, kv.Value)
				if err != nil {
					continue
				}
				if !sendCtx(ctx, out, TokenChange{ID: id, Record: t}) {
					return
				}
			}
			for id := range known {
				if listed[id] {
					continue
				}
				if !sendCtx(ctx, out, TokenChange{ID: id, Deleted: true}) {
					return
				}
			}
			known = listed
			rev = resp.Header.Revision + 1
		}
	}()
	return out
}

// sendCtx delivers v on out unless ctx ends first; false if it did (the
// watch goroutines' one way to hand a change on without outliving ctx).
func sendCtx[T any](ctx context.Context, out chan<- T, v T) bool {
	select {
	case out <- v:
		return true
	case <-ctx.Done():
		return false
	}
}

// listRetrying reads every key under dir in one request (bounded by the
// per-call timeout), trying again a second after each failure until it
// succeeds; ok is false if ctx ended first.
func (r *Store) listRetrying(ctx context.Context, dir string) (resp *clientv3.GetResponse, ok bool) {
	for {
		m := r.rw.mark()
		lctx, cancel := r.callCtx(ctx)
		resp, err := r.kv.Get(lctx, dir, clientv3.WithPrefix())
		cancel()
		if err == nil {
			r.rw.answered(m, resp.Header.Revision)
			return resp, true
		}
		select {
		case <-ctx.Done():
			return nil, false
		case <-time.After(time.Second):
		}
	}
}
