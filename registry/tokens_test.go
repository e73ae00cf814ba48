package registry_test

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"testing"
	"time"

	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/hotdesk/hotdesk/internal/clock"
	"github.com/hotdesk/hotdesk/internal/testutil"
	"github.com/hotdesk/hotdesk/registry"
	"github.com/hotdesk/hotdesk/registry/etcdtest"
)

func TestTokens(t *testing.T) {
	t.Parallel()
	_, regs := newGroup(t, "s1", "s2")
	a, b := regs[0], regs[1]
	ctx := tctx(t)

	tok := registry.TokenRecord{ID: "soft.abc", Kind: "soft", PublicKey: []byte{1, 2, 3}, User: "alice", RegisteredBy: "admin"}
	if err := a.EnrollToken(ctx, tok); err != nil {
		t.Fatalf("EnrollToken err = %v; want nil", err)
	}
	tests := []struct {
		name string
		rec  registry.TokenRecord
		want error
	}{
		{"duplicate from another server", registry.TokenRecord{ID: "soft.abc", Kind: "soft", User: "mallory"}, registry.ErrExists},
		{"invalid id", registry.TokenRecord{ID: "soft/../abc"}, registry.ErrInvalidKey},
		{"second token", registry.TokenRecord{ID: "pcsc.0102", Kind: "pcsc", User: "bob"}, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if err := b.EnrollToken(ctx, tt.rec); !errors.Is(err, tt.want) {
				t.Errorf("EnrollToken err = %v; want %v", err, tt.want)
			}
		})
	}
	got, err := b.Token(ctx, "soft.abc")
	if err != nil {
		t.Fatal(err)
	}
	if got.User != "alice" || string(got.PublicKey) != "\x01\x02\x03" || got.RegisteredUnixMs == 0 {
		t.Errorf("Token = %+v; want alice's with key and registration time", got)
	}
	if _, err := b.Token(ctx, "soft.none"); !errors.Is(err, registry.ErrNotFound) {
		t.Errorf("Token(absent) err = %v; want ErrNotFound", err)
	}
	// Tokens outlive the server that enrolled them.
	if err := a.Close(ctx); err != nil {
		t.Fatal(err)
	}
	all, err := b.Tokens(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(all) != 2 || all[0].ID != "pcsc.0102" || all[1].ID != "soft.abc" {
		t.Errorf("Tokens = %+v; want pcsc.0102, soft.abc", all)
	}

	if err := b.UpdateToken(ctx, "soft.abc", func(r *registry.TokenRecord) { r.Disabled = true; r.ID = "other" }); err != nil {
		t.Fatalf("UpdateToken err = %v; want nil", err)
	}
	if got, _ := b.Token(ctx, "soft.abc"); !got.Disabled || got.User != "alice" {
		t.Errorf("after UpdateToken: %+v; want disabled alice", got)
	}
	if err := b.UpdateToken(ctx, "soft.none", func(*registry.TokenRecord) {}); !errors.Is(err, registry.ErrNotFound) {
		t.Errorf("UpdateToken(absent) err = %v; want ErrNotFound", err)
	}
	if err := b.DeleteToken(ctx, "soft.abc"); err != nil {
		t.Errorf("DeleteToken err = %v; want nil", err)
	}
	if err := b.DeleteToken(ctx, "soft.abc"); !errors.Is(err, registry.ErrNotFound) {
		t.Errorf("second DeleteToken err = %v; want ErrNotFound", err)
	}
}

// TestPairingSingleUse: of many concurrent consumers of one code exactly one
// succeeds, every round.
func TestPairingSingleUse(t *testing.T) {
	t.Parallel()
	_, regs := newGroup(t, "s1", "s2")
	ctx := tctx(t)
	const rounds, consumers = 20, 8
	for i := range rounds {
		ctx := tctx(t) // a bound per round, as in TestClaimLimitedRace
		id := fmt.Sprintf("code-%d", i)
		p := registry.Pairing{ID: id, SecretHash: []byte("hash"), User: "alice", CreatedBy: "admin"}
		if err := regs[0].PutPairing(ctx, p, time.Minute); err != nil {
			t.Fatalf("PutPairing err = %v; want nil", err)
		}
		if err := regs[1].PutPairing(ctx, p, time.Minute); !errors.Is(err, registry.ErrExists) {
			t.Fatalf("duplicate PutPairing err = %v; want ErrExists", err)
		}
		got, modRev, err := regs[1].Pairing(ctx, id)
		if err != nil || got.User != "alice" || string(got.SecretHash) != "hash" || got.ExpiresUnixMs == 0 {
			t.Fatalf("Pairing = %+v, %d, %v", got, modRev, err)
		}
		errs := make([]error, consumers)
		together(consumers, func(j int) {
			errs[j] = regs[j%2].ConsumePairing(ctx, id, modRev)
		})
		if err := testutil.OneWinner(errs, registry.ErrNotFound); err != nil {
			t.Fatalf("round %d: concurrent ConsumePairing: %v", i, err)
		}
		if _, _, err := regs[0].Pairing(ctx, id); !errors.Is(err, registry.ErrNotFound) {
			t.Fatalf("round %d: Pairing after consume err = %v; want ErrNotFound", i, err)
		}
	}
	if err := regs[0].ConsumePairing(ctx, "code-none", 1); !errors.Is(err, registry.ErrNotFound) {
		t.Errorf("ConsumePairing(absent) err = %v; want ErrNotFound", err)
	}
	// The id of a consumed code is free again.
	if err := regs[0].PutPairing(ctx, registry.Pairing{ID: "code-0"}, time.Minute); err != nil {
		t.Errorf("PutPairing(reused id) err = %v; want nil", err)
	}
}

// TestPairingExpiry: a code vanishes by itself when its lease expires, and
// is refused as soon as the clock passes its expiry.
func TestPairingExpiry(t *testing.T) {
	t.Parallel()
	eps := etcdtest.Start(t)
	r := newReg(t, etcdtest.Client(t, eps), "s1")
	ctx := tctx(t)

	t.Run("lease", func(t *testing.T) {
		// A generous ExpiresUnixMs: only the lease can remove it.
		p := registry.Pairing{ID: "short", ExpiresUnixMs: time.Now().Add(time.Hour).UnixMilli()}
		if err := r.PutPairing(ctx, p, 2*time.Second); err != nil {
			t.Fatal(err)
		}
		deadline := time.Now().Add(waitBound)
		for {
			_, _, err := r.Pairing(ctx, "short")
			if errors.Is(err, registry.ErrNotFound) {
				break
			}
			if err != nil {
				t.Fatalf("Pairing err = %v", err)
			}
			if time.Now().After(deadline) {
				t.Fatalf("pairing code still present after %v", waitBound)
			}
			time.Sleep(200 * time.Millisecond)
		}
	})

	t.Run("clock", func(t *testing.T) {
		clk := clock.NewFake(time.Now())
		rc := newReg(t, etcdtest.Client(t, eps), "s2", registry.WithClock(clk))
		if err := rc.PutPairing(ctx, registry.Pairing{ID: "clocked"}, time.Minute); err != nil {
			t.Fatal(err)
		}
		if _, _, err := rc.Pairing(ctx, "clocked"); err != nil {
			t.Fatalf("Pairing before expiry err = %v; want nil", err)
		}
		listed := func() bool {
			ps, err := rc.Pairings(ctx)
			if err != nil {
				t.Fatalf("Pairings err = %v", err)
			}
			return slices.ContainsFunc(ps, func(p registry.Pairing) bool { return p.ID == "clocked" })
		}
		if !listed() {
			t.Fatal("Pairings before expiry does not list the code")
		}
		clk.Advance(time.Minute)
		if _, _, err := rc.Pairing(ctx, "clocked"); !errors.Is(err, registry.ErrNotFound) {
			t.Errorf("Pairing after expiry err = %v; want ErrNotFound", err)
		}
		// Listed no more either, although its lease still holds it.
		if listed() {
			t.Error("Pairings after expiry lists the code; want it left out, as Pairing refuses it")
		}
	})

	if err := r.PutPairing(ctx, registry.Pairing{ID: "zero"}, 0); err == nil {
		t.Error("PutPairing(ttl 0) err = nil; want an error")
	}
}

// TestRedeemPairing: a code is consumed and a token enrolled in one
// transaction. A token id enrolled already leaves the code in place
// (ErrExists); a changed or consumed code enrolls nothing (ErrNotFound);
// of concurrent redemptions of one code, exactly one enrolls.
func TestRedeemPairing(t *testing.T) {
	t.Parallel()
	_, regs := newGroup(t, "s1", "s2")
	a, b := regs[0], regs[1]
	ctx := tctx(t)
	put := func(id string) int64 {
		t.Helper()
		if err := a.PutPairing(ctx, registry.Pairing{ID: id, User: "u", SecretHash: []byte("h")}, time.Hour); err != nil {
			t.Fatal(err)
		}
		_, rev, err := a.Pairing(ctx, id)
		if err != nil {
			t.Fatal(err)
		}
		return rev
	}
	if err := a.EnrollToken(ctx, registry.TokenRecord{ID: "soft.taken", Kind: "soft", User: "x"}); err != nil {
		t.Fatal(err)
	}
	rev := put("rp1")
	if err := b.RedeemPairing(ctx, "rp1", rev, registry.TokenRecord{ID: "soft.taken", Kind: "soft", User: "u"}); !errors.Is(err, registry.ErrExists) {
		t.Fatalf("redeem for an enrolled id: %v; want ErrExists", err)
	}
	if _, _, err := a.Pairing(ctx, "rp1"); err != nil {
		t.Fatalf("the code after a refused redemption: %v; want it still there", err)
	}
	if err := b.RedeemPairing(ctx, "rp1", rev+1000, registry.TokenRecord{ID: "soft.new", Kind: "soft", User: "u"}); !errors.Is(err, registry.ErrNotFound) {
		t.Fatalf("redeem at a stale revision: %v; want ErrNotFound", err)
	}
	if _, err := a.Token(ctx, "soft.new"); !errors.Is(err, registry.ErrNotFound) {
		t.Fatalf("token after a stale redemption: %v; want none", err)
	}
	if err := b.RedeemPairing(ctx, "rp1", rev, registry.TokenRecord{ID: "soft.new", Kind: "soft", User: "u"}); err != nil {
		t.Fatalf("redeem: %v", err)
	}
	if _, _, err := a.Pairing(ctx, "rp1"); !errors.Is(err, registry.ErrNotFound) {
		t.Fatalf("the code after its redemption: %v; want gone", err)
	}
	if tok, err := a.Token(ctx, "soft.new"); err != nil || tok.User != "u" || tok.RegisteredUnixMs == 0 {
		t.Fatalf("token after the redemption: %+v, %v; want u's, with its time", tok, err)
	}
	// Concurrent redemptions of one code for different ids: one wins.
	for round := range 5 {
		id := fmt.Sprintf("rp-race-%d", round)
		rev := put(id)
		errs := make([]error, 4)
		together(len(errs), func(j int) {
			errs[j] = regs[j%2].RedeemPairing(ctx, id, rev,
				registry.TokenRecord{ID: fmt.Sprintf("soft.race%d-%d", round, j), Kind: "soft", User: "u"})
		})
		if err := testutil.OneWinner(errs, registry.ErrNotFound); err != nil {
			t.Fatalf("round %d, redemptions of one code: %v", round, err)
		}
	}
}

// TestRedeemPairingCodeGoneAndTokenEnrolled: a redemption that finds both
// its code gone and its token enrolled — a second Pair of one key with one
// code, racing the first or retried after it — is ErrNotFound: ErrExists
// promises that the code stays valid, and this code is spent.
func TestRedeemPairingCodeGoneAndTokenEnrolled(t *testing.T) {
	t.Parallel()
	_, regs := newGroup(t, "s1")
	r := regs[0]
	ctx := tctx(t)
	if err := r.PutPairing(ctx, registry.Pairing{ID: "rp2", User: "u", SecretHash: []byte("h")}, time.Hour); err != nil {
		t.Fatal(err)
	}
	_, rev, err := r.Pairing(ctx, "rp2")
	if err != nil {
		t.Fatal(err)
	}
	tok := registry.TokenRecord{ID: "soft.twice", Kind: "soft", User: "u"}
	if err := r.RedeemPairing(ctx, "rp2", rev, tok); err != nil {
		t.Fatalf("first redemption: %v", err)
	}
	if err := r.RedeemPairing(ctx, "rp2", rev, tok); !errors.Is(err, registry.ErrNotFound) || errors.Is(err, registry.ErrExists) {
		t.Fatalf("the same key and code again: %v; want ErrNotFound (the code is spent), not ErrExists", err)
	}
	// Concurrently, for one key: one enrolls, the others find the code spent.
	for round := range 5 {
		id := fmt.Sprintf("rp2-race-%d", round)
		if err := r.PutPairing(ctx, registry.Pairing{ID: id, User: "u", SecretHash: []byte("h")}, time.Hour); err != nil {
			t.Fatal(err)
		}
		_, rev, err := r.Pairing(ctx, id)
		if err != nil {
			t.Fatal(err)
		}
		tok := registry.TokenRecord{ID: fmt.Sprintf("soft.same%d", round), Kind: "soft", User: "u"}
		errs := make([]error, 4)
		together(len(errs), func(j int) { errs[j] = r.RedeemPairing(ctx, id, rev, tok) })
		if err := testutil.OneWinner(errs, registry.ErrNotFound); err != nil {
			t.Fatalf("round %d: %v", round, err)
		}
	}
}

// TestRedeemPairingOutcomeUnknown: a redemption whose transaction etcd
// applied although the call failed (a timeout after the commit) returns an
// error of unknown outcome (OutcomeUnknown), not a refusal, and leaves the
// trace a read-back needs (RedeemedPairing): the code is gone, the token
// enrolled, and the trace names that token and the code's user. One that
// was never applied leaves the code, no token and no trace. The trace
// keeps the code's id from being reused, and goes when the code would
// have expired.
func TestRedeemPairingOutcomeUnknown(t *testing.T) {
	t.Parallel()
	eps := etcdtest.Start(t)
	ctx := tctx(t)
	clk := clock.NewFake(time.Now())
	store := func(id string, apply *bool) *registry.Store {
		t.Helper()
		s := newStore(t, etcdtest.Client(t, eps), id, registry.WithClock(clk))
		if apply != nil {
			registry.InjectFaults(s, func(kv clientv3.KV) clientv3.KV { return faultyTxnKV{kv, *apply} }, nil)
		}
		return s
	}
	s := store("s1", nil)
	for _, apply := range []bool{false, true} {
		f := store("s1", &apply)
		id := fmt.Sprintf("unsure-%v", apply)
		code := registry.Pairing{ID: id, User: "u", SecretHash: []byte("hash"), SecretSalt: []byte("salt"), SecretKDF: "kdf"}
		if err := s.PutPairing(ctx, code, time.Hour); err != nil {
			t.Fatal(err)
		}
		_, rev, err := s.Pairing(ctx, id)
		if err != nil {
			t.Fatal(err)
		}
		tok := registry.TokenRecord{ID: "soft." + id, Kind: "soft", PublicKey: []byte{1, 2}, User: "u"}
		err = f.RedeemPairing(ctx, id, rev, tok)
		if err == nil || !registry.OutcomeUnknown(err) || !errors.Is(err, context.DeadlineExceeded) {
			t.Fatalf("redemption timing out (applied %v) = %v; want the timeout, of unknown outcome", apply, err)
		}
		_, _, codeErr := s.Pairing(ctx, id)
		_, tokErr := s.Token(ctx, tok.ID)
		used, usedErr := s.RedeemedPairing(ctx, id)
		if !apply {
			if codeErr != nil || !errors.Is(tokErr, registry.ErrNotFound) || !errors.Is(usedErr, registry.ErrNotFound) {
				t.Fatalf("after a redemption never applied: code %v, token %v, trace %v; want the code only", codeErr, tokErr, usedErr)
			}
			continue
		}
		if !errors.Is(codeErr, registry.ErrNotFound) || tokErr != nil || usedErr != nil {
			t.Fatalf("after a redemption applied: code %v, token %v, trace %v; want the token and the trace only", codeErr, tokErr, usedErr)
		}
		if used.TokenID != tok.ID || used.User != "u" || string(used.SecretSalt) != "salt" || string(used.SecretHash) != "hash" || used.SecretKDF != "kdf" {
			t.Errorf("trace = %+v; want the code's record with token id %s", used, tok.ID)
		}
		if err := s.PutPairing(ctx, registry.Pairing{ID: id}, time.Hour); !errors.Is(err, registry.ErrExists) {
			t.Errorf("a new code with the id of one just redeemed: %v; want ErrExists", err)
		}
		clk.Advance(time.Hour)
		if _, err := s.RedeemedPairing(ctx, id); !errors.Is(err, registry.ErrNotFound) {
			t.Errorf("trace once the code would have expired: %v; want ErrNotFound", err)
		}
	}
}

// TestOutcomeUnknown: errors that may come after etcd applied a write are
// of unknown outcome; refusals that say nothing was written are not.
func TestOutcomeUnknown(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		err  error
		want bool
	}{
		{"nil", nil, false},
		{"deadline", context.DeadlineExceeded, true},
		{"cancelled", context.Canceled, true},
		{"wrapped deadline", fmt.Errorf("registry: redeem pairing %q: %w", "x", context.DeadlineExceeded), true},
		{"leader changed", rpctypes.ErrLeaderChanged, true},
		{"server timeout", rpctypes.ErrTimeout, true},
		{"no leader", rpctypes.ErrNoLeader, true},
		{"grpc unavailable", status.Error(codes.Unavailable, "connection closed"), true},
		{"grpc deadline", status.Error(codes.DeadlineExceeded, "context deadline exceeded"), true},
		{"unknown error", errors.New("something"), true},
		{"not found", fmt.Errorf("registry: %w", registry.ErrNotFound), false},
		{"exists", fmt.Errorf("registry: %w", registry.ErrExists), false},
		{"invalid key", registry.ErrInvalidKey, false},
		{"lease not found", fmt.Errorf("registry: %w", rpctypes.ErrLeaseNotFound), false},
		{"permission denied", rpctypes.ErrPermissionDenied, false},
		{"too many ops", rpctypes.ErrTooManyOps, false},
		{"request too large", rpctypes.ErrRequestTooLarge, false},
		{"invalid auth token", rpctypes.ErrInvalidAuthToken, false},
		{"grpc invalid argument", status.Error(codes.InvalidArgument, "bad"), false},
	}
	for _, tt := range tests {
		if got := registry.OutcomeUnknown(tt.err); got != tt.want {
			t.Errorf("OutcomeUnknown(%s: %v) = %v; want %v", tt.name, tt.err, got, tt.want)
		}
	}
}
