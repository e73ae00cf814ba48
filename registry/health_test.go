package registry_test

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/hotdesk/hotdesk/internal/clock"
	"github.com/hotdesk/hotdesk/internal/testutil"
	"github.com/hotdesk/hotdesk/registry"
	"github.com/hotdesk/hotdesk/registry/etcdtest"
)

func isOpen(ch <-chan struct{}) bool {
	select {
	case <-ch:
		return false
	default:
		return true
	}
}

// proxied starts a member and returns a client that reaches it only through
// a proxy, the proxy, and a client that reaches it directly.
func proxied(t *testing.T) (cli *clientv3.Client, p *etcdtest.Proxy, admin *clientv3.Client) {
	eps := etcdtest.Start(t)
	p = etcdtest.NewProxy(t, eps[0])
	return etcdtest.Client(t, []string{p.URL()}), p, etcdtest.Client(t, eps)
}

func TestSafeWindow(t *testing.T) {
	t.Parallel()
	cli := etcdtest.Client(t, etcdtest.Start(t))
	tests := []struct {
		name string
		opts []registry.Option
		want time.Duration
	}{
		{"default is 2/3 of the ttl", []registry.Option{registry.WithLeaseTTL(3 * time.Second)}, 2 * time.Second},
		{"explicit", []registry.Option{registry.WithLeaseTTL(3 * time.Second), registry.WithSafeWindow(time.Second)}, time.Second},
		{"at most the ttl", []registry.Option{registry.WithLeaseTTL(3 * time.Second), registry.WithSafeWindow(time.Minute)}, 3 * time.Second},
		{"ttl rounded up first", []registry.Option{registry.WithLeaseTTL(2500 * time.Millisecond)}, 2 * time.Second},
	}
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := newReg(t, cli, fmt.Sprintf("w%d", i), tt.opts...)
			if got := r.SafeWindow(); got != tt.want {
				t.Errorf("SafeWindow() = %v; want %v", got, tt.want)
			}
			if !r.Healthy() {
				t.Errorf("Healthy() = false; want true right after New")
			}
			if err := r.Close(context.Background()); err != nil {
				t.Fatal(err)
			}
			if r.Healthy() {
				t.Errorf("Healthy() after Close = true; want false")
			}
		})
	}
}

// TestHealthOwnTimer drives health with a fake clock while the proxy holds
// every renewal: the Registry turns unhealthy when its own clock says the
// safe window has passed, refuses writes but still reads, and turns healthy
// again by itself when renewals get through.
func TestHealthOwnTimer(t *testing.T) {
	t.Parallel()
	cli, p, admin := proxied(t)
	clk := clock.NewFake(time.UnixMilli(1_700_000_000_000))
	// The fake clock decides health; the (default) lease only has to last in
	// real time until the heal, however slow the machine.
	r := newReg(t, cli, "s1", registry.WithClock(clk))
	ctx := tctx(t)
	c, _, err := r.Claim(ctx, "soft.kept", registry.Session{ID: "k"})
	if err != nil {
		t.Fatal(err)
	}

	p.Blackhole()
	// A renewal already past the proxy may still land: advance again then.
	for i := 0; r.Healthy() && i < 3; i++ {
		clk.Advance(r.SafeWindow())
	}
	if r.Healthy() {
		t.Fatalf("Healthy() = true after the safe window without renewals; want false")
	}
	if !isOpen(r.Done()) {
		t.Fatalf("Done closed; want open: the lease has not expired")
	}
	// Writes are refused locally, without waiting for etcd.
	if _, _, err := r.Claim(ctx, "soft.new", registry.Session{ID: "n"}); !errors.Is(err, registry.ErrUnhealthy) || !errors.Is(err, registry.ErrLeaseLost) {
		t.Errorf("Claim err = %v; want ErrUnhealthy matching ErrLeaseLost", err)
	}
	if _, err := r.Update(ctx, c, registry.Session{ID: "k", State: "active"}); !errors.Is(err, registry.ErrUnhealthy) {
		t.Errorf("Update err = %v; want ErrUnhealthy", err)
	}
	if _, _, err := r.Reclaim(ctx, c, registry.Session{ID: "k"}); !errors.Is(err, registry.ErrUnhealthy) {
		t.Errorf("Reclaim err = %v; want ErrUnhealthy", err)
	}
	if got, err := admin.Get(ctx, "/hotdesk/sessions/soft.new"); err != nil || len(got.Kvs) != 0 {
		t.Errorf("refused claim wrote %v, %v; want nothing", got, err)
	}

	p.Heal()
	// Reads work (this one waits for the connection, held until now).
	if got, err := r.Lookup(ctx, "soft.kept"); err != nil || got.Fence != c.Fence {
		t.Errorf("Lookup = %+v, %v; want fence %d", got, err, c.Fence)
	}
	testutil.WaitFor(t, waitBound, "healthy after heal", r.Healthy)
	if !isOpen(r.Done()) {
		t.Fatalf("Done closed after heal; want open")
	}
	if _, won, err := r.Claim(ctx, "soft.new", registry.Session{ID: "n"}); err != nil || !won {
		t.Errorf("Claim after heal = %v, %v; want won", won, err)
	}
}

// TestPartitionHealedInTime cuts a broker off from etcd in real time:
// Healthy goes false before Done, claims are refused, and after a quick heal
// the lease (and every claim) is still there and the broker healthy again.
func TestPartitionHealedInTime(t *testing.T) {
	t.Parallel()
	cli, p, admin := proxied(t)
	// Half the TTL for the safe window: renewals (every TTL/6, 1 s) keep it
	// healthy with room for two late ones, and the lease outlives the time
	// between turning unhealthy and the heal (the renewals the proxy held go
	// through at once) by 3 s, room for a slow machine.
	r := newReg(t, cli, "s1", registry.WithLeaseTTL(6*time.Second), registry.WithSafeWindow(3*time.Second))
	ctx := tctx(t)
	c, _, err := r.Claim(ctx, "soft.kept", registry.Session{ID: "k"})
	if err != nil {
		t.Fatal(err)
	}
	p.Blackhole()
	testutil.WaitFor(t, waitBound, "unhealthy while cut off", func() bool { return !r.Healthy() })
	if !isOpen(r.Done()) {
		t.Fatalf("Done closed before Healthy went false; want unhealthy first")
	}
	if _, _, err := r.Claim(ctx, "soft.new", registry.Session{ID: "n"}); !errors.Is(err, registry.ErrUnhealthy) {
		t.Errorf("Claim while cut off err = %v; want ErrUnhealthy", err)
	}
	p.Heal()
	testutil.WaitFor(t, waitBound, "healthy after heal", r.Healthy)
	if !isOpen(r.Done()) {
		t.Fatalf("Done closed; want the lease kept")
	}
	resp, err := admin.Get(ctx, "/hotdesk/sessions/soft.kept")
	if err != nil || len(resp.Kvs) != 1 || resp.Kvs[0].CreateRevision != c.Fence || clientv3.LeaseID(resp.Kvs[0].Lease) != r.LeaseID() {
		t.Fatalf("claim after heal = %v, %v; want fence %d under lease %x", resp, err, c.Fence, r.LeaseID())
	}
	if _, won, err := r.Claim(ctx, "soft.new", registry.Session{ID: "n"}); err != nil || !won {
		t.Errorf("Claim after heal = %v, %v; want won", won, err)
	}
}

// TestPartitionLeaseLostReclaim keeps a broker cut off past its lease: Done
// closes, its keys vanish, another server takes one of its tokens; after the
// heal a new Registry re-claims what the broker still runs (new fences) and
// reports the taken one as orphaned, destroying nothing.
func TestPartitionLeaseLostReclaim(t *testing.T) {
	t.Parallel()
	cli, p, admin := proxied(t)
	r1 := newReg(t, cli, "s1", registry.WithLeaseTTL(2*time.Second))
	other := newReg(t, admin, "s2")
	ctx := tctx(t)
	var old []registry.Claim
	for i := range 3 {
		c, won, err := r1.Claim(ctx, fmt.Sprintf("soft.k%d", i), registry.Session{ID: fmt.Sprintf("sess-%d", i), User: "alice"})
		if err != nil || !won {
			t.Fatalf("Claim = %v, %v", won, err)
		}
		old = append(old, c)
	}

	p.Blackhole()
	waitClosed(t, r1.Done(), "Done")
	if r1.Healthy() {
		t.Errorf("Healthy() after Done = true; want false")
	}
	if _, _, err := r1.Claim(ctx, "soft.late", registry.Session{ID: "x"}); !errors.Is(err, registry.ErrLeaseLost) || errors.Is(err, registry.ErrUnhealthy) {
		t.Errorf("Claim after Done err = %v; want ErrLeaseLost, not ErrUnhealthy", err)
	}
	testutil.WaitFor(t, waitBound, "old keys expired", func() bool {
		sess, err := admin.Get(ctx, "/hotdesk/sessions/", clientv3.WithPrefix(), clientv3.WithCountOnly())
		if err != nil {
			return false
		}
		srv, err := admin.Get(ctx, "/hotdesk/servers/s1", clientv3.WithCountOnly())
		return err == nil && sess.Count == 0 && srv.Count == 0
	})
	for _, c := range old {
		if _, err := other.Lookup(ctx, c.Key); !errors.Is(err, registry.ErrNotFound) {
			t.Fatalf("Lookup(%s) after expiry err = %v; want ErrNotFound", c.Key, err)
		}
	}
	// Meanwhile the user of k1 went to s2, which started a new session.
	taken, won, err := other.Claim(ctx, old[1].Key, registry.Session{ID: "elsewhere", User: "alice"})
	if err != nil || !won {
		t.Fatalf("other.Claim = %v, %v", won, err)
	}

	p.Heal()
	r2 := newReg(t, cli, "s1", registry.WithPreviousLease(r1.LeaseID()))
	tests := []struct {
		old       registry.Claim
		wantOK    bool
		wantOwner string
	}{
		{old[0], true, "s1"},
		{old[1], false, "s2"},
		{old[2], true, "s1"},
	}
	for _, tt := range tests {
		c, ok, err := r2.Reclaim(ctx, tt.old, registry.Session{ID: tt.old.Session.ID, User: "alice", State: "suspended"})
		if err != nil || ok != tt.wantOK || c.Session.ServerID != tt.wantOwner {
			t.Errorf("Reclaim(%s) = %+v, %v, %v; want ok %v, owner %s", tt.old.Key, c, ok, err, tt.wantOK, tt.wantOwner)
			continue
		}
		if !ok {
			if c != taken {
				t.Errorf("Reclaim(%s) claim = %+v; want the other owner's %+v", tt.old.Key, c, taken)
			}
			continue
		}
		if c.Fence == tt.old.Fence || c.Session.CreatedUnixMs != tt.old.Session.CreatedUnixMs || c.Session.State != "suspended" {
			t.Errorf("Reclaim(%s) = %+v; want a new fence (old %d), created time kept, state suspended", tt.old.Key, c, tt.old.Fence)
		}
		if got, err := other.Lookup(ctx, tt.old.Key); err != nil || got != c {
			t.Errorf("Lookup(%s) = %+v, %v; want %+v", tt.old.Key, got, err, c)
		}
		// Repeating it (after an unknown outcome, say) changes nothing.
		again, ok, err := r2.Reclaim(ctx, tt.old, registry.Session{ID: tt.old.Session.ID})
		if err != nil || !ok || again != c {
			t.Errorf("repeated Reclaim(%s) = %+v, %v, %v; want %+v, true", tt.old.Key, again, ok, err, c)
		}
	}
	if got, err := other.Lookup(ctx, old[1].Key); err != nil || got != taken {
		t.Errorf("orphaned key = %+v, %v; want s2's claim untouched", got, err)
	}
	if err := r2.RevokeLease(ctx, r1.LeaseID()); err != nil {
		t.Errorf("RevokeLease(expired) err = %v; want nil", err)
	}
	if err := r1.Close(ctx); err != nil {
		t.Errorf("Close of the lost registry err = %v; want nil", err)
	}
}

// TestTakeOverLiveLease: the process re-establishes while its previous lease
// is still alive: New with WithPreviousLease takes the server record over,
// Reclaim moves sessions to the new lease keeping their fences, and revoking
// the previous lease afterwards removes only what was not re-claimed.
func TestTakeOverLiveLease(t *testing.T) {
	t.Parallel()
	eps := etcdtest.Start(t)
	admin := etcdtest.Client(t, eps)
	ctx := tctx(t)
	r1 := newReg(t, etcdtest.Client(t, eps), "s1")
	var old []registry.Claim
	for i := range 3 {
		c, _, err := r1.Claim(ctx, fmt.Sprintf("soft.t%d", i), registry.Session{ID: fmt.Sprintf("sess-%d", i)})
		if err != nil {
			t.Fatal(err)
		}
		old = append(old, c)
	}
	cli2 := etcdtest.Client(t, eps)
	stranger, err := admin.Grant(ctx, 60)
	if err != nil {
		t.Fatal(err)
	}
	for _, opts := range [][]registry.Option{nil, {registry.WithPreviousLease(stranger.ID)}} {
		if _, err := registry.New(ctx, cli2, registry.ServerRecord{ID: "s1"}, opts...); !errors.Is(err, registry.ErrServerIDInUse) {
			t.Errorf("New(s1, %d options) err = %v; want ErrServerIDInUse", len(opts), err)
		}
	}
	r2 := newReg(t, cli2, "s1", registry.WithPreviousLease(r1.LeaseID()))
	resp, err := admin.Get(ctx, "/hotdesk/servers/s1")
	if err != nil || len(resp.Kvs) != 1 || clientv3.LeaseID(resp.Kvs[0].Lease) != r2.LeaseID() {
		t.Fatalf("server record = %v, %v; want it under the new lease %x", resp, err, r2.LeaseID())
	}

	tests := []struct {
		name      string
		old       registry.Claim
		sessionID string
		wantOK    bool
		wantFence int64
	}{
		{"same session keeps its fence", old[0], old[0].Session.ID, true, old[0].Fence},
		{"another session of ours is not taken", old[1], "not-" + old[1].Session.ID, false, old[1].Fence},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, ok, err := r2.Reclaim(ctx, tt.old, registry.Session{ID: tt.sessionID})
			if err != nil || ok != tt.wantOK || c.Fence != tt.wantFence {
				t.Fatalf("Reclaim = %+v, %v, %v; want ok %v, fence %d", c, ok, err, tt.wantOK, tt.wantFence)
			}
			resp, err := admin.Get(ctx, "/hotdesk/sessions/"+tt.old.Key)
			if err != nil || len(resp.Kvs) != 1 {
				t.Fatalf("Get = %v, %v", resp, err)
			}
			wantLease := r1.LeaseID()
			if tt.wantOK {
				wantLease = r2.LeaseID()
			}
			if got := clientv3.LeaseID(resp.Kvs[0].Lease); got != wantLease {
				t.Errorf("key lease = %x; want %x", got, wantLease)
			}
		})
	}
	// The moved claim is fully usable under the new Registry.
	moved, err := r2.Lookup(ctx, old[0].Key)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := r2.Update(ctx, moved, registry.Session{ID: old[0].Session.ID, State: "active"}); err != nil {
		t.Errorf("Update of the moved claim err = %v; want nil", err)
	}

	if err := r2.RevokeLease(ctx, r2.LeaseID()); err == nil {
		t.Errorf("RevokeLease(own lease) err = nil; want a refusal")
	}
	if err := r2.RevokeLease(ctx, r1.LeaseID()); err != nil {
		t.Fatalf("RevokeLease(previous) err = %v; want nil", err)
	}
	waitClosed(t, r1.Done(), "previous Done")
	if _, err := r2.Lookup(ctx, old[0].Key); err != nil {
		t.Errorf("Lookup(moved) err = %v; want present", err)
	}
	for _, c := range old[1:] {
		if _, err := r2.Lookup(ctx, c.Key); !errors.Is(err, registry.ErrNotFound) {
			t.Errorf("Lookup(%s) err = %v; want ErrNotFound after revoking the previous lease", c.Key, err)
		}
	}
	if rec, err := r2.Server(ctx, "s1"); err != nil || !r2.Healthy() || !isOpen(r2.Done()) {
		t.Errorf("after revoke: Server = %+v, %v, healthy %v; want registered and healthy", rec, err, r2.Healthy())
	}
}

// TestNewLeaseNotLost: New, called while etcd is down, must not return a
// lease granted so late that it counts as lost at once (its request waited
// for etcd to come back longer than the TTL, and a grant is reckoned from
// when it was asked for): the broker would move its sessions to it in vain,
// and log the lease lost right after it said it re-established. New fails
// instead once a TTL has passed, and the caller tries again.
func TestNewLeaseNotLost(t *testing.T) {
	t.Parallel()
	endpoints, members := etcdtest.StartCluster(t, 1)
	cli := etcdtest.BrokerClient(t, endpoints)
	etcdtest.StopMember(t, members[0])
	type made struct {
		r   *registry.Registry
		err error
	}
	ch := make(chan made, 1)
	go func() {
		// A 3 s lease; each call may wait a minute.
		r, err := registry.New(context.Background(), cli, registry.ServerRecord{ID: "s1", Addr: "127.0.0.1:1"},
			registry.WithLeaseTTL(3*time.Second), registry.WithCallTimeout(time.Minute), registry.WithLogger(testLogger(t)))
		ch <- made{r, err}
	}()
	time.Sleep(3500 * time.Millisecond) // longer than the TTL
	etcdtest.RestartMember(t, members[0])
	m := <-ch
	if m.err == nil {
		defer m.r.Close(context.Background())
		testutil.WaitFor(t, 10*time.Second, "the lease New returned healthy", func() bool {
			return m.r.Healthy() || !isOpen(m.r.Done())
		})
		if !isOpen(m.r.Done()) {
			t.Fatal("New returned a registry whose lease was lost from the start")
		}
		return
	}
	if !errors.Is(m.err, context.DeadlineExceeded) {
		t.Fatalf("New with etcd down: %v; want a deadline exceeded", m.err)
	}
	// The caller's next try, etcd up, has its healthy lease.
	if r := newReg(t, cli, "s1"); !r.Healthy() {
		t.Fatal("New with etcd back: lease not healthy")
	}
}
