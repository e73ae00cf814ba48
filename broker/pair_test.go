package broker

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"errors"
	"fmt"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/hotdesk/hotdesk/internal/burstlog"
	"github.com/hotdesk/hotdesk/internal/event"
	"github.com/hotdesk/hotdesk/internal/testutil"
	"github.com/hotdesk/hotdesk/proto"
	"github.com/hotdesk/hotdesk/registry"
	"github.com/hotdesk/hotdesk/registry/etcdtest"
	"github.com/hotdesk/hotdesk/registry/pairing"
	"github.com/hotdesk/hotdesk/tokens/soft"
)

// fakePairer fails every Redeem with err.
type fakePairer struct{ err error }

func (f fakePairer) Redeem(context.Context, string, pairing.Request) (pairing.Enrolment, error) {
	return pairing.Enrolment{}, f.err
}

// TestPairRefusalSaysWhy: a Pair refused for its key, kind or label (the
// code untouched, still valid) is not answered as if the code were bad, so
// a phone or terminal can tell the person to fix the key rather than ask
// for a new code (a key enrolled already is refused so too); a bad code
// still gets the code's message. A check that found the secret checks
// busy, or a registry that failed, is `unavailable` (try again), not a bad
// code: the person would otherwise ask for a new one.
func TestPairRefusalSaysWhy(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		err  error
		code proto.ErrorCode
		want string
	}{
		{"bad key", fmt.Errorf("pairing: redeem: %w: soft public key is a point of small order", pairing.ErrBadKey), proto.ErrPairing, "key"},
		{"bad code", fmt.Errorf("pairing: redeem: %w", pairing.ErrInvalidCode), proto.ErrPairing, "pairing code invalid, expired or used"},
		{"bad proof", fmt.Errorf("pairing: redeem: %w", pairing.ErrBadProof), proto.ErrPairing, "proof of possession"},
		{"no proof", fmt.Errorf("pairing: redeem: %w", pairing.ErrNoProof), proto.ErrPairing, "signature"},
		{"key enrolled", fmt.Errorf("pairing: redeem: token soft.x: %w", pairing.ErrKeyEnrolled), proto.ErrPairing, "already enrolled"},
		{"busy", fmt.Errorf("pairing: redeem: %w: every secret check slot stayed taken", pairing.ErrBusy), proto.ErrUnavailable, "busy"},
		{"registry down", fmt.Errorf("pairing: redeem: registry: %w", context.DeadlineExceeded), proto.ErrUnavailable, "unavailable"},
		{"rate limited", fmt.Errorf("pairing: redeem: %w", pairing.ErrRateLimited), proto.ErrRateLimited, "try later"},
		{"locked out", fmt.Errorf("pairing: redeem: %w", &pairing.LockoutError{Remaining: 14*time.Minute + 1500*time.Millisecond}), proto.ErrRateLimited, "try again in 842 s"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b := &Broker{log: hclog.NewNullLogger(), blog: burstlog.New(hclog.NewNullLogger(), logEvery, nil), cfg: Config{Pairer: fakePairer{tt.err}}}
			peer, mine := net.Pipe()
			defer peer.Close()
			term := &terminal{b: b, id: "t-1", conn: proto.NewConn(mine)}
			defer term.conn.Close()
			go term.pair(context.Background(), &proto.Pair{Code: "AAAA-BBBB-CCCC", Kind: "soft", PublicKey: make([]byte, 32)})
			m, err := proto.NewConn(peer).Recv()
			if err != nil {
				t.Fatal(err)
			}
			e, ok := m.Body.(*proto.Error)
			if !ok || e.Code != tt.code {
				t.Fatalf("got %+v; want Error{%v}", m.Body, tt.code)
			}
			if !strings.Contains(e.Message, tt.want) || tt.name != "bad code" && strings.Contains(e.Message, "code invalid") {
				t.Fatalf("message %q; want it to say %q", e.Message, tt.want)
			}
			if (e.Detail == proto.DetailKeyEnrolled) != (tt.name == "key enrolled") {
				t.Fatalf("detail %q; want %q only for an enrolled key", e.Detail, proto.DetailKeyEnrolled)
			}
			if (e.Detail == proto.DetailKeyRefused) != (tt.name == "bad key") {
				t.Fatalf("detail %q; want %q only for a refused key", e.Detail, proto.DetailKeyRefused)
			}
			if proof := tt.name == "bad proof" || tt.name == "no proof"; (e.Detail == proto.DetailProofRefused) != proof {
				t.Fatalf("detail %q; want %q only for a missing or bad proof", e.Detail, proto.DetailProofRefused)
			}
			// A lockout is no transient refusal (PROTOCOL.md §7.5): it
			// says so, and when it ends.
			if locked := tt.name == "locked out"; (e.Detail == proto.DetailLockedOut) != locked || locked != (e.RetryAfterMs == 841500) {
				t.Fatalf("detail %q, retry after %d ms; want %q and 841500 only for a lockout", e.Detail, e.RetryAfterMs, proto.DetailLockedOut)
			}
		})
	}
}

// sourcePairer records the source of every Redeem and refuses it.
type sourcePairer struct{ sources chan string }

func (p sourcePairer) Redeem(_ context.Context, source string, _ pairing.Request) (pairing.Enrolment, error) {
	p.sources <- source
	return pairing.Enrolment{}, fmt.Errorf("pairing: redeem: %w", pairing.ErrInvalidCode)
}

// TestPairSourceIsTheLimitsSource: pairing attempts are rate-limited by the
// source every per-source limit uses (max_unauthenticated_per_source's):
// an IPv6 /64 is one source, so a host holding one does not get a failure
// budget, and a lockout, per address; an IPv4 address is its own.
func TestPairSourceIsTheLimitsSource(t *testing.T) {
	t.Parallel()
	p := sourcePairer{sources: make(chan string, 1)}
	b := &Broker{log: hclog.NewNullLogger(), cfg: Config{Pairer: p}}
	for _, tc := range []struct{ remote, want string }{
		{"[2001:db8:1:2::a]:40000", "2001:db8:1:2::/64"},
		{"[2001:db8:1:2:ffff::b]:40001", "2001:db8:1:2::/64"},
		{"[::ffff:192.0.2.7]:40002", "192.0.2.7"},
		{"192.0.2.8:40003", "192.0.2.8"},
	} {
		peer, mine := net.Pipe()
		term := &terminal{b: b, id: "t-1", remote: tc.remote, conn: proto.NewConn(mine)}
		go term.pair(context.Background(), &proto.Pair{Code: "AAAA-BBBB-CCCC", Kind: "soft", PublicKey: make([]byte, 32)})
		if _, err := proto.NewConn(peer).Recv(); err != nil {
			t.Fatal(err)
		}
		got := <-p.sources
		addr, err := net.ResolveTCPAddr("tcp", tc.remote)
		if err != nil {
			t.Fatal(err)
		}
		if got != tc.want || got != sourceOf(addr) {
			t.Errorf("pairing from %s counted against %q; want %q, the source of max_unauthenticated_per_source (%q)", tc.remote, got, tc.want, sourceOf(addr))
		}
		term.conn.Close()
		peer.Close()
	}
}

// pairCode creates a pairing code for user on e's registry.
func pairCode(t *testing.T, e *env, user string) string {
	t.Helper()
	code, _, err := e.b.cfg.Pairer.(*pairing.Pairer).Create(e.ctx, user, "", "test", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	return code
}

// pairSig signs the Pair transcript (PROTOCOL.md §8.4) of tm's connection
// for code, kind and pub with priv.
func pairSig(t *testing.T, tm *term, priv ed25519.PrivateKey, code, kind string, pub []byte) []byte {
	t.Helper()
	msg, err := soft.PairMessage(tm.id, tm.welcome.ServerID, tm.welcome.Nonce, code, kind, pub)
	if err != nil {
		t.Fatal(err)
	}
	return ed25519.Sign(priv, msg)
}

// expectPairRefused reads the answer to a Pair at tm and fails unless it is
// Error{pairing} with Detail proof_refused.
func expectPairRefused(t *testing.T, tm *term, what string) {
	t.Helper()
	switch m := tm.next().(type) {
	case *proto.Error:
		if m.Code != proto.ErrPairing || m.Detail != proto.DetailProofRefused {
			t.Fatalf("%s: Error %+v; want pairing, detail %s", what, m, proto.DetailProofRefused)
		}
	default:
		t.Fatalf("%s: got %T %+v; want Error{pairing, proof_refused}", what, m, m)
	}
}

// TestPairProofOfPossession: through a real broker, a Pair enrols a key
// only with a signature by that key over this connection's transcript.
// Mallory, who holds a pairing code of her own, tries to enrol Victor's
// public key (which she read somewhere) to her account: with her own
// key's signature, with a pairing signature Victor made on his own
// connection (another Welcome nonce), with a login proof of Victor's key,
// and without any signature. Each is refused with Error{pairing,
// proof_refused}; Victor's key stays unenrolled and her code unspent: she
// then pairs her own key with it. Before proofs, the first attempt
// enrolled Victor's key to Mallory: his token would have logged him in to
// her account.
func TestPairProofOfPossession(t *testing.T) {
	t.Parallel()
	e := newEnvWith(t, "b1", envOptions{pairing: true})
	victorPub, victorPriv, _ := ed25519.GenerateKey(rand.Reader)
	malloryPub, malloryPriv, _ := ed25519.GenerateKey(rand.Reader)
	code := pairCode(t, e, "mallory")
	mallory := e.dial("mallory-term")
	victor := e.dial("victor-term")
	if string(mallory.welcome.Nonce) == string(victor.welcome.Nonce) {
		t.Fatal("two connections got the same Welcome nonce")
	}
	send := func(tm *term, p *proto.Pair) {
		t.Helper()
		if err := tm.conn.Send(p); err != nil {
			t.Fatal(err)
		}
	}
	login, err := soft.ChallengeMessage(mallory.id, mallory.welcome.ServerID, mallory.welcome.Nonce, bytes.Repeat([]byte{2}, 32), soft.TokenID(victorPub))
	if err != nil {
		t.Fatal(err)
	}
	attempts := []struct {
		name string
		sig  []byte
	}{
		{"her own key's signature", pairSig(t, mallory, malloryPriv, code, soft.Kind, victorPub)},
		{"Victor's signature from his connection", pairSig(t, victor, victorPriv, code, soft.Kind, victorPub)},
		{"a login proof of Victor's key on her connection", ed25519.Sign(victorPriv, login)},
		{"no signature", nil},
	}
	for _, a := range attempts {
		send(mallory, &proto.Pair{Code: code, Kind: soft.Kind, PublicKey: victorPub, Signature: a.sig})
		expectPairRefused(t, mallory, a.name)
		if _, err := e.reg.Token(e.ctx, soft.TokenID(victorPub)); !errors.Is(err, registry.ErrNotFound) {
			t.Fatalf("%s: Victor's token is enrolled (%v)", a.name, err)
		}
	}
	// The code is unspent: Mallory pairs a key she holds with it.
	send(mallory, &proto.Pair{Code: code, Kind: soft.Kind, PublicKey: malloryPub, Signature: pairSig(t, mallory, malloryPriv, code, soft.Kind, malloryPub)})
	paired := expectMsg[proto.Paired](mallory)
	if paired.Token != soft.TokenID(malloryPub) || paired.User != "mallory" {
		t.Fatalf("Paired = %+v; want %s for mallory", paired, soft.TokenID(malloryPub))
	}
	// And a pairing proof is no login proof: Victor's own pairing signature
	// does not answer a challenge. (His key enrolled, he presents it with
	// the pairing signature as its proof.)
	vcode := pairCode(t, e, "victor")
	send(victor, &proto.Pair{Code: vcode, Kind: soft.Kind, PublicKey: victorPub, Signature: pairSig(t, victor, victorPriv, vcode, soft.Kind, victorPub)})
	if p := expectMsg[proto.Paired](victor); p.Token != soft.TokenID(victorPub) {
		t.Fatalf("Paired = %+v; want %s", p, soft.TokenID(victorPub))
	}
	victor.insert(soft.TokenID(victorPub))
	ch := expectMsg[proto.Challenge](victor)
	pairingSig := pairSig(t, victor, victorPriv, vcode, soft.Kind, victorPub)
	if err := victor.conn.Send(&proto.Proof{ID: ch.ID, Token: ch.Token, Signature: pairingSig}); err != nil {
		t.Fatal(err)
	}
	if m, ok := victor.next().(*proto.Error); !ok || m.Code != proto.ErrAuthFailed {
		t.Fatalf("a pairing signature as a login proof: got %+v; want Error{auth_failed}", m)
	}
}

// TestPairUncountedRefusalsLogOncePerBurst: the Pair refusals that do not
// count against the source (a refused key, kind or label; no proof of
// possession), and so never end in a lockout, are logged once per burst
// (internal/burstlog) with the number refused: a peer sending them as
// fast as its token event rate lets it costs a line, not a line each.
func TestPairUncountedRefusalsLogOncePerBurst(t *testing.T) {
	t.Parallel()
	for _, err := range []error{
		fmt.Errorf("pairing: redeem: %w: unsupported token kind", pairing.ErrBadKey),
		fmt.Errorf("pairing: redeem: %w", pairing.ErrNoProof),
	} {
		var out testutil.LockedBuffer
		log := hclog.New(&hclog.LoggerOptions{Output: &out, Level: hclog.Info})
		now := time.Unix(1000, 0)
		b := &Broker{log: log, blog: burstlog.New(log, logEvery, func() time.Time { return now }), cfg: Config{Pairer: fakePairer{err}}}
		peer, mine := net.Pipe()
		term := &terminal{b: b, id: "t-1", remote: "192.0.2.7:4000", conn: proto.NewConn(mine)}
		pc := proto.NewConn(peer)
		const n = 30
		for range n {
			go term.pair(context.Background(), &proto.Pair{Code: "AAAA-BBBB-CCCC", Kind: "soft", PublicKey: make([]byte, 32)})
			if _, err := pc.Recv(); err != nil {
				t.Fatal(err)
			}
		}
		peer.Close()
		mine.Close()
		if lines := strings.Count(out.String(), "pairing refused"); lines != 1 {
			t.Errorf("%v: %d refusals logged in %d lines; want 1\n%s", err, n, lines, out.String())
		}
	}
}

// TestPairOutcomeUnknown: through a real broker, a Pair whose redemption
// etcd committed while the registry call timed out (etcdtest.FaultyKV) is
// answered Paired, with its token_registered event, as any pairing is. If
// reading back fails too, it is answered `unavailable`; the same Pair sent
// again, on a new connection or on its own, is then answered Paired (with
// the event), not "pairing code invalid"; another key is refused the
// spent code.
func TestPairOutcomeUnknown(t *testing.T) {
	t.Parallel()
	var kv *etcdtest.FaultyKV
	bus := NewBus(hclog.NewNullLogger())
	sub := bus.Subscribe("test", 256)
	e := newEnvWith(t, "b1", envOptions{pairing: true, events: bus, pairKV: func(inner clientv3.KV) clientv3.KV {
		kv = etcdtest.NewFaultyKV(inner)
		return kv
	}})
	newKey := func() (ed25519.PublicKey, ed25519.PrivateKey) {
		pub, priv, err := ed25519.GenerateKey(rand.Reader)
		if err != nil {
			t.Fatal(err)
		}
		return pub, priv
	}
	pair := func(tm *term, code string, pub ed25519.PublicKey, priv ed25519.PrivateKey) {
		t.Helper()
		if err := tm.conn.Send(&proto.Pair{Code: code, Kind: soft.Kind, PublicKey: pub, Signature: pairSig(t, tm, priv, code, soft.Kind, pub)}); err != nil {
			t.Fatal(err)
		}
	}
	paired := func(what string, tm *term, pub ed25519.PublicKey, user, reason string) {
		t.Helper()
		if p := expectMsg[proto.Paired](tm); p.Token != soft.TokenID(pub) || p.User != user {
			t.Fatalf("%s: Paired = %+v; want %s for %s", what, p, soft.TokenID(pub), user)
		}
		timeout := time.After(20 * time.Second)
		for {
			select {
			case ev := <-sub.C:
				if ev.Kind != event.TokenRegistered {
					continue
				}
				if ev.Token != soft.TokenID(pub) || ev.User != user || ev.Terminal != tm.id || ev.Reason != reason {
					t.Fatalf("%s: token_registered %+v; want %s for %s at %s, reason %q", what, ev, soft.TokenID(pub), user, tm.id, reason)
				}
				return
			case <-timeout:
				t.Fatalf("%s: no token_registered event", what)
			}
		}
	}

	// The redemption committed, the answer lost: read back.
	pub, priv := newKey()
	code := pairCode(t, e, "rita")
	tm := e.dial("rita-term")
	kv.ApplyThenFail(1, false)
	pair(tm, code, pub, priv)
	paired("a Pair read back", tm, pub, "rita", "pairing code")

	// The registry out of reach for the read-back as well: unavailable,
	// and the same Pair again is Paired.
	pub, priv = newKey()
	code = pairCode(t, e, "sam")
	tm = e.dial("sam-term")
	kv.ApplyThenFail(1, true)
	pair(tm, code, pub, priv)
	if m, ok := tm.next().(*proto.Error); !ok || m.Code != proto.ErrUnavailable {
		t.Fatalf("a Pair of unknown outcome, not read back: got %+v; want Error{unavailable}", m)
	}
	kv.FailReads(false)
	tm = e.dial("sam-term-2")
	pair(tm, code, pub, priv)
	// The first enrolment was never reported (its outcome unknown): this
	// event is its report, and says it may be a repeat.
	paired("the same Pair again", tm, pub, "sam", "pairing code, again")

	// The spent code enrols no other key.
	other, otherPriv := newKey()
	pair(tm, code, other, otherPriv)
	if m, ok := tm.next().(*proto.Error); !ok || m.Code != proto.ErrPairing || !strings.Contains(m.Message, "invalid") {
		t.Fatalf("another key with the spent code: got %+v; want Error{pairing} \"pairing code invalid, expired or used\"", m)
	}
	if _, err := e.reg.Token(e.ctx, soft.TokenID(other)); !errors.Is(err, registry.ErrNotFound) {
		t.Fatalf("the other key after the spent code: %v; want not enrolled", err)
	}

	// The same Pair, signature and all, sent again on its own connection
	// (what hotdesk-term sends, so that a phone signs once): Paired.
	pub, priv = newKey()
	code = pairCode(t, e, "tess")
	tm = e.dial("tess-term")
	first := &proto.Pair{Code: code, Kind: soft.Kind, PublicKey: pub, Signature: pairSig(t, tm, priv, code, soft.Kind, pub)}
	kv.ApplyThenFail(1, true)
	if err := tm.conn.Send(first); err != nil {
		t.Fatal(err)
	}
	if m, ok := tm.next().(*proto.Error); !ok || m.Code != proto.ErrUnavailable {
		t.Fatalf("a Pair of unknown outcome, not read back: got %+v; want Error{unavailable}", m)
	}
	kv.FailReads(false)
	if err := tm.conn.Send(first); err != nil {
		t.Fatal(err)
	}
	paired("the same Pair again on its connection", tm, pub, "tess", "pairing code, again")
}
