package registry_test

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/hotdesk/hotdesk/internal/testutil"
	"github.com/hotdesk/hotdesk/registry"
	"github.com/hotdesk/hotdesk/registry/etcdtest"
)

// waitBound is a safety bound for things that happen "eventually" (lease
// expiry, keepalive noticing a revoke), and for a test's context. Tests
// never assert how fast. A minute: under the race detector, two tests at
// once on a loaded 2-core machine, TestEmbeddedAuth (bcrypt) took 23 s.
const waitBound = time.Minute

// leaseTTL is the lease of the registries the tests make when the test is
// not about leases ending: long enough that renewals stay inside the safe
// window on a loaded machine with tests running side by side (a late
// renewal would refuse claims as ErrUnhealthy). Tests that need a lease to
// end ask for a short one, or Close or revoke it.
const leaseTTL = 8 * time.Second

func testLogger(t testing.TB) hclog.Logger { return testutil.Logger(t, t.Name(), hclog.Warn) }

// newReg registers server id on cli and closes it on cleanup.
func newReg(t testing.TB, cli *clientv3.Client, id string, opts ...registry.Option) *registry.Registry {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	opts = append([]registry.Option{registry.WithLeaseTTL(leaseTTL), registry.WithLogger(testLogger(t))}, opts...)
	r, err := registry.New(ctx, cli, registry.ServerRecord{ID: id, Addr: "127.0.0.1:1", Weight: 1}, opts...)
	if err != nil {
		t.Fatalf("New(%q) = %v", id, err)
	}
	t.Cleanup(func() { r.Close(context.Background()) })
	return r
}

// newStore returns server id's Store on cli, logging to the test; opts
// come after the logger.
func newStore(t testing.TB, cli *clientv3.Client, id string, opts ...registry.Option) *registry.Store {
	t.Helper()
	s, err := registry.NewStore(cli, id, append([]registry.Option{registry.WithLogger(testLogger(t))}, opts...)...)
	if err != nil {
		t.Fatalf("NewStore(%q) = %v", id, err)
	}
	return s
}

// oneLeasedKey checks that dir holds one key, stored under a lease, whose
// name does not contain secret (the user or token it counts or locks out).
func oneLeasedKey(t testing.TB, ctx context.Context, cli *clientv3.Client, dir, secret string) {
	t.Helper()
	resp, err := cli.Get(ctx, dir, clientv3.WithPrefix())
	if err != nil {
		t.Fatal(err)
	}
	if len(resp.Kvs) != 1 || strings.Contains(string(resp.Kvs[0].Key), secret) || resp.Kvs[0].Lease == 0 {
		t.Fatalf("stored under %s: %v; want one key, under a lease, its name not naming %q", dir, resp.Kvs, secret)
	}
}

// newGroup starts an etcd member and registers a server for each id on it,
// each with its own client, as separate brokers would; eps are the
// member's endpoints.
func newGroup(t testing.TB, ids ...string) (eps []string, regs []*registry.Registry) {
	t.Helper()
	eps = etcdtest.Start(t)
	for _, id := range ids {
		regs = append(regs, newReg(t, etcdtest.Client(t, eps), id))
	}
	return eps, regs
}

// cutOffPair starts an etcd member and two servers on it: a with a direct
// client, b through a proxy the test can cut off (b's lease outlives the
// cut). direct is a's client.
func cutOffPair(t testing.TB, ida, idb string) (direct *clientv3.Client, proxy *etcdtest.Proxy, a, b *registry.Registry) {
	t.Helper()
	eps := etcdtest.Start(t)
	proxy = etcdtest.NewProxy(t, eps[0])
	direct = etcdtest.Client(t, eps)
	a = newReg(t, direct, ida)
	b = newReg(t, etcdtest.Client(t, []string{proxy.URL()}), idb, registry.WithLeaseTTL(30*time.Second))
	return direct, proxy, a, b
}

// compactAway writes one revision outside the registry's keys and compacts
// the history up to it, so that a watch cut off before the last change of
// a registry key cannot resume past it.
func compactAway(t testing.TB, ctx context.Context, cli *clientv3.Client) (rev int64) {
	t.Helper()
	resp, err := cli.Put(ctx, "/hotdesk/none", "x")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := cli.Compact(ctx, resp.Header.Revision, clientv3.WithCompactPhysical()); err != nil {
		t.Fatal(err)
	}
	return resp.Header.Revision
}

func waitClosed(t testing.TB, ch <-chan struct{}, what string) {
	t.Helper()
	select {
	case <-ch:
	case <-time.After(waitBound):
		t.Fatalf("%s not closed within %v", what, waitBound)
	}
}

func tctx(t testing.TB) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), waitBound)
	t.Cleanup(cancel)
	return ctx
}

func errorsIsCtx(err error) bool {
	return errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded)
}
