package registry

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"go.etcd.io/etcd/api/v3/mvccpb"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// TokenRecord is an enrolled token, stored under tokens/<ID> without a lease:
// enrolment outlives every server.
type TokenRecord struct {
	ID               string `json:"id"`
	Kind             string `json:"kind"`
	PublicKey        []byte `json:"public_key,omitempty"`
	User             string `json:"user,omitempty"`
	Label            string `json:"label,omitempty"`
	RegisteredBy     string `json:"registered_by,omitempty"`
	RegisteredUnixMs int64  `json:"registered_unix_ms"`
	Disabled         bool   `json:"disabled,omitempty"`
}

// Pairing is a one-time pairing code, stored under pairing/<ID> with a lease
// of its own so that it vanishes by itself. Only a hash of the secret is
// stored; it is never logged. SecretKDF names the hash and its parameters
// (see package pairing), SecretSalt is its per-code random salt; a record
// without SecretKDF (written before salted hashes) holds SHA-256 of the
// secret. TokenID is set only in the record a redemption leaves under
// paired/<ID> (RedeemedPairing): the token the code enrolled.
type Pairing struct {
	ID            string `json:"id"`
	SecretHash    []byte `json:"secret_hash"`
	SecretSalt    []byte `json:"secret_salt,omitempty"`
	SecretKDF     string `json:"secret_kdf,omitempty"`
	User          string `json:"user,omitempty"`
	Label         string `json:"label,omitempty"`
	CreatedBy     string `json:"created_by,omitempty"`
	ExpiresUnixMs int64  `json:"expires_unix_ms"`
	TokenID       string `json:"token_id,omitempty"`
}

// maxTokenUpdateRetries bounds UpdateToken's compare-and-swap loop.
const maxTokenUpdateRetries = 8

// EnrollToken stores t if no token with its id is enrolled; ErrExists
// otherwise. A zero RegisteredUnixMs is set to the clock's now.
func (r *Store) EnrollToken(ctx context.Context, t TokenRecord) error {
	if err := validateKey(t.ID); err != nil {
		return fmt.Errorf("registry: enroll token: %w", err)
	}
	if t.RegisteredUnixMs == 0 {
		t.RegisteredUnixMs = r.opts.clock.Now().UnixMilli()
	}
	v, err := json.Marshal(t)
	if err != nil {
		return fmt.Errorf("registry: enroll token %q: %w", t.ID, err)
	}
	k := r.tokenKey(t.ID)
	cctx, cancel := r.callCtx(ctx)
	defer cancel()
	resp, err := r.kv.Txn(cctx).
		If(clientv3.Compare(clientv3.CreateRevision(k), "=", 0)).
		Then(clientv3.OpPut(k, string(v))).
		Commit()
	if err != nil {
		return fmt.Errorf("registry: enroll token %q: %w", t.ID, err)
	}
	if !resp.Succeeded {
		return fmt.Errorf("registry: enroll token %q: %w", t.ID, ErrExists)
	}
	r.log.Info("token enrolled", "token_id", t.ID, "kind", t.Kind, "user", t.User)
	return nil
}

// Token returns the enrolled token id; ErrNotFound if there is none.
func (r *Store) Token(ctx context.Context, id string) (TokenRecord, error) {
	t, _, err := r.token(ctx, id)
	if err != nil {
		return TokenRecord{}, fmt.Errorf("registry: token: %w", err)
	}
	return t, nil
}

func (r *Store) token(ctx context.Context, id string) (TokenRecord, int64, error) {
	if err := validateKey(id); err != nil {
		return TokenRecord{}, 0, err
	}
	kv, err := r.get(ctx, r.tokenKey(id))
	if err != nil {
		return TokenRecord{}, 0, fmt.Errorf("%q: %w", id, err)
	}
	t, err := decodeToken(id, kv.Value)
	if err != nil {
		return TokenRecord{}, 0, fmt.Errorf("%q: %w", id, err)
	}
	return t, kv.ModRevision, nil
}

// Tokens lists every enrolled token, ordered by id. Undecodable values are
// skipped (and logged).
func (r *Store) Tokens(ctx context.Context) ([]TokenRecord, error) {
	out, err := listRecords(ctx, r, r.opts.prefix+"tokens/", "token", func(name string, kv *mvccpb.KeyValue) (TokenRecord, error) {
		return decodeToken(name, kv.Value)
	})
	if err != nil {
		return nil, fmt.Errorf("registry: tokens: %w", err)
	}
	return out, nil
}

// UpdateToken applies f to token id and writes it back if nobody changed it
// meanwhile (compare-and-swap on its mod revision, retried a few times). The
// id cannot be changed. ErrNotFound if the token is not enrolled.
func (r *Store) UpdateToken(ctx context.Context, id string, f func(*TokenRecord)) error {
	for range maxTokenUpdateRetries {
		t, modRev, err := r.token(ctx, id)
		if err != nil {
			return fmt.Errorf("registry: update token: %w", err)
		}
		f(&t)
		t.ID = id
		v, err := json.Marshal(t)
		if err != nil {
			return fmt.Errorf("registry: update token %q: %w", id, err)
		}
		k := r.tokenKey(id)
		cctx, cancel := r.callCtx(ctx)
		resp, err := r.kv.Txn(cctx).
			If(clientv3.Compare(clientv3.ModRevision(k), "=", modRev)).
			Then(clientv3.OpPut(k, string(v))).
			Commit()
		cancel()
		if err != nil {
			return fmt.Errorf("registry: update token %q: %w", id, err)
		}
		if resp.Succeeded {
			return nil
		}
	}
	return fmt.Errorf("registry: update token %q: too much contention", id)
}

// DeleteToken removes token id; ErrNotFound if it is not enrolled.
func (r *Store) DeleteToken(ctx context.Context, id string) error {
	if err := validateKey(id); err != nil {
		return fmt.Errorf("registry: delete token: %w", err)
	}
	if err := r.remove(ctx, r.tokenKey(id)); err != nil {
		return fmt.Errorf("registry: delete token %q: %w", id, err)
	}
	r.log.Info("token deleted", "token_id", id)
	return nil
}

func decodeToken(id string, val []byte) (TokenRecord, error) {
	return decodeRecord(id, val, "token id", func(t *TokenRecord) *string { return &t.ID })
}

// PutPairing stores p under a new lease of ttl (rounded up to whole seconds;
// etcd may raise very short TTLs to its minimum, about 2 s), so the code
// vanishes by itself. A zero ExpiresUnixMs is set to now+ttl; Pairing also
// treats a code past ExpiresUnixMs as absent. ErrExists if the id is taken,
// by a pending code or by the trace of a redeemed one (RedeemedPairing): an
// id is not reused while a retry of its last redemption may come. On any
// failure the new lease is revoked, so a code of unknown outcome is never
// left behind usable.
func (r *Store) PutPairing(ctx context.Context, p Pairing, ttl time.Duration) error {
	if err := validateKey(p.ID); err != nil {
		return fmt.Errorf("registry: put pairing: %w", err)
	}
	if ttl <= 0 {
		return fmt.Errorf("registry: put pairing %q: ttl %v is not positive", p.ID, ttl)
	}
	if p.ExpiresUnixMs == 0 {
		p.ExpiresUnixMs = r.opts.clock.Now().Add(ttl).UnixMilli()
	}
	v, err := json.Marshal(p)
	if err != nil {
		return fmt.Errorf("registry: put pairing %q: %w", p.ID, err)
	}
	secs := int64((ttl + time.Second - 1) / time.Second)
	cctx, cancel := r.callCtx(ctx)
	grant, err := r.leases.Grant(cctx, secs)
	cancel()
	if err != nil {
		return fmt.Errorf("registry: put pairing %q: grant lease: %w", p.ID, err)
	}
	k := r.pairingKey(p.ID)
	cctx, cancel = r.callCtx(ctx)
	resp, err := r.kv.Txn(cctx).
		If(clientv3.Compare(clientv3.CreateRevision(k), "=", 0), clientv3.Compare(clientv3.CreateRevision(r.pairedKey(p.ID)), "=", 0)).
		Then(clientv3.OpPut(k, string(v), clientv3.WithLease(grant.ID))).
		Commit()
	cancel()
	if err == nil && resp.Succeeded {
		return nil
	}
	r.revokeLease(ctx, grant.ID)
	if err != nil {
		return fmt.Errorf("registry: put pairing %q: %w", p.ID, err)
	}
	return fmt.Errorf("registry: put pairing %q: %w", p.ID, ErrExists)
}

// Pairing returns code id and its mod revision (to pass to ConsumePairing);
// ErrNotFound if it is absent or past its ExpiresUnixMs.
func (r *Store) Pairing(ctx context.Context, id string) (p Pairing, modRev int64, err error) {
	kv, err := r.pairingRecord(ctx, "pairing", r.pairingKey, id)
	if err != nil {
		return Pairing{}, 0, err
	}
	p, err = r.decodePairing("pairing", id, kv.Value)
	if err != nil {
		return Pairing{}, 0, err
	}
	return p, kv.ModRevision, nil
}

// RedeemedPairing returns the trace the redemption of code id left (see
// RedeemPairing): the code as it was, with TokenID the token it enrolled.
// ErrNotFound if there is none, or once the code would have expired: the
// trace lives under the code's lease and is refused past its
// ExpiresUnixMs, as the code was.
func (r *Store) RedeemedPairing(ctx context.Context, id string) (Pairing, error) {
	kv, err := r.pairingRecord(ctx, "redeemed pairing", r.pairedKey, id)
	if err != nil {
		return Pairing{}, err
	}
	p, err := r.decodePairing("redeemed pairing", id, kv.Value)
	if err != nil {
		return Pairing{}, err
	}
	if p.TokenID == "" {
		return Pairing{}, fmt.Errorf("registry: redeemed pairing %q: %w: no token id", id, ErrCorrupt)
	}
	return p, nil
}

// pairingRecord reads key(id) for the call what (named in errors).
func (r *Store) pairingRecord(ctx context.Context, what string, key func(string) string, id string) (*mvccpb.KeyValue, error) {
	if err := validateKey(id); err != nil {
		return nil, fmt.Errorf("registry: %s: %w", what, err)
	}
	kv, err := r.get(ctx, key(id))
	if err != nil {
		return nil, fmt.Errorf("registry: %s %q: %w", what, id, err)
	}
	return kv, nil
}

// decodePairing decodes code id's record for the call what (named in
// errors); ErrNotFound if it is past its ExpiresUnixMs.
func (r *Store) decodePairing(what, id string, val []byte) (p Pairing, err error) {
	if err := json.Unmarshal(val, &p); err != nil {
		return Pairing{}, fmt.Errorf("registry: %s %q: %w: %v", what, id, ErrCorrupt, err)
	}
	if p.ID != id {
		return Pairing{}, fmt.Errorf("registry: %s %q: %w: id %q", what, id, ErrCorrupt, p.ID)
	}
	if p.ExpiresUnixMs != 0 && r.opts.clock.Now().UnixMilli() >= p.ExpiresUnixMs {
		return Pairing{}, fmt.Errorf("registry: %s %q: expired: %w", what, id, ErrNotFound)
	}
	return p, nil
}

// ConsumePairing deletes code id iff its mod revision is still modRev, so of
// several concurrent consumers of one read exactly one succeeds; the others
// (and any consumer of an absent, expired or changed code) get ErrNotFound.
// The code's lease is revoked afterwards (best effort).
func (r *Store) ConsumePairing(ctx context.Context, id string, modRev int64) error {
	if err := validateKey(id); err != nil {
		return fmt.Errorf("registry: consume pairing: %w", err)
	}
	if modRev <= 0 {
		return fmt.Errorf("registry: consume pairing %q: %w", id, ErrNotFound)
	}
	k := r.pairingKey(id)
	cctx, cancel := r.callCtx(ctx)
	resp, err := r.kv.Txn(cctx).
		If(clientv3.Compare(clientv3.ModRevision(k), "=", modRev)).
		Then(clientv3.OpGet(k), clientv3.OpDelete(k)).
		Commit()
	cancel()
	if err != nil {
		return fmt.Errorf("registry: consume pairing %q: %w", id, err)
	}
	if !resp.Succeeded || resp.Responses[1].GetResponseDeleteRange().Deleted != 1 {
		return fmt.Errorf("registry: consume pairing %q: %w", id, ErrNotFound)
	}
	if kvs := resp.Responses[0].GetResponseRange().Kvs; len(kvs) > 0 && kvs[0].Lease != 0 {
		r.revokeLease(ctx, clientv3.LeaseID(kvs[0].Lease))
	}
	return nil
}

// RedeemPairing consumes code id and enrolls t in one transaction: iff the
// code's mod revision is still modRev and no token with t's id is
// enrolled, the code is deleted and t stored. Otherwise nothing changes:
// ErrNotFound if the code is absent, expired, changed or consumed
// concurrently (whether or not t's id is enrolled), else ErrExists (t's id
// is enrolled; the code stays valid). A zero RegisteredUnixMs is set to
// the clock's now.
//
// The same transaction leaves a trace of the redemption under the code's
// lease, so that it lasts as long as the code would have: the code's
// record with TokenID t.ID, which RedeemedPairing reads. A redemption
// whose answer was lost (an error of unknown outcome, OutcomeUnknown, or a
// retry after it) is thereby recognised: the trace names the token, and
// the token record shows its key and user. (A code stored without a lease
// leaves no trace: it would never go.)
//
// The code is read first, for its lease; a code not at modRev then is
// ErrNotFound. Other errors are etcd's: of unknown outcome unless
// OutcomeUnknown says otherwise.
func (r *Store) RedeemPairing(ctx context.Context, id string, modRev int64, t TokenRecord) error {
	if err := validateKey(id); err != nil {
		return fmt.Errorf("registry: redeem pairing: %w", err)
	}
	if err := validateKey(t.ID); err != nil {
		return fmt.Errorf("registry: redeem pairing: %w", err)
	}
	if modRev <= 0 {
		return fmt.Errorf("registry: redeem pairing %q: %w", id, ErrNotFound)
	}
	if t.RegisteredUnixMs == 0 {
		t.RegisteredUnixMs = r.opts.clock.Now().UnixMilli()
	}
	v, err := json.Marshal(t)
	if err != nil {
		return fmt.Errorf("registry: redeem pairing %q: %w", id, err)
	}
	pk, tk := r.pairingKey(id), r.tokenKey(t.ID)
	code, err := r.get(ctx, pk)
	if err == nil && code.ModRevision != modRev {
		err = ErrNotFound
	}
	if err != nil {
		return fmt.Errorf("registry: redeem pairing %q: %w", id, err)
	}
	then := []clientv3.Op{clientv3.OpDelete(pk), clientv3.OpPut(tk, string(v))}
	if code.Lease != 0 {
		var p Pairing
		if err := json.Unmarshal(code.Value, &p); err != nil {
			return fmt.Errorf("registry: redeem pairing %q: %w: %v", id, ErrCorrupt, err)
		}
		p.TokenID = t.ID
		trace, err := json.Marshal(p)
		if err != nil {
			return fmt.Errorf("registry: redeem pairing %q: %w", id, err)
		}
		then = append(then, clientv3.OpPut(r.pairedKey(id), string(trace), clientv3.WithLease(clientv3.LeaseID(code.Lease))))
	}
	cctx, cancel := r.callCtx(ctx)
	resp, err := r.kv.Txn(cctx).
		If(clientv3.Compare(clientv3.ModRevision(pk), "=", modRev), clientv3.Compare(clientv3.CreateRevision(tk), "=", 0)).
		Then(then...).
		Else(clientv3.OpGet(pk, clientv3.WithKeysOnly())).
		Commit()
	cancel()
	if errors.Is(err, rpctypes.ErrLeaseNotFound) {
		// The code's lease ended since it was read, and the code
		// with it: nothing was written.
		return fmt.Errorf("registry: redeem pairing %q: %w", id, ErrNotFound)
	}
	if err != nil {
		return fmt.Errorf("registry: redeem pairing %q: %w", id, err)
	}
	if !resp.Succeeded {
		// ErrExists only for a code still as it was read: it promises
		// the code stays valid. A code gone or changed is ErrNotFound,
		// whether or not the token is enrolled (a second redemption of
		// one code for one key finds both).
		if kvs := resp.Responses[0].GetResponseRange().Kvs; len(kvs) > 0 && kvs[0].ModRevision == modRev {
			return fmt.Errorf("registry: redeem pairing %q: token %q: %w", id, t.ID, ErrExists)
		}
		return fmt.Errorf("registry: redeem pairing %q: %w", id, ErrNotFound)
	}
	r.log.Info("token enrolled", "token_id", t.ID, "kind", t.Kind, "user", t.User, "pairing", id)
	return nil
}

// revokeLease revokes a lease of the store's own records (a pairing code's,
// a lockout's) with a fresh bounded context, ignoring failure: the lease
// expires by itself.
func (r *Store) revokeLease(ctx context.Context, id clientv3.LeaseID) {
	rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), r.opts.callTimeout)
	defer cancel()
	if _, err := r.leases.Revoke(rctx, id); err != nil && !errors.Is(err, rpctypes.ErrLeaseNotFound) {
		r.log.Debug("revoke lease failed; it expires by itself", "lease_id", fmt.Sprintf("%x", int64(id)), "error", err)
	}
}
