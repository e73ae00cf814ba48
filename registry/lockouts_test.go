package registry_test

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"strconv"
	"testing"
	"time"

	"github.com/hotdesk/hotdesk/internal/clock"
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
	oneLeasedKey(t, ctx, etcdtest.Client(t, eps), "/hotdesk/lockouts/", "alice")
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

func (t faultyTxn) Else(ops ...clientv3.Op) clientv3.Txn {
	return faultyTxn{t.Txn.Else(ops...), t.apply}
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
	s := newStore(t, etcdtest.Client(t, eps), "lb")
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
		f := newStore(t, etcdtest.Client(t, eps), "lf")
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

// TestLockoutClearOutlivesLatePublish: an administrator's clearing is
// kept as long as a lockout may last (max_lockout), not a minute: a
// lockout imposed before it, published late by a broker that was cut off
// from the registry meanwhile (here an hour later by the stores' clock,
// long after a one-minute clearing would have expired), is refused with
// ErrCleared, and the clearing stays, the group's count of failures
// since the clearing too; so is one imposed within ClearSkew of it. A
// lockout imposed after it replaces it, as ever, and carries its time, so
// that the late one is refused still. etcd's leases run in real time:
// the clearing's lease is checked to be max_lockout long, and the
// injected clock stands for the time that passes.
func TestLockoutClearOutlivesLatePublish(t *testing.T) {
	t.Parallel()
	eps := etcdtest.Start(t)
	cli := etcdtest.Client(t, eps)
	ctx := tctx(t)
	const maxLockout = 2 * time.Hour
	clk := clock.NewFake(time.Now())
	store := func(id string) *registry.Store {
		return newStore(t, etcdtest.Client(t, eps), id, registry.WithClock(clk), registry.WithMaxLockout(maxLockout))
	}
	cut, admin := store("cut"), store("adm")
	const key = "user:amy"

	// cut imposes a lockout while cut off (nothing published); another
	// broker's lockout of the key is what the administrator sees.
	late := registry.Lockout{Key: key, SinceUnixMs: clk.Now().UnixMilli(), UntilUnixMs: clk.Now().Add(maxLockout).UnixMilli(), Level: 4}
	if err := admin.PublishLockout(ctx, registry.Lockout{Key: key, SinceUnixMs: clk.Now().UnixMilli(),
		UntilUnixMs: clk.Now().Add(10 * time.Minute).UnixMilli(), Level: 1}); err != nil {
		t.Fatal(err)
	}
	clk.Advance(time.Minute)
	clearedAt := clk.Now()
	if err := admin.ClearLockout(ctx, key); err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256([]byte(key))
	recKey := "/hotdesk/lockouts/" + hex.EncodeToString(sum[:16])
	stored := func() (registry.Lockout, int64) {
		t.Helper()
		resp, err := cli.Get(ctx, recKey)
		if err != nil || len(resp.Kvs) != 1 {
			t.Fatalf("the key's record: %v, %v; want one", resp, err)
		}
		var lo registry.Lockout
		if err := json.Unmarshal(resp.Kvs[0].Value, &lo); err != nil {
			t.Fatal(err)
		}
		return lo, resp.Kvs[0].Lease
	}
	rec, lease := stored()
	if !rec.Cleared || rec.ClearedUnixMs != clearedAt.UnixMilli() {
		t.Fatalf("the record after the clearing: %+v; want cleared at %d", rec, clearedAt.UnixMilli())
	}
	ttl, err := cli.TimeToLive(ctx, clientv3.LeaseID(lease))
	if err != nil {
		t.Fatal(err)
	}
	if want := int64(maxLockout / time.Second); ttl.GrantedTTL < want || ttl.TTL < want-60 {
		t.Fatalf("the clearing's lease: granted %d s, %d s left; want at least max_lockout (%d s)", ttl.GrantedTTL, ttl.TTL, want)
	}

	// A failure after the clearing, then cut's late publish, an hour on.
	if _, err := admin.CountFailure(ctx, key, 3*time.Hour, 5); err != nil {
		t.Fatal(err)
	}
	clk.Advance(time.Hour)
	for _, lo := range []registry.Lockout{late, {Key: key, SinceUnixMs: clearedAt.Add(registry.ClearSkew).UnixMilli(),
		UntilUnixMs: late.UntilUnixMs, Level: 1}} {
		if err := cut.PublishLockout(ctx, lo); !errors.Is(err, registry.ErrCleared) {
			t.Fatalf("a lockout imposed at %d (the clearing at %d), published an hour later = %v; want ErrCleared",
				lo.SinceUnixMs, clearedAt.UnixMilli(), err)
		}
	}
	if rec, _ := stored(); !rec.Cleared || rec.ClearedUnixMs != clearedAt.UnixMilli() {
		t.Fatalf("the record after the late publish: %+v; want the clearing", rec)
	}
	if ls, err := admin.Lockouts(ctx); err != nil || len(ls) != 0 {
		t.Fatalf("Lockouts after the late publish = %+v, %v; want none", ls, err)
	}
	if fs, err := admin.FailureCounts(ctx); err != nil || len(fs) != 1 || fs[0].Key != key || fs[0].Count != 1 {
		t.Fatalf("failure counts after the late publish = %+v, %v; want the one since the clearing", fs, err)
	}

	// A lockout imposed after the clearing replaces it.
	after := registry.Lockout{Key: key, SinceUnixMs: clearedAt.Add(registry.ClearSkew + time.Millisecond).UnixMilli(),
		UntilUnixMs: late.UntilUnixMs, Level: 1}
	if err := cut.PublishLockout(ctx, after); err != nil {
		t.Fatal(err)
	}
	if ls, err := admin.Lockouts(ctx); err != nil || len(ls) != 1 || ls[0].Server != "cut" || ls[0].SinceUnixMs != after.SinceUnixMs {
		t.Fatalf("Lockouts after a lockout imposed after the clearing = %+v, %v; want cut's, since %d", ls, err, after.SinceUnixMs)
	}

	// That lockout carries the clearing, under a lease as long as the
	// clearing's would have been: the late one, ending later still at a
	// higher level, neither replaces nor raises it.
	rec, lease = stored()
	if rec.Cleared || rec.ClearedUnixMs != clearedAt.UnixMilli() {
		t.Fatalf("the lockout after the clearing: %+v; want it carrying the clearing's time %d", rec, clearedAt.UnixMilli())
	}
	if ttl, err := cli.TimeToLive(ctx, clientv3.LeaseID(lease)); err != nil || ttl.GrantedTTL < int64(time.Hour/time.Second) {
		t.Fatalf("its lease: %+v, %v; want the clearing's remaining hour at least", ttl, err)
	}
	later := late
	later.UntilUnixMs = after.UntilUnixMs + time.Minute.Milliseconds()
	if err := cut.PublishLockout(ctx, later); !errors.Is(err, registry.ErrCleared) {
		t.Fatalf("the late lockout, over the lockout that replaced the clearing = %v; want ErrCleared", err)
	}
	if ls, err := admin.Lockouts(ctx); err != nil || len(ls) != 1 || ls[0].UntilUnixMs != after.UntilUnixMs || ls[0].Level != 1 {
		t.Fatalf("Lockouts after it = %+v, %v; want the one after the clearing, until %d at level 1", ls, err, after.UntilUnixMs)
	}
}

// TestLockoutClearOlderRecords: records of brokers that do not stamp
// clearings and lockouts with their time (a rolling upgrade) decode and
// work as before: a clearing without its time is replaced by any lockout
// published, and hides nothing it should not; a lockout without one is
// listed, and a clearing ends it.
func TestLockoutClearOlderRecords(t *testing.T) {
	t.Parallel()
	eps := etcdtest.Start(t)
	cli := etcdtest.Client(t, eps)
	ctx := tctx(t)
	s := newStore(t, etcdtest.Client(t, eps), "new")
	put := func(key, val string) {
		t.Helper()
		sum := sha256.Sum256([]byte(key))
		if _, err := cli.Put(ctx, "/hotdesk/lockouts/"+hex.EncodeToString(sum[:16]), val); err != nil {
			t.Fatal(err)
		}
	}
	until := time.Now().Add(time.Hour).UnixMilli()
	put("user:old", `{"key":"user:old","until_unix_ms":0,"level":0,"server":"old","cleared":true}`)
	since := time.Now().Add(-time.Hour).UnixMilli()
	if err := s.PublishLockout(ctx, registry.Lockout{Key: "user:old", SinceUnixMs: since, UntilUnixMs: until, Level: 2}); err != nil {
		t.Fatalf("a lockout over an older broker's clearing: %v; want it published", err)
	}
	put("user:ann", `{"key":"user:ann","until_unix_ms":`+strconv.FormatInt(until, 10)+`,"level":1,"server":"old"}`)
	ls, err := s.Lockouts(ctx)
	if err != nil || len(ls) != 2 || ls[0].Key != "user:ann" || ls[0].SinceUnixMs != 0 || ls[1].Key != "user:old" || ls[1].SinceUnixMs != since {
		t.Fatalf("Lockouts = %+v, %v; want user:ann (no since) and user:old", ls, err)
	}
	if err := s.ClearLockout(ctx, "user:ann"); err != nil {
		t.Fatal(err)
	}
	if err := s.PublishLockout(ctx, registry.Lockout{Key: "user:ann", UntilUnixMs: until, Level: 2}); err != nil {
		t.Fatalf("a lockout without its time over a clearing: %v; want it published, as before", err)
	}
}
