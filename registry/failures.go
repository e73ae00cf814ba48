package registry

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"time"

	"go.etcd.io/etcd/api/v3/mvccpb"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// Failures is the group's count of failed logins of one limiter key
// ("token:…", "user:…", "terminal:…", "source:…"; see auth.Limiter) in the current
// failure window, which began at FirstUnixMs. It never holds a secret:
// only the key, a count and times.
type Failures struct {
	Key         string `json:"key"`
	Count       int    `json:"count"`
	FirstUnixMs int64  `json:"first_unix_ms"` // the window's first failure
	Server      string `json:"server"`        // the server that counted the last one
}

// ErrContended is returned (wrapped) by CountFailure when its
// compare-and-swap lost to other writers every time it tried.
var ErrContended = errors.New("registry: too many concurrent writers")

// ErrBadKey is returned (wrapped) by CountFailure and PublishLockout for
// a key that is empty or longer than a lockout's may be: the key, not the
// registry, is at fault (a login name typed at a PAM prompt may be
// kilobytes long).
var ErrBadKey = errors.New("registry: limiter key empty or too long")

// casTries bounds CountFailure's compare-and-swap: each failed try means
// another broker's increment succeeded, so this is only reached by a
// group counting that many failures of one key at the same instant.
const casTries = 32

// failureLeases is the lease the failure counts of a Store share (see
// failureLease).
type failureLeases struct {
	mu      sync.Mutex
	id      clientv3.LeaseID
	window  time.Duration // the window it was granted for
	granted time.Time
}

// leaseReuse is how long after its grant a failure count lease takes new
// counts: a tenth of the window, from a second to a minute. A count then
// lives up to that much longer than its window (its stored time ends it
// on time), and a broker holds at most window/leaseReuse+1 leases
// however many keys fail.
func leaseReuse(window time.Duration) time.Duration {
	return min(max(window/10, time.Second), time.Minute)
}

// failureLease returns a lease for a count whose window starts now: the
// one granted last for window if that was less than leaseReuse ago, else
// a new one for window plus leaseReuse (so every count under it lives
// its whole window). Counts share their leases, as the Kubernetes API
// server's events do: a lease per count made a spray of failures of
// many user names cost etcd a lease each (a raft write to grant, one to
// revoke, and the lessor's memory and checkpoints) for the whole window.
// A shared lease is never revoked for one count: a count ends by being
// deleted, or with the lease.
func (r *Store) failureLease(ctx context.Context, window time.Duration, now time.Time) (clientv3.LeaseID, error) {
	p := r.failLeases
	p.mu.Lock()
	defer p.mu.Unlock()
	reuse := leaseReuse(window)
	if d := now.Sub(p.granted); p.id != clientv3.NoLease && p.window == window && d >= 0 && d < reuse {
		return p.id, nil
	}
	cctx, cancel := r.callCtx(ctx)
	defer cancel()
	grant, err := r.leases.Grant(cctx, int64((window+reuse+time.Second-1)/time.Second))
	if err != nil {
		return clientv3.NoLease, fmt.Errorf("grant lease: %w", err)
	}
	p.id, p.window, p.granted = grant.ID, window, now
	return p.id, nil
}

// forgetFailureLease stops failureLease handing out id (etcd no longer
// has it).
func (r *Store) forgetFailureLease(id clientv3.LeaseID) {
	p := r.failLeases
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.id == id {
		p.id = clientv3.NoLease
	}
}

// failuresKey names key's counter; like a lockout's, its name is a hash of
// the key, never the user or token.
func (r *Store) failuresKey(key string) string { return r.hashedKey("failures/", key) }

// CountFailure adds one failure of key to the group's count and returns
// the count with it. A count lives for window after its first failure
// (under a lease shared with the counts begun about then, see
// failureLease; a count found older than window starts over). The increment is atomic: a txn comparing the
// counter's mod revision, retried when another broker's increment came
// first, so concurrent failures at several brokers are all counted.
//
// When the count reaches limit (limit > 0), the counter is deleted in the
// same txn and that count returned: the failures are consumed by the
// lockout the caller then starts, and exactly one caller in the group
// sees the limit reached. ErrContended after casTries lost races.
func (r *Store) CountFailure(ctx context.Context, key string, window time.Duration, limit int) (Failures, error) {
	if key == "" || len(key) > maxLockoutKey {
		return Failures{}, fmt.Errorf("registry: count failure: key of %d bytes: %w", len(key), ErrBadKey)
	}
	if window <= 0 {
		return Failures{}, fmt.Errorf("registry: count failure: window %s", window)
	}
	k := r.failuresKey(key)
	for range casTries {
		f, ok, err := r.countOnce(ctx, k, key, window, limit)
		if err != nil {
			return Failures{}, fmt.Errorf("registry: count failure: %w", err)
		}
		if ok {
			return f, nil
		}
	}
	return Failures{}, fmt.Errorf("registry: count failure: %w", ErrContended)
}

// countOnce is one try of CountFailure: ok is false if another writer
// changed the counter between the read and the txn.
func (r *Store) countOnce(ctx context.Context, k, key string, window time.Duration, limit int) (Failures, bool, error) {
	now := r.opts.clock.Now()
	kv, err := r.get(ctx, k)
	if err != nil && !errors.Is(err, ErrNotFound) {
		return Failures{}, false, err
	}
	var f Failures
	cmp := clientv3.Compare(clientv3.CreateRevision(k), "=", 0)
	lease := clientv3.NoLease
	if kv != nil {
		cmp = clientv3.Compare(clientv3.ModRevision(k), "=", kv.ModRevision)
		// A record that does not decode, names another key (a hash
		// collision), has no lease or outlived its window (the lease is
		// rounded up to seconds) starts a new window.
		if json.Unmarshal(kv.Value, &f) == nil && f.Key == key && kv.Lease != 0 &&
			now.Sub(time.UnixMilli(f.FirstUnixMs)) <= window {
			lease = clientv3.LeaseID(kv.Lease)
		}
	}
	if lease == clientv3.NoLease {
		f = Failures{Key: key, FirstUnixMs: now.UnixMilli()}
		if lease, err = r.failureLease(ctx, window, now); err != nil {
			return Failures{}, false, err
		}
	}
	f.Count++
	f.Server = r.id
	op := clientv3.OpDelete(k)
	reached := limit > 0 && f.Count >= limit
	if !reached {
		v, err := json.Marshal(f)
		if err != nil {
			return Failures{}, false, err
		}
		op = clientv3.OpPut(k, string(v), clientv3.WithLease(lease))
	}
	cctx, cancel := r.callCtx(ctx)
	resp, err := r.kv.Txn(cctx).If(cmp).Then(op).Commit()
	cancel()
	switch {
	case errors.Is(err, rpctypes.ErrLeaseNotFound):
		// The lease ended (expired between the read and the txn, or
		// etcd lost it): nothing was written; try again with another.
		r.forgetFailureLease(lease)
		return Failures{}, false, nil
	case err != nil:
		// The outcome is unknown: the caller's failure is then counted
		// locally only.
		return Failures{}, false, err
	}
	return f, resp.Succeeded, nil
}

// ClearFailures deletes key's count (a login succeeded: the failures
// before it no longer count). Deleting an absent count is not an error.
// Its lease, shared with other counts, stays.
func (r *Store) ClearFailures(ctx context.Context, key string) error {
	cctx, cancel := r.callCtx(ctx)
	defer cancel()
	if _, err := r.kv.Delete(cctx, r.failuresKey(key)); err != nil {
		return fmt.Errorf("registry: clear failures: %w", err)
	}
	return nil
}

// FailureCounts lists the group's failure counts in their window, by key.
func (r *Store) FailureCounts(ctx context.Context) ([]Failures, error) {
	var out []Failures
	err := r.list(ctx, r.opts.prefix+"failures/", func(_ string, kv *mvccpb.KeyValue) {
		var f Failures
		if json.Unmarshal(kv.Value, &f) == nil && f.Key != "" && f.Count > 0 {
			out = append(out, f)
		}
	})
	if err != nil {
		return nil, fmt.Errorf("registry: failure counts: %w", err)
	}
	slices.SortFunc(out, func(a, b Failures) int { return strings.Compare(a.Key, b.Key) })
	return out, nil
}

// WatchFailures streams the group's failure counts: those there when it
// is called, then every change. A count that ended (a success cleared it,
// a lockout consumed it, an administrator cleared it, its window expired)
// comes as its last record with Count 0. After a watch failure it lists
// them again (trying each second) and goes on from there, so a consumer
// sees a count more than once and must treat each as the latest; a count
// that ended during the failure is not reported. Undecodable values are
// skipped. The channel is closed when ctx ends.
func (r *Store) WatchFailures(ctx context.Context) <-chan Failures {
	out := make(chan Failures, 16)
	prefix := r.opts.prefix + "failures/"
	send := func(val []byte, ended bool) bool {
		f, err := decodeFailures(val)
		if err != nil {
			r.log.Warn("skipping undecodable failure count", "bytes", len(val), "error", err)
			return true
		}
		if ended {
			f.Count = 0
		}
		return sendCtx(ctx, out, f)
	}
	go func() {
		defer close(out)
		r.listWatch(ctx, prefix, "failure count",
			func(kv *mvccpb.KeyValue) bool { return send(kv.Value, false) },
			func(ev *clientv3.Event) bool {
				if ev.Type != clientv3.EventTypeDelete {
					return send(ev.Kv.Value, false)
				}
				if ev.PrevKv == nil {
					return true // compacted away: nothing to name the key by
				}
				return send(ev.PrevKv.Value, true)
			}, clientv3.WithPrevKV())
	}()
	return out
}

// decodeFailures decodes a failure count as WatchFailures hands it on:
// ErrCorrupt unless it is JSON naming a key of 1 to maxLockoutKey bytes.
func decodeFailures(val []byte) (Failures, error) {
	return decodeKeyed[Failures](val, "failure count", func(f *Failures) string { return f.Key })
}
