package registry_test

import (
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/hotdesk/hotdesk/registry"
	"github.com/hotdesk/hotdesk/registry/etcdtest"
)

// TestClaimLimitedRace: two brokers, each with its own client to a real
// 3-member etcd cluster (one talking to the first member, one to the last),
// race to admit sessions of one user on distinct tokens; across the group
// exactly max win in every round, whatever the interleaving, and every
// loser is told the limit (not an error of another kind). Budget: ~5 s.
func TestClaimLimitedRace(t *testing.T) {
	t.Parallel()
	eps, _ := etcdtest.StartCluster(t, 3)
	regs := []*registry.Registry{
		newReg(t, etcdtest.Client(t, eps[0:1]), "s1"),
		newReg(t, etcdtest.Client(t, eps[2:3]), "s2"),
	}
	const (
		rounds   = 8
		max      = 3
		perRound = 8 // claims per broker per round
	)
	for round := range rounds {
		// A bound per round: contended claims under the race detector on
		// a loaded machine made the whole test outlast one waitBound.
		ctx := tctx(t)
		user := fmt.Sprintf("user%d", round)
		var (
			mu      sync.Mutex
			won     int
			limited int
			other   []error
		)
		together(len(regs)*perRound, func(j int) {
			b, i := j/perRound, j%perRound
			key := fmt.Sprintf("tok-%d-%d-%d", round, b, i)
			_, ok, err := regs[b].ClaimLimited(ctx, key, registry.Session{ID: "id-" + key, User: user}, max)
			mu.Lock()
			defer mu.Unlock()
			switch {
			case err == nil && ok:
				won++
			case errors.Is(err, registry.ErrUserLimit):
				limited++
			default:
				other = append(other, fmt.Errorf("%s: won=%v err=%v", key, ok, err))
			}
		})
		if len(other) > 0 {
			t.Fatalf("round %d: unexpected outcomes: %v", round, other)
		}
		if won != max || limited != 2*perRound-max {
			t.Fatalf("round %d: won %d, limited %d; want %d, %d", round, won, limited, max, 2*perRound-max)
		}
		// The registry agrees: exactly max sessions of the user.
		if n := etcdtest.UserSessions(ctx, t, regs[0], user); n != max {
			t.Fatalf("round %d: registry holds %d sessions of %s; want %d", round, n, user, max)
		}
	}
}

// TestClaimLimitedSemantics: the limit counts live sessions only (a
// released one or one whose server's lease ended frees its slot), an
// already claimed key answers with its owner even for a user at the limit,
// other users are not affected, and bad input is refused.
func TestClaimLimitedSemantics(t *testing.T) {
	t.Parallel()
	eps := etcdtest.Start(t)
	ctx := tctx(t)
	r1 := newReg(t, etcdtest.Client(t, eps), "s1")
	r2, err := registry.New(ctx, etcdtest.Client(t, eps), registry.ServerRecord{ID: "s2", Addr: "127.0.0.1:2"},
		registry.WithLeaseTTL(leaseTTL), registry.WithLogger(testLogger(t)))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { r2.Close(ctx) })

	c1, won, err := r1.ClaimLimited(ctx, "a1", registry.Session{ID: "x1", User: "alice"}, 2)
	if err != nil || !won {
		t.Fatalf("first claim: won=%v err=%v", won, err)
	}
	if _, won, err := r2.ClaimLimited(ctx, "a2", registry.Session{ID: "x2", User: "alice"}, 2); err != nil || !won {
		t.Fatalf("second claim: won=%v err=%v", won, err)
	}
	_, _, err = r1.ClaimLimited(ctx, "a3", registry.Session{ID: "x3", User: "alice"}, 2)
	var le *registry.UserLimitError
	if !errors.As(err, &le) || le.Sessions != 2 || le.Max != 2 {
		t.Fatalf("third claim: err = %v; want a UserLimitError with 2 of 2", err)
	}
	if _, err := r1.Lookup(ctx, "a3"); !errors.Is(err, registry.ErrNotFound) {
		t.Fatalf("refused claim wrote its key: lookup = %v", err)
	}
	// A claimed key answers with its owner, not the limit.
	c, won, err := r1.ClaimLimited(ctx, "a2", registry.Session{ID: "x9", User: "alice"}, 2)
	if err != nil || won || c.Session.ServerID != "s2" || c.Session.ID != "x2" {
		t.Fatalf("claim of a held key = %+v, won=%v, err=%v; want s2's x2", c, won, err)
	}
	// Another user has their own count.
	if _, won, err := r1.ClaimLimited(ctx, "b1", registry.Session{ID: "y1", User: "bob"}, 1); err != nil || !won {
		t.Fatalf("bob's claim: won=%v err=%v", won, err)
	}
	// Releasing frees a slot.
	if err := r1.Release(ctx, c1); err != nil {
		t.Fatal(err)
	}
	if _, won, err := r1.ClaimLimited(ctx, "a3", registry.Session{ID: "x3", User: "alice"}, 2); err != nil || !won {
		t.Fatalf("claim after a release: won=%v err=%v", won, err)
	}
	if _, _, err := r1.ClaimLimited(ctx, "a4", registry.Session{ID: "x4", User: "alice"}, 2); !errors.Is(err, registry.ErrUserLimit) {
		t.Fatalf("claim at the limit again: err = %v; want ErrUserLimit", err)
	}
	// s2's lease ends: its session goes, and so does its place in the count.
	if err := r2.Close(ctx); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(waitBound)
	for {
		_, won, err := r1.ClaimLimited(ctx, "a4", registry.Session{ID: "x4", User: "alice"}, 2)
		if err == nil && won {
			break
		}
		if !errors.Is(err, registry.ErrUserLimit) || time.Now().After(deadline) {
			t.Fatalf("claim after s2 left: won=%v err=%v", won, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
	// Bad input.
	for _, tc := range []struct {
		key string
		s   registry.Session
	}{
		{"k", registry.Session{ID: "i"}},
		{"k", registry.Session{User: "u"}},
		{"a/b", registry.Session{ID: "i", User: "u"}},
	} {
		if _, _, err := r1.ClaimLimited(ctx, tc.key, tc.s, 2); !errors.Is(err, registry.ErrInvalidKey) {
			t.Errorf("ClaimLimited(%q, %+v) = %v; want ErrInvalidKey", tc.key, tc.s, err)
		}
	}
	// A user name with a slash or newline is only data.
	if _, won, err := r1.ClaimLimited(ctx, "c1", registry.Session{ID: "z1", User: "a/b\nc"}, 1); err != nil || !won {
		t.Fatalf("odd user name: won=%v err=%v", won, err)
	}
}
