package broker

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/hotdesk/hotdesk/auth"
	"github.com/hotdesk/hotdesk/proto"
	"github.com/hotdesk/hotdesk/registry"
	"github.com/hotdesk/hotdesk/registry/etcdtest"
)

// TestUserLimitAcrossBrokers: two brokers of one group (each with its own
// etcd client on one embedded member), a per-user limit of 2, and one
// user's cards presented at four terminals of each broker at once, in
// several rounds (a user each): across the group the user never gets more
// than 2 sessions, every terminal gets a definite answer (attached, or
// "session limited"), and the registry holds exactly 2 of the user's
// sessions. Each broker alone serializes its own logins of a user; only the
// registry's transaction keeps the two apart. Budget: ~10 s (real weston).
func TestUserLimitAcrossBrokers(t *testing.T) {
	t.Parallel()
	const (
		max      = 2
		perB     = 4
		rounds   = 3
		maxTotal = rounds * max
	)
	pol := &auth.Policies{Default: auth.Policy{Kind: auth.KindCard, MaxSessions: max}}
	eps := etcdtest.Start(t)
	var bs []*env
	for i := range 2 {
		bs = append(bs, newEnvWith(t, fmt.Sprintf("b%d", i+1), envOptions{
			eps: eps, policies: pol, authn: &auth.Chooser{Policies: pol, Accounts: validAccounts{}},
			max:  maxTotal, // room for every session on either broker
			wrap: func(r Registry) Registry { return slowClaims{r.(*registry.Registry)} },
		}))
	}
	for round := range rounds {
		user := fmt.Sprintf("carol%d", round)
		var terms []*term
		var toks []string
		for b, e := range bs {
			for i := range perB {
				tok := fmt.Sprintf("uid.%02x%02x%02x", round, b, i)
				bs[0].register(tok, user)
				toks = append(toks, tok)
				terms = append(terms, e.dial(fmt.Sprintf("term-%d-%d-%d", round, b, i)))
			}
		}
		var wg sync.WaitGroup
		start := make(chan struct{})
		for i, tm := range terms {
			wg.Add(1)
			go func() { defer wg.Done(); <-start; tm.insert(toks[i]) }()
		}
		close(start)
		wg.Wait()
		attached, limited := 0, 0
		for i, tm := range terms {
			o := follow(t, tm, toks[i], nil)
			switch {
			case o.code == 0 && o.session != "":
				attached++
			case o.code == proto.ErrSessionLimited:
				limited++
			default:
				t.Fatalf("round %d, %s: %+v; want attached or session limited", round, tm.id, o)
			}
		}
		if attached != max || limited != 2*perB-max {
			t.Fatalf("round %d: attached %d, limited %d; want %d and %d", round, attached, limited, max, 2*perB-max)
		}
		if n := etcdtest.UserSessions(bs[0].ctx, t, bs[0].reg, user); n != max {
			t.Fatalf("round %d: the registry holds %d sessions of %s; want %d", round, n, user, max)
		}
	}
}

// slowClaims widens the window between counting a user's sessions and
// claiming a new one for a broker that would do the two apart (a plain
// Claim waits first); ClaimLimited, one transaction, is left as it is.
type slowClaims struct{ *registry.Registry }

func (r slowClaims) Claim(ctx context.Context, key string, s registry.Session) (registry.Claim, bool, error) {
	time.Sleep(50 * time.Millisecond)
	return r.Registry.Claim(ctx, key, s)
}

// TestUserLimitFreedByEnd: a session that ends gives its place back at once,
// on another broker too.
func TestUserLimitFreedByEnd(t *testing.T) {
	t.Parallel()
	pol := &auth.Policies{Default: auth.Policy{Kind: auth.KindCard, MaxSessions: 1}}
	eps := etcdtest.Start(t)
	b1 := newEnvWith(t, "b1", envOptions{eps: eps, policies: pol, authn: &auth.Chooser{Policies: pol, Accounts: validAccounts{}}})
	b2 := newEnvWith(t, "b2", envOptions{eps: eps, policies: pol, authn: &auth.Chooser{Policies: pol, Accounts: validAccounts{}}})
	b1.register("uid.0d0e0f01", "dave")
	b1.register("uid.0d0e0f02", "dave")
	t1 := b1.dial("term-1")
	t1.insert("uid.0d0e0f01")
	first := follow(t, t1, "uid.0d0e0f01", nil)
	if first.session == "" {
		t.Fatalf("first session: %+v", first)
	}
	t2 := b2.dial("term-2")
	t2.insert("uid.0d0e0f02")
	if o := follow(t, t2, "uid.0d0e0f02", nil); o.code != proto.ErrSessionLimited {
		t.Fatalf("second session: %+v; want session limited", o)
	}
	owner := b1
	if first.server == "b2" {
		owner = b2
	}
	if err := owner.b.Kill(owner.ctx, first.session); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the first session's claim to go", func() bool {
		_, err := b1.reg.Lookup(b1.ctx, "uid.0d0e0f01")
		return err != nil
	})
	t3 := b2.dial("term-3")
	t3.insert("uid.0d0e0f02")
	if o := follow(t, t3, "uid.0d0e0f02", nil); o.session == "" {
		t.Fatalf("after the first session ended: %+v; want attached", o)
	}
}

// validAccounts is an account stack that admits every account: these
// tests are about session limits (the account check runs through real PAM
// in TestPolicyAccountDisabled).
type validAccounts struct{}

func (validAccounts) CheckAccount(context.Context, string, auth.Request) error { return nil }
