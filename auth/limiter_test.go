package auth_test

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"

	"github.com/hotdesk/hotdesk/auth"
	"github.com/hotdesk/hotdesk/internal/clock"
)

func newLimiter(cfg auth.LimiterConfig) (*auth.Limiter, *clock.Fake) {
	clk := clock.NewFake(time.Unix(1_000_000, 0))
	cfg.Clock = clk
	return auth.NewLimiter(cfg), clk
}

func TestLimiterBackoff(t *testing.T) {
	l, clk := newLimiter(auth.LimiterConfig{MaxFailures: 2, Window: time.Hour, BaseLockout: 10 * time.Second, MaxLockout: 35 * time.Second})
	for _, lockout := range []time.Duration{10 * time.Second, 20 * time.Second, 35 * time.Second, 35 * time.Second} {
		l.Failure("", "alice", "")
		checkAllowed(t, l, "after one failure", "", "alice", "")
		l.Failure("", "alice", "")
		if err := l.Check("", "alice", ""); !errors.Is(err, auth.ErrLocked) || !errors.Is(err, auth.ErrDenied) {
			t.Fatalf("after two failures: err = %v; want %v", err, auth.ErrLocked)
		}
		clk.Advance(lockout - time.Second)
		checkLocked(t, l, fmt.Sprintf("1s before the end of a %s lockout", lockout), "", "alice", "")
		clk.Advance(time.Second)
		checkAllowed(t, l, fmt.Sprintf("at the end of a %s lockout", lockout), "", "alice", "")
	}
}

func TestLimiterWindowAndKeys(t *testing.T) {
	tests := []struct {
		name    string
		fail    func(l *auth.Limiter, clk *clock.Fake)
		token   string
		user    string
		term    string
		wantErr error
	}{
		{"failures spread beyond the window", func(l *auth.Limiter, clk *clock.Fake) {
			for range 5 {
				l.Failure("tok", "alice", "t1")
				clk.Advance(11 * time.Minute)
			}
		}, "tok", "alice", "t1", nil},
		{"token locked, other user and terminal", func(l *auth.Limiter, _ *clock.Fake) {
			for range 3 {
				l.Failure("tok", "alice", "t1")
			}
		}, "tok", "bob", "t2", auth.ErrLocked},
		{"terminal locked", func(l *auth.Limiter, _ *clock.Fake) {
			for i := range 3 {
				l.Failure(fmt.Sprint("tok", i), fmt.Sprint("user", i), "t1")
			}
		}, "tokX", "bob", "t1", auth.ErrLocked},
		{"success clears token and user", func(l *auth.Limiter, _ *clock.Fake) {
			for range 2 {
				l.Failure("tok", "alice", "t1")
			}
			l.Success("tok", "alice")
			l.Failure("tok", "alice", "t2")
		}, "tok", "alice", "t3", nil},
		{"success keeps the terminal count", func(l *auth.Limiter, _ *clock.Fake) {
			for range 2 {
				l.Failure("tok", "alice", "t1")
			}
			l.Success("tok", "alice")
			l.Failure("tok2", "bob", "t1")
		}, "tok3", "carol", "t1", auth.ErrLocked},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			l, clk := newLimiter(auth.LimiterConfig{MaxFailures: 3, Window: 10 * time.Minute})
			tt.fail(l, clk)
			err := l.Check(tt.token, tt.user, tt.term)
			if !errors.Is(err, tt.wantErr) || (tt.wantErr == nil && err != nil) {
				t.Errorf("err = %v; want %v", err, tt.wantErr)
			}
		})
	}
}

func TestLimiterBounded(t *testing.T) {
	l, _ := newLimiter(auth.LimiterConfig{MaxKeys: 8})
	for i := range 1000 {
		l.Failure(fmt.Sprint("tok", i), fmt.Sprint("user", i), fmt.Sprint("term", i))
	}
	if got := l.Len(); got != 8 {
		t.Errorf("keys = %d; want 8", got)
	}
}

// TestLimiterForgetsQuietKeys: a key whose last failure (and lockout) is
// older than the window is forgotten, as LimiterConfig.Window says, not
// kept until MaxKeys others push it out: every mistyped user name and
// every terminal id that ever failed once stayed in memory before (the
// soak test, TestSoak, saw the limiter grow by two keys per failed login).
// A lockout in force, and the back-off of a key failing again within the
// window, are kept.
func TestLimiterForgetsQuietKeys(t *testing.T) {
	l, clk := newLimiter(auth.LimiterConfig{MaxFailures: 2, Window: time.Minute, BaseLockout: 10 * time.Second, MaxLockout: 5 * time.Minute})
	for i := range 100 {
		l.Failure(fmt.Sprint("tok", i), fmt.Sprint("user", i), fmt.Sprint("term", i))
	}
	if got := l.Len(); got != 300 {
		t.Fatalf("keys = %d; want 300", got)
	}
	clk.Advance(30 * time.Second)
	l.Failure("", "bob", "")
	l.Failure("", "bob", "") // locked out for 10 s, level 1
	clk.Advance(31 * time.Second)
	// The 300 failed more than a window ago; bob's lockout started
	// within the window.
	checkAllowed(t, l, "carl", "", "carl", "")
	if got := l.Len(); got != 1 {
		t.Errorf("keys a window after 300 failed once = %d; want 1 (bob)", got)
	}
	// bob fails again within the window of his lockout: backed off.
	l.Failure("", "bob", "")
	l.Failure("", "bob", "")
	var lo *auth.LockoutError
	if err := l.Check("", "bob", ""); !errors.As(err, &lo) || lo.Remaining != 20*time.Second {
		t.Fatalf("bob's second lockout: err = %v; want 20s left", err)
	}
	// Quiet for a window after it: forgotten, and starts over.
	clk.Advance(61 * time.Second)
	l.Failure("", "dora", "")
	if got := l.Len(); got != 1 {
		t.Errorf("keys = %d; want 1 (dora)", got)
	}
	l.Failure("", "bob", "")
	l.Failure("", "bob", "")
	if err := l.Check("", "bob", ""); !errors.As(err, &lo) || lo.Remaining != 10*time.Second {
		t.Fatalf("bob a window after his last lockout: err = %v; want 10s left (started over)", err)
	}
}

// fakeAuth is an Authenticator with a scripted outcome.
type fakeAuth struct {
	res   auth.Result
	err   error
	calls int
}

func (f *fakeAuth) Authenticate(ctx context.Context, req auth.Request, conv auth.Conversation) (auth.Result, error) {
	f.calls++
	return f.res, f.err
}

type fakeSession struct{ closed int }

func (s *fakeSession) Close(context.Context) error { s.closed++; return nil }

// TestGuardNoSecretKeepsUserFailures: a grant that asked no secret (the
// owner's card tapped, a kiosk) clears its token's failures but not the
// user's: failed guesses at alice's password from other terminals (under
// spellings of her name a case-insensitive directory takes for one, each
// a password login's token of its own) still add up to a lockout however
// often alice taps her card; a login that checked her password does clear
// them.
func TestGuardNoSecretKeepsUserFailures(t *testing.T) {
	l, _ := newLimiter(auth.LimiterConfig{MaxFailures: 3, SourceMaxFailures: 100})
	guess := func(i int) error {
		name := []string{"alice", "Alice", "ALICE"}[i]
		req := auth.Request{Token: "user." + name, User: name, TerminalID: fmt.Sprintf("t%d", i), RemoteAddr: fmt.Sprintf("192.0.2.%d:1", i)}
		_, err := l.Guard(&fakeAuth{err: auth.ErrDenied}).Authenticate(t.Context(), req, nil)
		return err
	}
	tap := auth.Request{Token: "uid.0a", User: "alice", TerminalID: "desk", RemoteAddr: "192.0.2.200:1", Existing: true}
	card := &fakeAuth{res: auth.Result{User: "alice", NoSecret: true}}
	for i := range 2 {
		if err := guess(i); !errors.Is(err, auth.ErrDenied) || errors.Is(err, auth.ErrLocked) {
			t.Fatalf("guess %d: %v; want denied, not locked", i, err)
		}
		if _, err := l.Guard(card).Authenticate(t.Context(), tap, nil); err != nil {
			t.Fatalf("alice's card after guess %d: %v", i, err)
		}
	}
	var lo *auth.LockoutError
	if err := guess(2); !errors.As(err, &lo) || lo.Kind != "user" {
		t.Fatalf("third guess between card taps: %v; want the user locked out", err)
	}

	l, _ = newLimiter(auth.LimiterConfig{MaxFailures: 3, SourceMaxFailures: 100})
	password := &fakeAuth{res: auth.Result{User: "alice"}}
	for i := range 2 {
		guess(i)
	}
	if _, err := l.Guard(password).Authenticate(t.Context(), auth.Request{Token: "user.alice", User: "alice", TerminalID: "desk", RemoteAddr: "192.0.2.200:1"}, nil); err != nil {
		t.Fatalf("alice's password: %v", err)
	}
	if err := guess(2); errors.Is(err, auth.ErrLocked) {
		t.Errorf("a guess after alice's password login: %v; want her failures cleared", err)
	}
}

func TestGuard(t *testing.T) {
	var logs strings.Builder
	l, _ := newLimiter(auth.LimiterConfig{MaxFailures: 2, Logger: hclog.New(&hclog.LoggerOptions{Output: &logs})})
	req := auth.Request{Token: "uid.01", TerminalID: "t1", RemoteAddr: "192.0.2.1:1"}
	sess := &fakeSession{}

	steps := []struct {
		name      string
		next      *fakeAuth
		wantErr   error
		wantCalls int
		wantLog   string
	}{
		{"aborted is not counted", &fakeAuth{err: context.Canceled}, context.Canceled, 1, "outcome=aborted"},
		{"denied learns the user", &fakeAuth{res: auth.Result{User: "eve"}, err: auth.ErrDenied}, auth.ErrDenied, 1, "user=eve terminal=t1 rhost=192.0.2.1:1 outcome=denied"},
		{"denied again locks", &fakeAuth{res: auth.Result{User: "eve"}, err: auth.ErrDenied}, auth.ErrDenied, 1, "outcome=denied"},
		{"locked before running", &fakeAuth{}, auth.ErrLocked, 0, "outcome=locked"},
	}
	for _, s := range steps {
		_, err := l.Guard(s.next).Authenticate(t.Context(), req, nil)
		if !errors.Is(err, s.wantErr) {
			t.Errorf("%s: err = %v; want %v", s.name, err, s.wantErr)
		}
		if s.next.calls != s.wantCalls {
			t.Errorf("%s: calls = %d; want %d", s.name, s.next.calls, s.wantCalls)
		}
		if !strings.Contains(logs.String(), s.wantLog) {
			t.Errorf("%s: log %q lacks %q", s.name, logs.String(), s.wantLog)
		}
	}
	// A user learned during authentication is checked afterwards: eve is
	// locked, so her success from another token and terminal is refused and
	// the opened session closed.
	other := auth.Request{Token: "uid.02", TerminalID: "t2"}
	next := &fakeAuth{res: auth.Result{User: "eve", Session: sess}}
	if _, err := l.Guard(next).Authenticate(t.Context(), other, nil); !errors.Is(err, auth.ErrLocked) {
		t.Errorf("learned locked user: err = %v; want %v", err, auth.ErrLocked)
	}
	if sess.closed != 1 {
		t.Errorf("session closed %d times; want 1", sess.closed)
	}
	next = &fakeAuth{res: auth.Result{User: "mallory"}}
	if res, err := l.Guard(next).Authenticate(t.Context(), other, nil); err != nil || res.User != "mallory" {
		t.Errorf("other user: user, err = %q, %v; want mallory, nil", res.User, err)
	}
	if !strings.Contains(logs.String(), "user=mallory terminal=t2 rhost=\"\" outcome=granted") {
		t.Errorf("log %q lacks the grant", logs.String())
	}
}

// TestGuardTerminalIsPerAddress: failures sent under another terminal's id
// from another address lock the sender's key, not the named terminal's.
func TestGuardTerminalIsPerAddress(t *testing.T) {
	l := auth.NewLimiter(auth.LimiterConfig{MaxFailures: 2, Clock: clock.NewFake(time.Unix(1000, 0))})
	for i := range 2 {
		spoof := auth.Request{Token: fmt.Sprintf("uid.%02x", i), TerminalID: "kiosk-1", RemoteAddr: "192.0.2.66:4000"}
		if _, err := l.Guard(&fakeAuth{err: auth.ErrDenied}).Authenticate(t.Context(), spoof, nil); !errors.Is(err, auth.ErrDenied) {
			t.Fatalf("failure %d: err = %v; want denied", i, err)
		}
	}
	real := auth.Request{Token: "uid.aa", User: "alice", TerminalID: "kiosk-1", RemoteAddr: "192.0.2.10:5000"}
	if _, err := l.Guard(&fakeAuth{res: auth.Result{User: "alice"}}).Authenticate(t.Context(), real, nil); err != nil {
		t.Fatalf("the real kiosk-1 after another address failed under its id: %v; want granted", err)
	}
	again := auth.Request{Token: "uid.bb", TerminalID: "kiosk-1", RemoteAddr: "192.0.2.66:4001"}
	if _, err := l.Guard(&fakeAuth{}).Authenticate(t.Context(), again, nil); !errors.Is(err, auth.ErrLocked) {
		t.Fatalf("the failing address again: err = %v; want locked", err)
	}
}

// TestGuardSaysLockoutStarted: the failed attempt that locks its keys out
// says so and for how long (a LockoutError with Started), while it stays a
// denial, not a locked-out refusal: the person learns of the lockout on
// the attempt that caused it. The next attempt is refused as locked.
func TestGuardSaysLockoutStarted(t *testing.T) {
	l, _ := newLimiter(auth.LimiterConfig{MaxFailures: 2, BaseLockout: 30 * time.Second})
	req := auth.Request{Token: "uid.01", User: "eve", TerminalID: "t1", RemoteAddr: "192.0.2.1:1"}
	deny := &fakeAuth{err: auth.ErrDenied}
	_, err := l.Guard(deny).Authenticate(t.Context(), req, nil)
	var lo *auth.LockoutError
	if errors.As(err, &lo) {
		t.Fatalf("first failure: %v; want no lockout yet", err)
	}
	_, err = l.Guard(deny).Authenticate(t.Context(), req, nil)
	if !errors.As(err, &lo) || !lo.Started || lo.Remaining != 30*time.Second {
		t.Fatalf("second failure: %v; want a started lockout of 30s", err)
	}
	if !errors.Is(err, auth.ErrDenied) || errors.Is(err, auth.ErrLocked) {
		t.Fatalf("second failure: %v; want a denial, not a locked-out refusal", err)
	}
	_, err = l.Guard(deny).Authenticate(t.Context(), req, nil)
	if !errors.As(err, &lo) || lo.Started || !errors.Is(err, auth.ErrLocked) {
		t.Fatalf("third attempt: %v; want refused as locked out", err)
	}
}

// ticking is a clock whose every reading is a millisecond after the one
// before: time passing between two steps, as on a loaded machine.
type ticking struct{ *clock.Fake }

func (c ticking) Now() time.Time {
	c.Advance(time.Millisecond)
	return c.Fake.Now()
}

// TestGuardSaysWholeLockout: the lockout a failure started is told whole,
// however long the failure took to count (it said 3599999 ms of an hour
// under -race on a loaded machine: the time left was read after).
func TestGuardSaysWholeLockout(t *testing.T) {
	l := auth.NewLimiter(auth.LimiterConfig{MaxFailures: 1, BaseLockout: time.Hour, Clock: ticking{clock.NewFake(time.Unix(1e9, 0))}})
	req := auth.Request{Token: "uid.01", User: "eve", TerminalID: "t1", RemoteAddr: "192.0.2.1:1"}
	_, err := l.Guard(&fakeAuth{err: auth.ErrDenied}).Authenticate(t.Context(), req, nil)
	var lo *auth.LockoutError
	if !errors.As(err, &lo) || !lo.Started || lo.Remaining != time.Hour {
		t.Fatalf("the failure: %v (%+v); want a started lockout of 1h", err, lo)
	}
}

// TestLimiterShared: a lockout that failures start is reported through
// OnLockout (once per locked key, with its end and level); another
// member's limiter that Applies it refuses the key until then, backs off
// from its level on its own next lockout, and bounds a far-future end by
// MaxLockout. An ended lockout applies nothing.
func TestLimiterShared(t *testing.T) {
	var started []auth.Lockout
	a, clkA := newLimiter(auth.LimiterConfig{MaxFailures: 2, BaseLockout: 10 * time.Second, MaxLockout: time.Minute,
		OnLockout: func(lo auth.Lockout) { started = append(started, lo) }})
	a.Failure("tok", "alice", "")
	if len(started) != 0 {
		t.Fatalf("lockouts after one failure: %+v; want none", started)
	}
	a.Failure("tok", "alice", "")
	want := clkA.Now().Add(10 * time.Second)
	if len(started) != 2 || started[0].Key != "token:tok" || started[1].Key != "user:alice" ||
		!started[0].Until.Equal(want) || started[0].Level != 1 {
		t.Fatalf("lockouts = %+v; want token:tok and user:alice until %v at level 1", started, want)
	}

	b, clkB := newLimiter(auth.LimiterConfig{MaxFailures: 2, BaseLockout: 10 * time.Second, MaxLockout: time.Minute})
	for _, lo := range started {
		if !b.Apply(lo) {
			t.Fatalf("Apply(%+v) = false; want true (in force)", lo)
		}
	}
	checkLocked(t, b, "user locked out elsewhere", "", "alice", "")
	checkAllowed(t, b, "another user", "", "bob", "t9")
	clkB.Advance(10 * time.Second)
	checkAllowed(t, b, "after the shared lockout", "tok", "alice", "")
	// The next lockout here is the group's second for alice: 20 s.
	b.Failure("", "alice", "")
	b.Failure("", "alice", "")
	clkB.Advance(15 * time.Second)
	checkLocked(t, b, "15 s into the second lockout (20 s)", "", "alice", "")

	// An administrator clears alice's lockout: refused no more, and her
	// next lockout starts from the base again (10 s, not 40 s).
	b.Clear("user:alice")
	checkAllowed(t, b, "after Clear", "", "alice", "")
	b.Failure("", "alice", "")
	b.Failure("", "alice", "")
	clkB.Advance(10 * time.Second)
	checkAllowed(t, b, "10 s into the first lockout after Clear (back-off reset)", "", "alice", "")

	c, clkC := newLimiter(auth.LimiterConfig{MaxLockout: time.Minute})
	c.Apply(auth.Lockout{Key: "user:carol", Until: clkC.Now().Add(24 * time.Hour), Level: 3})
	clkC.Advance(time.Minute)
	if err := c.Check("", "carol", ""); err != nil {
		t.Fatalf("a day-long lockout from a skewed clock: still locked after MaxLockout (%v)", err)
	}
	if c.Apply(auth.Lockout{Key: "user:dave", Until: clkC.Now().Add(-time.Second)}) {
		t.Error("Apply of an ended lockout = true; want false")
	}
	if err := c.Check("", "dave", ""); err != nil || c.Len() != 1 {
		t.Fatalf("an ended lockout: err = %v, %d keys; want nil and only carol tracked", err, c.Len())
	}
}

// TestGuardTerminalKeyUnmapsIPv4: a terminal's failures count under one
// key whether its address arrives as IPv4 or IPv4-mapped IPv6 (a dual-stack
// listener gives ::ffff:a.b.c.d): the terminal key is the peer's address,
// netsrc.Host, as the gate's own per-terminal count has it.
func TestGuardTerminalKeyUnmapsIPv4(t *testing.T) {
	l := auth.NewLimiter(auth.LimiterConfig{MaxFailures: 2, Clock: clock.NewFake(time.Unix(1000, 0))})
	for i, addr := range []string{"192.0.2.66:4000", "[::ffff:192.0.2.66]:4001"} {
		req := auth.Request{Token: fmt.Sprintf("uid.%02x", i), TerminalID: "kiosk-1", RemoteAddr: addr}
		if _, err := l.Guard(&fakeAuth{err: auth.ErrDenied}).Authenticate(t.Context(), req, nil); !errors.Is(err, auth.ErrDenied) {
			t.Fatalf("failure %d from %s: err = %v; want denied", i, addr, err)
		}
	}
	for _, addr := range []string{"192.0.2.66:4002", "[::ffff:192.0.2.66]:4003"} {
		req := auth.Request{Token: "uid.cc", TerminalID: "kiosk-1", RemoteAddr: addr}
		if _, err := l.Guard(&fakeAuth{}).Authenticate(t.Context(), req, nil); !errors.Is(err, auth.ErrLocked) {
			t.Fatalf("kiosk-1 from %s after two failures from one address: err = %v; want locked", addr, err)
		}
	}
}

// TestLimiterGroupCounts: the hooks and Observe let a group count
// failures together. OnFailure reports every key a failure counted (not
// the one that started a lockout: that is OnLockout's); with a shared
// count fed back by Observe, failures alternated between two members
// lock the key out after MaxFailures in all, where each member alone
// would allow MaxFailures of its own. Observe of a count at MaxFailures
// starts one lockout (not another while it holds); a count under it is
// not added to the member's own (one failure after hearing of two is
// not three: a count heard late must not lock early). Apply forgets the
// key's failures (the lockout consumed them). Success reports the keys it
// cleared that had failures here or in the group's count (not one whose
// count ended, or whose window is over), and nothing after none. A count
// heard never evicts a key of the member's own.
func TestLimiterGroupCounts(t *testing.T) {
	group := map[string]int{}
	var failed, reset []string
	var started []auth.Lockout
	var a, b *auth.Limiter
	member := func(self **auth.Limiter) auth.LimiterConfig {
		return auth.LimiterConfig{MaxFailures: 3, Window: time.Minute, BaseLockout: 10 * time.Second,
			OnFailure: func(k string) {
				failed = append(failed, k)
				group[k]++
				(*self).Observe(k, group[k], time.Unix(1_000_000, 0))
			},
			OnReset:   func(k string) { reset = append(reset, k) },
			OnLockout: func(lo auth.Lockout) { started = append(started, lo); delete(group, lo.Key) },
		}
	}
	a, _ = newLimiter(member(&a))
	b, _ = newLimiter(member(&b))

	a.Failure("", "alice", "t1")
	if want := []string{"user:alice", "terminal:t1"}; fmt.Sprint(failed) != fmt.Sprint(want) {
		t.Fatalf("OnFailure keys %v; want %v", failed, want)
	}
	b.Failure("", "alice", "")
	checkAllowed(t, a, "after 2 failures in the group", "", "alice", "")
	a.Failure("", "alice", "")
	checkLocked(t, a, "after 3 failures in the group, 2 here", "", "alice", "")
	if len(started) != 1 || started[0].Key != "user:alice" || started[0].Level != 1 {
		t.Fatalf("lockouts %+v; want user:alice at level 1", started)
	}
	if group["user:alice"] != 0 {
		t.Fatalf("group count %d after the lockout; want 0 (consumed)", group["user:alice"])
	}
	// b learns of the lockout (Apply): its count is forgotten.
	b.Apply(started[0])
	failed, started = nil, nil

	// Observe alone: a count at the limit starts one lockout, not another.
	c, clk := newLimiter(auth.LimiterConfig{MaxFailures: 3, Window: time.Minute, BaseLockout: 10 * time.Second,
		OnLockout: func(lo auth.Lockout) { started = append(started, lo) },
		OnReset:   func(k string) { reset = append(reset, k) }})
	if c.Observe("user:bob", 2, clk.Now()) || c.Check("", "bob", "") != nil {
		t.Fatal("a group count under the limit locked bob out")
	}
	if !c.Observe("user:bob", 3, clk.Now()) || !errors.Is(c.Check("", "bob", ""), auth.ErrLocked) {
		t.Fatal("a group count at the limit did not lock bob out")
	}
	if c.Observe("user:bob", 4, clk.Now()) || len(started) != 1 {
		t.Fatalf("lockouts %+v after a second count during the lockout; want one", started)
	}
	// A count under the limit is not added to the member's own.
	c.Observe("user:eve", 2, clk.Now())
	c.Failure("", "eve", "")
	checkAllowed(t, c, "one failure here after hearing of two in the group", "", "eve", "")
	// Apply forgets failures: after the lockout, one failure is one.
	c.Failure("", "gina", "")
	c.Failure("", "gina", "")
	c.Apply(auth.Lockout{Key: "user:gina", Until: clk.Now().Add(time.Second), Level: 1})
	clk.Advance(time.Second)
	c.Failure("", "gina", "")
	checkAllowed(t, c, "one failure after a group lockout of gina ended", "", "gina", "")

	// Success: reported for keys with failures only.
	reset = nil
	c.Success("tokh", "hal")
	if len(reset) != 0 {
		t.Fatalf("OnReset %v after a success without failures; want none", reset)
	}
	c.Failure("tokh", "hal", "")
	c.Success("tokh", "hal")
	if want := []string{"token:tokh", "user:hal"}; fmt.Sprint(reset) != fmt.Sprint(want) {
		t.Fatalf("OnReset %v; want %v", reset, want)
	}
	reset = nil
	c.Observe("user:ivy", 1, clk.Now())                     // failures elsewhere only
	c.Observe("user:jo", 1, clk.Now())                      // ...
	c.Observe("user:jo", 0, time.Time{})                    // ...then cleared
	c.Observe("user:kim", 2, clk.Now().Add(-2*time.Minute)) // a window over
	for _, u := range []string{"ivy", "jo", "kim"} {
		c.Success("", u)
	}
	if want := []string{"user:ivy"}; fmt.Sprint(reset) != fmt.Sprint(want) {
		t.Fatalf("OnReset %v after successes with group counts; want %v", reset, want)
	}

	// Counts heard never evict a key of the member's own: full at one
	// key, lee's failure still counts after hearing of mo's.
	d, _ := newLimiter(auth.LimiterConfig{MaxFailures: 2, MaxKeys: 1})
	d.Failure("", "lee", "")
	d.Observe("user:mo", 1, time.Unix(1_000_000, 0))
	d.Failure("", "lee", "")
	if err := d.Check("", "lee", ""); !errors.Is(err, auth.ErrLocked) || d.Len() != 1 {
		t.Fatalf("lee after 2 failures and a count heard of mo: %v, %d keys; want locked, 1 key", err, d.Len())
	}
}

// TestLimiterLocked: Locked reports a key locked out here, by its own
// failures or by Apply, until the lockout ends.
func TestLimiterLocked(t *testing.T) {
	l, clk := newLimiter(auth.LimiterConfig{MaxFailures: 2, BaseLockout: 10 * time.Second})
	l.Failure("", "amy", "")
	if l.Locked("user:amy") || l.Locked("user:nobody") {
		t.Fatal("locked before any lockout")
	}
	l.Failure("", "amy", "")
	l.Apply(auth.Lockout{Key: "token:t1", Until: clk.Now().Add(5 * time.Second), Level: 1})
	if !l.Locked("user:amy") || !l.Locked("token:t1") {
		t.Fatal("not locked after a lockout here and one applied")
	}
	clk.Advance(10 * time.Second)
	if l.Locked("user:amy") || l.Locked("token:t1") {
		t.Fatal("still locked after the lockouts ended")
	}
}

// TestLimiterKeepsLockouts: the peer chooses keys (user names, token and
// terminal ids), so a flood of new keys must not end a lockout to make
// room: a key locked out stays locked, and keeps its back-off level,
// however many other keys fail once or are locked out in turn. When every
// place for lockouts is taken, a key reaching its limit is still refused
// (held with the keys without a lockout), and a key that never failed is
// never refused for lack of room.
func TestLimiterKeepsLockouts(t *testing.T) {
	l, clk := newLimiter(auth.LimiterConfig{MaxFailures: 2, MaxKeys: 4, BaseLockout: 10 * time.Second, MaxLockout: time.Minute})
	l.Failure("", "alice", "")
	l.Failure("", "alice", "")
	for i := range 100 {
		l.Failure(fmt.Sprint("tok", i), fmt.Sprint("user", i), fmt.Sprint("term", i))
	}
	checkLocked(t, l, "alice after 300 other keys failed once", "", "alice", "")
	// Fill the lockouts' places (alice holds one of 4).
	for _, u := range []string{"bob", "carl", "dora", "ed", "fay"} {
		l.Failure("", u, "")
		l.Failure("", u, "")
	}
	for _, u := range []string{"alice", "bob", "carl", "dora", "ed", "fay"} {
		if err := l.Check("", u, ""); !errors.Is(err, auth.ErrLocked) {
			t.Errorf("%s with every lockout place taken: err = %v; want locked", u, err)
		}
	}
	if err := l.Check("tok-new", "gus", "term-new"); err != nil {
		t.Errorf("gus, who never failed, with the limiter full: err = %v; want nil", err)
	}
	if n := l.Len(); n > 8 {
		t.Errorf("keys = %d; want at most 2 × MaxKeys = 8", n)
	}
	// alice's lockout ends; her back-off level survived the flood: her
	// next lockout is twice the first.
	clk.Advance(10 * time.Second)
	checkAllowed(t, l, "alice after her lockout", "", "alice", "")
	l.Failure("", "alice", "")
	l.Failure("", "alice", "")
	clk.Advance(19 * time.Second)
	var lo *auth.LockoutError
	if err := l.Check("", "alice", ""); !errors.As(err, &lo) || lo.Remaining != time.Second {
		t.Fatalf("alice 19s into her second lockout: err = %v; want 1s left of 20s", err)
	}
}

// TestGuardSourceKey: a terminal chooses its id, so failures are counted
// by source too (the peer's address; an IPv6 address's /64): a new id
// from the same source, or another address of the /64, does not start
// over. SourceMaxFailures is larger than MaxFailures (an office shares a
// /64), and another source is not affected.
func TestGuardSourceKey(t *testing.T) {
	l, _ := newLimiter(auth.LimiterConfig{MaxFailures: 2, SourceMaxFailures: 4})
	fail := func(i int, addr string) error {
		req := auth.Request{Token: fmt.Sprintf("uid.%02x", i), TerminalID: fmt.Sprintf("t%d", i), RemoteAddr: addr}
		_, err := l.Guard(&fakeAuth{err: auth.ErrDenied}).Authenticate(t.Context(), req, nil)
		return err
	}
	for i, addr := range []string{"192.0.2.7:1", "192.0.2.7:2", "192.0.2.7:3", "192.0.2.7:4"} {
		if err := fail(i, addr); !errors.Is(err, auth.ErrDenied) {
			t.Fatalf("failure %d from %s: err = %v; want denied", i, addr, err)
		}
	}
	for i, addr := range []string{"[2001:db8:1:2::a]:1", "[2001:db8:1:2::b]:1", "[2001:db8:1:2::c]:1", "[2001:db8:1:2::d]:1"} {
		if err := fail(10+i, addr); !errors.Is(err, auth.ErrDenied) {
			t.Fatalf("failure %d from %s: err = %v; want denied", i, addr, err)
		}
	}
	tests := []struct {
		addr string
		want error
	}{
		{"192.0.2.7:9", auth.ErrLocked},
		{"[::ffff:192.0.2.7]:9", auth.ErrLocked},
		{"[2001:db8:1:2:ffff::1]:9", auth.ErrLocked},
		{"192.0.2.8:9", nil},
		{"[2001:db8:1:3::a]:9", nil},
	}
	for _, tt := range tests {
		req := auth.Request{Token: "uid.ff", TerminalID: "t-new", RemoteAddr: tt.addr}
		var lo *auth.LockoutError
		_, err := l.Guard(&fakeAuth{}).Authenticate(t.Context(), req, nil)
		if !errors.Is(err, tt.want) || tt.want != nil && (!errors.As(err, &lo) || lo.Kind != "source") {
			t.Errorf("a new terminal id from %s: err = %v; want %v", tt.addr, err, tt.want)
		}
	}
}

// TestLimiterUserFolded: user names count case-insensitively, as a
// directory that ignores case (sssd, AD) accepts them: ALICE's failures
// lock alice out, and clearing any spelling clears them.
func TestLimiterUserFolded(t *testing.T) {
	l, _ := newLimiter(auth.LimiterConfig{MaxFailures: 2})
	l.Failure("", "ALICE", "")
	l.Failure("", "Alice", "")
	for _, u := range []string{"alice", "ALICE", "aLiCe"} {
		if err := l.Check("", u, ""); !errors.Is(err, auth.ErrLocked) {
			t.Errorf("%s after failures as ALICE and Alice: err = %v; want locked", u, err)
		}
	}
	if !l.Locked("user:ALICE") || auth.UserKey("ALICE") != "user:alice" {
		t.Errorf("Locked(user:ALICE) = false or UserKey(ALICE) = %q; want true, user:alice", auth.UserKey("ALICE"))
	}
	l.Clear("user:Alice")
	if err := l.Check("", "alice", ""); err != nil {
		t.Errorf("alice after Clear(user:Alice): err = %v; want nil", err)
	}
}

// TestLimiterUserKeyBounded: a user name PAM learned from the terminal may
// be a frame long; its key is bounded (65536 keys of 64 KiB would be
// 4 GiB), still one key per name and per spelling, and the key an
// administrator reads in the lockout list clears it.
func TestLimiterUserKeyBounded(t *testing.T) {
	long := strings.Repeat("a", 64<<10)
	other := long[:len(long)-1] + "b"
	k := auth.UserKey(long)
	if len(k) > 300 {
		t.Fatalf("UserKey of a 64 KiB name is %d bytes; want it bounded", len(k))
	}
	if auth.UserKey(other) == k || auth.UserKey(strings.ToUpper(long)) != k {
		t.Errorf("long names: want one key per name, one for every spelling of it")
	}
	if again := auth.UserKey(strings.TrimPrefix(k, "user:")); again != k {
		t.Errorf("UserKey of the name in %q = %q; want it unchanged", k, again)
	}
	l, _ := newLimiter(auth.LimiterConfig{MaxFailures: 1})
	l.Failure("", long, "")
	if err := l.Check("", strings.ToUpper(long), ""); !errors.Is(err, auth.ErrLocked) {
		t.Errorf("the long name after its failure: err = %v; want locked", err)
	}
	if err := l.Check("", other, ""); err != nil {
		t.Errorf("another long name: err = %v; want nil", err)
	}
	l.Clear(k)
	if err := l.Check("", long, ""); err != nil {
		t.Errorf("the long name after Clear(%.20s…): err = %v; want nil", k, err)
	}
}

// TestLimiterUserFoldedUnicode: the spellings Unicode case folding makes
// one name (what EqualFold, and a directory folding case, accept: "ſ" is
// "s", the Kelvin sign "k", "ς" "σ") count as one user, not one budget of
// failures per spelling.
func TestLimiterUserFoldedUnicode(t *testing.T) {
	for _, spellings := range [][]string{
		{"sam", "ſam", "SAM", "ſAM"},
		{"kim", "\u212aim", "KIM"},
		{"ασ", "ας", "ΑΣ"},
	} {
		l, _ := newLimiter(auth.LimiterConfig{MaxFailures: len(spellings)})
		for _, u := range spellings {
			l.Failure("", u, "")
		}
		for _, u := range spellings {
			if err := l.Check("", u, ""); !errors.Is(err, auth.ErrLocked) {
				t.Errorf("%q after one failure as each of %q: err = %v; want locked", u, spellings, err)
			}
			if auth.UserKey(u) != auth.UserKey(spellings[0]) {
				t.Errorf("UserKey(%q) = %q; want UserKey(%q) = %q", u, auth.UserKey(u), spellings[0], auth.UserKey(spellings[0]))
			}
		}
	}
}

// TestLimiterClearBefore: an administrator's clearing made at t, heard
// late or again and again (a registry lists it as long as a lockout may
// last), forgets what a key held from before t only: a lockout imposed
// before t (here, or elsewhere and Applied) and its back-off level, and
// failures counted before t; a lockout imposed after t, and failures
// counted after it, are kept however often the clearing is heard. A
// lockout Applied without its imposition time (an older broker's) is
// cleared by any clearing.
func TestLimiterClearBefore(t *testing.T) {
	var started []auth.Lockout
	l, clk := newLimiter(auth.LimiterConfig{MaxFailures: 2, Window: time.Hour, BaseLockout: 10 * time.Minute, MaxLockout: time.Hour,
		OnLockout: func(lo auth.Lockout) { started = append(started, lo) }})
	locked := func(user string) bool { return errors.Is(l.Check("", user, ""), auth.ErrLocked) }

	// A lockout before the clearing: cleared, back-off and all.
	l.Failure("", "alice", "")
	l.Failure("", "alice", "")
	if len(started) != 1 || !started[0].Since.Equal(clk.Now()) {
		t.Fatalf("lockouts started = %+v; want one, since %v", started, clk.Now())
	}
	clk.Advance(time.Minute)
	cut := clk.Now()
	if !l.ClearBefore("user:ALICE", cut) || locked("alice") {
		t.Fatalf("alice's lockout from before the clearing: still locked %v; want cleared", locked("alice"))
	}
	if l.ClearBefore("user:alice", cut) {
		t.Error("the clearing heard again: ClearBefore = true; want false (nothing left from before it)")
	}

	// A lockout after it: kept, however often the clearing is heard.
	clk.Advance(time.Minute)
	started = nil
	l.Failure("", "alice", "")
	l.Failure("", "alice", "")
	if len(started) != 1 || started[0].Level != 1 {
		t.Fatalf("alice's lockout after the clearing: %+v; want one at level 1 (back-off reset)", started)
	}
	for range 3 {
		if l.ClearBefore("user:alice", cut) || !locked("alice") {
			t.Fatalf("alice's lockout imposed after the clearing: locked %v after the clearing was heard again; want locked", locked("alice"))
		}
	}

	// Lockouts imposed elsewhere: before the clearing, cleared; after
	// it, kept; at an unknown time (an older broker's), cleared.
	until := clk.Now().Add(30 * time.Minute)
	for user, since := range map[string]time.Time{"bob": cut.Add(-time.Second), "carol": cut.Add(time.Second), "dave": {}} {
		if !l.Apply(auth.Lockout{Key: "user:" + user, Until: until, Level: 2, Since: since}) {
			t.Fatalf("Apply(%s) = false; want true", user)
		}
		l.ClearBefore("user:"+user, cut)
		if got, want := locked(user), user == "carol"; got != want {
			t.Errorf("%s's lockout imposed elsewhere at %v, after the clearing at %v: locked %v; want %v", user, since, cut, got, want)
		}
	}

	// Failures: erin's, counted before the clearing, are forgotten (one
	// more does not lock her out); frank's, counted after it, are kept
	// (one more does).
	l.Failure("", "erin", "")
	clk.Advance(time.Second)
	cut2 := clk.Now()
	clk.Advance(time.Second)
	l.Failure("", "frank", "")
	l.ClearBefore("user:erin", cut2)
	l.ClearBefore("user:frank", cut2)
	l.Failure("", "erin", "")
	l.Failure("", "frank", "")
	if locked("erin") || !locked("frank") {
		t.Errorf("a failure before the clearing and one after: erin locked %v, frank locked %v; want false and true", locked("erin"), locked("frank"))
	}
}

// TestLimiterClearHeardLate: a member cut off from the group when an
// administrator cleared a key hears the clearing only once back, after
// it has locked the key out. A lockout that counted failures from before
// the clearing (here two of three) is the administrator's to clear, as
// those failures would have been had the clearing been heard in time:
// its Since (what the registry compares with the clearing, and
// ClearBefore) is when those failures began, not when the last one came.
// One whose failures all came after the clearing stands, even in a
// window that began with an earlier lockout.
func TestLimiterClearHeardLate(t *testing.T) {
	var started []auth.Lockout
	l, clk := newLimiter(auth.LimiterConfig{MaxFailures: 3, Window: time.Hour, BaseLockout: time.Minute, MaxLockout: time.Hour,
		OnLockout: func(lo auth.Lockout) { started = append(started, lo) }})
	locked := func(user string) bool { return errors.Is(l.Check("", user, ""), auth.ErrLocked) }

	// alice: two failures before the clearing, one after.
	l.Failure("", "alice", "")
	l.Failure("", "alice", "")
	first := clk.Now()
	// bob: a lockout before the clearing, ended; three failures after
	// it, in the window that lockout began.
	l.Failure("", "bob", "")
	l.Failure("", "bob", "")
	l.Failure("", "bob", "")
	clk.Advance(2 * time.Minute)
	cut := clk.Now() // the clearing, not heard here
	clk.Advance(time.Minute)
	started = nil
	l.Failure("", "alice", "")
	for range 3 {
		l.Failure("", "bob", "")
	}
	if len(started) != 2 || started[0].Key != "user:alice" || !started[0].Since.Equal(first) {
		t.Fatalf("lockouts started = %+v; want alice's, since her first failure (%v), and bob's", started, first)
	}
	if !started[1].Since.After(cut) {
		t.Errorf("bob's lockout since %v; want after the clearing (%v): its failures all came after it", started[1].Since, cut)
	}
	l.ClearBefore("user:alice", cut)
	l.ClearBefore("user:bob", cut)
	if locked("alice") || !locked("bob") {
		t.Errorf("after the clearing heard late: alice locked %v, bob locked %v; want false and true", locked("alice"), locked("bob"))
	}
}

// TestObserveFullOfQuietKeys: a limiter whose room is taken by keys quiet
// for more than a window (forgotten as soon as anything is tracked) still
// tracks the group's count of a key it hears, so that a success here
// resets the group's count (OnReset): quiet keys must not stand in for a
// full limiter.
func TestObserveFullOfQuietKeys(t *testing.T) {
	var reset []string
	l, clk := newLimiter(auth.LimiterConfig{MaxFailures: 5, Window: time.Minute, MaxKeys: 2,
		OnReset: func(k string) { reset = append(reset, k) }})
	l.Failure("", "a", "")
	l.Failure("", "b", "")
	clk.Advance(2 * time.Minute)
	l.Observe("user:carol", 2, clk.Now())
	l.Success("", "carol")
	if want := []string{"user:carol"}; !slices.Equal(reset, want) {
		t.Errorf("OnReset %v after carol's success with a group count; want %v (the quiet keys took the room)", reset, want)
	}
}

// checkAllowed checks that l lets an attempt by token, user and terminal
// proceed; what names the case.
func checkAllowed(t *testing.T, l *auth.Limiter, what, token, user, terminal string) {
	t.Helper()
	if err := l.Check(token, user, terminal); err != nil {
		t.Fatalf("%s: err = %v; want nil", what, err)
	}
}

// checkLocked checks that l refuses an attempt by token, user and
// terminal as locked out; what names the case.
func checkLocked(t *testing.T, l *auth.Limiter, what, token, user, terminal string) {
	t.Helper()
	if err := l.Check(token, user, terminal); !errors.Is(err, auth.ErrLocked) {
		t.Fatalf("%s: err = %v; want %v", what, err, auth.ErrLocked)
	}
}
