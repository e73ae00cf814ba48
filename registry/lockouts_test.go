package registry_test

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/hotdesk/hotdesk/internal/testutil"
	"github.com/hotdesk/hotdesk/registry"
	"github.com/hotdesk/hotdesk/registry/etcdtest"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// TestLockoutsShared: a lockout published by one server reaches another's
// WatchLockouts, whether it was published before the watch began (listed)
// or after (watched); a later lockout of the same key replaces it; the key
// is not stored in the etcd key's name, and a lockout already over is not
// stored at all.
func TestLockoutsShared(t *testing.T) {
	t.Parallel()
	eps, regs := newGroup(t, "la", "lb")
	a, b := regs[0], regs[1]
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	until := time.Now().Add(time.Minute).UnixMilli()
	if err := a.PublishLockout(ctx, registry.Lockout{Key: "user:alice", UntilUnixMs: until, Level: 1}); err != nil {
		t.Fatal(err)
	}
	if err := a.PublishLockout(ctx, registry.Lockout{Key: "user:old", UntilUnixMs: time.Now().Add(-time.Second).UnixMilli()}); err != nil {
		t.Fatal(err)
	}
	changes := b.WatchLockouts(ctx)
	got := testutil.Recv(t, changes, 10*time.Second, "the listed lockout")
	if got.Key != "user:alice" || got.UntilUnixMs != until || got.Level != 1 || got.Server != "la" {
		t.Fatalf("listed %+v; want user:alice until %d at level 1, from la", got, until)
	}
	until2 := time.Now().Add(2 * time.Minute).UnixMilli()
	if err := a.PublishLockout(ctx, registry.Lockout{Key: "user:alice", UntilUnixMs: until2, Level: 2}); err != nil {
		t.Fatal(err)
	}
	if got := testutil.Recv(t, changes, 10*time.Second, "the watched lockout"); got.Key != "user:alice" || got.UntilUnixMs != until2 || got.Level != 2 {
		t.Fatalf("watched %+v; want user:alice until %d at level 2", got, until2)
	}
	if ls, err := b.Lockouts(ctx); err != nil || len(ls) != 1 || ls[0].Key != "user:alice" || ls[0].Level != 2 {
		t.Fatalf("Lockouts = %+v, %v; want user:alice at level 2 only", ls, err)
	}
	resp, err := etcdtest.Client(t, eps).Get(ctx, "/hotdesk/lockouts/", clientv3.WithPrefix())
	if err != nil {
		t.Fatal(err)
	}
	if len(resp.Kvs) != 1 || strings.Contains(string(resp.Kvs[0].Key), "alice") || resp.Kvs[0].Lease == 0 {
		t.Fatalf("stored lockouts %v; want one, under a lease, its key not naming the user", resp.Kvs)
	}
	// An administrator clears it: every watcher hears, the listing empties.
	if err := b.ClearLockout(ctx, "user:alice"); err != nil {
		t.Fatal(err)
	}
	if got := testutil.Recv(t, changes, 10*time.Second, "the clearing"); got.Key != "user:alice" || !got.Cleared || got.Server != "lb" {
		t.Fatalf("after the clear: %+v; want user:alice cleared via lb", got)
	}
	if ls, err := a.Lockouts(ctx); err != nil || len(ls) != 0 {
		t.Fatalf("Lockouts after the clear = %+v, %v; want none", ls, err)
	}
	if err := a.ClearLockout(ctx, "user:alice"); !errors.Is(err, registry.ErrNotFound) {
		t.Fatalf("clearing it again = %v; want ErrNotFound", err)
	}
	if err := a.ClearLockout(ctx, "user:nobody"); !errors.Is(err, registry.ErrNotFound) {
		t.Fatalf("clearing a key never locked = %v; want ErrNotFound", err)
	}
}

// faultyTxnKV reports every txn failed: with apply, after applying it (a
// call that timed out after etcd took it), else without sending it.
type faultyTxnKV struct {
	clientv3.KV
	apply bool
}

func (k faultyTxnKV) Txn(ctx context.Context) clientv3.Txn {
	return faultyTxn{k.KV.Txn(ctx), k.apply}
}

type faultyTxn struct {
	clientv3.Txn
	apply bool
}

func (t faultyTxn) If(cs ...clientv3.Cmp) clientv3.Txn {
	return faultyTxn{t.Txn.If(cs...), t.apply}
}

func (t faultyTxn) Then(ops ...clientv3.Op) clientv3.Txn {
	return faultyTxn{t.Txn.Then(ops...), t.apply}
}

func (t faultyTxn) Commit() (*clientv3.TxnResponse, error) {
	if t.apply {
		if _, err := t.Txn.Commit(); err != nil {
			return nil, err
		}
	}
	return nil, context.DeadlineExceeded
}

// TestLockoutLeasesBounded: a key locked out again and again, and then
// cleared, holds one lease in etcd, not one per lockout until each
// expires; a lockout whose write fails leaves no lease (nor record) behind.
func TestLockoutLeasesBounded(t *testing.T) {
	t.Parallel()
	eps := etcdtest.Start(t)
	cli := etcdtest.Client(t, eps)
	ctx := tctx(t)
	leases := func() int { return leaseCount(t, ctx, cli) }
	s, err := registry.NewStore(etcdtest.Client(t, eps), "lb", registry.WithLogger(testLogger(t)))
	if err != nil {
		t.Fatal(err)
	}
	before := leases()
	for level := 1; level <= 4; level++ {
		lo := registry.Lockout{Key: "user:alice", UntilUnixMs: time.Now().Add(time.Hour).UnixMilli(), Level: level}
		if err := s.PublishLockout(ctx, lo); err != nil {
			t.Fatal(err)
		}
	}
	if got := leases(); got != before+1 {
		t.Errorf("leases after 4 lockouts of one key: %d; want %d", got, before+1)
	}
	if err := s.ClearLockout(ctx, "user:alice"); err != nil {
		t.Fatal(err)
	}
	if got := leases(); got != before+1 {
		t.Errorf("leases after the clear: %d; want %d", got, before+1)
	}

	// A lockout whose txn fails leaves no lease; one whose txn was
	// applied although the call failed stays in force, lease and all.
	for _, apply := range []bool{false, true} {
		f, err := registry.NewStore(etcdtest.Client(t, eps), "lf", registry.WithLogger(testLogger(t)))
		if err != nil {
			t.Fatal(err)
		}
		registry.InjectFaults(f, func(kv clientv3.KV) clientv3.KV { return faultyTxnKV{kv, apply} }, nil)
		lo := registry.Lockout{Key: "user:bob", UntilUnixMs: time.Now().Add(time.Hour).UnixMilli(), Level: 1}
		if err := f.PublishLockout(ctx, lo); !errors.Is(err, context.DeadlineExceeded) {
			t.Fatalf("PublishLockout with its txn failing (applied %v) = %v; want the txn's error", apply, err)
		}
		want, wantLockouts := before+1, 0
		if apply {
			want, wantLockouts = before+2, 1
		}
		if got := leases(); got != want {
			t.Errorf("leases after a failed lockout (applied %v): %d; want %d", apply, got, want)
		}
		if ls, err := s.Lockouts(ctx); err != nil || len(ls) != wantLockouts {
			t.Errorf("Lockouts after a failed one (applied %v) = %+v, %v; want %d", apply, ls, err, wantLockouts)
		}
	}
}

// TestLockoutNotShortened: a lockout published late (by a broker that was
// cut off from the registry and publishes what it started meanwhile) does
// not replace a lockout of the key in force that ends later, nor take its
// lease: the group keeps the longer one, and no lease is left behind.
func TestLockoutNotShortened(t *testing.T) {
	t.Parallel()
	eps, regs := newGroup(t, "na", "nb")
	a, b := regs[0], regs[1]
	cli := etcdtest.Client(t, eps)
	ctx := tctx(t)
	leases := func() int { return leaseCount(t, ctx, cli) }
	long := time.Now().Add(10 * time.Minute).UnixMilli()
	if err := a.PublishLockout(ctx, registry.Lockout{Key: "user:mal", UntilUnixMs: long, Level: 3}); err != nil {
		t.Fatal(err)
	}
	before := leases()
	if err := b.PublishLockout(ctx, registry.Lockout{Key: "user:mal", UntilUnixMs: time.Now().Add(time.Minute).UnixMilli(), Level: 1}); err != nil {
		t.Fatal(err)
	}
	if ls, err := b.Lockouts(ctx); err != nil || len(ls) != 1 || ls[0].UntilUnixMs != long || ls[0].Level != 3 || ls[0].Server != "na" {
		t.Fatalf("Lockouts after a shorter one was published = %+v, %v; want na's until %d at level 3", ls, err, long)
	}
	if got := leases(); got != before {
		t.Errorf("leases after the shorter lockout: %d; want %d", got, before)
	}
	// A longer one replaces it, and a clear ends it, as ever.
	longer := time.Now().Add(20 * time.Minute).UnixMilli()
	if err := b.PublishLockout(ctx, registry.Lockout{Key: "user:mal", UntilUnixMs: longer, Level: 4}); err != nil {
		t.Fatal(err)
	}
	if ls, err := a.Lockouts(ctx); err != nil || len(ls) != 1 || ls[0].UntilUnixMs != longer || ls[0].Server != "nb" {
		t.Fatalf("Lockouts after a longer one = %+v, %v; want nb's until %d", ls, err, longer)
	}
	if got := leases(); got != before {
		t.Errorf("leases after the longer lockout: %d; want %d", got, before)
	}
	if err := a.ClearLockout(ctx, "user:mal"); err != nil {
		t.Fatal(err)
	}
	if ls, err := b.Lockouts(ctx); err != nil || len(ls) != 0 {
		t.Fatalf("Lockouts after the clear = %+v, %v; want none", ls, err)
	}
}

// TestLockoutLevelNotLowered: whichever lockout of a key ends later is
// kept, and the group's record holds the higher back-off level of the two:
// a late publish that ends sooner at a higher level raises it (its lease
// unchanged), a longer one at a lower level does not lower it.
func TestLockoutLevelNotLowered(t *testing.T) {
	t.Parallel()
	eps, regs := newGroup(t, "la", "lb")
	a, b := regs[0], regs[1]
	cli := etcdtest.Client(t, eps)
	ctx := tctx(t)
	leases := func() int { return leaseCount(t, ctx, cli) }
	want := func(until int64, level int) {
		t.Helper()
		ls, err := b.Lockouts(ctx)
		if err != nil || len(ls) != 1 || ls[0].UntilUnixMs != until || ls[0].Level != level {
			t.Fatalf("Lockouts = %+v, %v; want until %d at level %d", ls, err, until, level)
		}
	}
	long := time.Now().Add(10 * time.Minute).UnixMilli()
	if err := a.PublishLockout(ctx, registry.Lockout{Key: "user:lev", UntilUnixMs: long, Level: 1}); err != nil {
		t.Fatal(err)
	}
	before := leases()
	if err := b.PublishLockout(ctx, registry.Lockout{Key: "user:lev", UntilUnixMs: time.Now().Add(time.Minute).UnixMilli(), Level: 5}); err != nil {
		t.Fatal(err)
	}
	want(long, 5)
	if got := leases(); got != before {
		t.Errorf("leases after the shorter lockout: %d; want %d", got, before)
	}
	longer := time.Now().Add(20 * time.Minute).UnixMilli()
	if err := a.PublishLockout(ctx, registry.Lockout{Key: "user:lev", UntilUnixMs: longer, Level: 2}); err != nil {
		t.Fatal(err)
	}
	want(longer, 5)
	if got := leases(); got != before {
		t.Errorf("leases after the longer lockout: %d; want %d", got, before)
	}
}
