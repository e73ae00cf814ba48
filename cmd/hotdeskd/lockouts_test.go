package main

import (
	"context"
	"errors"
	"fmt"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"

	"github.com/hotdesk/hotdesk/auth"
	"github.com/hotdesk/hotdesk/internal/clock"
	"github.com/hotdesk/hotdesk/internal/testutil"
	"github.com/hotdesk/hotdesk/registry"
	"github.com/hotdesk/hotdesk/registry/etcdtest"
)

// newShare builds a broker's lockoutShare on store with a limiter of
// maxFailures wired to it, both on clk, as startAuth does.
func newShare(store *registry.Store, id string, maxFailures int, clk clock.Clock, log hclog.Logger) (*lockoutShare, *auth.Limiter) {
	s := newLockoutShare(store, id, clk, log)
	l := auth.NewLimiter(auth.LimiterConfig{MaxFailures: maxFailures, Window: time.Hour, BaseLockout: time.Hour,
		Clock: clk, OnLockout: s.started, OnFailure: s.failed, OnReset: s.succeeded})
	s.limiter = l
	return s, l
}

// runShare runs s until the test ends.
func runShare(t *testing.T, s *lockoutShare) {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); s.run(ctx) }()
	t.Cleanup(func() { cancel(); <-done })
}

// startShare is newShare and runShare.
func startShare(t *testing.T, store *registry.Store, id string, maxFailures int, clk clock.Clock, log hclog.Logger) (*lockoutShare, *auth.Limiter) {
	s, l := newShare(store, id, maxFailures, clk, log)
	runShare(t, s)
	return s, l
}

// TestLockoutShareCountsFailures: two brokers' shares on one etcd count
// failures together: three failures alternated between them (two at a,
// one at b) lock the user out at both with max_failures 3, though neither
// saw three. A success at a broker that knew of failures clears the
// group's count: two failures after it are two, not five (counted on,
// the third would have reached the limit and ended the count).
func TestLockoutShareCountsFailures(t *testing.T) {
	t.Parallel()
	eps := etcdtest.Start(t)
	newStore := func(id string) *registry.Store { return newTestStore(t, eps, id) }
	storeA := newStore("a")
	_, a := startShare(t, storeA, "a", 3, clock.Real{}, testutil.Logger(t, "a", hclog.Info))
	_, b := startShare(t, newStore("b"), "b", 3, clock.Real{}, testutil.Logger(t, "b", hclog.Info))
	count := func(key string) int { return groupCount(t, storeA, key) }

	a.Failure("", "zed", "")
	testutil.WaitFor(t, time.Minute, "zed's first failure counted", func() bool { return count("user:zed") == 1 })
	b.Failure("", "zed", "")
	testutil.WaitFor(t, time.Minute, "zed's second failure counted", func() bool { return count("user:zed") == 2 })
	a.Failure("", "zed", "")
	for name, l := range map[string]*auth.Limiter{"a": a, "b": b} {
		testutil.WaitFor(t, time.Minute, "zed locked out at "+name, func() bool {
			return errors.Is(l.Check("", "zed", ""), auth.ErrLocked)
		})
	}

	a.Failure("", "yan", "")
	a.Failure("", "yan", "")
	testutil.WaitFor(t, time.Minute, "yan's failures counted", func() bool { return count("user:yan") == 2 })
	a.Success("", "yan")
	testutil.WaitFor(t, time.Minute, "yan's count cleared by the success", func() bool { return count("user:yan") == 0 })
	a.Failure("", "yan", "")
	b.Failure("", "yan", "")
	testutil.WaitFor(t, time.Minute, "yan's count at 2 after the success", func() bool { return count("user:yan") == 2 })
	if err := a.Check("", "yan", ""); err != nil {
		t.Fatalf("yan at a after a success and two failures: %v; want nil", err)
	}
}

// TestLockoutShareOutage: with the registry out of reach, failures do not
// wait for it (a burst past the queue is dropped and logged, not
// blocked on), the broker still locks a key out after max_failures of its
// own, and the outage is logged once however many failures follow.
func TestLockoutShareOutage(t *testing.T) {
	t.Parallel()
	store, err := registry.NewStore(etcdtest.Client(t, []string{testutil.FreeAddr(t)}), "lone",
		registry.WithCallTimeout(200*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	var out testutil.LockedBuffer
	s, l := newShare(store, "lone", 3, clock.Real{}, hclog.New(&hclog.LoggerOptions{Output: &out, Level: hclog.Info}))
	// A burst with nothing sharing yet: twice the queue; the calls return
	// (nothing waits), the excess is dropped, logged once for the burst.
	for i := range 2 * shareQueue {
		l.Failure("", fmt.Sprintf("u%d", i), "")
	}
	if n := strings.Count(out.String(), "too many at once"); n != 1 || len(s.queue) != shareQueue {
		t.Fatalf("a burst of %d: drop logged %d times, %d queued; want once, %d:\n%s", 2*shareQueue, n, len(s.queue), shareQueue, out.String())
	}
	runShare(t, s)
	for range 3 {
		l.Failure("", "mal", "")
	}
	if err := l.Check("", "mal", ""); !errors.Is(err, auth.ErrLocked) {
		t.Fatalf("after 3 failures here with the registry out of reach: %v; want locked", err)
	}
	testutil.WaitFor(t, time.Minute, "the outage logged and the queue drained", func() bool {
		return strings.Contains(out.String(), "registry out of reach") && len(s.queue) == 0
	})
	log := out.String()
	if n := strings.Count(log, "registry out of reach"); n != 1 {
		t.Fatalf("outage logged %d times; want once:\n%s", n, log)
	}
	// Counted: the burst's excess, and any of mal's that found the queue
	// still full.
	m := regexp.MustCompile(`dropped=(\d+)`).FindStringSubmatch(log)
	if len(m) != 2 {
		t.Fatalf("the number dropped was not logged:\n%s", log)
	}
	if n, _ := strconv.Atoi(m[1]); n < shareQueue {
		t.Fatalf("the number dropped was not logged (want at least %d):\n%s", shareQueue, log)
	}
}

// TestLockoutShareLongKeyIsNoOutage: a failure whose key the registry
// refuses (a login name longer than a lockout key may be, as a PAM
// prompt takes from a card login) is counted here only; it is not taken
// for a registry outage, which would stop the group counting every
// other key's failures for shareRetry (an attacker typing a long name
// every few seconds would have each broker count alone).
func TestLockoutShareLongKeyIsNoOutage(t *testing.T) {
	t.Parallel()
	store := newTestStore(t, etcdtest.Start(t), "a")
	var out testutil.LockedBuffer
	_, l := startShare(t, store, "a", 3, clock.Real{}, hclog.New(&hclog.LoggerOptions{Output: &out, Level: hclog.Info}))
	l.Failure("", strings.Repeat("x", 4096), "")
	l.Failure("", "zed", "")
	testutil.WaitFor(t, time.Minute, "zed's failure counted by the group after a long name's", func() bool {
		return groupCount(t, store, "user:zed") == 1
	})
	if strings.Contains(out.String(), "registry out of reach") {
		t.Fatalf("a long key taken for an outage:\n%s", out.String())
	}
}

// TestLockoutShareOutageKeepsResets: a success during a registry outage
// clears the group's count of the user's failures once the registry is
// back: left, the failures before the success would count on, and one
// failure after the outage would lock the user out.
func TestLockoutShareOutageKeepsResets(t *testing.T) {
	t.Parallel()
	clk := clock.NewFake(time.Unix(1_000_000, 0))
	storeA, proxy, direct := proxiedStore(t, clk)
	count := func(key string) int { return groupCount(t, direct, key) }
	var out testutil.LockedBuffer
	_, a := startShare(t, storeA, "a", 3, clk, hclog.New(&hclog.LoggerOptions{Output: &out, Level: hclog.Info}))
	a.Failure("", "yan", "")
	a.Failure("", "yan", "")
	testutil.WaitFor(t, time.Minute, "yan's failures counted", func() bool { return count("user:yan") == 2 })

	proxy.Blackhole()
	a.Success("", "yan")
	testutil.WaitFor(t, time.Minute, "the outage noticed", func() bool {
		return strings.Contains(out.String(), "registry out of reach")
	})
	proxy.CloseConns() // the clearing held by the partition is lost with it
	proxy.Heal()
	// Failures of others, each shareRetry after the last (an attempt
	// while the client reconnects is an outage again), bring the share
	// back to the registry.
	n := 0
	testutil.WaitFor(t, time.Minute, "yan's count cleared after the outage", func() bool {
		n++
		clk.Advance(shareRetry)
		a.Failure("", fmt.Sprintf("probe%d", n), "")
		return count("user:yan") == 0
	})
}

// TestLockoutShareRetriesOnItsClock: once the registry failed a count,
// the share counts here only until shareRetry has passed on its clock,
// then goes to the registry again, the clearing it missed first. Failures
// before that are not counted by the group, the first one after it is.
// The ops are shared one by one, in the test's goroutine, as run would.
func TestLockoutShareRetriesOnItsClock(t *testing.T) {
	t.Parallel()
	clk := clock.NewFake(time.Unix(1_000_000, 0))
	store, proxy, direct := proxiedStore(t, clk)
	count := func(key string) int { return groupCount(t, direct, key) }
	s, _ := newShare(store, "a", 3, clk, testutil.Logger(t, "a", hclog.Info))
	ctx := t.Context()

	s.share(ctx, shareOp{key: "user:yan"})
	s.share(ctx, shareOp{key: "user:yan"})
	if n := count("user:yan"); n != 2 {
		t.Fatalf("yan's group count = %d; want 2", n)
	}
	proxy.Blackhole()
	s.share(ctx, shareOp{key: "user:yan", reset: true})
	if !s.down {
		t.Fatal("a clearing the registry did not answer: the share is not down; want down")
	}
	healProxy(t, proxy, store)

	s.share(ctx, shareOp{key: "user:early"})
	clk.Advance(shareRetry - time.Millisecond)
	s.share(ctx, shareOp{key: "user:early"})
	if early, yan := count("user:early"), count("user:yan"); early != 0 || yan != 2 {
		t.Fatalf("before shareRetry: group counts early %d, yan %d; want 0 and 2 (counted here only)", early, yan)
	}
	clk.Advance(time.Millisecond)
	s.share(ctx, shareOp{key: "user:late"})
	if late, yan := count("user:late"), count("user:yan"); late != 1 || yan != 0 || s.down {
		t.Fatalf("at shareRetry: group counts late %d, yan %d, down %v; want 1, 0 (cleared), false", late, yan, s.down)
	}
}

// TestLockoutShareLockoutNotCrowdedOut: a lockout started while the
// queue is full of failures (a spray of user names) is still published:
// failures must not crowd lockouts out. The group's count that started
// it is consumed, so a lockout dropped would hold at this broker only,
// and every other broker would let the key's failures start over.
func TestLockoutShareLockoutNotCrowdedOut(t *testing.T) {
	t.Parallel()
	store := newTestStore(t, etcdtest.Start(t), "a")
	s, l := newShare(store, "a", 3, clock.Real{}, testutil.Logger(t, "a", hclog.Info))
	for i := range 2 * shareQueue {
		l.Failure("", fmt.Sprintf("u%d", i), "")
	}
	for range 3 {
		l.Failure("", "mal", "")
	}
	if err := l.Check("", "mal", ""); !errors.Is(err, auth.ErrLocked) {
		t.Fatalf("mal after 3 failures: %v; want locked", err)
	}
	runShare(t, s)
	testutil.WaitFor(t, time.Minute, "mal's lockout published", func() bool {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		los, err := store.Lockouts(ctx)
		if err != nil {
			t.Fatal(err)
		}
		return slices.ContainsFunc(los, func(lo registry.Lockout) bool { return lo.Key == "user:mal" })
	})
}

// TestLockoutShareLockoutConsumesQueuedFailures: the failures of a key
// still queued when its lockout is shared (lockouts have a queue of
// their own, and may go first) are not counted by the group after it:
// the lockout consumed them, and counted they would start the key's next
// count at the group, so one failure after the lockout could lock it
// out again. Ten keys, each locked out here with its failures queued.
func TestLockoutShareLockoutConsumesQueuedFailures(t *testing.T) {
	t.Parallel()
	store := newTestStore(t, etcdtest.Start(t), "a")
	s, l := newShare(store, "a", 3, clock.Real{}, testutil.Logger(t, "a", hclog.Info))
	const keys = 10
	for i := range keys {
		for range 3 {
			l.Failure("", fmt.Sprintf("mal%d", i), "")
		}
	}
	l.Failure("", "last", "") // queued after every failure of the mal*
	runShare(t, s)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	testutil.WaitFor(t, time.Minute, "every lockout published and the last failure counted", func() bool {
		los, err := store.Lockouts(ctx)
		if err != nil {
			t.Fatal(err)
		}
		fs, err := store.FailureCounts(ctx)
		if err != nil {
			t.Fatal(err)
		}
		return len(los) == keys && slices.ContainsFunc(fs, func(f registry.Failures) bool { return f.Key == "user:last" })
	})
	fs, err := store.FailureCounts(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(fs) != 1 {
		t.Fatalf("counts after the lockouts: %+v; want user:last's only", fs)
	}
}

// groupCount is the group's failure count of key, as store lists it.
func groupCount(t *testing.T, store *registry.Store, key string) int {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	fs, err := store.FailureCounts(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if i := slices.IndexFunc(fs, func(f registry.Failures) bool { return f.Key == key }); i >= 0 {
		return fs[i].Count
	}
	return 0
}

// proxiedStore starts an etcd and returns a store of server a that
// reaches it through proxy (its calls time out after 500 ms, on clk), and
// a store of server b that reaches it directly.
func proxiedStore(t *testing.T, clk *clock.Fake) (store *registry.Store, proxy *etcdtest.Proxy, direct *registry.Store) {
	t.Helper()
	eps := etcdtest.Start(t)
	proxy = etcdtest.NewProxy(t, eps[0])
	store, err := registry.NewStore(etcdtest.Client(t, []string{proxy.URL()}), "a",
		registry.WithCallTimeout(500*time.Millisecond), registry.WithClock(clk))
	if err != nil {
		t.Fatal(err)
	}
	return store, proxy, newTestStore(t, eps, "b")
}

// healProxy ends proxy's partition, its connections with it, and waits
// until store reaches the registry again.
func healProxy(t *testing.T, proxy *etcdtest.Proxy, store *registry.Store) {
	t.Helper()
	proxy.CloseConns()
	proxy.Heal()
	testutil.WaitFor(t, time.Minute, "the registry reachable again", func() bool {
		_, err := store.FailureCounts(t.Context())
		return err == nil
	})
}

// newTestStore is a registry store of server id on the etcd at eps.
func newTestStore(t *testing.T, eps []string, id string) *registry.Store {
	t.Helper()
	s, err := registry.NewStore(etcdtest.Client(t, eps), id)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// TestLockoutShareRetriesLockouts: a lockout started while the registry
// is out of reach is published once it is back (its group count may be
// consumed already: unshared, it would hold at this broker only), on the
// share's clock; a lockout over before the registry came back is not.
func TestLockoutShareRetriesLockouts(t *testing.T) {
	t.Parallel()
	clk := clock.NewFake(time.Now())
	store, proxy, direct := proxiedStore(t, clk)
	s, _ := newShare(store, "a", 3, clk, testutil.Logger(t, "a", hclog.Info))
	runShare(t, s)
	proxy.Blackhole()
	s.started(auth.Lockout{Key: "user:mal", Until: clk.Now().Add(time.Hour), Level: 1})
	s.started(auth.Lockout{Key: "user:brief", Until: clk.Now().Add(shareRetry / 2), Level: 1})
	testutil.WaitFor(t, time.Minute, "the retry armed", func() bool { return clk.Pending() > 0 })
	healProxy(t, proxy, store)
	lockouts := func() []string {
		t.Helper()
		los, err := direct.Lockouts(t.Context())
		if err != nil {
			t.Fatal(err)
		}
		var keys []string
		for _, lo := range los {
			keys = append(keys, lo.Key)
		}
		return keys
	}
	if keys := lockouts(); len(keys) != 0 {
		t.Fatalf("lockouts before the retry: %q; want none (the registry was out of reach)", keys)
	}
	clk.Advance(shareRetry)
	testutil.WaitFor(t, time.Minute, "mal's lockout published", func() bool { return len(lockouts()) > 0 })
	if keys := lockouts(); !slices.Equal(keys, []string{"user:mal"}) {
		t.Fatalf("lockouts after the retry: %q; want user:mal only (brief's was over)", keys)
	}
	testutil.WaitFor(t, time.Minute, "no retry armed once every lockout is shared", func() bool { return clk.Pending() == 0 })
}

// TestLockoutShareOutageCountsLater: failures a broker counted alone
// while the registry was out of reach are added to the group's count once
// it is back, by the retry timer on the share's clock (no other login
// comes to carry them): two failures at a during its outage and one at b
// after it lock the user out at both with max_failures 3. Before, the
// group's count started from nothing after the outage, and a guesser had
// max_failures again at every broker. Failures a success at a ended
// (before the registry was back) are not added.
func TestLockoutShareOutageCountsLater(t *testing.T) {
	t.Parallel()
	clk := clock.NewFake(time.Now())
	storeA, proxy, direct := proxiedStore(t, clk)
	count := func(key string) int { return groupCount(t, direct, key) }
	var out testutil.LockedBuffer
	_, a := startShare(t, storeA, "a", 3, clk, hclog.New(&hclog.LoggerOptions{Output: &out, Level: hclog.Info}))
	_, b := startShare(t, direct, "b", 3, clk, testutil.Logger(t, "b", hclog.Info))

	proxy.Blackhole()
	a.Failure("", "mal", "")
	testutil.WaitFor(t, time.Minute, "the outage noticed", func() bool {
		return strings.Contains(out.String(), "registry out of reach")
	})
	a.Failure("", "mal", "")
	a.Failure("", "yan", "")
	a.Success("", "yan")
	if err := a.Check("", "mal", ""); err != nil {
		t.Fatalf("mal at a after two failures: %v; want nil", err)
	}
	healProxy(t, proxy, storeA)
	if n := count("user:mal"); n != 0 {
		t.Fatalf("mal's group count before the retry = %d; want 0", n)
	}
	// The share's queue has drained (the outage was noticed, the next
	// failures counted here at once): only the timer can carry them.
	testutil.WaitFor(t, time.Minute, "mal's failures added to the group's count", func() bool {
		clk.Advance(shareRetry)
		return count("user:mal") == 2
	})
	testutil.WaitFor(t, time.Minute, "the share back", func() bool {
		return strings.Contains(out.String(), "failed logins counted by the group again")
	})
	if n := count("user:yan"); n != 0 {
		t.Errorf("yan's group count = %d; want 0 (a success ended the failure here)", n)
	}
	b.Failure("", "mal", "")
	for name, l := range map[string]*auth.Limiter{"a": a, "b": b} {
		testutil.WaitFor(t, time.Minute, "mal locked out at "+name, func() bool {
			return errors.Is(l.Check("", "mal", ""), auth.ErrLocked)
		})
	}
}

// TestLockoutShareReplayInBatches: a backlog of failures counted alone
// (a spray of user names during an outage) is added to the group's counts
// replayBatch at a time, each retry going on where the last stopped: one
// round for all would overrun the call's bound and pass for an outage
// again. The ops are shared one by one, in the test's goroutine.
func TestLockoutShareReplayInBatches(t *testing.T) {
	t.Parallel()
	clk := clock.NewFake(time.Unix(1_000_000, 0))
	store, proxy, direct := proxiedStore(t, clk)
	s, _ := newShare(store, "a", 3, clk, testutil.Logger(t, "a", hclog.Info))
	ctx := t.Context()
	const n = replayBatch + replayBatch/2
	proxy.Blackhole()
	for i := range n {
		s.share(ctx, shareOp{key: fmt.Sprintf("user:u%d", i)})
	}
	if !s.down || len(s.missed) != n {
		t.Fatalf("during the outage: down %v, %d keys missed; want down, %d", s.down, len(s.missed), n)
	}
	healProxy(t, proxy, store)
	counted := func() int {
		fs, err := direct.FailureCounts(ctx)
		if err != nil {
			t.Fatal(err)
		}
		return len(fs)
	}
	clk.Advance(shareRetry)
	s.retryCounts(ctx)
	if c := counted(); c != replayBatch || s.down || s.retryArm == nil {
		t.Fatalf("after the first retry: %d keys counted by the group, down %v, retry armed %v; want %d, false, true", c, s.down, s.retryArm != nil, replayBatch)
	}
	s.retryArm = nil // as run does when it fires
	s.retryCounts(ctx)
	if c := counted(); c != n || len(s.missed) != 0 {
		t.Fatalf("after the second retry: %d keys counted by the group, %d missed; want %d, 0", c, len(s.missed), n)
	}
}

// denyAll is an authenticator that refuses every attempt as a wrong secret.
type denyAll struct{}

func (denyAll) Authenticate(context.Context, auth.Request, auth.Conversation) (auth.Result, error) {
	return auth.Result{}, auth.ErrDenied
}

// TestLockoutShareSourceLimit: a source key ("source:…") is counted by the
// group against its own limit (four times max_failures), not
// max_failures: eight failures from one address under new terminal ids,
// alternated between two brokers, lock the source out at both, where
// neither saw more than four.
func TestLockoutShareSourceLimit(t *testing.T) {
	t.Parallel()
	eps := etcdtest.Start(t)
	storeA := newTestStore(t, eps, "a")
	_, a := startShare(t, storeA, "a", 2, clock.Real{}, testutil.Logger(t, "a", hclog.Info))
	_, b := startShare(t, newTestStore(t, eps, "b"), "b", 2, clock.Real{}, testutil.Logger(t, "b", hclog.Info))
	const key = "source:192.0.2.9"
	for i := range 8 {
		l := a
		if i%2 == 1 {
			l = b
		}
		req := auth.Request{Token: fmt.Sprintf("uid.%02x", i), TerminalID: fmt.Sprintf("t%d", i), RemoteAddr: "192.0.2.9:4000"}
		if _, err := l.Guard(denyAll{}).Authenticate(t.Context(), req, nil); !errors.Is(err, auth.ErrDenied) {
			t.Fatalf("failure %d: err = %v; want denied", i, err)
		}
		if i < 7 {
			testutil.WaitFor(t, time.Minute, fmt.Sprintf("failure %d of the source counted", i), func() bool { return groupCount(t, storeA, key) == i+1 })
		}
	}
	for name, l := range map[string]*auth.Limiter{"a": a, "b": b} {
		testutil.WaitFor(t, time.Minute, "the source locked out at "+name, func() bool { return l.Locked(key) })
	}
}

// TestLockoutShareRetryAfterClear: a lockout started while the registry
// was out of reach, then cleared by an administrator elsewhere, is not
// published when the registry is back, however long after (two minutes
// here, by the clocks: a clearing used to expire after one, and the
// retry locked the user out again): the registry refuses it and the
// share drops it, nothing left to retry. The clearing, heard then (and
// heard again on a re-list), clears the lockout here; a lockout started
// here after the clearing is kept by it, and by its own record heard
// back (which carries the clearing's time), and published. The ops are
// shared one by one, in the test's goroutine, as run would.
func TestLockoutShareRetryAfterClear(t *testing.T) {
	t.Parallel()
	clk := clock.NewFake(time.Now())
	eps := etcdtest.Start(t)
	proxy := etcdtest.NewProxy(t, eps[0])
	store, err := registry.NewStore(etcdtest.Client(t, []string{proxy.URL()}), "a",
		registry.WithCallTimeout(500*time.Millisecond), registry.WithClock(clk), registry.WithMaxLockout(time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	admin, err := registry.NewStore(etcdtest.Client(t, eps), "b", registry.WithClock(clk), registry.WithMaxLockout(time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	s, l := newShare(store, "a", 3, clk, testutil.Logger(t, "a", hclog.Info))
	ctx := t.Context()
	shareLockout := func() {
		t.Helper()
		select {
		case op := <-s.locks:
			s.share(ctx, op)
		default:
			t.Fatal("no lockout queued")
		}
	}
	groupLockouts := func() []registry.Lockout {
		t.Helper()
		los, err := admin.Lockouts(ctx)
		if err != nil {
			t.Fatal(err)
		}
		return los
	}

	proxy.Blackhole()
	for range 3 {
		l.Failure("", "mal", "")
	}
	shareLockout()
	if _, ok := s.unshared["user:mal"]; !ok {
		t.Fatal("mal's lockout, the registry out of reach: not kept for a retry")
	}
	// At b, the group's count of mal's failures (b's own) and an
	// administrator's clearing of it, a minute on.
	if _, err := admin.CountFailure(ctx, "user:mal", time.Hour, 5); err != nil {
		t.Fatal(err)
	}
	clk.Advance(time.Minute)
	if err := admin.ClearLockout(ctx, "user:mal"); err != nil {
		t.Fatal(err)
	}
	clk.Advance(2 * time.Minute)
	healProxy(t, proxy, store)
	s.retryLockouts(ctx)
	if los := groupLockouts(); len(los) != 0 {
		t.Fatalf("lockouts after the retry: %+v; want none (cleared after mal's started)", los)
	}
	if len(s.unshared) != 0 {
		t.Fatalf("lockouts kept for a retry: %+v; want none", s.unshared)
	}

	// The clearing, as the watch lists it.
	wctx, cancel := context.WithCancel(ctx)
	clearing := testutil.Recv(t, admin.WatchLockouts(wctx), time.Minute, "the clearing")
	cancel()
	if !clearing.Cleared || clearing.Key != "user:mal" {
		t.Fatalf("listed %+v; want mal's clearing", clearing)
	}
	s.cleared(clearing)
	if l.Locked("user:mal") {
		t.Fatal("mal locked out here after the clearing was heard; want cleared")
	}

	// A lockout after the clearing: heard again, the clearing keeps it,
	// and the registry takes it.
	clk.Advance(time.Minute)
	for range 3 {
		l.Failure("", "mal", "")
	}
	s.cleared(clearing)
	if !l.Locked("user:mal") {
		t.Fatal("mal's lockout started after the clearing: cleared by the clearing heard again; want locked")
	}
	shareLockout()
	los := groupLockouts()
	if len(los) != 1 || los[0].Key != "user:mal" || los[0].Server != "a" || los[0].ClearedUnixMs != clearing.ClearedUnixMs {
		t.Fatalf("lockouts after one started after the clearing: %+v; want a's of user:mal, carrying the clearing", los)
	}
	// Heard back (a re-list), it keeps the lockout here too.
	s.cleared(los[0])
	if !l.Locked("user:mal") {
		t.Fatal("mal's lockout started after the clearing: cleared by its own record heard back; want locked")
	}
}
