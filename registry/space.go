package registry

import (
	"context"
	"errors"
	"strings"
	"sync"
	"time"

	"github.com/hashicorp/go-hclog"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// Space. An etcd member whose database reaches its quota
// (--quota-backend-bytes, 2 GiB by default) raises the NOSPACE alarm and
// the cluster then refuses every write until an administrator compacts,
// defragments and disarms it (etcdctl alarm disarm); reads and lease
// renewals go on. The lease stays healthy, so the broker stays ready, but
// no session can be claimed, no session or terminal record updated: each
// refusal was only the error of whatever failed (a terminal told
// "registry unavailable"). So the stores of one client note the answers of
// their writes: the first refused for space is an error line saying what
// to do, repeated every spaceLogEvery while it lasts, and the first write
// accepted after it an info line; SpaceRefused tells how long it has lasted.

// spaceLogEvery is how often a lasting refusal is logged again.
const spaceLogEvery = time.Minute

// space is what the stores of one client know of etcd's quota.
type space struct {
	mu      sync.Mutex
	since   time.Time // the first write refused for space; zero: none refused since the last accepted
	logged  time.Time // when it was last logged
	refused int       // writes refused since
}

// note records the answer err to a write.
func (s *space) note(err error, log hclog.Logger) {
	full := isNoSpace(err)
	if err != nil && !full {
		return // tells nothing of the quota
	}
	now := time.Now()
	s.mu.Lock()
	defer s.mu.Unlock()
	switch {
	case full && s.since.IsZero():
		s.since, s.logged, s.refused = now, now, 1
		log.Error("etcd refuses every write: its database is full (NOSPACE alarm, over --quota-backend-bytes); no session can be created or moved "+
			"until an administrator compacts it, defragments every member (etcdctl defrag) and disarms the alarm (etcdctl alarm disarm)", "error", err)
	case full:
		s.refused++
		if now.Sub(s.logged) >= spaceLogEvery {
			s.logged = now
			log.Error("etcd still refuses every write: its database is full (NOSPACE alarm); compact, defragment every member and disarm it (etcdctl alarm disarm)",
				"for", now.Sub(s.since).Round(time.Second), "writes_refused", s.refused)
		}
	case !s.since.IsZero():
		log.Info("etcd accepts writes again", "refused_for", now.Sub(s.since).Round(time.Second), "writes_refused", s.refused)
		s.since, s.refused = time.Time{}, 0
	}
}

// refusedSince returns when etcd began refusing writes for space; zero if
// the last write it answered was accepted.
func (s *space) refusedSince() time.Time {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.since
}

func isNoSpace(err error) bool {
	return err != nil && (errors.Is(err, rpctypes.ErrNoSpace) || errors.Is(err, rpctypes.ErrGRPCNoSpace) ||
		strings.Contains(err.Error(), rpctypes.ErrNoSpace.Error()))
}

// SpaceRefused reports whether etcd refused the last write this client
// made for want of space (its NOSPACE alarm), and since when.
func (r *Store) SpaceRefused() (since time.Time, refused bool) {
	since = r.cs.space.refusedSince()
	return since, !since.IsZero()
}

// spaceKV notes the answers of the writes made through it.
type spaceKV struct {
	clientv3.KV
	note func(error)
}

func (k spaceKV) Put(ctx context.Context, key, val string, opts ...clientv3.OpOption) (*clientv3.PutResponse, error) {
	resp, err := k.KV.Put(ctx, key, val, opts...)
	k.note(err)
	return resp, err
}

func (k spaceKV) Do(ctx context.Context, op clientv3.Op) (clientv3.OpResponse, error) {
	resp, err := k.KV.Do(ctx, op)
	if op.IsPut() || op.IsTxn() {
		k.note(err)
	}
	return resp, err
}

func (k spaceKV) Txn(ctx context.Context) clientv3.Txn {
	return &spaceTxn{Txn: k.KV.Txn(ctx), note: k.note}
}

// spaceTxn notes the answer of a transaction that may put (a read-only
// one is answered when etcd is full as well).
type spaceTxn struct {
	clientv3.Txn
	note func(error)
	puts bool
}

func (t *spaceTxn) If(cs ...clientv3.Cmp) clientv3.Txn { t.Txn = t.Txn.If(cs...); return t }

func (t *spaceTxn) Then(ops ...clientv3.Op) clientv3.Txn {
	t.Txn, t.puts = t.Txn.Then(ops...), t.puts || anyPut(ops)
	return t
}

func (t *spaceTxn) Else(ops ...clientv3.Op) clientv3.Txn {
	t.Txn, t.puts = t.Txn.Else(ops...), t.puts || anyPut(ops)
	return t
}

func (t *spaceTxn) Commit() (*clientv3.TxnResponse, error) {
	resp, err := t.Txn.Commit()
	if t.puts {
		t.note(err)
	}
	return resp, err
}

func anyPut(ops []clientv3.Op) bool {
	for _, op := range ops {
		if op.IsPut() || op.IsTxn() {
			return true
		}
	}
	return false
}
