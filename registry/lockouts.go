package registry

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"go.etcd.io/etcd/api/v3/mvccpb"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// Lockout is a login lockout one broker imposed after failed logins, shared
// with the group so that every broker refuses the locked key until Until
// (see auth.Limiter). Key is the limiter's key ("token:…", "user:…",
// "terminal:…", "source:…").
type Lockout struct {
	Key         string `json:"key"`
	UntilUnixMs int64  `json:"until_unix_ms"`
	// SinceUnixMs is when the lockout was imposed — when the failures
	// that led to it began (auth.Lockout.Since), so that a lockout a
	// broker imposed on failures an administrator cleared meanwhile is
	// refused too — by the clock of the server that imposed it; 0:
	// unknown (a record of a broker that did not write it), which no
	// clearing refuses (see PublishLockout).
	SinceUnixMs int64  `json:"since_unix_ms,omitempty"`
	Level       int    `json:"level"`  // lockouts of the key so far (back-off exponent)
	Server      string `json:"server"` // the server that imposed it (set by PublishLockout)
	// Cleared marks an administrator's clearing of the key's lockout
	// (ClearLockout): every broker forgets the key's failures and lockout
	// from before ClearedUnixMs (see ClearCutoff).
	Cleared bool `json:"cleared,omitempty"`
	// ClearedUnixMs is when the key was last cleared, by the clock of the
	// server that cleared it: a clearing's own time, or, in a lockout
	// imposed after a clearing, which replaced it, the clearing's (see
	// PublishLockout). 0: none known (in a clearing, one of a broker
	// that did not write it: it clears whatever the key holds, whenever
	// it is seen).
	ClearedUnixMs int64 `json:"cleared_unix_ms,omitempty"`
}

// ClearSkew is how far apart the clocks of a group's servers may be
// (kept in step by NTP, which holds them to milliseconds). A lockout
// carries its imposition time by the clock of the server that imposed it,
// a clearing its time by the clearing server's; to compare the two, a
// lockout imposed less than ClearSkew after a clearing counts as imposed
// before it (see ClearCutoff). Within ClearSkew of a clearing, the error
// is taken in the administrator's favour: a lockout that might predate
// the clearing must not lock the key out again, whereas a lockout
// started just after it and cleared by mistake only leaves the group's
// count of the key's later failures to lock it out again.
const ClearSkew = time.Second

// ClearCutoff returns the time before which the key's last clearing
// (ClearedUnixMs, a clearing's or carried by a lockout since) clears: a
// lockout imposed (SinceUnixMs) or failures counted no later than it are
// the ones the administrator cleared, by the receiver's clock as well as
// the clearing server's (ClearedUnixMs + ClearSkew). ok is false for a
// record without ClearedUnixMs: a lockout of a key not cleared lately,
// or a clearing of an older broker, which clears whatever the key holds.
func (lo Lockout) ClearCutoff() (cut time.Time, ok bool) {
	if lo.ClearedUnixMs == 0 {
		return time.Time{}, false
	}
	return time.UnixMilli(lo.ClearedUnixMs).Add(ClearSkew), true
}

// ErrCleared is returned (wrapped) by PublishLockout for a lockout that
// an administrator cleared after it was imposed: the clearing stands,
// and the lockout is not to be published again.
var ErrCleared = errors.New("registry: lockout cleared by an administrator after it was imposed")

// DefaultMaxLockout is the longest lockout a Store assumes the group's
// limiters impose (auth's default max_lockout), unless WithMaxLockout
// sets it.
const DefaultMaxLockout = 15 * time.Minute

// maxLockoutKey bounds a lockout's key: it names a token, user or terminal.
const maxLockoutKey = 512

func (r *Store) lockoutKey(key string) string { return r.hashedKey("lockouts/", key) }

// hashedKey names key's record under dir by a hash of key: the user or
// token a limiter key names never appears in a key name.
func (r *Store) hashedKey(dir, key string) string {
	sum := sha256.Sum256([]byte(key))
	return r.opts.prefix + dir + hex.EncodeToString(sum[:16])
}

// Lockouts lists the lockouts in force in the group, by key.
func (r *Store) Lockouts(ctx context.Context) ([]Lockout, error) {
	var out []Lockout
	now := r.opts.clock.Now().UnixMilli()
	err := r.list(ctx, r.opts.prefix+"lockouts/", func(_ string, kv *mvccpb.KeyValue) {
		var lo Lockout
		if json.Unmarshal(kv.Value, &lo) == nil && lo.Key != "" && !lo.Cleared && lo.UntilUnixMs > now {
			out = append(out, lo)
		}
	})
	if err != nil {
		return nil, fmt.Errorf("registry: lockouts: %w", err)
	}
	slices.SortFunc(out, func(a, b Lockout) int { return strings.Compare(a.Key, b.Key) })
	return out, nil
}

// ClearLockout ends the lockout of key ("user:alice", "token:…",
// "terminal:…") in the whole group and deletes the group's count of its
// failures: a cleared record, stamped with the time of the clearing
// (ClearedUnixMs, by the Store's clock), replaces the lockout, and every
// broker watching (WatchLockouts) forgets the key's failures and lockout
// from before it (see ClearCutoff).
//
// The cleared record lives as long as any lockout imposed before it may
// last: the longest lockout (WithMaxLockout; the one it replaces if that
// ends later) and ClearSkew. Until it ends, PublishLockout refuses every
// lockout of the key imposed before the clearing: one imposed by a broker
// cut off from the registry meanwhile, published when it is back, would
// otherwise lock the key out again for the rest of that lockout, the
// administrator's clearing undone. A lockout imposed after it replaces it.
// ErrNotFound if no lockout of key is in force and no failures of it are
// counted.
func (r *Store) ClearLockout(ctx context.Context, key string) error {
	kv, err := r.get(ctx, r.lockoutKey(key))
	var lo Lockout
	now := r.opts.clock.Now()
	if err == nil && (json.Unmarshal(kv.Value, &lo) != nil || lo.Key != key || lo.Cleared || lo.UntilUnixMs <= now.UnixMilli()) {
		err = ErrNotFound
	}
	ttl := r.opts.maxLockout
	if err == nil {
		ttl = max(ttl, time.UnixMilli(lo.UntilUnixMs).Sub(now))
	}
	if errors.Is(err, ErrNotFound) {
		_, err = r.get(ctx, r.failuresKey(key)) // failures only: clear those
	}
	if err != nil {
		return fmt.Errorf("registry: clear lockout %q: %w", key, err)
	}
	cleared := Lockout{Key: key, Server: r.id, Cleared: true, ClearedUnixMs: now.UnixMilli()}
	if err := r.putLockout(ctx, cleared, ttl+ClearSkew); err != nil {
		return fmt.Errorf("registry: clear lockout: %w", err)
	}
	return nil
}

// PublishLockout stores lo for the group under a lease that ends with it
// (etcd may keep it a little longer: receivers compare UntilUnixMs). A
// later lockout of the same key replaces it; a lockout of the key in force
// that ends no sooner than lo is kept (lo is a lockout published late, by
// a broker that was cut off from the registry meanwhile: it must not
// shorten the group's, nor lower its back-off level: the record holds
// the higher level of the two either way). The group's count of
// the key's failures is deleted either way (see CountFailure): the lockout
// consumed them.
//
// A clearing of the key (ClearLockout) made after lo was imposed
// (lo.SinceUnixMs no later than its ClearCutoff) is kept, the group's
// count of failures too (those are failures since the clearing), and
// ErrCleared returned: lo is a lockout the administrator cleared,
// published late. So is a lockout that replaced the clearing since (it
// carries the clearing's time, ClearedUnixMs, under a lease as long as
// the clearing's would have been): the lockout imposed before the
// clearing must neither extend it nor raise its level. A lockout without
// SinceUnixMs replaces a clearing, as does one imposed after it, and a
// clearing without ClearedUnixMs (an older broker's) is replaced by any
// lockout.
func (r *Store) PublishLockout(ctx context.Context, lo Lockout) error {
	if lo.Key == "" || len(lo.Key) > maxLockoutKey {
		return fmt.Errorf("registry: publish lockout: key of %d bytes: %w", len(lo.Key), ErrBadKey)
	}
	left := time.UnixMilli(lo.UntilUnixMs).Sub(r.opts.clock.Now())
	if left <= 0 {
		return nil // over already
	}
	lo.Server, lo.Cleared, lo.ClearedUnixMs = r.id, false, 0
	if err := r.putLockout(ctx, lo, left); err != nil {
		return fmt.Errorf("registry: publish lockout: %w", err)
	}
	return nil
}

// putLockout writes lo under its key with a lease of its own that ends
// after ttl (rounded up to whole seconds), and deletes the key's failure
// count in the same txn, fenced on the record it read: unless lo is a
// lockout (not a clearing) and the record a lockout of the key ending no
// later, which is then kept (the count deleted, and the record's level
// raised to lo's if lower; a lockout replacing one in force keeps the
// higher level of the two too), or lo is a lockout the record, a
// clearing of the key, cleared (see clearedBy): nothing is written then,
// and ErrCleared returned. The lease of
// the record it replaces is revoked, and so is the new one if the txn
// failed without writing: a key locked out again and again holds one
// lease, not one per lockout until each expires. ErrContended after
// casTries lost races.
func (r *Store) putLockout(ctx context.Context, lo Lockout, ttl time.Duration) error {
	k := r.lockoutKey(lo.Key)
	lease := clientv3.NoLease // granted at the first try that writes, kept for the next
	var granted time.Duration // lease's TTL
	for range casTries {
		kv, err := r.get(ctx, k)
		if err != nil && !errors.Is(err, ErrNotFound) {
			r.revokeUnwritten(ctx, lease)
			return err
		}
		if !lo.Cleared && clearedBy(kv, lo) {
			r.revokeUnwritten(ctx, lease)
			return ErrCleared
		}
		cmp := clientv3.Compare(clientv3.CreateRevision(k), "=", 0)
		if kv != nil {
			cmp = clientv3.Compare(clientv3.ModRevision(k), "=", kv.ModRevision)
		}
		ops := []clientv3.Op{clientv3.OpDelete(r.failuresKey(lo.Key))}
		cur, inForce := lockoutIn(kv, lo.Key)
		keep := inForce && !lo.Cleared && cur.UntilUnixMs >= lo.UntilUnixMs
		put, need := lo, ttl
		if inForce && !lo.Cleared {
			// The group's back-off level is the higher of the two.
			put.Level = max(put.Level, cur.Level)
		}
		if at := clearedAt(kv, lo.Key); at != 0 && !lo.Cleared {
			// A lockout imposed after the key's clearing replaces it,
			// and carries its time for as long as the clearing would
			// have stayed: a lockout imposed before it, published
			// later still, is refused as the clearing would refuse it.
			put.ClearedUnixMs = at
			need = max(need, time.UnixMilli(at).Add(r.opts.maxLockout+ClearSkew).Sub(r.opts.clock.Now()))
		}
		if keep && lo.Level > cur.Level {
			// The record kept ends no sooner, under its own lease, but
			// takes lo's higher level.
			cur.Level = lo.Level
			v, err := json.Marshal(cur)
			if err != nil {
				return err
			}
			ops = append(ops, clientv3.OpPut(k, string(v), clientv3.WithIgnoreLease()))
		}
		if !keep {
			v, err := json.Marshal(put)
			if err != nil {
				return err
			}
			if lease == clientv3.NoLease || granted < need {
				r.revokeUnwritten(ctx, lease)
				cctx, cancel := r.callCtx(ctx)
				grant, err := r.leases.Grant(cctx, int64((need+time.Second-1)/time.Second))
				cancel()
				if err != nil {
					return fmt.Errorf("grant lease: %w", err)
				}
				lease, granted = grant.ID, need
			}
			ops = append(ops, clientv3.OpPut(k, string(v), clientv3.WithLease(lease)))
		}
		cctx, cancel := r.callCtx(ctx)
		resp, err := r.kv.Txn(cctx).If(cmp).Then(ops...).Commit()
		cancel()
		switch {
		case err != nil:
			r.revokeUnwritten(ctx, lease)
			return err
		case !resp.Succeeded:
			continue // another writer came first: read again
		case keep:
			r.revokeUnwritten(ctx, lease)
		case kv != nil && kv.Lease != 0 && kv.Lease != int64(lease):
			r.revokeLease(ctx, clientv3.LeaseID(kv.Lease))
		}
		return nil
	}
	r.revokeUnwritten(ctx, lease)
	return ErrContended
}

// lockoutIn returns the lockout kv holds, and whether it is one of key
// (not a clearing).
func lockoutIn(kv *mvccpb.KeyValue, key string) (Lockout, bool) {
	var cur Lockout
	if kv == nil || json.Unmarshal(kv.Value, &cur) != nil {
		return Lockout{}, false
	}
	return cur, cur.Key == key && !cur.Cleared
}

// clearedAt returns the ClearedUnixMs of the record of key kv holds: the
// time of the key's last clearing, a clearing's own or carried by a
// lockout that replaced it; 0 if none is known.
func clearedAt(kv *mvccpb.KeyValue, key string) int64 {
	var cur Lockout
	if kv == nil || json.Unmarshal(kv.Value, &cur) != nil || cur.Key != key {
		return 0
	}
	return cur.ClearedUnixMs
}

// clearedBy reports whether the record kv holds, of lo's key, carries a
// clearing (see clearedAt) that cleared lo: lo was imposed no later than
// its ClearCutoff. A lockout without SinceUnixMs was imposed at an
// unknown time, and no clearing clears it here (a receiver's ClearCutoff
// still applies).
func clearedBy(kv *mvccpb.KeyValue, lo Lockout) bool {
	at := clearedAt(kv, lo.Key)
	if at == 0 || lo.SinceUnixMs == 0 {
		return false
	}
	cut, _ := Lockout{ClearedUnixMs: at}.ClearCutoff()
	return !time.UnixMilli(lo.SinceUnixMs).After(cut)
}

// revokeUnwritten revokes id, granted by putLockout, unless it is
// NoLease or a key is attached to it (see revokeIfUnused).
func (r *Store) revokeUnwritten(ctx context.Context, id clientv3.LeaseID) {
	if id != clientv3.NoLease {
		r.revokeIfUnused(ctx, id)
	}
}

// revokeIfUnused revokes id if no key is attached to it: the lease of a
// txn that failed. A txn whose outcome is unknown (a timeout after etcd
// took it) may have written its record, which must then stay: a lockout
// in force in the group; so may one whose lease cannot be read, and its
// lease then expires by itself.
func (r *Store) revokeIfUnused(ctx context.Context, id clientv3.LeaseID) {
	cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), r.opts.callTimeout)
	ttl, err := r.leases.TimeToLive(cctx, id, clientv3.WithAttachedKeys())
	cancel()
	if err == nil && len(ttl.Keys) == 0 {
		r.revokeLease(ctx, id)
	}
}

// WatchLockouts streams the group's lockouts: those stored when it is
// called, then every one published or cleared later. A clearing
// (Cleared) stays stored as long as a lockout imposed before it may last
// (see ClearLockout), so it is listed again and again, long after it was
// made: a consumer clears only what predates it (ClearCutoff). After a
// watch failure it lists them again (trying each second) and goes on
// from there, so a consumer sees a lockout or a clearing more than once
// and must be idempotent. Undecodable values are skipped. The channel is
// closed when ctx ends.
func (r *Store) WatchLockouts(ctx context.Context) <-chan Lockout {
	out := make(chan Lockout, 16)
	prefix := r.opts.prefix + "lockouts/"
	send := func(val []byte) bool {
		lo, err := decodeLockout(val)
		if err != nil {
			r.log.Warn("skipping undecodable lockout record", "bytes", len(val), "error", err)
			return true
		}
		return sendCtx(ctx, out, lo)
	}
	go func() {
		defer close(out)
		r.listWatch(ctx, prefix, "lockout",
			func(kv *mvccpb.KeyValue) bool { return send(kv.Value) },
			func(ev *clientv3.Event) bool { return send(ev.Kv.Value) },
			clientv3.WithFilterDelete())
	}()
	return out
}

// listWatch lists prefix, handing each record to onKV, then watches it
// from the list's revision (with opts), handing each event to onEvent.
// After a watch failure (logged, naming what) it lists again (trying
// each second) and goes on from there. It returns when ctx ends or a
// handler returns false.
func (r *Store) listWatch(ctx context.Context, prefix, what string, onKV func(*mvccpb.KeyValue) bool,
	onEvent func(*clientv3.Event) bool, opts ...clientv3.OpOption) {
	for {
		back := r.rw.next()
		resp, ok := r.listRetrying(ctx, prefix)
		if !ok {
			return
		}
		for _, kv := range resp.Kvs {
			if !onKV(kv) {
				return
			}
		}
		wctx, cancel := r.watchCtx(ctx, back, what)
		wopts := append([]clientv3.OpOption{clientv3.WithPrefix(), clientv3.WithRev(resp.Header.Revision + 1)}, opts...)
		for wr := range r.watcher.Watch(wctx, prefix, wopts...) {
			if err := wr.Err(); err != nil {
				r.log.Warn(what+" watch failed; re-listing", "error", err)
				break
			}
			for _, ev := range wr.Events {
				if !onEvent(ev) {
					cancel()
					return
				}
			}
		}
		cancel()
		if ctx.Err() != nil {
			return
		}
	}
}

// decodeLockout decodes a lockout record as WatchLockouts hands it on:
// ErrCorrupt unless it is JSON naming a key of 1 to maxLockoutKey bytes.
func decodeLockout(val []byte) (Lockout, error) {
	return decodeKeyed[Lockout](val, "lockout", func(lo *Lockout) string { return lo.Key })
}

// decodeKeyed decodes a record of the group's authentication limits (a
// lockout, a failure count, what): ErrCorrupt unless it is JSON naming a
// key (key reads it) of 1 to maxLockoutKey bytes.
func decodeKeyed[T any](val []byte, what string, key func(*T) string) (T, error) {
	var rec, zero T
	if err := json.Unmarshal(val, &rec); err != nil {
		return zero, fmt.Errorf("%w: %v", ErrCorrupt, err)
	}
	if k := key(&rec); k == "" || len(k) > maxLockoutKey {
		return zero, fmt.Errorf("%w: %s key of %d bytes", ErrCorrupt, what, len(k))
	}
	return rec, nil
}
