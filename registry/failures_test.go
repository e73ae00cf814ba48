package registry_test

import (
	"errors"
	"fmt"
	"slices"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/hotdesk/hotdesk/internal/clock"
	"github.com/hotdesk/hotdesk/internal/testutil"
	"github.com/hotdesk/hotdesk/registry"
	"github.com/hotdesk/hotdesk/registry/etcdtest"
)

// TestFailureCountConcurrent: two brokers, each with its own etcd client,
// count failures of one key at the same time; none is lost (the final
// count is the number counted) and every increment saw a count of its own
// (1 … n, each once), so exactly one of them would see the limit reached.
func TestFailureCountConcurrent(t *testing.T) {
	t.Parallel()
	_, regs := newGroup(t, "fa", "fb")
	ctx := tctx(t)
	const each = 15
	counts := make([][]int, len(regs))
	var fns []func() error
	for i, r := range regs {
		fns = append(fns, func() error {
			for range each {
				f, err := r.CountFailure(ctx, "user:alice", time.Hour, 0)
				if err != nil {
					return err
				}
				counts[i] = append(counts[i], f.Count)
			}
			return nil
		})
	}
	testutil.Concurrently(t, fns...)
	all := slices.Concat(counts...)
	slices.Sort(all)
	for i, c := range all {
		if c != i+1 {
			t.Fatalf("counts seen %v; want 1…%d, each once", all, 2*each)
		}
	}
	fs, err := regs[1].FailureCounts(ctx)
	if err != nil || len(fs) != 1 || fs[0].Key != "user:alice" || fs[0].Count != 2*each {
		t.Fatalf("FailureCounts = %+v, %v; want user:alice at %d", fs, err, 2*each)
	}
}

// TestFailureCountLimit: the failure that reaches the limit gets the
// count and deletes the counter in the same txn (the lockout it starts
// consumes the failures); the next one starts over at 1. A published
// lockout deletes the key's count too.
func TestFailureCountLimit(t *testing.T) {
	t.Parallel()
	eps, regs := newGroup(t, "fl")
	r := regs[0]
	ctx := tctx(t)
	for want := 1; want <= 3; want++ {
		if f, err := r.CountFailure(ctx, "token:card1", time.Hour, 3); err != nil || f.Count != want || f.Server != "fl" {
			t.Fatalf("failure %d: %+v, %v; want count %d by fl", want, f, err, want)
		}
	}
	if fs, err := r.FailureCounts(ctx); err != nil || len(fs) != 0 {
		t.Fatalf("after the limit: %+v, %v; want no count", fs, err)
	}
	if f, err := r.CountFailure(ctx, "token:card1", time.Hour, 3); err != nil || f.Count != 1 {
		t.Fatalf("after the limit: %+v, %v; want count 1", f, err)
	}
	// Stored under a lease, the key's name not naming the token.
	oneLeasedKey(t, ctx, etcdtest.Client(t, eps), "/hotdesk/failures/", "card1")
	until := time.Now().Add(time.Minute).UnixMilli()
	if err := r.PublishLockout(ctx, registry.Lockout{Key: "token:card1", UntilUnixMs: until, Level: 1}); err != nil {
		t.Fatal(err)
	}
	if fs, err := r.FailureCounts(ctx); err != nil || len(fs) != 0 {
		t.Fatalf("after a lockout of the key: %+v, %v; want no count", fs, err)
	}
}

// TestFailureCountExpiry: a count ends with its window, by its lease (the
// record vanishes) and by its stored time (a count found older than the
// window starts over).
func TestFailureCountExpiry(t *testing.T) {
	t.Parallel()
	eps := etcdtest.Start(t)
	clk := clock.NewFake(time.Now())
	// A Store: no lease of its own for the fake clock to starve.
	r := newStore(t, etcdtest.Client(t, eps), "fe", registry.WithClock(clk))
	ctx := tctx(t)
	// By the stored time: the lease (an hour) still holds the record.
	for range 2 {
		if _, err := r.CountFailure(ctx, "user:bob", time.Hour, 0); err != nil {
			t.Fatal(err)
		}
	}
	clk.Advance(time.Hour + time.Second)
	if f, err := r.CountFailure(ctx, "user:bob", time.Hour, 0); err != nil || f.Count != 1 {
		t.Fatalf("a window later: %+v, %v; want count 1", f, err)
	}
	// By the lease: a 2 s window (etcd's shortest lease) ends by itself.
	for range 2 {
		if _, err := r.CountFailure(ctx, "user:carol", 2*time.Second, 0); err != nil {
			t.Fatal(err)
		}
	}
	if fs, err := r.FailureCounts(ctx); err != nil || !slices.ContainsFunc(fs, func(f registry.Failures) bool { return f.Key == "user:carol" && f.Count == 2 }) {
		t.Fatalf("FailureCounts = %+v, %v; want user:carol at 2", fs, err)
	}
	testutil.WaitFor(t, waitBound, "carol's count to expire with its lease", func() bool {
		fs, err := r.FailureCounts(ctx)
		return err == nil && !slices.ContainsFunc(fs, func(f registry.Failures) bool { return f.Key == "user:carol" })
	})
}

// TestFailureCountClearAndWatch: another broker's WatchFailures hears
// every count and its end; a success's ClearFailures ends a count, and so
// does an administrator's ClearLockout, which works on a key with
// failures and no lockout (and tells every broker through
// WatchLockouts), and is ErrNotFound on a key with neither.
func TestFailureCountClearAndWatch(t *testing.T) {
	t.Parallel()
	_, regs := newGroup(t, "fw1", "fw2")
	a, b := regs[0], regs[1]
	ctx := tctx(t)
	if _, err := a.CountFailure(ctx, "user:dave", time.Hour, 0); err != nil {
		t.Fatal(err)
	}
	counts := b.WatchFailures(ctx)
	lockouts := b.WatchLockouts(ctx)
	expect := func(what, key string, count int) {
		t.Helper()
		if f := testutil.Recv(t, counts, waitBound, what); f.Key != key || f.Count != count {
			t.Fatalf("%s: %+v; want %s at %d", what, f, key, count)
		}
	}
	expect("the listed count", "user:dave", 1)
	if _, err := a.CountFailure(ctx, "user:dave", time.Hour, 0); err != nil {
		t.Fatal(err)
	}
	expect("the watched count", "user:dave", 2)
	if err := a.ClearFailures(ctx, "user:dave"); err != nil {
		t.Fatal(err)
	}
	expect("the count's end after a success", "user:dave", 0)
	if err := a.ClearFailures(ctx, "user:dave"); err != nil {
		t.Fatalf("clearing no count: %v; want nil", err)
	}

	if _, err := a.CountFailure(ctx, "user:erin", time.Hour, 0); err != nil {
		t.Fatal(err)
	}
	expect("erin's count", "user:erin", 1)
	if err := b.ClearLockout(ctx, "user:erin"); err != nil {
		t.Fatalf("clearing failures without a lockout: %v", err)
	}
	expect("erin's count's end after the clear", "user:erin", 0)
	if lo := testutil.Recv(t, lockouts, waitBound, "the clearing"); lo.Key != "user:erin" || !lo.Cleared {
		t.Fatalf("lockout watch after the clear: %+v; want user:erin cleared", lo)
	}
	if fs, err := a.FailureCounts(ctx); err != nil || len(fs) != 0 {
		t.Fatalf("FailureCounts after the clears = %+v, %v; want none", fs, err)
	}
	if err := b.ClearLockout(ctx, "user:erin"); !errors.Is(err, registry.ErrNotFound) {
		t.Fatalf("clearing again = %v; want ErrNotFound", err)
	}
	if _, err := a.CountFailure(ctx, "", time.Hour, 0); err == nil {
		t.Fatal("counting an empty key succeeded")
	}
	if _, err := a.CountFailure(ctx, fmt.Sprintf("user:%0600d", 0), time.Hour, 0); err == nil {
		t.Fatal("counting a 605-byte key succeeded")
	}
}

// TestFailureCountLeasesBounded: counts share their leases: a spray of
// failures of many keys (a user name each) in one reuse period costs one
// lease, not one per key (etcd keeps, checkpoints and revokes every
// lease: a lease per key let a spray grow them by its rate times the
// window). The shared lease is never revoked for one count: a success
// clearing one key, a limit reached and a lockout published delete their
// count only, the others stay. A shared lease gone is replaced.
func TestFailureCountLeasesBounded(t *testing.T) {
	t.Parallel()
	eps, regs := newGroup(t, "fs")
	r := regs[0]
	ctx := tctx(t)
	const keys = 40
	for i := range keys {
		if _, err := r.CountFailure(ctx, fmt.Sprintf("user:u%d", i), time.Hour, 2); err != nil {
			t.Fatal(err)
		}
	}
	cli := etcdtest.Client(t, eps)
	leases := func() map[int64]int {
		t.Helper()
		resp, err := cli.Get(ctx, "/hotdesk/failures/", clientv3.WithPrefix())
		if err != nil {
			t.Fatal(err)
		}
		m := map[int64]int{}
		for _, kv := range resp.Kvs {
			m[kv.Lease]++
		}
		return m
	}
	if m := leases(); len(m) != 1 || m[0] != 0 {
		t.Fatalf("leases of %d counts: %v; want one lease for all", keys, m)
	}
	if err := r.ClearFailures(ctx, "user:u0"); err != nil {
		t.Fatal(err)
	}
	if _, err := r.CountFailure(ctx, "user:u1", time.Hour, 2); err != nil { // the limit
		t.Fatal(err)
	}
	until := time.Now().Add(time.Minute).UnixMilli()
	if err := r.PublishLockout(ctx, registry.Lockout{Key: "user:u2", UntilUnixMs: until, Level: 1}); err != nil {
		t.Fatal(err)
	}
	m := leases()
	for _, n := range m {
		if n != keys-3 {
			t.Fatalf("counts left after clearing three of %d: %d; want %d", keys, n, keys-3)
		}
	}
	// A shared lease etcd no longer has (revoked here by hand) is given
	// up for a new one, not an error.
	for id := range m {
		if _, err := cli.Revoke(ctx, clientv3.LeaseID(id)); err != nil {
			t.Fatal(err)
		}
	}
	if f, err := r.CountFailure(ctx, "user:after", time.Hour, 2); err != nil || f.Count != 1 {
		t.Fatalf("counting after the shared lease ended: %+v, %v; want count 1", f, err)
	}
}
