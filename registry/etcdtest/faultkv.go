package etcdtest

import (
	"context"
	"sync"

	clientv3 "go.etcd.io/etcd/client/v3"
)

// FaultyKV is a clientv3.KV over a real one that can be told to fail, for
// the cases a real etcd cannot be made to show on cue: a transaction that
// etcd commits while its caller sees a timeout (the outcome a deadline or
// a leader change after the commit leaves unknown), and reads that fail.
// Install it in a client before handing the client out (cli.KV =
// NewFaultyKV(cli.KV)). Every method is spelled out rather than embedded,
// so that a KV method added by a later etcd release is a compile error
// here, not a silent pass-through. Safe for concurrent use.
type FaultyKV struct {
	kv clientv3.KV

	mu          sync.Mutex
	unsure      int  // transactions still to apply and then fail (ApplyThenFail)
	unsureReads bool // the first of them makes reads fail (ApplyThenFail)
	failReads   bool // Get fails (FailReads)
}

// NewFaultyKV returns kv passing everything through until told otherwise.
func NewFaultyKV(kv clientv3.KV) *FaultyKV { return &FaultyKV{kv: kv} }

// ApplyThenFail makes the next n transactions committed through f apply in
// etcd as usual and then return context.DeadlineExceeded instead of their
// response. With failReads, the first of them also makes every read fail
// from then on, as FailReads(true) does: the registry still out of reach
// when its caller reads back.
func (f *FaultyKV) ApplyThenFail(n int, failReads bool) {
	f.mu.Lock()
	f.unsure, f.unsureReads = n, failReads
	f.mu.Unlock()
}

// FailReads makes every Get through f fail with context.DeadlineExceeded,
// without sending it, until called with false.
func (f *FaultyKV) FailReads(fail bool) {
	f.mu.Lock()
	f.failReads = fail
	f.mu.Unlock()
}

func (f *FaultyKV) readsFail() bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.failReads
}

// takeUnsure reports whether the transaction committing now is one
// ApplyThenFail asked for, and counts it.
func (f *FaultyKV) takeUnsure() bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.unsure <= 0 {
		return false
	}
	f.unsure--
	if f.unsureReads {
		f.failReads, f.unsureReads = true, false
	}
	return true
}

func (f *FaultyKV) Put(ctx context.Context, key, val string, opts ...clientv3.OpOption) (*clientv3.PutResponse, error) {
	return f.kv.Put(ctx, key, val, opts...)
}

func (f *FaultyKV) Get(ctx context.Context, key string, opts ...clientv3.OpOption) (*clientv3.GetResponse, error) {
	if f.readsFail() {
		return nil, context.DeadlineExceeded
	}
	return f.kv.Get(ctx, key, opts...)
}

func (f *FaultyKV) GetStream(ctx context.Context, key string, opts ...clientv3.OpOption) (clientv3.GetStreamChan, error) {
	if f.readsFail() {
		return nil, context.DeadlineExceeded
	}
	return f.kv.GetStream(ctx, key, opts...)
}

func (f *FaultyKV) Delete(ctx context.Context, key string, opts ...clientv3.OpOption) (*clientv3.DeleteResponse, error) {
	return f.kv.Delete(ctx, key, opts...)
}

func (f *FaultyKV) Compact(ctx context.Context, rev int64, opts ...clientv3.CompactOption) (*clientv3.CompactResponse, error) {
	return f.kv.Compact(ctx, rev, opts...)
}

func (f *FaultyKV) Do(ctx context.Context, op clientv3.Op) (clientv3.OpResponse, error) {
	return f.kv.Do(ctx, op)
}

func (f *FaultyKV) Txn(ctx context.Context) clientv3.Txn {
	return faultyTxn{f, f.kv.Txn(ctx)}
}

var _ clientv3.KV = (*FaultyKV)(nil)

// faultyTxn is a transaction through a FaultyKV.
type faultyTxn struct {
	f   *FaultyKV
	txn clientv3.Txn
}

func (t faultyTxn) If(cs ...clientv3.Cmp) clientv3.Txn   { return faultyTxn{t.f, t.txn.If(cs...)} }
func (t faultyTxn) Then(ops ...clientv3.Op) clientv3.Txn { return faultyTxn{t.f, t.txn.Then(ops...)} }
func (t faultyTxn) Else(ops ...clientv3.Op) clientv3.Txn { return faultyTxn{t.f, t.txn.Else(ops...)} }

func (t faultyTxn) Commit() (*clientv3.TxnResponse, error) {
	resp, err := t.txn.Commit()
	if err == nil && t.f.takeUnsure() {
		return nil, context.DeadlineExceeded
	}
	return resp, err
}
