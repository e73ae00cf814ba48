package registry

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"strings"

	clientv3 "go.etcd.io/etcd/client/v3"
)

// Per-user session limits, atomic across the group.
//
// Every session claimed through ClaimLimited also writes an index entry
//
//	usersessions/<base64url(user)>/<key> = <session id>    (no lease)
//
// in the same transaction as its sessions/<key> record. ClaimLimited counts
// a user's sessions from the index, each entry checked against the session
// record it names at the same revision (an entry whose session is gone —
// released, or its server's lease expired — or holds another session id is
// not counted), and claims only if no entry of that user was written since
// that revision:
//
//	Txn(If(CreateRevision(sessions/k) == 0,
//	       ModRevision(usersessions/<u>/ ...) < rev+1))   // the whole prefix
//	.Then(Put(sessions/k, WithLease(ours)), Put(usersessions/<u>/k))
//	.Else(Get(sessions/k))
//
// Two brokers admitting the same user at once both count n < max, the first
// commits and moves the prefix's mod revision, the second's compare fails
// and it counts again, now n+1. Removals need no fence: a session vanishing
// after the count only makes the count an overestimate for that instant.
//
// An index entry is left in place when its session ends (entries are not
// under a lease, so a Reclaim that brings back a session whose lease expired
// finds it counted again); it is overwritten by the next claim of the same
// key and user, so a user's entries are bounded by the keys (tokens) that
// user has used. Sessions claimed with plain Claim (no limit applied to them
// then) have no entry and are not counted.

// ErrUserLimit is returned (wrapped) by ClaimLimited when the session's user
// already holds the most sessions allowed in the group. Nothing was written.
var ErrUserLimit = errors.New("registry: user session limit reached")

// UserLimitError is the error ClaimLimited returns for a user at the limit;
// it matches ErrUserLimit.
type UserLimitError struct {
	User     string
	Sessions int // live sessions of the user counted at the claim
	Max      int
}

func (e *UserLimitError) Error() string {
	return fmt.Sprintf("registry: user %q holds %d sessions (the most allowed: %d)", e.User, e.Sessions, e.Max)
}

// Is makes a *UserLimitError match ErrUserLimit.
func (e *UserLimitError) Is(target error) bool { return target == ErrUserLimit }

// maxUserLimitAttempts bounds ClaimLimited's count-and-commit rounds when
// other claims of the same user keep moving the index under it.
const maxUserLimitAttempts = 16

// userIndexDir is the index directory of user (ends in "/").
func (r *Registry) userIndexDir(user string) string {
	return r.opts.prefix + "usersessions/" + base64.RawURLEncoding.EncodeToString([]byte(user)) + "/"
}

// ClaimLimited is Claim for a session of a user who may hold at most max
// sessions in the whole group (max <= 0: no limit, but the session is still
// indexed so that it counts if a limit applies later). s.User must not be
// empty. It is atomic across brokers: of any number of concurrent
// ClaimLimited calls for one user, at most max-n win, n being the user's
// live sessions before them.
//
// won=false with a nil error: the key is already claimed; c is the current
// owner's claim (redirect there), whatever the user's count. A user at the
// limit gets an error matching ErrUserLimit (a *UserLimitError) and nothing
// is written. Other errors and the unknown-outcome handling are as for Claim.
func (r *Registry) ClaimLimited(ctx context.Context, key string, s Session, max int) (c Claim, won bool, err error) {
	switch {
	case s.User == "":
		return Claim{}, false, fmt.Errorf("registry: claim limited %q: empty user: %w", key, ErrInvalidKey)
	case len(s.User) > MaxKeyLen:
		return Claim{}, false, fmt.Errorf("registry: claim limited %q: user of %d bytes: %w", key, len(s.User), ErrInvalidKey)
	}
	v, err := r.encodeClaim("claim limited", key, &s)
	if err != nil {
		return Claim{}, false, err
	}
	dir := r.userIndexDir(s.User)
	for range maxUserLimitAttempts {
		n, rev, owner, err := r.countUserSessions(ctx, key, s.User)
		switch {
		case err != nil:
			return Claim{}, false, fmt.Errorf("registry: claim limited %q: %w", key, err)
		case owner != nil:
			return *owner, false, nil
		case max > 0 && n >= max:
			return Claim{}, false, &UserLimitError{User: s.User, Sessions: n, Max: max}
		}
		// Both writes are one transaction: of unknown outcome, the session
		// key tells.
		c, won, err = r.claimTxn(ctx, "claim limited", key, s, v,
			[]clientv3.Cmp{clientv3.Compare(clientv3.ModRevision(dir), "<", rev+1).WithPrefix()},
			clientv3.OpPut(dir+key, s.ID))
		if err != nil || won || c.Key != "" {
			return c, won, err
		}
		// Another session of this user was indexed since the count: count again.
		r.log.Debug("user session index moved during a limited claim; counting again", "key", key)
	}
	return Claim{}, false, fmt.Errorf("registry: claim limited %q: the user's sessions kept changing during %d attempts", key, maxUserLimitAttempts)
}

// countUserSessions counts user's live indexed sessions as of one revision,
// which it returns. If key itself is claimed at that revision, owner is its
// claim (and n is not counted).
func (r *Registry) countUserSessions(ctx context.Context, key, user string) (n int, rev int64, owner *Claim, err error) {
	dir := r.userIndexDir(user)
	cctx, cancel := r.callCtx(ctx)
	resp, err := r.kv.Txn(cctx).Then(
		clientv3.OpGet(r.sessionKey(key)),
		clientv3.OpGet(dir, clientv3.WithPrefix(), clientv3.WithLimit(listPageSize)),
	).Commit()
	cancel()
	if err != nil {
		return 0, 0, nil, err
	}
	rev = resp.Header.Revision
	if kvs := resp.Responses[0].GetResponseRange().Kvs; len(kvs) > 0 {
		c, err := decodeClaim(key, kvs[0])
		if err != nil {
			return 0, 0, nil, err
		}
		return 0, rev, &c, nil
	}
	idx := resp.Responses[1].GetResponseRange()
	if idx.More {
		// More indexed keys than a page: far beyond any sane limit.
		return len(idx.Kvs), rev, nil, nil
	}
	if len(idx.Kvs) == 0 {
		return 0, rev, nil, nil
	}
	// The sessions the entries name, at the same revision.
	ops := make([]clientv3.Op, 0, len(idx.Kvs))
	want := make([]string, 0, len(idx.Kvs))
	for _, kv := range idx.Kvs {
		name := strings.TrimPrefix(string(kv.Key), dir)
		if validateKey(name) != nil {
			continue
		}
		ops = append(ops, clientv3.OpGet(r.sessionKey(name), clientv3.WithRev(rev)))
		want = append(want, string(kv.Value))
	}
	for len(ops) > 0 {
		batch := min(len(ops), maxTxnOps)
		cctx, cancel := r.callCtx(ctx)
		sresp, err := r.kv.Txn(cctx).Then(ops[:batch]...).Commit()
		cancel()
		if err != nil {
			return 0, 0, nil, err
		}
		for i, op := range sresp.Responses {
			kvs := op.GetResponseRange().Kvs
			if len(kvs) == 0 {
				continue // ended; the entry stays until overwritten
			}
			var cur Session
			if json.Unmarshal(kvs[0].Value, &cur) == nil && cur.ID == want[i] && cur.User == user {
				n++
			}
		}
		ops, want = ops[batch:], want[batch:]
	}
	return n, rev, nil, nil
}

// maxTxnOps stays under etcd's default --max-txn-ops (128).
const maxTxnOps = 100
