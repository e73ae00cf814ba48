package auth_test

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/hotdesk/hotdesk/auth"
	"github.com/hotdesk/hotdesk/internal/clock"
)

// TestAccountCache: a positive answer is reused for TTL on the injected
// clock, for the same service, user, address and terminal only; a refusal
// is never kept; the entries are bounded.
func TestAccountCache(t *testing.T) {
	clk := clock.NewFake(time.Unix(1_000_000, 0))
	next := &fakeAccounts{refuse: map[string]bool{}}
	c := auth.NewAccountCache(next, auth.AccountCacheConfig{TTL: time.Minute, Max: 3, Clock: clk})
	alice := auth.Request{User: "alice", TerminalID: "t1", RemoteAddr: "192.0.2.1:5000"}
	check := func(service string, req auth.Request, wantChecks int, want error) {
		t.Helper()
		err := c.CheckAccount(t.Context(), service, req)
		if !errors.Is(err, want) || (want == nil && err != nil) {
			t.Fatalf("%s %+v: err = %v; want %v", service, req, err, want)
		}
		if next.checks != wantChecks {
			t.Fatalf("%s %+v: checks = %d; want %d", service, req, next.checks, wantChecks)
		}
	}
	check("hotdesk", alice, 1, nil)
	check("hotdesk", alice, 1, nil) // cached
	other := alice
	other.RemoteAddr = "192.0.2.1:5001" // same host, other port: same answer
	check("hotdesk", other, 1, nil)
	clk.Advance(time.Minute - time.Second)
	check("hotdesk", alice, 1, nil)
	// What the account stack sees differs: asked again.
	check("hotdesk-pin", alice, 2, nil)
	other.RemoteAddr = "192.0.2.2:5000"
	check("hotdesk", other, 3, nil)
	other = alice
	other.TerminalID = "t2"
	check("hotdesk", other, 4, nil)
	// Expired: asked again; a refusal now is not kept, nor was it cached.
	clk.Advance(time.Second)
	next.refuse["alice"] = true
	check("hotdesk", alice, 5, auth.ErrAccount)
	check("hotdesk", alice, 6, auth.ErrAccount)
	next.refuse["alice"] = false
	check("hotdesk", alice, 7, nil)
	if n := c.Len(); n > 3 {
		t.Errorf("entries = %d; want ≤ 3 (Max)", n)
	}
	for i := range 10 {
		check("hotdesk", auth.Request{User: fmt.Sprint("u", i)}, 8+i, nil)
		if n := c.Len(); n > 3 {
			t.Fatalf("entries = %d; want ≤ 3 (Max)", n)
		}
	}
	c.Forget()
	check("hotdesk", alice, 18, nil)
}

// TestAccountCacheForgetDuringCheck: an answer to a check under way when
// Forget is called is not kept: it may predate the administrator's change
// that Forget was called for.
func TestAccountCacheForgetDuringCheck(t *testing.T) {
	var c *auth.AccountCache
	checks := 0
	next := accountFunc(func(context.Context, string, auth.Request) error {
		checks++
		if checks == 1 {
			c.Forget() // the administrator, while PAM answers
		}
		return nil
	})
	c = auth.NewAccountCache(next, auth.AccountCacheConfig{Clock: clock.NewFake(time.Unix(1_000_000, 0))})
	req := auth.Request{User: "alice", TerminalID: "t1", RemoteAddr: "192.0.2.1:5000"}
	for range 2 {
		if err := c.CheckAccount(t.Context(), "hotdesk", req); err != nil {
			t.Fatal(err)
		}
	}
	if checks != 2 {
		t.Errorf("checks = %d; want 2 (the answer given across Forget not reused)", checks)
	}
}

// TestAccountCacheForgetsExpired: answers older than the TTL are dropped
// as new ones come in (once a TTL), not kept until Max others push them
// out: a long-running broker holds the answers of the last minutes, not
// one for every user and terminal it has seen.
func TestAccountCacheForgetsExpired(t *testing.T) {
	clk := clock.NewFake(time.Unix(1_000_000, 0))
	c := auth.NewAccountCache(accountFunc(func(context.Context, string, auth.Request) error { return nil }),
		auth.AccountCacheConfig{TTL: time.Minute, Clock: clk})
	for i := range 100 {
		req := auth.Request{User: "alice", TerminalID: fmt.Sprint("t", i), RemoteAddr: "192.0.2.1:5000"}
		if err := c.CheckAccount(t.Context(), "hotdesk", req); err != nil {
			t.Fatal(err)
		}
		clk.Advance(5 * time.Second)
	}
	// 100 terminals over 500 s, a TTL of 60 s: at most two TTLs' worth.
	if n := c.Len(); n > 2*12+1 {
		t.Errorf("entries = %d; want ≤ %d (the answers of the last two TTLs)", n, 2*12+1)
	}
}

type accountFunc func(context.Context, string, auth.Request) error

func (f accountFunc) CheckAccount(ctx context.Context, service string, req auth.Request) error {
	return f(ctx, service, req)
}

// TestLimiterIgnoresAccountRefusals: an account refused by the account
// stack (ErrAccount) is audited but not counted against the user, the
// terminal or the source: a disabled user's card tapped again and again
// must not lock the terminal out for everyone else. It is counted against
// the token alone: a card whose account is refused, presented again and
// again (from any number of terminal ids), is locked out like a guessed
// one instead of starting a PAM account check each time.
func TestLimiterIgnoresAccountRefusals(t *testing.T) {
	l, _ := newLimiter(auth.LimiterConfig{MaxFailures: 2, Window: time.Hour, BaseLockout: time.Minute})
	calls := 0
	refuse := loginFunc(func(_ context.Context, req auth.Request, _ auth.Conversation) (auth.Result, error) {
		calls++
		if req.Token == "uid.02" {
			return auth.Result{User: req.User}, nil
		}
		return auth.Result{}, fmt.Errorf("x: %w: %w", auth.ErrDenied, auth.ErrAccount)
	})
	g := l.Guard(refuse)
	req := auth.Request{Token: "uid.01", User: "mallory", TerminalID: "t1", RemoteAddr: "192.0.2.1:1"}
	for i := range 5 {
		req.TerminalID = fmt.Sprint("t", i)
		_, err := g.Authenticate(t.Context(), req, nil)
		switch {
		case i < 2 && (!errors.Is(err, auth.ErrAccount) || errors.Is(err, auth.ErrLocked)):
			t.Fatalf("attempt %d: err = %v; want %v, not locked", i, err, auth.ErrAccount)
		case i >= 2 && !errors.Is(err, auth.ErrLocked):
			t.Fatalf("attempt %d: err = %v; want %v (the token)", i, err, auth.ErrLocked)
		}
	}
	if calls != 2 {
		t.Errorf("account checks = %d; want 2 (then the token is locked out)", calls)
	}
	if err := l.Check("", "mallory", "t1@192.0.2.1"); err != nil {
		t.Errorf("after 5 account refusals: user, terminal check = %v; want nil", err)
	}
	other := auth.Request{Token: "uid.02", User: "bob", TerminalID: "t1", RemoteAddr: "192.0.2.1:1"}
	if _, err := g.Authenticate(t.Context(), other, nil); err != nil {
		t.Errorf("another card at the terminal: err = %v; want nil", err)
	}
}

type loginFunc func(context.Context, auth.Request, auth.Conversation) (auth.Result, error)

func (f loginFunc) Authenticate(ctx context.Context, req auth.Request, conv auth.Conversation) (auth.Result, error) {
	return f(ctx, req, conv)
}
