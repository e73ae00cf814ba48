package pairing_test

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/hotdesk/hotdesk/internal/clock"
	"github.com/hotdesk/hotdesk/internal/testutil"
	"github.com/hotdesk/hotdesk/registry"
	"github.com/hotdesk/hotdesk/registry/etcdtest"
	"github.com/hotdesk/hotdesk/registry/pairing"
	"github.com/hotdesk/hotdesk/tokens/nfc"
	"github.com/hotdesk/hotdesk/tokens/soft"
)

// env is one Pairer on a real registry (its own key prefix on a shared
// embedded etcd) with a fake clock and captured logs.
type env struct {
	t    *testing.T
	ctx  context.Context
	clk  *clock.Fake
	reg  *registry.Registry
	p    *pairing.Pairer
	logs testutil.LockedBuffer // also in the test's log
}

var prefixSeq struct {
	sync.Mutex
	n int
}

func newEnv(t *testing.T, cli *clientv3.Client, opts ...pairing.Option) *env {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	t.Cleanup(cancel)
	prefixSeq.Lock()
	prefixSeq.n++
	prefix := fmt.Sprintf("/pairing-test-%d/", prefixSeq.n)
	prefixSeq.Unlock()
	e := &env{t: t, ctx: ctx, clk: clock.NewFake(time.Now())}
	log := hclog.New(&hclog.LoggerOptions{Name: "pairing", Level: hclog.Debug, Output: io.MultiWriter(testutil.LogWriter(t), &e.logs)})
	reg, err := registry.New(ctx, cli, registry.ServerRecord{ID: "t1"},
		registry.WithPrefix(prefix), registry.WithClock(e.clk), registry.WithLeaseTTL(2*time.Second), registry.WithLogger(log.Named("registry")))
	if err != nil {
		t.Fatalf("registry.New = %v", err)
	}
	t.Cleanup(func() { reg.Close(context.Background()) })
	e.reg = reg
	// Cheap hashes: tests try hundreds of codes (a test of the real
	// parameters passes WithDefaultHash).
	e.p = pairing.New(reg, append([]pairing.Option{pairing.WithClock(e.clk), pairing.WithLogger(log), pairing.WithCheapHash()}, opts...)...)
	return e
}

func (e *env) create(user string, ttl time.Duration) string {
	e.t.Helper()
	code, exp, err := e.p.Create(e.ctx, user, "from admin", "uid:0", ttl)
	if err != nil {
		e.t.Fatalf("Create = %v", err)
	}
	if !exp.Equal(e.clk.Now().Add(ttl)) {
		e.t.Errorf("expires = %v; want %v", exp, e.clk.Now().Add(ttl))
	}
	return code
}

// redeem redeems code from src for a new soft key, without a label.
func (e *env) redeem(src, code string) error {
	e.t.Helper()
	_, err := e.p.Redeem(e.ctx, src, signedReq(code, "soft", newKey(e.t), ""))
	return err
}

// keys holds the private key of every public key newKey made.
var keys sync.Map // string(public key) → ed25519.PrivateKey

func newKey(t *testing.T) ed25519.PublicKey {
	t.Helper()
	pub, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	keys.Store(string(pub), priv)
	return pub
}

// The connection the test's pair requests come on.
const (
	testTerminal = "term-1"
	testServer   = "b1"
)

var testNonce = bytes.Repeat([]byte{7}, 32)

// signedReq returns the request to pair pub (of kind) with code, signed
// for the test's connection with pub's private key if newKey made it,
// else with a signature of 64 zero bytes.
func signedReq(code, kind string, pub []byte, label string) pairing.Request {
	r := pairing.Request{Code: code, Kind: kind, PublicKey: pub, Label: label,
		TerminalID: testTerminal, ServerID: testServer, Nonce: testNonce, Signature: make([]byte, ed25519.SignatureSize)}
	if priv, ok := keys.Load(string(pub)); ok {
		msg, err := soft.PairMessage(r.TerminalID, r.ServerID, r.Nonce, code, kind, pub)
		if err != nil {
			panic(err)
		}
		r.Signature = ed25519.Sign(priv.(ed25519.PrivateKey), msg)
	}
	return r
}

// forgedReq returns the request to pair pub (of kind) with code that
// carries sig as its proof of possession.
func forgedReq(code, kind string, pub, sig []byte) pairing.Request {
	r := signedReq(code, kind, pub, "")
	r.Signature = sig
	return r
}

// wrongSecret returns code with its last character changed.
func wrongSecret(code string) string {
	last := code[len(code)-1]
	repl := byte('0')
	if last == '0' {
		repl = '1'
	}
	return code[:len(code)-1] + string(repl)
}

// otherID returns a well-formed code whose id differs from code's.
func otherID(code string, i int) string {
	id := fmt.Sprintf("%04d", i%10000)
	if strings.HasPrefix(code, id) {
		id = fmt.Sprintf("%04d", (i+1)%10000)
	}
	return id + code[4:]
}

func checkErr(t *testing.T, what string, err, want error) {
	t.Helper()
	if want == nil && err != nil || want != nil && !errors.Is(err, want) {
		t.Fatalf("%s: err = %v; want %v", what, err, want)
	}
}

// redeemErr redeems req from source with e's Pairer and checks the
// error as checkErr does.
func redeemErr(t *testing.T, e *env, what, source string, req pairing.Request, want error) {
	t.Helper()
	_, err := e.p.Redeem(e.ctx, source, req)
	checkErr(t, what, err, want)
}

func TestPairing(t *testing.T) {
	t.Parallel()
	cli := etcdtest.Client(t, etcdtest.Start(t))

	t.Run("a phone enrolls by its key", func(t *testing.T) {
		e := newEnv(t, cli)
		code := e.create("carol", 10*time.Minute)
		pub := newKey(t)
		rec, err := e.p.Redeem(e.ctx, "term1@127.0.0.1", signedReq(code, nfc.KindHCE, pub, "carol's phone"))
		checkErr(t, "Redeem hce", err, nil)
		if rec.ID != nfc.HCETokenID(pub) || rec.Kind != nfc.KindHCE || rec.User != "carol" {
			t.Errorf("token = %+v; want %s of kind hce for carol", rec, nfc.HCETokenID(pub))
		}
		code2 := e.create("carol", 10*time.Minute)
		redeemErr(t, e, "Redeem hce with a short key", "term1@127.0.0.1", signedReq(code2, nfc.KindHCE, pub[:16], ""), pairing.ErrBadKey)
	})

	t.Run("redeem enrolls the token", func(t *testing.T) {
		e := newEnv(t, cli)
		code := e.create("alice", 10*time.Minute)
		pub := newKey(t)
		rec, err := e.p.Redeem(e.ctx, "term1@127.0.0.1", signedReq(code, "soft", pub, ""))
		checkErr(t, "Redeem", err, nil)
		want := registry.TokenRecord{ID: soft.TokenID(pub), Kind: "soft", PublicKey: pub, User: "alice", Label: "from admin",
			RegisteredBy: "pairing:uid:0", RegisteredUnixMs: e.clk.Now().UnixMilli()}
		got, err := e.reg.Token(e.ctx, rec.ID)
		checkErr(t, "Token", err, nil)
		for _, r := range []registry.TokenRecord{rec.TokenRecord, got} {
			if r.ID != want.ID || r.Kind != want.Kind || !bytes.Equal(r.PublicKey, want.PublicKey) || r.User != want.User ||
				r.Label != want.Label || r.RegisteredBy != want.RegisteredBy || r.RegisteredUnixMs != want.RegisteredUnixMs || r.Disabled {
				t.Errorf("token = %+v; want %+v", r, want)
			}
		}
		// The terminal's label wins over the code's.
		code2 := e.create("bob", time.Minute)
		rec2, err := e.p.Redeem(e.ctx, "term1@127.0.0.1", signedReq(code2, "soft", newKey(t), "Bob's phone"))
		checkErr(t, "Redeem with label", err, nil)
		if rec2.Label != "Bob's phone" || rec2.User != "bob" {
			t.Errorf("token = %+v; want label \"Bob's phone\", user bob", rec2)
		}
		if logs := e.logs.String(); strings.Contains(logs, code[5:]) || strings.Contains(logs, code2[5:]) ||
			strings.Contains(logs, strings.ReplaceAll(code, "-", "")[4:]) {
			t.Errorf("a code's secret was logged:\n%s", logs)
		}
	})

	t.Run("input normalisation", func(t *testing.T) {
		e := newEnv(t, cli)
		tests := []struct {
			name string
			edit func(string) string
		}{
			{"lower case", strings.ToLower},
			{"no dashes", func(s string) string { return strings.ReplaceAll(s, "-", "") }},
			{"lower case without dashes", func(s string) string { return strings.ToLower(strings.ReplaceAll(s, "-", "")) }},
			{"spaces", func(s string) string { return " " + strings.ReplaceAll(s, "-", " ") + " " }},
		}
		for _, tt := range tests {
			code := e.create("carol", time.Minute)
			if err := e.redeem("t@h", tt.edit(code)); err != nil {
				t.Errorf("%s: Redeem(%q) = %v; want nil", tt.name, tt.edit(code), err)
			}
		}
	})

	t.Run("expired code refused", func(t *testing.T) {
		e := newEnv(t, cli)
		code := e.create("dave", 5*time.Minute)
		e.clk.Advance(5 * time.Minute)
		checkErr(t, "Redeem(expired)", e.redeem("t@h", code), pairing.ErrInvalidCode)
	})

	t.Run("reused code refused", func(t *testing.T) {
		e := newEnv(t, cli)
		code := e.create("erin", time.Minute)
		checkErr(t, "first Redeem", e.redeem("t@h", code), nil)
		checkErr(t, "second Redeem", e.redeem("t@h", code), pairing.ErrInvalidCode)
	})

	t.Run("guesses lead to lockout", func(t *testing.T) {
		e := newEnv(t, cli)
		code := e.create("frank", time.Hour)
		pub := newKey(t)
		const src = "evil@10.0.0.9"
		guesses := []string{
			wrongSecret(code),   // right id, wrong secret (1 of 3: not burned)
			otherID(code, 1),    // unknown id
			otherID(code, 2),    // unknown id
			"not a code at all", // malformed
			wrongSecret(code),   // 2 of 3 wrong secrets; 5th failure: locked
		}
		for i, g := range guesses {
			redeemErr(t, e, fmt.Sprintf("guess %d", i), src, signedReq(g, "soft", pub, ""), pairing.ErrInvalidCode)
		}
		redeemErr(t, e, "right code while locked out", src, signedReq(code, "soft", pub, ""), pairing.ErrRateLimited)
		var lo *pairing.LockoutError
		if _, err := e.p.Redeem(e.ctx, src, signedReq(code, "soft", pub, "")); !errors.As(err, &lo) || lo.Remaining != pairing.DefaultLockout {
			t.Fatalf("Redeem while locked out: %v; want a LockoutError of %v", err, pairing.DefaultLockout)
		}
		e.clk.Advance(pairing.DefaultLockout - time.Millisecond)
		redeemErr(t, e, "right code just before the lockout ends", src, signedReq(code, "soft", pub, ""), pairing.ErrRateLimited)
		e.clk.Advance(time.Millisecond)
		redeemErr(t, e, "right code after the lockout", src, signedReq(code, "soft", pub, ""), nil)
	})

	t.Run("other sources are not locked out", func(t *testing.T) {
		e := newEnv(t, cli, pairing.WithLimits(2, time.Minute, time.Hour))
		code := e.create("gina", time.Hour)
		for i := range 2 {
			checkErr(t, "guess", e.redeem("evil@h", otherID(code, i)), pairing.ErrInvalidCode)
		}
		checkErr(t, "locked source", e.redeem("evil@h", code), pairing.ErrRateLimited)
		checkErr(t, "other source", e.redeem("good@h", code), nil)
	})

	t.Run("wrong secrets do not burn the code", func(t *testing.T) {
		// An attacker who learned the code id cannot deny its user the
		// enrolment: wrong secrets lock out the attacker's sources only.
		e := newEnv(t, cli)
		code := e.create("hank", time.Hour)
		for i := range 4 * pairing.MaxWrongSecrets {
			err := e.redeem(fmt.Sprintf("t%d@h", i%3), wrongSecret(code))
			if !errors.Is(err, pairing.ErrInvalidCode) && !errors.Is(err, pairing.ErrRateLimited) {
				t.Fatalf("wrong secret %d: err = %v; want invalid or rate limited", i, err)
			}
		}
		checkErr(t, "right code after many wrong secrets", e.redeem("owner@h", code), nil)
	})

	t.Run("no global limit by default", func(t *testing.T) {
		e := newEnv(t, cli)
		code := e.create("gus", time.Hour)
		for i := range 200 {
			checkErr(t, "guess", e.redeem(fmt.Sprintf("10.0.%d.%d", i/250, i%250), otherID(code, i%50)), pairing.ErrInvalidCode)
		}
		checkErr(t, "right code after 200 guesses from other sources", e.redeem("owner@h", code), nil)
	})

	t.Run("two wrong secrets do not burn", func(t *testing.T) {
		e := newEnv(t, cli)
		code := e.create("ivan", time.Hour)
		for i := range pairing.MaxWrongSecrets - 1 {
			checkErr(t, "wrong secret", e.redeem(fmt.Sprintf("t%d@h", i), wrongSecret(code)), pairing.ErrInvalidCode)
		}
		checkErr(t, "right code", e.redeem("owner@h", code), nil)
	})

	t.Run("concurrent redeem: exactly one success", func(t *testing.T) {
		e := newEnv(t, cli)
		code := e.create("judy", time.Hour)
		const n = 16
		var wg sync.WaitGroup
		errs := make([]error, n)
		for i := range n {
			wg.Go(func() {
				errs[i] = e.redeem(fmt.Sprintf("t%d@h", i), code)
			})
		}
		wg.Wait()
		if err := testutil.OneWinner(errs, pairing.ErrInvalidCode); err != nil {
			t.Errorf("concurrent redeems: %v", err)
		}
	})

	// A phone that sends its Pair twice (or again while the first is in
	// flight) gets Paired each time: one redemption enrolls the key, the
	// others find the code spent for that very key.
	t.Run("the same Pair at once: all paired", func(t *testing.T) {
		e := newEnv(t, cli)
		code := e.create("judy", time.Hour)
		pub := newKey(t)
		const n = 8
		var wg sync.WaitGroup
		errs := make([]error, n)
		again := make([]bool, n)
		for i := range n {
			wg.Go(func() {
				var enr pairing.Enrolment
				enr, errs[i] = e.p.Redeem(e.ctx, fmt.Sprintf("t%d@h", i), signedReq(code, soft.Kind, pub, ""))
				again[i] = enr.Again
			})
		}
		wg.Wait()
		for i, err := range errs {
			checkErr(t, fmt.Sprintf("Pair %d of %d", i, n), err, nil)
		}
		if first := slices.Index(again, false); first < 0 || slices.Contains(again[first+1:], false) {
			t.Errorf("Enrolment.Again of the %d Pairs: %v; want one first enrolment, the others again", n, again)
		}
		if n := strings.Count(e.logs.String(), "token enrolled by pairing code"); n != 1 {
			t.Errorf("%d enrolments logged; want 1", n)
		}
	})

	t.Run("global limit", func(t *testing.T) {
		e := newEnv(t, cli, pairing.WithGlobalLimit(3, time.Minute))
		code := e.create("kim", time.Hour)
		for i := range 3 {
			checkErr(t, "guess", e.redeem(fmt.Sprintf("t%d@h", i), otherID(code, i)), pairing.ErrInvalidCode)
		}
		checkErr(t, "right code over the global limit", e.redeem("owner@h", code), pairing.ErrRateLimited)
		e.clk.Advance(time.Minute)
		checkErr(t, "right code after the window", e.redeem("owner@h", code), nil)
	})

	t.Run("bad keys leave the code usable", func(t *testing.T) {
		e := newEnv(t, cli)
		code := e.create("lee", time.Hour)
		tests := []struct {
			name  string
			kind  string
			pub   []byte
			label string
		}{
			{"unknown kind", "piv", newKey(t), ""},
			{"empty kind", "", newKey(t), ""},
			{"short key", "soft", make([]byte, 31), ""},
			{"long key", "soft", make([]byte, 33), ""},
			{"nil key", "soft", nil, ""},
			{"all-zero key (small order: anyone can sign for it)", "soft", make([]byte, 32), ""},
			{"identity key (small order)", "hce", append([]byte{1}, make([]byte, 31)...), ""},
			{"long label", "soft", newKey(t), strings.Repeat("x", pairing.MaxLabelLen+1)},
			{"control in label", "soft", newKey(t), "a\x00b"},
		}
		for _, tt := range tests {
			_, err := e.p.Redeem(e.ctx, "t@h", signedReq(code, tt.kind, tt.pub, tt.label))
			if !errors.Is(err, pairing.ErrBadKey) {
				t.Errorf("%s: err = %v; want ErrBadKey", tt.name, err)
			}
		}
		checkErr(t, "good key", e.redeem("t@h", code), nil)
	})

	t.Run("a huge kind is not quoted whole", func(t *testing.T) {
		e := newEnv(t, cli)
		_, err := e.p.Redeem(e.ctx, "t@h", signedReq(e.create("lee", time.Hour), strings.Repeat("k", 60000), newKey(t), ""))
		if !errors.Is(err, pairing.ErrBadKey) || len(err.Error()) > 200 {
			t.Fatalf("err = %.300v (%d bytes); want ErrBadKey, short (the broker logs it)", err, len(err.Error()))
		}
	})

	// A key enrolled already is refused ErrKeyEnrolled, and the code used
	// for it stays valid (before, it was consumed and nothing enrolled: an
	// outside phone vendor re-pairing a phone lost the code).
	t.Run("key enrolled twice", func(t *testing.T) {
		e := newEnv(t, cli)
		pub := newKey(t)
		redeemErr(t, e, "first", "t@h", signedReq(e.create("mia", time.Hour), "soft", pub, ""), nil)
		code := e.create("mallory", time.Hour)
		redeemErr(t, e, "same key again", "t@h", signedReq(code, "soft", pub, ""), pairing.ErrKeyEnrolled)
		rec, err := e.reg.Token(e.ctx, soft.TokenID(pub))
		checkErr(t, "Token", err, nil)
		if rec.User != "mia" {
			t.Errorf("user = %q; want mia (first enrolment kept)", rec.User)
		}
		other := newKey(t)
		enr, err := e.p.Redeem(e.ctx, "t@h", signedReq(code, "soft", other, ""))
		checkErr(t, "the code again, another key", err, nil)
		if enr.User != "mallory" || enr.ID != soft.TokenID(other) || enr.Again {
			t.Errorf("enrolled %+v; want %s for mallory, first time", enr, soft.TokenID(other))
		}
	})

	t.Run("create validation", func(t *testing.T) {
		e := newEnv(t, cli)
		tests := []struct {
			name, user, label string
			ttl               time.Duration
		}{
			{"no user", "", "", time.Minute},
			{"zero ttl", "u", "", 0},
			{"negative ttl", "u", "", -time.Second},
			{"long label", "u", strings.Repeat("x", pairing.MaxLabelLen+1), time.Minute},
			{"newline in user", "u\n", "", time.Minute},
		}
		for _, tt := range tests {
			if _, _, err := e.p.Create(e.ctx, tt.user, tt.label, "admin", tt.ttl); err == nil {
				t.Errorf("%s: Create = nil error; want error", tt.name)
			}
		}
	})
}

// TestPairingProof: a pair request must prove possession of the key it
// enrols, by a signature over soft.PairMessage bound to the connection
// (terminal, broker, Welcome nonce) and to the code and kind. Whoever holds
// a code but not the key (a victim's public key read from anywhere) enrols
// nothing; the refusal neither reads nor consumes the code, so the victim
// of a forged proof still pairs with it; it counts against the source like
// a wrong code.
func TestPairingProof(t *testing.T) {
	t.Parallel()
	cli := etcdtest.Client(t, etcdtest.Start(t))

	// enrolled reports whether pub is enrolled (as a soft token).
	enrolled := func(e *env, pub []byte) bool {
		_, err := e.reg.Token(e.ctx, soft.TokenID(pub))
		if err != nil && !errors.Is(err, registry.ErrNotFound) {
			t.Fatalf("Token = %v", err)
		}
		return err == nil
	}
	// signAs signs PairMessage of the given connection and request fields with priv.
	signAs := func(priv ed25519.PrivateKey, term, server string, nonce []byte, code, kind string, pub []byte) []byte {
		msg, err := soft.PairMessage(term, server, nonce, code, kind, pub)
		if err != nil {
			t.Fatal(err)
		}
		return ed25519.Sign(priv, msg)
	}

	t.Run("bad proofs refused, code kept", func(t *testing.T) {
		e := newEnv(t, cli)
		code := e.create("victim-of-none", time.Hour)
		victim := newKey(t) // its private key is not the attacker's
		v, _ := keys.Load(string(victim))
		victimPriv := v.(ed25519.PrivateKey)
		_, attacker, _ := ed25519.GenerateKey(rand.Reader)
		login, err := soft.ChallengeMessage(testTerminal, testServer, testNonce, bytes.Repeat([]byte{2}, 32), soft.TokenID(victim))
		if err != nil {
			t.Fatal(err)
		}
		tests := []struct {
			name string
			sig  []byte
		}{
			{"another key's signature", signAs(attacker, testTerminal, testServer, testNonce, code, soft.Kind, victim)},
			{"another connection's nonce", signAs(victimPriv, testTerminal, testServer, bytes.Repeat([]byte{8}, 32), code, soft.Kind, victim)},
			{"another broker", signAs(victimPriv, testTerminal, "b2", testNonce, code, soft.Kind, victim)},
			{"another terminal", signAs(victimPriv, "term-2", testServer, testNonce, code, soft.Kind, victim)},
			{"another code", signAs(victimPriv, testTerminal, testServer, testNonce, otherID(code, 1), soft.Kind, victim)},
			{"another kind", signAs(victimPriv, testTerminal, testServer, testNonce, code, nfc.KindHCE, victim)},
			{"a login proof of the key", ed25519.Sign(victimPriv, login)},
			{"truncated", signAs(victimPriv, testTerminal, testServer, testNonce, code, soft.Kind, victim)[:63]},
			{"garbage", bytes.Repeat([]byte{0xff}, 64)},
		}
		for i, tt := range tests {
			// From a fresh source each: the lockout is another subtest's.
			redeemErr(t, e, tt.name, fmt.Sprintf("evil%d@h", i), forgedReq(code, soft.Kind, victim, tt.sig), pairing.ErrBadProof)
			if enrolled(e, victim) {
				t.Fatalf("%s: the key was enrolled", tt.name)
			}
		}
		// The code was neither consumed nor burned: its owner pairs with it.
		rec, err := e.p.Redeem(e.ctx, "owner@h", signedReq(code, soft.Kind, victim, ""))
		checkErr(t, "the key's holder, after the forged proofs", err, nil)
		if rec.ID != soft.TokenID(victim) || !enrolled(e, victim) {
			t.Fatalf("token = %+v; want %s enrolled", rec, soft.TokenID(victim))
		}
	})

	t.Run("a phone's key is proven too", func(t *testing.T) {
		e := newEnv(t, cli)
		code := e.create("carol", time.Hour)
		pub := newKey(t)
		_, attacker, _ := ed25519.GenerateKey(rand.Reader)
		forged := signAs(attacker, testTerminal, testServer, testNonce, code, nfc.KindHCE, pub)
		redeemErr(t, e, "hce key with another key's signature", "t@h", forgedReq(code, nfc.KindHCE, pub, forged), pairing.ErrBadProof)
		redeemErr(t, e, "hce key with its own signature", "t@h", signedReq(code, nfc.KindHCE, pub, ""), nil)
	})

	t.Run("missing proof refused, not counted", func(t *testing.T) {
		e := newEnv(t, cli, pairing.WithLimits(2, time.Minute, time.Hour))
		code := e.create("dora", time.Hour)
		pub := newKey(t)
		for range 3 {
			redeemErr(t, e, "no signature", "old@h", forgedReq(code, soft.Kind, pub, nil), pairing.ErrNoProof)
			if enrolled(e, pub) {
				t.Fatal("a key was enrolled without a proof")
			}
		}
		// An old terminal is not a guesser: the source is not locked out.
		redeemErr(t, e, "signed, from the same source", "old@h", signedReq(code, soft.Kind, pub, ""), nil)
	})

	t.Run("bad proofs lock the source out", func(t *testing.T) {
		e := newEnv(t, cli, pairing.WithLimits(2, time.Minute, time.Hour))
		code := e.create("eve-target", time.Hour)
		pub := newKey(t)
		for range 2 {
			redeemErr(t, e, "bad proof", "evil@h", forgedReq(code, soft.Kind, pub, bytes.Repeat([]byte{1}, 64)), pairing.ErrBadProof)
		}
		redeemErr(t, e, "good proof from the locked-out source", "evil@h", signedReq(code, soft.Kind, pub, ""), pairing.ErrRateLimited)
		redeemErr(t, e, "good proof from another source", "owner@h", signedReq(code, soft.Kind, pub, ""), nil)
	})
}

// TestPairingLimits: the per-source limit holds for attempts sent at
// once (each reserved when let through: one source's 64 concurrent wrong
// codes get MaxFailures judged, the rest refused), attempts that are no
// guess give their place back, and a locked-out source's refusals are
// one log line per burst, with their count.
func TestPairingLimits(t *testing.T) {
	t.Parallel()
	cli := etcdtest.Client(t, etcdtest.Start(t))

	t.Run("concurrent guesses", func(t *testing.T) {
		e := newEnv(t, cli)
		code := e.create("alice", time.Hour)
		wrong := code[:5] + "0000-0000"
		if wrong == code {
			wrong = code[:5] + "1111-1111"
		}
		var mu sync.Mutex
		got := map[string]int{}
		var wg sync.WaitGroup
		for range 64 {
			wg.Go(func() {
				err := e.redeem("2001:db8::/64", wrong)
				mu.Lock()
				defer mu.Unlock()
				switch {
				case errors.Is(err, pairing.ErrInvalidCode):
					got["judged"]++
				case errors.Is(err, pairing.ErrRateLimited):
					got["refused"]++
				default:
					got[fmt.Sprint(err)]++
				}
			})
		}
		wg.Wait()
		if want := map[string]int{"judged": pairing.DefaultMaxFailures, "refused": 64 - pairing.DefaultMaxFailures}; fmt.Sprint(got) != fmt.Sprint(want) {
			t.Errorf("64 concurrent wrong codes from one source: %v; want %v", got, want)
		}
		if err := e.redeem("2001:db8::/64", code); !errors.Is(err, pairing.ErrRateLimited) {
			t.Errorf("the right code from the locked-out source: err = %v; want %v", err, pairing.ErrRateLimited)
		}
	})

	t.Run("no guess gives its place back", func(t *testing.T) {
		e := newEnv(t, cli)
		code := e.create("bob", time.Hour)
		for i := range 2 * pairing.DefaultMaxFailures {
			redeemErr(t, e, fmt.Sprintf("bad key %d", i), "192.0.2.1", signedReq(code, "soft", newKey(t)[:16], ""), pairing.ErrBadKey)
		}
		redeemErr(t, e, "the right code after bad keys", "192.0.2.1", signedReq(code, "soft", newKey(t), ""), nil)
	})

	t.Run("refusals logged once per burst", func(t *testing.T) {
		e := newEnv(t, cli)
		for range pairing.DefaultMaxFailures {
			_ = e.redeem("10.0.0.9", "AAAA-BBBB-CCCC")
		}
		for range 200 {
			if err := e.redeem("10.0.0.9", "AAAA-BBBB-CCCC"); !errors.Is(err, pairing.ErrRateLimited) {
				t.Fatalf("err = %v; want %v", err, pairing.ErrRateLimited)
			}
		}
		if n := strings.Count(e.logs.String(), "pairing attempt rate limited"); n != 1 {
			t.Errorf("%d log lines for 200 refused attempts in a burst; want 1", n)
		}
		e.clk.Advance(time.Minute)
		_ = e.redeem("10.0.0.9", "AAAA-BBBB-CCCC")
		if logs := e.logs.String(); strings.Count(logs, "pairing attempt rate limited") != 2 || !strings.Contains(logs, "limit=source_locked_out count=200") {
			t.Errorf("after the interval, the next refusal's line lacks the count of 200 (its own and the 199 unlogged):\n%s", logs)
		}
	})
}

// TestPairingStoredHash: the registry holds a salted Argon2id hash of a
// code's secret (never SHA-256 of it: 40 bits are found in minutes from
// that), with a fresh salt per code; a code stored by an earlier version
// (plain SHA-256, no salt) is still redeemed until it expires, and one
// whose hash names an unknown function is refused as invalid.
func TestPairingStoredHash(t *testing.T) {
	t.Parallel()
	e := newEnv(t, etcdtest.Client(t, etcdtest.Start(t)), pairing.WithDefaultHash())
	stored := func(code string) registry.Pairing {
		t.Helper()
		id, _, err := pairing.ParseCode(code)
		checkErr(t, "ParseCode", err, nil)
		pr, _, err := e.reg.Pairing(e.ctx, id)
		checkErr(t, "Pairing", err, nil)
		return pr
	}
	code1, code2 := e.create("alice", time.Hour), e.create("alice", time.Hour)
	p1, p2 := stored(code1), stored(code2)
	_, secret, _ := pairing.ParseCode(code1)
	plain := sha256.Sum256([]byte(secret))
	switch {
	case p1.SecretKDF != "argon2id;t=2;m=19456;p=1" || p1.SecretKDF != pairing.DefaultKDF:
		t.Errorf("SecretKDF = %q; want argon2id;t=2;m=19456;p=1", p1.SecretKDF)
	case len(p1.SecretSalt) != 16 || bytes.Equal(p1.SecretSalt, p2.SecretSalt):
		t.Errorf("salts %x and %x; want 16 random bytes per code", p1.SecretSalt, p2.SecretSalt)
	case len(p1.SecretHash) != 32 || bytes.Equal(p1.SecretHash, plain[:]):
		t.Errorf("SecretHash %x; want 32 bytes of Argon2id, not SHA-256", p1.SecretHash)
	}
	checkErr(t, "Redeem a salted code", e.redeem("192.0.2.1", code1), nil)

	put := func(id, secret, kdf string) string {
		t.Helper()
		sum := sha256.Sum256([]byte(secret))
		err := e.reg.PutPairing(e.ctx, registry.Pairing{ID: id, SecretHash: sum[:], SecretKDF: kdf, User: "bob",
			ExpiresUnixMs: e.clk.Now().Add(time.Hour).UnixMilli()}, time.Hour)
		checkErr(t, "PutPairing", err, nil)
		return id + "-" + secret[:4] + "-" + secret[4:]
	}
	checkErr(t, "Redeem a code of before salted hashes", e.redeem("192.0.2.2", put("ZZZ0", "ABCDEFGH", "")), nil)
	checkErr(t, "Redeem a code with an unknown hash", e.redeem("192.0.2.3", put("ZZZ1", "ABCDEFGH", "md5")), pairing.ErrInvalidCode)
	if !strings.Contains(e.logs.String(), "its stored hash is of an unknown kind") {
		t.Errorf("the unknown hash was not logged")
	}
}

// TestPairingOutcomeUnknown: a redemption etcd committed while the
// registry call failed (a timeout or a leader change after the commit,
// made here by etcdtest.FaultyKV on a real etcd) is a success: the Pairer
// reads back and finds the key enrolled, and says so as for any pairing.
// If the read-back fails as well, Redeem returns the registry error (the
// broker's `unavailable`), and the same Pair sent again succeeds, again
// and again, instead of finding the code used, and is not counted against
// the source. Any other key is refused the spent code, and so is the same
// key once the code would have expired.
func TestPairingOutcomeUnknown(t *testing.T) {
	t.Parallel()
	eps := etcdtest.Start(t)
	// newFaultyEnv is newEnv on a client of its own whose KV fails on cue;
	// one counted failure locks a source out.
	newFaultyEnv := func(t *testing.T) (*env, *etcdtest.FaultyKV) {
		cli := etcdtest.Client(t, eps)
		kv := etcdtest.NewFaultyKV(cli.KV)
		cli.KV = kv
		return newEnv(t, cli, pairing.WithLimits(1, time.Hour, time.Hour)), kv
	}
	wantToken := func(t *testing.T, what string, rec pairing.Enrolment, pub []byte, user string, again bool) {
		t.Helper()
		if rec.ID != soft.TokenID(pub) || rec.User != user || !bytes.Equal(rec.PublicKey, pub) || rec.Again != again {
			t.Fatalf("%s: token %+v; want %s for %s (again: %v)", what, rec, soft.TokenID(pub), user, again)
		}
	}

	// lostRedeem redeems a new code of user with a new key, its
	// transaction committed, the answer and the read-back lost.
	lostRedeem := func(t *testing.T, user string) (e *env, code string, pub []byte, err error) {
		e, kv := newFaultyEnv(t)
		code, pub = e.create(user, time.Hour), newKey(t)
		kv.ApplyThenFail(1, true)
		_, err = e.p.Redeem(e.ctx, "t@h", signedReq(code, soft.Kind, pub, ""))
		kv.FailReads(false)
		return e, code, pub, err
	}

	t.Run("read back", func(t *testing.T) {
		e, kv := newFaultyEnv(t)
		code := e.create("olga", time.Hour)
		pub := newKey(t)
		kv.ApplyThenFail(1, false)
		rec, err := e.p.Redeem(e.ctx, "t@h", signedReq(code, soft.Kind, pub, ""))
		checkErr(t, "Redeem, its transaction committed and then timing out", err, nil)
		wantToken(t, "Redeem", rec, pub, "olga", false)
		if logs := e.logs.String(); !strings.Contains(logs, "token enrolled by pairing code") {
			t.Errorf("no \"token enrolled by pairing code\" line for the pairing read back:\n%s", logs)
		}
		// The same Pair again (the terminal never got the answer) is
		// answered as the first was.
		rec, err = e.p.Redeem(e.ctx, "t@h", signedReq(code, soft.Kind, pub, ""))
		checkErr(t, "the same Pair again", err, nil)
		wantToken(t, "the same Pair again", rec, pub, "olga", true)
	})

	t.Run("read back fails", func(t *testing.T) {
		e, code, pub, err := lostRedeem(t, "pavel")
		if err == nil || !errors.Is(err, context.DeadlineExceeded) || errors.Is(err, pairing.ErrInvalidCode) {
			t.Fatalf("Redeem, its transaction committed, the read-back failing: %v; want the registry's error", err)
		}
		if _, err := e.reg.Token(e.ctx, soft.TokenID(pub)); err != nil {
			t.Fatalf("the token after the redemption of unknown outcome: %v; want it enrolled (the transaction applied)", err)
		}
		for i := range 3 {
			rec, err := e.p.Redeem(e.ctx, "t@h", signedReq(code, soft.Kind, pub, ""))
			checkErr(t, fmt.Sprintf("the same Pair again (%d)", i), err, nil)
			wantToken(t, "the same Pair again", rec, pub, "pavel", true)
		}
		// Not counted: one failure would have locked t@h out.
		checkErr(t, "another code from the same source", e.redeem("t@h", e.create("pavel", time.Hour)), nil)

		// The spent code enrols no other key, with its secret or not,
		// and the same key only with its secret.
		checkErr(t, "another key with the spent code", e.redeem("u@h", code), pairing.ErrInvalidCode)
		redeemErr(t, e, "the same key with a wrong secret", "w@h", signedReq(wrongSecret(code), soft.Kind, pub, ""), pairing.ErrInvalidCode)
		redeemErr(t, e, "the same key from u@h, locked out by its failure", "u@h", signedReq(code, soft.Kind, pub, ""), pairing.ErrRateLimited)
		// Nor as another kind (another token id).
		redeemErr(t, e, "the same key as a phone", "x@h", signedReq(code, nfc.KindHCE, pub, ""), pairing.ErrInvalidCode)
		// Answered again MaxAgain times in all, then refused as the
		// used code it is (a terminal that never stops sending it).
		for i := 3; i < pairing.MaxAgain; i++ {
			redeemErr(t, e, fmt.Sprintf("the same Pair again (%d)", i), "z@h", signedReq(code, soft.Kind, pub, ""), nil)
		}
		redeemErr(t, e, "the same Pair once more than MaxAgain", "z@h", signedReq(code, soft.Kind, pub, ""), pairing.ErrInvalidCode)
		// Nor once the code would have expired.
		e.clk.Advance(time.Hour)
		redeemErr(t, e, "the same Pair after the code's validity", "y@h", signedReq(code, soft.Kind, pub, ""), pairing.ErrInvalidCode)
	})

	t.Run("token deleted since", func(t *testing.T) {
		e, code, pub, err := lostRedeem(t, "quinn")
		if err == nil {
			t.Fatal("Redeem with the read-back failing = nil; want an error")
		}
		if err := e.reg.DeleteToken(e.ctx, soft.TokenID(pub)); err != nil {
			t.Fatal(err)
		}
		redeemErr(t, e, "the same Pair after the token was deleted", "t@h", signedReq(code, soft.Kind, pub, ""), pairing.ErrInvalidCode)
	})
}
