package main

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"
	clientv3 "go.etcd.io/etcd/client/v3"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/hotdesk/hotdesk/broker"
	"github.com/hotdesk/hotdesk/internal/clock"
	"github.com/hotdesk/hotdesk/internal/testutil"
	"github.com/hotdesk/hotdesk/registry"
	"github.com/hotdesk/hotdesk/registry/etcdtest"
)

// supervisorRig is a leaseSupervisor for server b1 on its own etcd,
// whose registries (every one it builds) close at the test's end.
type supervisorRig struct {
	cli   *clientv3.Client
	first *registry.Registry
	sup   *leaseSupervisor
	mu    sync.Mutex
	cur   *registry.Registry
	all   []*registry.Registry
}

// newSupervisorRig builds the first registry (lease ttl) on cli (nil: an
// etcd of its own) and a supervisor that reestablishes with reestablish,
// backs off on clk from minBackoff.
func newSupervisorRig(t *testing.T, cli *clientv3.Client, ttl time.Duration, clk clock.Clock, minBackoff, maxBackoff time.Duration,
	reestablish func(context.Context, *registry.Registry) ([]broker.SessionInfo, error)) *supervisorRig {
	t.Helper()
	if cli == nil {
		cli = etcdtest.Client(t, etcdtest.Start(t))
	}
	rg := &supervisorRig{cli: cli}
	rec := registry.ServerRecord{ID: "b1", Addr: "127.0.0.1:1"}
	newReg := func(ctx context.Context, prev clientv3.LeaseID) (*registry.Registry, error) {
		r, err := registry.New(ctx, rg.cli, rec, registry.WithLeaseTTL(ttl), registry.WithPreviousLease(prev))
		if err == nil {
			rg.mu.Lock()
			rg.all = append(rg.all, r)
			rg.mu.Unlock()
		}
		return r, err
	}
	first, err := newReg(t.Context(), 0)
	if err != nil {
		t.Fatal(err)
	}
	rg.first, rg.cur = first, first
	t.Cleanup(func() {
		rg.mu.Lock()
		defer rg.mu.Unlock()
		for _, r := range rg.all {
			r.Close(context.Background())
		}
	})
	rg.sup = &leaseSupervisor{
		newRegistry: newReg,
		reestablish: reestablish,
		current:     func() *registry.Registry { rg.mu.Lock(); defer rg.mu.Unlock(); return rg.cur },
		install:     func(r *registry.Registry) { rg.mu.Lock(); rg.cur = r; rg.mu.Unlock() },
		log:         hclog.NewNullLogger(),
		clk:         clk,
		minBackoff:  minBackoff, maxBackoff: maxBackoff,
	}
	return rg
}

// TestLeaseSupervisorFlappingLink: the lease of the registry built to
// recover dies while the sessions are being moved to it (the link flapped
// again). The supervisor must build another one, not retry with the dead
// one forever: after its backoff on its clock, not before, it ends on a
// live lease.
func TestLeaseSupervisorFlappingLink(t *testing.T) {
	t.Parallel() // its own etcd
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var mu sync.Mutex
	attempts := 0
	clk := clock.NewFake(time.Unix(1_000_000, 0))
	var cli *clientv3.Client
	rg := newSupervisorRig(t, nil, 2*time.Second, clk, time.Second, 10*time.Second,
		func(ctx context.Context, reg *registry.Registry) ([]broker.SessionInfo, error) {
			mu.Lock()
			attempts++
			n := attempts
			mu.Unlock()
			if n == 1 {
				// The link flaps during the first attempt: its lease dies.
				if _, err := cli.Revoke(ctx, reg.LeaseID()); err != nil {
					return nil, err
				}
				<-reg.Done()
				return nil, errors.New("etcd unreachable")
			}
			select {
			case <-reg.Done():
				return nil, registry.ErrLeaseLost
			default:
				return nil, nil
			}
		})
	cli, first, sup := rg.cli, rg.first, rg.sup
	done := make(chan struct{})
	go func() { defer close(done); sup.run(ctx) }()
	defer func() { cancel(); <-done }()

	if _, err := cli.Revoke(ctx, first.LeaseID()); err != nil {
		t.Fatal(err)
	}
	testutil.WaitFor(t, time.Minute, "the first attempt failed and the backoff set on the clock", func() bool {
		return clk.Pending() == 1
	})
	clk.Advance(time.Second - time.Millisecond)
	mu.Lock()
	n := attempts
	mu.Unlock()
	if p := clk.Pending(); p != 1 || n != 1 || sup.current() != first {
		t.Fatalf("just before the backoff: %d timers pending, %d attempts, new registry installed %v; want 1, 1, false",
			p, n, sup.current() != first)
	}
	clk.Advance(time.Millisecond)
	testutil.WaitFor(t, time.Minute, "the broker on a live lease", func() bool {
		r := sup.current()
		return r != first && r.Healthy()
	})
	if _, err := cli.TimeToLive(ctx, sup.current().LeaseID()); err != nil {
		t.Fatal(err)
	}
}

// etcdBackRig is a supervisor rig on a one-member etcd cluster (members)
// reached as a broker reaches it, backing off an hour on a clock that never
// moves: only etcd coming back can end a pause. moved counts the sessions
// moved to a new registry.
func etcdBackRig(t *testing.T) (rg *supervisorRig, members []*registry.Embedded, moved *atomic.Int32) {
	t.Helper()
	endpoints, members := etcdtest.StartCluster(t, 1)
	cli := etcdtest.BrokerClient(t, endpoints)
	moved = new(atomic.Int32)
	rg = newSupervisorRig(t, cli, 2*time.Second, clock.NewFake(time.Unix(1_000_000, 0)), time.Hour, time.Hour,
		func(ctx context.Context, reg *registry.Registry) ([]broker.SessionInfo, error) {
			moved.Add(1)
			return nil, nil
		})
	store, err := registry.NewStore(cli, "b1")
	if err != nil {
		t.Fatal(err)
	}
	rg.sup.etcd = store
	return rg, members, moved
}

// runUntilLive runs rg's supervisor until the test ends, stops etcd
// (members[0]) until the lease is lost, calls whileDown, starts etcd again
// and wants the broker on a live lease, its sessions moved once, the clock
// never moved.
func runUntilLive(t *testing.T, rg *supervisorRig, members []*registry.Embedded, moved *atomic.Int32, whileDown func()) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); rg.sup.run(ctx) }()
	defer func() { cancel(); <-done }()
	etcdtest.StopMember(t, members[0])
	select {
	case <-rg.first.Done():
	case <-time.After(time.Minute):
		t.Fatal("the lease was not lost with etcd down")
	}
	whileDown()
	if rg.sup.current() != rg.first || moved.Load() != 0 {
		t.Fatalf("with etcd down: new registry installed %v, sessions moved %d times; want none", rg.sup.current() != rg.first, moved.Load())
	}
	etcdtest.RestartMember(t, members[0])
	testutil.WaitFor(t, time.Minute, "the broker on a live lease, the clock not moved", func() bool {
		r := rg.sup.current()
		return r != rg.first && r.Healthy()
	})
	if n := moved.Load(); n != 1 {
		t.Fatalf("sessions moved %d times; want once", n)
	}
	if _, err := rg.cli.TimeToLive(ctx, rg.sup.current().LeaseID()); err != nil {
		t.Fatal(err)
	}
}

// TestLeaseSupervisorEtcdBack: etcd was down longer than the lease, and the
// supervisor's attempts failed into a long backoff. When etcd is back the
// broker must be on a live lease again at once, not at the end of that
// backoff (before, a broker stayed not ready, its terminals told
// "unavailable", up to 10 s after etcd was back).
func TestLeaseSupervisorEtcdBack(t *testing.T) {
	t.Parallel() // its own etcd
	rg, members, moved := etcdBackRig(t)
	clk := rg.sup.clk.(*clock.Fake)
	runUntilLive(t, rg, members, moved, func() {
		testutil.WaitFor(t, time.Minute, "an attempt failed and the backoff set on the clock", func() bool {
			return clk.Pending() == 1
		})
	})
}

// TestLeaseSupervisorEtcdBackDuringAttempt: etcd comes back while an
// attempt waits for it, and the attempt fails all the same (its grant timed
// out as etcd came). etcd answers before the pause starts: the supervisor
// must try again at once.
func TestLeaseSupervisorEtcdBackDuringAttempt(t *testing.T) {
	t.Parallel() // its own etcd
	rg, members, moved := etcdBackRig(t)
	var attempts atomic.Int32
	waiting, back := make(chan struct{}), make(chan struct{})
	build := rg.sup.newRegistry
	rg.sup.newRegistry = func(ctx context.Context, prev clientv3.LeaseID) (*registry.Registry, error) {
		if attempts.Add(1) == 1 {
			close(waiting)
			<-back
			return nil, fmt.Errorf("registry: new: grant lease: %w", context.DeadlineExceeded)
		}
		return build(ctx, prev)
	}
	runUntilLive(t, rg, members, moved, func() {
		<-waiting
		go func() {
			// The first attempt ends once etcd answers.
			for {
				ctx, cancel := context.WithTimeout(context.Background(), time.Second)
				_, err := rg.cli.Get(ctx, "x")
				cancel()
				if err == nil {
					break
				}
			}
			close(back)
		}()
	})
}

// failingAttempts runs a supervisor on a healthy etcd whose every attempt
// fails with err, its backoff an hour on a clock that never moves, and
// returns how many attempts it made once it has made want and its pause
// has lasted two probes' time since.
func failingAttempts(t *testing.T, err error, want int32) int32 {
	t.Helper()
	rg, _, moved := etcdBackRig(t)
	var attempts atomic.Int32
	rg.sup.newRegistry = func(ctx context.Context, prev clientv3.LeaseID) (*registry.Registry, error) {
		attempts.Add(1)
		return nil, err
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); rg.sup.run(ctx) }()
	defer func() { cancel(); <-done }()
	if _, err := rg.cli.Revoke(ctx, rg.first.LeaseID()); err != nil {
		t.Fatal(err)
	}
	clk := rg.sup.clk.(*clock.Fake)
	testutil.WaitFor(t, time.Minute, fmt.Sprintf("%d attempts failed and the backoff set on the clock", want), func() bool {
		return attempts.Load() >= want && clk.Pending() == 1
	})
	time.Sleep(2 * registry.ReconnectEvery) // two probes' time
	if moved.Load() != 0 {
		t.Fatalf("sessions moved %d times; want none", moved.Load())
	}
	return attempts.Load()
}

// TestLeaseSupervisorRefusedWaitsBackoff: an attempt that etcd answered
// and refused (here: the server id held by another lease) is not tried
// again until its backoff has passed, however well etcd answers.
func TestLeaseSupervisorRefusedWaitsBackoff(t *testing.T) {
	t.Parallel() // its own etcd
	if n := failingAttempts(t, fmt.Errorf("registry: new: %w", registry.ErrServerIDInUse), 1); n != 1 {
		t.Fatalf("%d attempts, the clock not moved; want 1", n)
	}
}

// TestLeaseSupervisorCutsOncePerBackoff: attempts that fail at once as
// unanswered (a connection error) while etcd answers reads get one pause
// cut short by etcd's answer, then wait their backoff: they cannot run
// without a pause.
func TestLeaseSupervisorCutsOncePerBackoff(t *testing.T) {
	t.Parallel() // its own etcd
	if n := failingAttempts(t, fmt.Errorf("registry: new: grant lease: %w", status.Error(codes.Unavailable, "leader changed")), 2); n != 2 {
		t.Fatalf("%d attempts, the clock not moved; want 2 (one pause cut short)", n)
	}
}

// TestPingIntervalBound: terminals drop a silent (stopped) broker after 3
// unanswered pings, within 4 ping intervals; that must happen before the
// broker's lease can expire (2/3 of the TTL), for every accepted TTL.
func TestPingIntervalBound(t *testing.T) {
	t.Parallel()
	for _, ttl := range []time.Duration{time.Second, 1500 * time.Millisecond, 2 * time.Second, 5 * time.Second, 30 * time.Second, 2 * time.Minute} {
		pi := pingInterval(ttl)
		if pi <= 0 || 4*pi > ttl*2/3 {
			t.Errorf("pingInterval(%v) = %v; want 4 × it within 2/3 of the TTL (%v)", ttl, pi, ttl*2/3)
		}
	}
}

// TestLeaseSupervisorStopDuringRecovery: the daemon stops while the
// supervisor moves the sessions to a new lease. That lease holds the
// server record by then (taken over from the lost one): it must be the
// one the stop acts on (revokes, or leaves to the next run in the lease
// file), not the lost lease; else the stopped server stays a member of
// the group, named by a lease nobody knows, until it expires.
func TestLeaseSupervisorStopDuringRecovery(t *testing.T) {
	t.Parallel() // its own etcd
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	moving := make(chan struct{})
	rg := newSupervisorRig(t, nil, 10*time.Second, clock.Real{}, 10*time.Millisecond, 50*time.Millisecond,
		func(ctx context.Context, reg *registry.Registry) ([]broker.SessionInfo, error) {
			close(moving)
			<-ctx.Done() // the stop comes while the sessions are moved
			return nil, ctx.Err()
		})
	cli, first, sup := rg.cli, rg.first, rg.sup
	done := make(chan struct{})
	go func() { defer close(done); sup.run(ctx) }()
	// The lease is lost: its renewals fail (here: etcd revoked it) while
	// the record it held stays readable to the next lease's take-over.
	if _, err := cli.Revoke(ctx, first.LeaseID()); err != nil {
		t.Fatal(err)
	}
	select {
	case <-moving:
	case <-time.After(30 * time.Second):
		t.Fatal("the supervisor never built a new lease")
	}
	cancel() // the stop
	<-done

	bg := context.Background()
	resp, err := cli.Get(bg, registry.DefaultPrefix+"servers/b1")
	if err != nil {
		t.Fatal(err)
	}
	if len(resp.Kvs) == 0 {
		t.Fatal("server record gone before the stop acted on it; want it under the new lease")
	}
	if got, want := clientv3.LeaseID(resp.Kvs[0].Lease), sup.current().LeaseID(); got != want {
		t.Fatalf("server record held by lease %x; the stop acts on lease %x", int64(got), int64(want))
	}
	// The stop (keep_on_stop off) revokes that lease: the record goes.
	if err := sup.current().Close(bg); err != nil {
		t.Fatal(err)
	}
	if resp, err := cli.Get(bg, registry.DefaultPrefix+"servers/b1"); err != nil || len(resp.Kvs) != 0 {
		t.Fatalf("server record after the stop: %v, %v; want none", resp.Kvs, err)
	}
}
