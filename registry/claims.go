package registry

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"

	"go.etcd.io/etcd/api/v3/mvccpb"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// Claim creates sessions/<key> holding s under this server's lease if the
// key is absent:
//
//	Txn(If(CreateRevision(k)==0)).Then(Put(k, s, WithLease(ours))).Else(Get(k))
//
// won=true: c is our new claim. won=false: c is the current owner's claim
// (redirect there). s.Key and s.ServerID are forced to key and our id; zero
// timestamps are set to the clock's now; s.ID must not be empty.
//
// If the transaction's outcome is unknown (ctx cancelled or a timeout while
// it was in flight), Claim resolves it before returning: it re-reads the key
// with a fresh short context and reports won if the key holds our lease and
// s.ID, or the other owner's claim; only if the key is absent or cannot be
// read does it return an error. (A request still in flight may be applied
// after that read: the key then appears as a stale claim of this server,
// which Lookup shows and Release removes.)
//
// Errors: ErrInvalidKey, ErrLeaseLost (our lease is gone: nothing written),
// ErrUnhealthy (the lease is overdue, see Healthy: nothing written; it also
// matches ErrLeaseLost), ErrCorrupt (the current value is undecodable), or the etcd error.
func (r *Registry) Claim(ctx context.Context, key string, s Session) (c Claim, won bool, err error) {
	v, err := r.encodeClaim("claim", key, &s)
	if err != nil {
		return Claim{}, false, err
	}
	c, won, err = r.claimTxn(ctx, "claim", key, s, v, nil)
	if err == nil && !won && c.Key == "" { // cannot happen: the compare saw the key in the same txn
		return Claim{}, false, fmt.Errorf("registry: claim %q: key vanished inside the txn", key)
	}
	return c, won, err
}

// encodeClaim readies s for a claim of key by the call op (named in
// errors): it checks key, s.ID and that the lease is writable, forces s.Key
// and s.ServerID, sets a zero CreatedUnixMs to the clock's now and a zero
// UpdatedUnixMs to CreatedUnixMs, and returns s encoded.
func (r *Registry) encodeClaim(op, key string, s *Session) ([]byte, error) {
	if err := validateKey(key); err != nil {
		return nil, fmt.Errorf("registry: %s: %w", op, err)
	}
	if s.ID == "" {
		return nil, fmt.Errorf("registry: %s %q: empty session id: %w", op, key, ErrInvalidKey)
	}
	if err := r.writable(); err != nil {
		return nil, fmt.Errorf("registry: %s %q: %w", op, key, err)
	}
	s.Key = key
	s.ServerID = r.id
	if s.CreatedUnixMs == 0 {
		s.CreatedUnixMs = r.opts.clock.Now().UnixMilli()
	}
	if s.UpdatedUnixMs == 0 {
		s.UpdatedUnixMs = s.CreatedUnixMs
	}
	v, err := json.Marshal(s)
	if err != nil {
		return nil, fmt.Errorf("registry: %s %q: %w", op, key, err)
	}
	return v, nil
}

// claimTxn is the claim transaction of key for s, encoded as v:
//
//	Txn(If(CreateRevision(k)==0, cond...)).Then(Put(k, v, WithLease(ours)), also...).Else(Get(k))
//
// won=true: c is our new claim. won=false: c is the current owner's claim,
// or zero if the key is absent (one of cond failed: nothing was written). A
// transaction of unknown outcome is resolved as Claim describes; op names
// the call in errors.
func (r *Registry) claimTxn(ctx context.Context, op, key string, s Session, v []byte, cond []clientv3.Cmp, also ...clientv3.Op) (c Claim, won bool, err error) {
	k := r.sessionKey(key)
	rev, cur, err := r.putUnderLease(ctx, k, v, append([]clientv3.Cmp{createdAt(k, 0)}, cond...), also...)
	switch {
	case errors.Is(err, rpctypes.ErrLeaseNotFound):
		return Claim{}, false, fmt.Errorf("registry: %s %q: %w", op, key, r.leaseErr(err))
	case err != nil:
		return r.resolveClaim(ctx, key, s, err)
	case rev != 0:
		return Claim{Key: key, Fence: rev, ModRev: rev, Session: s}, true, nil
	case cur == nil:
		return Claim{}, false, nil
	}
	c, err = decodeClaim(key, cur)
	if err != nil {
		return Claim{}, false, fmt.Errorf("registry: %s %q: %w", op, key, err)
	}
	return c, false, nil
}

// putUnderLease writes v to k under our lease, with the further writes
// also, if every cond holds, and reads k otherwise, in one transaction
// bounded by the per-call timeout:
//
//	Txn(If(cond...)).Then(Put(k, v, WithLease(ours)), also...).Else(Get(k))
//
// rev is the revision of the write, 0 if a cond failed; then cur is k as
// the transaction read it (nil if absent).
func (r *Registry) putUnderLease(ctx context.Context, k string, v []byte, cond []clientv3.Cmp, also ...clientv3.Op) (rev int64, cur *mvccpb.KeyValue, err error) {
	cctx, cancel := r.callCtx(ctx)
	defer cancel()
	resp, err := r.kv.Txn(cctx).
		If(cond...).
		Then(append([]clientv3.Op{clientv3.OpPut(k, string(v), clientv3.WithLease(r.lease))}, also...)...).
		Else(clientv3.OpGet(k)).
		Commit()
	if err != nil {
		return 0, nil, err
	}
	if resp.Succeeded {
		return resp.Header.Revision, nil, nil
	}
	if kvs := resp.Responses[0].GetResponseRange().Kvs; len(kvs) > 0 {
		return 0, kvs[0], nil
	}
	return 0, nil, nil
}

// createdAt compares k's create revision with rev (0: k is absent).
func createdAt(k string, rev int64) clientv3.Cmp {
	return clientv3.Compare(clientv3.CreateRevision(k), "=", rev)
}

// resolveClaim finds out whether a claim txn that returned cause was applied.
func (r *Registry) resolveClaim(ctx context.Context, key string, s Session, cause error) (Claim, bool, error) {
	rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), r.opts.callTimeout)
	defer cancel()
	resp, err := r.kv.Get(rctx, r.sessionKey(key))
	if err != nil {
		return Claim{}, false, fmt.Errorf("registry: claim %q: outcome unknown (re-read: %v): %w", key, err, cause)
	}
	if len(resp.Kvs) == 0 {
		return Claim{}, false, fmt.Errorf("registry: claim %q: %w", key, cause)
	}
	kv := resp.Kvs[0]
	c, err := decodeClaim(key, kv)
	if err != nil {
		return Claim{}, false, fmt.Errorf("registry: claim %q: %w", key, err)
	}
	won := clientv3.LeaseID(kv.Lease) == r.lease && c.Session.ID == s.ID
	r.log.Debug("resolved claim of unknown outcome", "key", key, "won", won, "cause", cause)
	return c, won, nil
}

// Update writes s to c's key, fenced: only if the key still has create
// revision c.Fence and is held by our lease. It returns the new claim (same
// Fence, new ModRev). s.Key and s.ServerID are forced; a zero UpdatedUnixMs
// is set to the clock's now. ErrFenced if the key is gone, was re-created by
// anyone, or belongs to another server; ErrLeaseLost if our lease is gone,
// ErrUnhealthy (which also matches ErrLeaseLost) while it is overdue.
// If the outcome is unknown (an error other than those), the caller may
// simply retry the same Update.
func (r *Registry) Update(ctx context.Context, c Claim, s Session) (Claim, error) {
	if err := validateKey(c.Key); err != nil {
		return Claim{}, fmt.Errorf("registry: update: %w", err)
	}
	if c.Fence <= 0 {
		return Claim{}, fmt.Errorf("registry: update %q: no fence: %w", c.Key, ErrFenced)
	}
	if err := r.writable(); err != nil {
		return Claim{}, fmt.Errorf("registry: update %q: %w", c.Key, err)
	}
	s.Key = c.Key
	s.ServerID = r.id
	if s.CreatedUnixMs == 0 {
		s.CreatedUnixMs = c.Session.CreatedUnixMs
	}
	if s.UpdatedUnixMs == 0 {
		s.UpdatedUnixMs = r.opts.clock.Now().UnixMilli()
	}
	v, err := json.Marshal(s)
	if err != nil {
		return Claim{}, fmt.Errorf("registry: update %q: %w", c.Key, err)
	}
	k := r.sessionKey(c.Key)
	rev, _, err := r.putUnderLease(ctx, k, v, []clientv3.Cmp{
		createdAt(k, c.Fence),
		clientv3.Compare(clientv3.LeaseValue(k), "=", r.lease),
	})
	if err != nil {
		return Claim{}, fmt.Errorf("registry: update %q: %w", c.Key, r.leaseErr(err))
	}
	if rev == 0 {
		return Claim{}, fmt.Errorf("registry: update %q: %w", c.Key, ErrFenced)
	}
	return Claim{Key: c.Key, Fence: c.Fence, ModRev: rev, Session: s}, nil
}

// Reclaim re-registers a session this server still runs under this
// Registry's lease, typically after the previous Registry's Done closed and
// New built this one. old is the last claim the caller holds for the session
// (as returned by Claim, Update or an earlier Reclaim); s is the session as
// it is now (s.Key and s.ServerID are forced to old.Key and our id, a zero
// CreatedUnixMs is taken from old, a zero UpdatedUnixMs is the clock's now).
//
//   - key absent (the old lease expired): it is created, If(CreateRevision
//     == 0), under our lease: ok=true with a new Fence.
//   - key present with create revision old.Fence, our server id and s.ID
//     (the old lease has not expired yet): it is moved to our lease keeping
//     the fence, If(CreateRevision == old.Fence) Then Put(WithLease(ours)):
//     ok=true, c.Fence == old.Fence.
//   - key already held by our lease with our server id and s.ID (a repeated
//     Reclaim): ok=true, c is the current claim, nothing is written.
//   - key present with another create revision, our server id and s.ID:
//     it is ours all the same (session ids are unique; only this server
//     writes its sessions' keys) and moved as above, keeping that fence.
//     The caller never learnt its claim (old.Fence 0: a desktop adopted
//     while etcd did not answer), or etcd was restored from a snapshot
//     taken before the key was last re-created: the key is back with its
//     fence of then.
//   - anything else (another owner took the key): ok=false and c is the
//     current owner's claim. Nothing is written: the caller keeps the
//     session suspended and reports it orphaned; it must never destroy it
//     silently.
//
// Errors: ErrInvalidKey, ErrLeaseLost/ErrUnhealthy as for Claim, ErrCorrupt
// (the current value is undecodable: the owner is unknown), or the etcd
// error. On an error of unknown outcome the caller simply calls Reclaim
// again with the same arguments: the repeated call sees its own write.
func (r *Registry) Reclaim(ctx context.Context, old Claim, s Session) (c Claim, ok bool, err error) {
	key := old.Key
	now := r.opts.clock.Now().UnixMilli()
	if s.CreatedUnixMs == 0 {
		s.CreatedUnixMs = cmp.Or(old.Session.CreatedUnixMs, now)
	}
	if s.UpdatedUnixMs == 0 {
		s.UpdatedUnixMs = now
	}
	v, err := r.encodeClaim("reclaim", key, &s)
	if err != nil {
		return Claim{}, false, err
	}
	k := r.sessionKey(key)
	// The key may change between the two transactions (the old lease
	// expiring right then): start again, a bounded number of times.
	const attempts = 3
	for range attempts {
		rev, kv, err := r.putUnderLease(ctx, k, v, []clientv3.Cmp{createdAt(k, 0)})
		if err != nil {
			return Claim{}, false, fmt.Errorf("registry: reclaim %q: %w", key, r.leaseErr(err))
		}
		if rev != 0 {
			r.log.Debug("reclaimed session with a new fence", "key", key, "old_fence", old.Fence, "fence", rev)
			return Claim{Key: key, Fence: rev, ModRev: rev, Session: s}, true, nil
		}
		if kv == nil {
			continue
		}
		cur, err := decodeClaim(key, kv)
		if err != nil {
			return Claim{}, false, fmt.Errorf("registry: reclaim %q: %w", key, err)
		}
		mine := cur.Session.ServerID == r.id && cur.Session.ID == s.ID
		switch {
		case mine && clientv3.LeaseID(kv.Lease) == r.lease:
			return cur, true, nil
		case !mine:
			return cur, false, nil
		}
		rev, _, err = r.putUnderLease(ctx, k, v, []clientv3.Cmp{createdAt(k, cur.Fence)})
		if err != nil {
			return Claim{}, false, fmt.Errorf("registry: reclaim %q: %w", key, r.leaseErr(err))
		}
		if rev != 0 {
			r.log.Debug("reclaimed session keeping its fence", "key", key, "fence", cur.Fence)
			return Claim{Key: key, Fence: cur.Fence, ModRev: rev, Session: s}, true, nil
		}
	}
	return Claim{}, false, fmt.Errorf("registry: reclaim %q: key kept changing during %d attempts", key, attempts)
}

// Release deletes c's key if its create revision is still c.Fence, whoever
// holds it. ErrFenced if the key is absent or was re-created since.
func (r *Registry) Release(ctx context.Context, c Claim) error {
	if err := validateKey(c.Key); err != nil {
		return fmt.Errorf("registry: release: %w", err)
	}
	if c.Fence <= 0 {
		return fmt.Errorf("registry: release %q: no fence: %w", c.Key, ErrFenced)
	}
	k := r.sessionKey(c.Key)
	cctx, cancel := r.callCtx(ctx)
	defer cancel()
	resp, err := r.kv.Txn(cctx).
		If(clientv3.Compare(clientv3.CreateRevision(k), "=", c.Fence)).
		Then(clientv3.OpDelete(k)).
		Commit()
	if err != nil {
		return fmt.Errorf("registry: release %q: %w", c.Key, err)
	}
	if !resp.Succeeded {
		return fmt.Errorf("registry: release %q: %w", c.Key, ErrFenced)
	}
	return nil
}

// Lookup returns the current claim on key; ErrNotFound if there is none.
func (r *Registry) Lookup(ctx context.Context, key string) (Claim, error) {
	return r.lookup(ctx, key)
}

// LookupLocal is Lookup answered by the etcd member the client talks to,
// without a round trip to the leader (a serializable read): it may be
// slightly stale. Use it only where a stale answer is safe because what
// follows is checked again — a redirect is verified by its target, a
// creation by the claim transaction.
func (r *Registry) LookupLocal(ctx context.Context, key string) (Claim, error) {
	return r.lookup(ctx, key, clientv3.WithSerializable())
}

// LookupRoute is LookupLocal and the owner's server record read together,
// in one serializable read-only transaction (one round trip to the local
// etcd member, one snapshot): what a broker needs to redirect a terminal
// to the session's owner. The record is the owner's as of that snapshot;
// its Draining is not read (a draining broker still serves its sessions).
// ErrNotFound if there is no claim; a claim whose owner has no record (its
// lease is ending) returns the claim with a zero ServerRecord and
// ErrNotFound. Like LookupLocal it may be slightly stale: use it only where
// what follows is checked again (the owner re-checks a redirect).
func (r *Registry) LookupRoute(ctx context.Context, key string) (Claim, ServerRecord, error) {
	if err := validateKey(key); err != nil {
		return Claim{}, ServerRecord{}, fmt.Errorf("registry: lookup route: %w", err)
	}
	servers := r.opts.prefix + "servers/"
	cctx, cancel := r.callCtx(ctx)
	defer cancel()
	resp, err := r.kv.Txn(cctx).Then(
		clientv3.OpGet(r.sessionKey(key), clientv3.WithSerializable()),
		clientv3.OpGet(servers, clientv3.WithPrefix(), clientv3.WithSerializable()),
	).Commit()
	if err != nil {
		return Claim{}, ServerRecord{}, fmt.Errorf("registry: lookup route %q: %w", key, err)
	}
	if len(resp.Responses) != 2 {
		return Claim{}, ServerRecord{}, fmt.Errorf("registry: lookup route %q: %d responses; want 2", key, len(resp.Responses))
	}
	skvs := resp.Responses[0].GetResponseRange().GetKvs()
	if len(skvs) == 0 {
		return Claim{}, ServerRecord{}, fmt.Errorf("registry: lookup route %q: %w", key, ErrNotFound)
	}
	c, err := decodeClaim(key, skvs[0])
	if err != nil {
		return Claim{}, ServerRecord{}, fmt.Errorf("registry: lookup route %q: %w", key, err)
	}
	owner := servers + c.Session.ServerID
	for _, kv := range resp.Responses[1].GetResponseRange().GetKvs() {
		if string(kv.Key) != owner {
			continue
		}
		rec, err := decodeServer(c.Session.ServerID, kv.Value)
		if err != nil {
			return c, ServerRecord{}, fmt.Errorf("registry: lookup route %q: owner: %w", key, err)
		}
		return c, rec, nil
	}
	return c, ServerRecord{}, fmt.Errorf("registry: lookup route %q: owner %q: %w", key, c.Session.ServerID, ErrNotFound)
}

func (r *Registry) lookup(ctx context.Context, key string, opts ...clientv3.OpOption) (Claim, error) {
	if err := validateKey(key); err != nil {
		return Claim{}, fmt.Errorf("registry: lookup: %w", err)
	}
	kv, err := r.get(ctx, r.sessionKey(key), opts...)
	if err != nil {
		return Claim{}, fmt.Errorf("registry: lookup %q: %w", key, err)
	}
	c, err := decodeClaim(key, kv)
	if err != nil {
		return Claim{}, fmt.Errorf("registry: lookup %q: %w", key, err)
	}
	return c, nil
}

// Sessions lists every claim of every server, ordered by key, as one
// consistent snapshot. Undecodable values are skipped (and logged).
func (r *Registry) Sessions(ctx context.Context) ([]Claim, error) {
	out, err := listRecords(ctx, r.Store, r.opts.prefix+"sessions/", "session", decodeClaim)
	if err != nil {
		return nil, fmt.Errorf("registry: sessions: %w", err)
	}
	return out, nil
}

func decodeClaim(key string, kv *mvccpb.KeyValue) (Claim, error) {
	s, err := decodeRecord(key, kv.Value, "session key", func(s *Session) *string { return &s.Key })
	if err != nil {
		return Claim{}, err
	}
	return Claim{Key: key, Fence: kv.CreateRevision, ModRev: kv.ModRevision, Session: s}, nil
}
