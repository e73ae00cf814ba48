package broker

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/hotdesk/hotdesk/compositor"
	"github.com/hotdesk/hotdesk/internal/testutil"
	"github.com/hotdesk/hotdesk/proto"
	"github.com/hotdesk/hotdesk/proto/prototest"
	"github.com/hotdesk/hotdesk/registry"
)

func sessionInfo(t *testing.T, b *Broker, id string) SessionInfo {
	t.Helper()
	for _, s := range b.Sessions() {
		if s.ID == id {
			return s
		}
	}
	t.Fatalf("session %s not listed", id)
	return SessionInfo{}
}

// TestLifecycle walks every transition of ADR-004 through the real
// protocol: create at term-1, suspend on removal, resume at term-2,
// takeover back at term-1, then suspend on disconnect.
func TestLifecycle(t *testing.T) {
	t.Parallel()
	e := newEnv(t, "b1", nil)
	tok, key := e.enroll("alice")
	t1, t2 := e.dial("term-1"), e.dial("term-2")
	t1.hold(tok, key)
	t2.hold(tok, key)

	// NoSession → Creating → Active.
	t1.insert(tok)
	att := expectMsg[proto.Attached](t1)
	if att.Resumed || att.Token != tok || att.User != "kiosk" || att.ServerID != "b1" || att.Endpoint == "" {
		t.Fatalf("attached = %+v; want a new session of %s for kiosk on b1 with an endpoint", att, tok)
	}
	si := sessionInfo(t, e.b, att.SessionID)
	if si.State != Active || si.Terminal != "term-1" || !pidAlive(si.PID) {
		t.Fatalf("after create: %+v; want active at term-1 with a live compositor", si)
	}
	pid := si.PID
	c, err := e.reg.Lookup(e.ctx, tok)
	if err != nil || c.Session.ID != att.SessionID || c.Session.ServerID != "b1" {
		t.Fatalf("registry lookup = %+v, %v; want session %s on b1", c, err, att.SessionID)
	}

	// Active → Suspended on removal; the compositor keeps running.
	t1.remove(tok)
	det := expectMsg[proto.Detached](t1)
	if det.Reason != proto.DetachTokenRemoved || det.SessionID != att.SessionID {
		t.Fatalf("detached = %+v; want token_removed for %s", det, att.SessionID)
	}
	e.waitTransition(att.SessionID, Suspended)
	si = sessionInfo(t, e.b, att.SessionID)
	if si.State != Suspended || si.PID != pid || !pidAlive(pid) || si.Terminal != "" {
		t.Fatalf("after remove: %+v; want suspended, pid %d alive, no terminal", si, pid)
	}
	if want := si.SuspendedAt.Add(24 * time.Hour); !si.ExpiresAt.Equal(want) {
		t.Fatalf("expires = %v; want %v", si.ExpiresAt, want)
	}

	// Suspended → Active at another terminal: same session, same compositor.
	t2.insert(tok)
	att2 := expectMsg[proto.Attached](t2)
	if att2.SessionID != att.SessionID || !att2.Resumed {
		t.Fatalf("resume at term-2 = %+v; want resumed %s", att2, att.SessionID)
	}
	if si = sessionInfo(t, e.b, att.SessionID); si.PID != pid || si.Terminal != "term-2" || si.State != Active {
		t.Fatalf("after resume: %+v; want active at term-2 with pid %d", si, pid)
	}

	// Takeover: inserted at term-1 while active at term-2.
	t1.insert(tok)
	att3 := expectMsg[proto.Attached](t1)
	det2 := expectMsg[proto.Detached](t2)
	if att3.SessionID != att.SessionID || !att3.Resumed {
		t.Fatalf("takeover attach = %+v; want resumed %s", att3, att.SessionID)
	}
	if det2.Reason != proto.DetachTakeover || det2.Terminal != "term-1" {
		t.Fatalf("term-2 told %+v; want takeover by term-1", det2)
	}
	// The registry follows the session (fenced update under the same claim).
	// The registry is written right after the terminal is told: wait for it.
	var c2 registry.Claim
	waitFor(t, "the registry to show the session at term-1", func() bool {
		c2, err = e.reg.Lookup(e.ctx, tok)
		return err == nil && c2.Session.Terminal == "term-1"
	})
	if err != nil || c2.Fence != c.Fence || c2.Session.Terminal != "term-1" || c2.Session.State != "active" {
		t.Fatalf("registry after takeover = %+v, %v; want fence %d, active at term-1", c2, err, c.Fence)
	}

	// Terminal gone → Suspended.
	t1.conn.Close()
	e.waitTransition(att.SessionID, Suspended)
	if si = sessionInfo(t, e.b, att.SessionID); si.State != Suspended || !pidAlive(pid) {
		t.Fatalf("after disconnect: %+v; want suspended with pid %d alive", si, pid)
	}
}

// TestSetSuspendTimeout: a suspend timeout changed while sessions are
// suspended (a reload) reschedules them from their suspension: with a new
// timeout of 2 h, ben's, suspended 1 h ago, ends 1 h later (not 24 h after
// its suspension, nor 2 h after the change), and its listing says so;
// ann's, suspended 3 h ago, longer than the new timeout, ends at once.
func TestSetSuspendTimeout(t *testing.T) {
	t.Parallel()
	e := newEnv(t, "b1", nil)
	tokA, _, ta, attA := e.login("ann", "term-1")
	tokB, _, tb, attB := e.login("ben", "term-2")
	ta.remove(tokA)
	expectMsg[proto.Detached](ta)
	e.waitTransition(attA.SessionID, Suspended)
	e.clk.Advance(2 * time.Hour)
	tb.remove(tokB)
	expectMsg[proto.Detached](tb)
	e.waitTransition(attB.SessionID, Suspended)
	e.clk.Advance(time.Hour) // ann suspended 3 h ago, ben 1 h ago

	e.b.SetSuspendTimeout(2 * time.Hour)
	e.clk.Advance(0)                            // the fake clock runs the timers due when it is advanced
	e.waitTransition(attA.SessionID, Destroyed) // 3 h > 2 h: at once
	si := sessionInfo(t, e.b, attB.SessionID)
	if si.State != Suspended || !si.ExpiresAt.Equal(si.SuspendedAt.Add(2*time.Hour)) {
		t.Fatalf("ben's session after the change: %+v; want suspended, expiring 2 h after its suspension", si)
	}
	e.clk.Advance(time.Hour - time.Second)
	if si := sessionInfo(t, e.b, attB.SessionID); si.State != Suspended {
		t.Fatalf("ben's session a second before its new deadline: %v; want suspended", si.State)
	}
	e.clk.Advance(time.Second)
	e.waitTransition(attB.SessionID, Destroyed)
}

// TestSuspendTimeout checks the suspend timer with the injected clock: a
// resume before the deadline cancels it; after the deadline the session is
// destroyed, its compositor stopped and its claim released.
func TestSuspendTimeout(t *testing.T) {
	t.Parallel()
	e := newEnv(t, "b1", nil)
	tok, _, t1, att := e.login("bob", "term-1")
	pid := sessionInfo(t, e.b, att.SessionID).PID

	t1.remove(tok)
	expectMsg[proto.Detached](t1)
	e.waitTransition(att.SessionID, Suspended)
	e.clk.Advance(23 * time.Hour)
	t1.insert(tok)
	if a := expectMsg[proto.Attached](t1); a.SessionID != att.SessionID {
		t.Fatalf("resumed %s; want %s", a.SessionID, att.SessionID)
	}
	e.clk.Advance(2 * time.Hour) // past the first deadline: must not fire
	if si := sessionInfo(t, e.b, att.SessionID); si.State != Active {
		t.Fatalf("state = %v after the cancelled deadline; want active", si.State)
	}

	t1.remove(tok)
	expectMsg[proto.Detached](t1)
	e.waitTransition(att.SessionID, Suspended)
	e.clk.Advance(24*time.Hour - time.Second)
	if si := sessionInfo(t, e.b, att.SessionID); si.State != Suspended {
		t.Fatalf("state = %v a second before the timeout; want suspended", si.State)
	}
	e.clk.Advance(time.Second)
	e.waitTransition(att.SessionID, Destroyed)
	if len(e.b.Sessions()) != 0 {
		t.Fatalf("sessions = %+v; want none", e.b.Sessions())
	}
	if pidAlive(pid) {
		t.Fatalf("compositor %d still running after the timeout", pid)
	}
	if _, err := e.reg.Lookup(e.ctx, tok); !errors.Is(err, registry.ErrNotFound) {
		t.Fatalf("lookup after destroy: %v; want ErrNotFound", err)
	}
	// The token starts a new session afterwards.
	t1.insert(tok)
	if a := expectMsg[proto.Attached](t1); a.Resumed || a.SessionID == att.SessionID {
		t.Fatalf("after destroy got %+v; want a new session", a)
	}
}

// TestCompositorCrash: a compositor that dies becomes a destroyed session
// and the terminal is told why.
func TestCompositorCrash(t *testing.T) {
	t.Parallel()
	e := newEnv(t, "b1", nil)
	tok, _, t1, att := e.login("carol", "term-1")
	pid := sessionInfo(t, e.b, att.SessionID).PID
	if err := syscall.Kill(pid, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	det := expectMsg[proto.Detached](t1)
	if det.Reason != proto.DetachDestroyed || det.SessionID != att.SessionID || det.Message == "" {
		t.Fatalf("detached = %+v; want destroyed with a reason", det)
	}
	e.waitTransition(att.SessionID, Destroyed)
	if _, err := e.reg.Lookup(e.ctx, tok); !errors.Is(err, registry.ErrNotFound) {
		t.Fatalf("lookup after crash: %v; want ErrNotFound", err)
	}
}

// TestAdminKill destroys a session on the administrator's request.
func TestAdminKill(t *testing.T) {
	t.Parallel()
	e := newEnv(t, "b1", nil)
	_, _, t1, att := e.login("dave", "term-1")
	if err := e.b.Kill(e.ctx, "s-nope"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("kill unknown = %v; want ErrNotFound", err)
	}
	if err := e.b.Kill(e.ctx, att.SessionID); err != nil {
		t.Fatal(err)
	}
	// PROTOCOL.md §5: a killed session is destroyed (reason 3).
	if det := expectMsg[proto.Detached](t1); det.Reason != proto.DetachDestroyed {
		t.Fatalf("detached = %+v; want destroyed", det)
	}
}

// TestTokenProof: a token id without its key is refused, so is an unknown
// token and a disabled one.
func TestTokenProof(t *testing.T) {
	t.Parallel()
	e := newEnv(t, "b1", nil)
	tok, _ := e.enroll("erin")
	_, wrong, _ := ed25519.GenerateKey(rand.Reader)
	thief := e.dial("term-x")
	thief.hold(tok, wrong) // copied id, some other key
	thief.insert(tok)
	if er := expectMsg[proto.Error](thief); er.Code != proto.ErrAuthFailed || er.Token != tok {
		t.Fatalf("copied id: %+v; want auth failed", er)
	}
	noKey := e.dial("term-y") // cannot answer the challenge at all
	noKey.insert(tok)
	ch := expectMsg[proto.Challenge](noKey)
	_ = noKey.conn.Send(&proto.Proof{ID: ch.ID, Token: tok, Signature: make([]byte, 64)})
	if er := expectMsg[proto.Error](noKey); er.Code != proto.ErrAuthFailed {
		t.Fatalf("zero signature: %+v; want auth failed", er)
	}
	noKey.insert("soft.unknowntoken")
	if er := expectMsg[proto.Error](noKey); er.Code != proto.ErrUnknownToken {
		t.Fatalf("unknown token: %+v; want unknown token", er)
	}
	noKey.insert("not a token/../x")
	if er := expectMsg[proto.Error](noKey); er.Code != proto.ErrUnknownToken {
		t.Fatalf("malformed token: %+v; want unknown token", er)
	}
	if len(e.b.Sessions()) != 0 {
		t.Fatalf("sessions = %+v; want none", e.b.Sessions())
	}
}

// TestBadFramesCloseOnlyThatConnection sends broken frames on fresh
// connections; each is told why and closed, while another terminal keeps working.
func TestBadFramesCloseOnlyThatConnection(t *testing.T) {
	t.Parallel()
	e := newEnv(t, "b1", nil)
	tok, _, good, att := e.login("frank", "term-good")

	frame := func(payload []byte) []byte {
		b := make([]byte, 4+len(payload))
		binary.BigEndian.PutUint32(b, uint32(len(payload)))
		copy(b[4:], payload)
		return b
	}
	nested := []byte{0xa2, 0x01, 0x03, 0x02}
	for i := 0; i < 100; i++ {
		nested = append(nested, 0x81)
	}
	nested = append(nested, 0x00)
	cases := []struct {
		name string
		raw  []byte
	}{
		{"garbage", frame([]byte{0xff, 0xfe, 0xfd})},
		{"oversized", []byte{0x7f, 0xff, 0xff, 0xff}},
		{"truncated", append([]byte{0, 0, 0, 50}, 0xa2, 0x01)},
		{"duplicate keys", frame([]byte{0xa3, 0x01, 0x03, 0x01, 0x03, 0x02, 0xa1, 0x01, 0x61, 0x78})},
		{"deeply nested", frame(nested)},
		{"unknown type", frame([]byte{0xa2, 0x01, 0x19, 0x03, 0xe7, 0x02, 0xa0})},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			bad := dialTerm(t, e.addr, e.pin, proto.Hello{Versions: []uint16{proto.Version}, TerminalID: "term-bad"})
			if _, err := bad.conn.NetConn().Write(tc.raw); err != nil {
				t.Fatal(err)
			}
			if tc.name == "truncated" {
				bad.conn.NetConn().(interface{ CloseWrite() error }).CloseWrite()
			}
			got, closed := bad.closedAfter()
			if !closed {
				t.Fatalf("connection still open after %s", tc.name)
			}
			if tc.name != "truncated" {
				if len(got) == 0 {
					t.Fatalf("no error message before close")
				}
				if er, ok := got[len(got)-1].(*proto.Error); !ok || er.Message == "" {
					t.Fatalf("last message = %+v; want a proto.Error with a reason", got[len(got)-1])
				}
			}
		})
	}
	// An unknown protocol version is refused at the handshake.
	cfg, _ := proto.ClientTLSConfig("", e.pin, nil)
	c, err := proto.Dial(e.ctx, e.addr, cfg)
	if err != nil {
		t.Fatal(err)
	}
	_, err = proto.ClientHandshake(c, proto.Hello{Versions: []uint16{99}, TerminalID: "term-future"})
	var pe *proto.ProtocolError
	if !errors.As(err, &pe) || pe.Code != proto.ErrBadVersion {
		t.Fatalf("handshake with version 99: %v; want ErrBadVersion", err)
	}
	c.Close()

	// The good terminal is undisturbed.
	good.remove(tok)
	if det := expectMsg[proto.Detached](good); det.SessionID != att.SessionID {
		t.Fatalf("good terminal: %+v", det)
	}
	good.insert(tok)
	if a := expectMsg[proto.Attached](good); a.SessionID != att.SessionID {
		t.Fatalf("good terminal resumed %s; want %s", a.SessionID, att.SessionID)
	}
}

// TestSameTokenTwoTerminalsAtOnce: every terminal gets a definite answer and
// there is exactly one session.
func TestSameTokenTwoTerminalsAtOnce(t *testing.T) {
	t.Parallel()
	e := newEnv(t, "b1", nil)
	tok, key := e.enroll("gina")
	for round := 0; round < 3; round++ {
		t1, t2 := e.dial("term-a"), e.dial("term-b")
		t1.hold(tok, key)
		t2.hold(tok, key)
		var wg sync.WaitGroup
		for _, tm := range []*term{t1, t2} {
			wg.Add(1)
			go func() { defer wg.Done(); tm.insert(tok) }()
		}
		wg.Wait()
		a1, a2 := expectMsg[proto.Attached](t1), expectMsg[proto.Attached](t2)
		if a1.SessionID != a2.SessionID {
			t.Fatalf("round %d: two sessions %s and %s for one token", round, a1.SessionID, a2.SessionID)
		}
		// The loser of the race is detached by the later takeover.
		var loser *term
		select {
		case m := <-t1.msgs:
			if d, ok := m.(*proto.Detached); ok && d.Reason == proto.DetachTakeover {
				loser = t1
			}
		case m := <-t2.msgs:
			if d, ok := m.(*proto.Detached); ok && d.Reason == proto.DetachTakeover {
				loser = t2
			}
		case <-time.After(10 * time.Second):
		}
		if loser == nil {
			t.Fatalf("round %d: nobody was told about the takeover", round)
		}
		if n := len(e.b.Sessions()); n != 1 {
			t.Fatalf("round %d: %d sessions; want 1", round, n)
		}
		t1.conn.Close()
		t2.conn.Close()
	}
}

// TestRedirectToOwner: a token whose session runs on another broker of the
// group is redirected there with the owner's address, pin and fence.
func TestRedirectToOwner(t *testing.T) {
	t.Parallel()
	a := newEnv(t, "b1", nil)
	b := newEnv(t, "b2", a.etcdEndpoints) // same group: one etcd
	tok, key := a.enroll("hank")
	ta := a.dial("term-a")
	ta.present(tok, key)
	att := expectMsg[proto.Attached](ta)
	ta.remove(tok)
	expectMsg[proto.Detached](ta)

	tb := b.dial("term-b")
	tb.present(tok, key)
	red := expectMsg[proto.Redirect](tb)
	c, _ := a.reg.Lookup(a.ctx, tok)
	if red.ServerID != "b1" || red.Addr != a.addr || string(red.Fingerprint) != string(a.pin) || red.Fence != c.Fence {
		t.Fatalf("redirect = %+v; want b1 at %s with its pin and fence %d", red, a.addr, c.Fence)
	}
	// Following it: the owner resumes the session there.
	tf := dialTerm(t, red.Addr, red.Fingerprint, proto.Hello{Versions: []uint16{proto.Version}, TerminalID: "term-b", Hops: 1, Fence: red.Fence, Token: tok})
	tf.present(tok, key)
	if at := expectMsg[proto.Attached](tf); at.SessionID != att.SessionID || !at.Resumed {
		t.Fatalf("after redirect: %+v; want resumed %s", at, att.SessionID)
	}
	// A terminal that already hopped 3 times is not redirected again.
	tl := dialTerm(t, b.addr, b.pin, proto.Hello{Versions: []uint16{proto.Version}, TerminalID: "term-loop", Hops: 3})
	tl.present(tok, key)
	if er := expectMsg[proto.Error](tl); er.Code != proto.ErrTooManyHops {
		t.Fatalf("hop limit: %+v; want too many hops", er)
	}
}

// TestLockToken: disabling a token locks the session it shows and refuses it
// afterwards.
func TestLockToken(t *testing.T) {
	t.Parallel()
	e := newEnv(t, "b1", nil)
	tok, _, t1, att := e.login("pia", "term-1")
	rec := e.disableToken(tok)
	e.b.TokenChanged(registry.TokenChange{ID: tok, Record: rec})
	if det := expectMsg[proto.Detached](t1); det.Reason != proto.DetachLocked || det.SessionID != att.SessionID {
		t.Fatalf("detached = %+v; want locked", det)
	}
	e.waitTransition(att.SessionID, Suspended) // TokenChanged suspends in the background
	if si := sessionInfo(t, e.b, att.SessionID); si.State != Suspended || !pidAlive(si.PID) {
		t.Fatalf("locked session = %+v; want suspended, compositor alive", si)
	}
	t1.insert(tok)
	if er := expectMsg[proto.Error](t1); er.Code != proto.ErrTokenDisabled {
		t.Fatalf("disabled token inserted: %+v; want token disabled", er)
	}
}

// destroyBarrier holds every Destroy until n of them are in progress at
// once (or the call's context ends), then lets them through to the real
// backend.
type destroyBarrier struct {
	compositor.Backend
	n       int
	mu      sync.Mutex
	entered int
	reached chan struct{}
}

func (d *destroyBarrier) Destroy(ctx context.Context, id string) error {
	d.mu.Lock()
	d.entered++
	if d.entered == d.n {
		close(d.reached)
	}
	d.mu.Unlock()
	select {
	case <-d.reached:
	case <-ctx.Done():
	}
	return d.Backend.Destroy(ctx, id)
}

// TestShutdownDestroysSideBySide: without keep-on-stop, Shutdown destroys
// the desktops side by side, not one after another (each may take its stop
// grace).
func TestShutdownDestroysSideBySide(t *testing.T) {
	t.Parallel()
	const n = 3
	bar := &destroyBarrier{n: n, reached: make(chan struct{})}
	e := newEnvWith(t, "b1", envOptions{wrapComp: func(c compositor.Backend) compositor.Backend {
		bar.Backend = c
		return bar
	}})
	for i := range n {
		createAt(t, e, fmt.Sprintf("side%d", i))
	}
	ctx, cancel := context.WithTimeout(e.ctx, 20*time.Second)
	defer cancel()
	e.b.Shutdown(ctx)
	select {
	case <-bar.reached:
	default:
		t.Fatalf("Shutdown destroyed %d desktops at once at most; want %d side by side", bar.entered, n)
	}
	if left := e.b.Sessions(); len(left) != 0 {
		t.Fatalf("sessions after Shutdown: %+v", left)
	}
}

// TestShutdownStartsNothingAfter: Shutdown waits for the broker's
// goroutines (a WaitGroup), and terminals keep dialling while it runs. A
// connection accepted once Shutdown waits is closed at once, unserved, and
// nothing else is started then. Before, such a connection's goroutine was
// added to the WaitGroup concurrently with or after its Wait (a misuse
// -race reports, or a panic), and a terminal dialling after Shutdown was
// welcomed by a broker shut down.
func TestShutdownStartsNothingAfter(t *testing.T) {
	t.Parallel()
	e := newEnv(t, "b1", nil)
	cfg := prototest.PinnedTLS(t, e.pin)
	// welcomed dials a terminal and reports whether the broker welcomed it.
	welcomed := func() bool {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		c, err := proto.Dial(ctx, e.addr, cfg)
		if err != nil {
			return false
		}
		defer c.Close()
		_, err = proto.ClientHandshake(c, proto.Hello{Versions: []uint16{proto.Version}, TerminalID: "late"})
		return err == nil
	}
	stopDialers := repeatConcurrently(4, func() { welcomed() })
	ctx, cancel := context.WithTimeout(e.ctx, 20*time.Second)
	defer cancel()
	err := e.b.Shutdown(ctx)
	stopDialers()
	if err != nil {
		t.Fatalf("Shutdown: %v", err)
	}
	if welcomed() {
		t.Fatal("a terminal dialling after Shutdown was welcomed; want its connection closed unserved")
	}
	if e.b.goAttach(func() { t.Error("a goroutine started after Shutdown ran") }) {
		t.Fatal("goAttach after Shutdown = true; want false (nothing started)")
	}
}

// repeatConcurrently runs f over and over in n goroutines until the stop
// it returns is called; stop returns when they have ended.
func repeatConcurrently(n int, f func()) (stop func()) {
	done := make(chan struct{})
	var wg sync.WaitGroup
	for range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				select {
				case <-done:
					return
				default:
					f()
				}
			}
		}()
	}
	return func() {
		close(done)
		wg.Wait()
	}
}

// TestCompositorCrashWhileListed: compositors that die while an
// administrator's listing (Sessions: hotdeskctl, the dashboard, metrics)
// reads their sessions: the crash's bookkeeping and the listing do not
// race (run with -race; the window is narrow, hence several crashes).
func TestCompositorCrashWhileListed(t *testing.T) {
	t.Parallel()
	e := newEnv(t, "b1", nil)
	defer repeatConcurrently(8, func() { _ = e.b.Sessions() })()
	for i := range 6 {
		_, _, tm, att := e.login(fmt.Sprintf("crash%d", i), fmt.Sprintf("term-%d", i))
		if err := syscall.Kill(sessionInfo(t, e.b, att.SessionID).PID, syscall.SIGKILL); err != nil {
			t.Fatal(err)
		}
		if det := expectMsg[proto.Detached](tm); det.Reason != proto.DetachDestroyed {
			t.Fatalf("detached = %+v; want destroyed", det)
		}
		e.waitTransition(att.SessionID, Destroyed)
	}
}

// gatedClaims holds the next Claim (after signalling entered) until
// released: a login between its authentication and its desktop.
type gatedClaims struct {
	Registry
	entered chan struct{}
	gate    chan struct{}
}

func (g *gatedClaims) Claim(ctx context.Context, key string, rs registry.Session) (registry.Claim, bool, error) {
	select {
	case g.entered <- struct{}{}:
		<-g.gate
	default:
	}
	return g.Registry.Claim(ctx, key, rs)
}

// TestShutdownStartsNoDesktop: a login that Shutdown overtakes between
// its authentication and its claim starts no desktop and claims nothing:
// Shutdown listed the sessions to destroy before, so a desktop started
// then would outlive the broker (which destroys its desktops when it
// stops). The login's context ends with its connection, which Shutdown
// closes.
func TestShutdownStartsNoDesktop(t *testing.T) {
	t.Parallel()
	g := &gatedClaims{entered: make(chan struct{}), gate: make(chan struct{})}
	release := sync.OnceFunc(func() { close(g.gate) })
	defer release()
	e := newEnvWith(t, "b1", envOptions{wrap: func(r Registry) Registry { g.Registry = r; return g }})
	tok, key := e.enroll("lea")
	tm := e.dial("term-1")
	tm.present(tok, key)
	<-g.entered
	ctx, cancel := context.WithTimeout(e.ctx, 30*time.Second)
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- e.b.Shutdown(ctx) }()
	testutil.WaitFor(t, 20*time.Second, "Shutdown begun", func() bool {
		e.b.mu.Lock()
		defer e.b.mu.Unlock()
		return e.b.closed
	})
	release()
	if err := <-done; err != nil {
		t.Fatalf("Shutdown: %v", err)
	}
	if infos, err := e.comp.List(ctx); err != nil || len(infos) != 0 {
		t.Fatalf("desktops after Shutdown: %+v, %v; want none", infos, err)
	}
	if left := e.b.Sessions(); len(left) != 0 {
		t.Fatalf("sessions after Shutdown: %+v; want none", left)
	}
	if c, err := e.reg.Lookup(ctx, tok); !errors.Is(err, registry.ErrNotFound) {
		t.Fatalf("the token's claim after Shutdown: %+v, %v; want none", c, err)
	}
}
