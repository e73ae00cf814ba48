package broker

import (
	"context"
	"crypto/ed25519"
	"errors"
	"fmt"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hotdesk/hotdesk/auth"
	"github.com/hotdesk/hotdesk/compositor/weston"
	"github.com/hotdesk/hotdesk/internal/testutil"
	"github.com/hotdesk/hotdesk/proto"
	"github.com/hotdesk/hotdesk/registry"
	"github.com/hotdesk/hotdesk/registry/etcdtest"
	"github.com/hotdesk/hotdesk/tokens/soft"
)

// Tests of the group's invariants over time (issue 9): each one failed
// before its fix. Budget: about 5-15 s each on a loaded 2-core machine
// (real etcd, real weston).

// createAt starts a session for a new token of user at e and suspends it.
func createAt(t *testing.T, e *env, user string) (string, ed25519.PrivateKey, string) {
	t.Helper()
	tok, key, tm, att := e.login(user, "term-create-"+user)
	tm.remove(tok)
	expectMsg[proto.Detached](tm)
	tm.conn.Close()
	return tok, key, att.SessionID
}

// twoBrokers starts brokers b1 and b2 of one group (one etcd).
func twoBrokers(t *testing.T) (b1, b2 *env) {
	t.Helper()
	eps := etcdtest.Start(t)
	return newEnv(t, "b1", eps), newEnv(t, "b2", eps)
}

// TestHopsBoundOneLookup: the Hello's hop count bounds the lookup of the
// token it was redirected for, not every later insert on that connection.
func TestHopsBoundOneLookup(t *testing.T) {
	t.Parallel()
	b1, b2 := twoBrokers(t)
	x, xKey, _ := createAt(t, b2, "xena")
	y, yKey, ySess := createAt(t, b1, "yuri")
	cx := b2.claim(t, x)
	// Reached b2 after the most redirects allowed, for x.
	tm := dialTerm(t, b2.addr, b2.pin, proto.Hello{Versions: []uint16{proto.Version}, TerminalID: "term-far",
		Hops: proto.MaxHops, Fence: cx.Fence, Token: x})
	tm.present(x, xKey)
	expectMsg[proto.Attached](tm)
	// A later insert of another token is a new lookup: redirected, not refused.
	tm.insert(y)
	r, ok := tm.next().(*proto.Redirect)
	if !ok || r.ServerID != "b1" {
		t.Fatalf("insert of a token owned by b1 on a connection that arrived after %d hops: %+v; want a redirect to b1", proto.MaxHops, r)
	}
	tm.conn.Close()
	ty := dialTerm(t, r.Addr, r.Fingerprint, proto.Hello{Versions: []uint16{proto.Version}, TerminalID: "term-far",
		Hops: 1, Fence: r.Fence, Token: y})
	ty.present(y, yKey)
	if att := expectMsg[proto.Attached](ty); att.SessionID != ySess {
		t.Fatalf("attached %s; want %s", att.SessionID, ySess)
	}
}

// reclaimNewFence revokes e's lease (every key of it vanishes) and moves
// its sessions to a new registry: each key is created anew, with a newer
// fence.
func reclaimNewFence(t *testing.T, e *env) *registry.Registry {
	t.Helper()
	old := e.b.registry().(*registry.Registry)
	if _, err := e.cli.Revoke(e.ctx, old.LeaseID()); err != nil {
		t.Fatal(err)
	}
	<-old.Done()
	fresh := e.reopenRegistry(t, e.ttl, old.LeaseID())
	if orphans, err := e.b.Reestablish(e.ctx, fresh); err != nil || len(orphans) != 0 {
		t.Fatalf("reestablish: %v, orphans %+v; want none", err, orphans)
	}
	return fresh
}

// TestStaleFenceNotSticky: after the owner re-claims its own session with
// a newer fence, a terminal redirected with the older fence is still
// welcome — on its first insert and on every later one.
func TestStaleFenceNotSticky(t *testing.T) {
	t.Parallel()
	e := newEnv(t, "b1", nil)
	tok, key, sess := createAt(t, e, "fay")
	c := e.claim(t, tok)
	tm := dialTerm(t, e.addr, e.pin, proto.Hello{Versions: []uint16{proto.Version}, TerminalID: "term-r",
		Hops: 1, Fence: c.Fence, Token: tok})
	tm.present(tok, key)
	expectMsg[proto.Attached](tm)
	tm.remove(tok)
	expectMsg[proto.Detached](tm)

	fresh := reclaimNewFence(t, e)
	nc, err := fresh.Lookup(e.ctx, tok)
	if err != nil || nc.Fence <= c.Fence || nc.Session.ID != sess {
		t.Fatalf("re-claimed: %+v, %v; want session %s with a fence newer than %d", nc, err, sess, c.Fence)
	}
	tm.insert(tok)
	if m := tm.next(); func() bool { a, ok := m.(*proto.Attached); return !ok || a.SessionID != sess }() {
		t.Fatalf("insert on the redirected connection after the re-claim: %+v; want session %s attached", m, sess)
	}
	tm.remove(tok)
	expectMsg[proto.Detached](tm)
	// A redirect issued before the re-claim names a fence this very
	// session held: not stale.
	late := dialTerm(t, e.addr, e.pin, proto.Hello{Versions: []uint16{proto.Version}, TerminalID: "term-late",
		Hops: 1, Fence: c.Fence, Token: tok})
	late.present(tok, key)
	if m := late.next(); func() bool { a, ok := m.(*proto.Attached); return !ok || a.SessionID != sess }() {
		t.Fatalf("redirect with a fence the session held before: %+v; want session %s attached", m, sess)
	}
}

// TestLeaseLossDetachesTerminals: a broker cut off from etcd detaches its
// terminals (reason locked) and cuts their display streams when its lease
// is overdue — before the lease can expire and another broker take the
// token — instead of keeping them attached.
//
// The lease is 10 s (fenced after 6.7 s without a renewal): under -race,
// beside the other tests on a loaded machine, a shorter one (6 s) could go
// overdue before the blackhole.
func TestLeaseLossDetachesTerminals(t *testing.T) {
	t.Parallel()
	eps := etcdtest.Start(t)
	proxy := etcdtest.NewProxy(t, eps[0])
	e := newEnvWith(t, "b1", envOptions{eps: eps, clientEps: []string{proxy.URL()}, ttl: 10 * time.Second, gateway: true})
	_, _, tm, att := e.login("lou", "term-1")
	stream, perr := e.attach(att.Ticket, "term-1")
	if perr != nil {
		t.Fatalf("attach: %+v", perr)
	}
	proxy.Blackhole()
	det := expectMsg[proto.Detached](tm)
	if det.Reason != proto.DetachLocked || det.SessionID != att.SessionID {
		t.Fatalf("detached = %+v; want session %s locked", det, att.SessionID)
	}
	// The broker is not ready yet its lease has not expired in etcd:
	// the stream is cut, the desktop suspended.
	nc := stream.NetConn()
	nc.SetReadDeadline(time.Now().Add(20 * time.Second))
	if _, err := nc.Read(make([]byte, 1)); err == nil || isTimeout(err) {
		t.Fatalf("display stream after the lease went overdue: read %v; want it closed", err)
	}
	e.waitTransition(att.SessionID, Suspended)
	if si := sessionInfo(t, e.b, att.SessionID); si.Terminal != "" || !pidAlive(si.PID) {
		t.Fatalf("session %+v; want suspended at no terminal, its desktop running", si)
	}
	proxy.Heal()
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

// TestLeaseRevokedReclaims: `etcdctl lease revoke` on a broker's lease makes
// it not ready at once (its record's deletion is watched), detaches its
// terminals without a false "moved to another server", and the sessions
// nobody else took are re-claimed, not orphaned.
func TestLeaseRevokedReclaims(t *testing.T) {
	t.Parallel()
	// A long TTL: the keepalive alone would notice the revocation only
	// after TTL/3 = 40 s, longer than the test waits for the detach.
	e := newEnvWith(t, "b1", envOptions{ttl: 120 * time.Second})
	idle, _, idleSess := createAt(t, e, "ida")
	tok, _, tm, att := e.login("abe", "term-1")
	if _, err := e.cli.Revoke(e.ctx, e.reg.LeaseID()); err != nil {
		t.Fatal(err)
	}
	det := expectMsg[proto.Detached](tm)
	if det.Reason != proto.DetachLocked || strings.Contains(det.Message, "another server") {
		t.Fatalf("detached = %+v; want locked, without claiming the token moved", det)
	}
	if e.b.Ready() == nil {
		t.Fatal("broker ready after its lease was revoked")
	}
	fresh := e.reopenRegistry(t, e.ttl, e.reg.LeaseID())
	orphans, err := e.b.Reestablish(e.ctx, fresh)
	if err != nil || len(orphans) != 0 {
		t.Fatalf("reestablish: %v, orphans %+v; want none (nobody else took the tokens)", err, orphans)
	}
	for tk, sess := range map[string]string{idle: idleSess, tok: att.SessionID} {
		c, err := fresh.Lookup(e.ctx, tk)
		if err != nil || c.Session.ID != sess || c.Session.ServerID != "b1" {
			t.Fatalf("claim of %s after re-claim: %+v, %v; want session %s on b1", tk, c, err, sess)
		}
	}
	for _, si := range e.b.Sessions() {
		if si.Orphaned {
			t.Fatalf("session %+v orphaned; want re-claimed", si)
		}
	}
	tm.insert(tok)
	if a := expectMsg[proto.Attached](tm); a.SessionID != att.SessionID {
		t.Fatalf("attached %s; want %s", a.SessionID, att.SessionID)
	}
}

// hangingRegistry makes Update hang (like an etcd request during a leader
// loss) until released, whatever its context says.
type hangingRegistry struct {
	Registry
	mu      sync.Mutex
	gate    chan struct{}
	waiting chan struct{}
}

func (h *hangingRegistry) Update(ctx context.Context, c registry.Claim, s registry.Session) (registry.Claim, error) {
	h.mu.Lock()
	gate := h.gate
	h.mu.Unlock()
	if gate != nil {
		select {
		case h.waiting <- struct{}{}:
		default:
		}
		<-gate
	}
	return h.Registry.Update(context.Background(), c, s)
}

// TestPublishDoesNotBlockQueue: a registry write that hangs never holds the
// token lock or the terminal's queue: remove and insert again are answered
// while it hangs.
func TestPublishDoesNotBlockQueue(t *testing.T) {
	t.Parallel()
	h := &hangingRegistry{waiting: make(chan struct{}, 1)}
	e := newEnvWith(t, "b1", envOptions{wrap: func(r Registry) Registry { h.Registry = r; return h }})
	tok, _, tm, att := e.login("hal", "term-1")
	gate := make(chan struct{})
	release := sync.OnceFunc(func() { close(gate) })
	t.Cleanup(release)
	h.mu.Lock()
	h.gate = gate
	h.mu.Unlock()
	tm.remove(tok)
	expectMsg[proto.Detached](tm)
	<-h.waiting // the suspend's write hangs now
	tm.insert(tok)
	if a := expectMsg[proto.Attached](tm); a.SessionID != att.SessionID {
		t.Fatalf("attached %s; want %s", a.SessionID, att.SessionID)
	}
	release()
}

// TestBurstGetsAnswers: a burst of inserts larger than the event queue gets
// one answer per insert, each carrying its token; the connection stays open.
func TestBurstGetsAnswers(t *testing.T) {
	t.Parallel()
	e := newEnv(t, "b1", nil)
	tok, key := e.enroll("bea")
	tm := e.dial("term-1")
	tm.insert(tok) // the terminal holds no key yet: the challenge waits
	ch := expectMsg[proto.Challenge](tm)
	const burst = maxQueuedEvents + 8
	for i := 0; i < burst; i++ {
		tm.insert(fmt.Sprintf("uid.%04x", i))
	}
	signed, err := soft.ChallengeMessage(tm.id, ch.ServerID, tm.welcome.Nonce, ch.Nonce, ch.Token)
	if err != nil {
		t.Fatal(err)
	}
	if err := tm.conn.Send(&proto.Proof{ID: ch.ID, Token: tok, Signature: ed25519.Sign(key, signed)}); err != nil {
		t.Fatal(err)
	}
	answered := map[string]proto.ErrorCode{}
	attached := false
	for len(answered) < burst || !attached {
		switch m := tm.next().(type) {
		case *proto.Attached:
			attached = true
		case *proto.Error:
			if m.Token == "" {
				t.Fatalf("error without a token: %+v", m)
			}
			if _, dup := answered[m.Token]; dup {
				t.Fatalf("second answer for %s: %+v", m.Token, m)
			}
			answered[m.Token] = m.Code
		default:
			t.Fatalf("unexpected %T %+v", m, m)
		}
	}
	limited := 0
	for _, c := range answered {
		if c == proto.ErrRateLimited {
			limited++
		}
	}
	if limited == 0 {
		t.Fatalf("answers %v; want some rate_limited", answered)
	}
	// Still open and usable.
	tm.remove(tok)
	expectMsg[proto.Detached](tm)
}

// restartKeeping stops e's broker keeping its desktops and its lease (the
// daemon's keep_on_stop) and starts the next run as hotdeskd would: a new
// lease taking over the server record, a new backend adopting the running
// desktops, a new broker (its registry wrapped by wrap if not nil) adopting
// them. It returns the new broker and its registry.
func restartKeeping(t *testing.T, e *env, wrap func(*registry.Registry) Reclaimer) (*Broker, *registry.Registry) {
	t.Helper()
	e.b.cfg.KeepSessionsOnShutdown = true
	sctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if err := e.b.Shutdown(sctx); err != nil {
		t.Fatal(err)
	}
	e.reg.Abandon()
	e.comp.Close()

	reg := e.reopenRegistry(t, e.ttl, e.reg.LeaseID())
	comp, err := weston.New(weston.Config{StateDir: e.stateDir, Logger: e.logger.Named("weston")})
	if err != nil {
		t.Fatal(err)
	}
	running, lost, err := comp.Adopt(e.ctx)
	if err != nil || len(lost) != 0 {
		t.Fatalf("adopt: %d running, %v lost, %v; want every desktop", len(running), lost, err)
	}
	var breg Reclaimer = reg
	if wrap != nil {
		breg = wrap(reg)
	}
	nb, err := New(Config{ServerID: e.rec.ID, Registry: breg, Compositor: comp, Auth: e.b.cfg.Auth, Policies: e.b.cfg.Policies,
		ReconnectGrace: e.b.cfg.ReconnectGrace, Clock: e.clk, Logger: e.logger})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		nb.Shutdown(ctx)
		comp.Close()
	})
	_, unknown := nb.Adopt(e.ctx, running)
	for _, l := range unknown {
		_ = comp.Destroy(e.ctx, l.SessionID) // as the daemon does: no weston outlives the test
	}
	return nb, reg
}

// TestRestartTakesOverClaims: a broker restarted with its desktops kept
// (keep_on_stop) takes over its previous lease's claims, keeping their
// fences, so no other broker replaces a desktop that still exists and a
// redirect issued before the restart still leads to it.
func TestRestartTakesOverClaims(t *testing.T) {
	t.Parallel()
	b1, b2 := twoBrokers(t)
	tok, key, sess := createAt(t, b1, "rea")
	before := b1.claim(t, tok)
	// An administrator's lock is kept across the restart too.
	if err := b1.b.Lock(b1.ctx, sess); err != nil {
		t.Fatal(err)
	}
	testutil.WaitFor(t, 10*time.Second, "the lock in the session's record", func() bool {
		c, err := b1.reg.Lookup(b1.ctx, tok)
		return err == nil && c.Session.Locked
	})
	nb, reg := restartKeeping(t, b1, nil)
	adopted := nb.Sessions()
	if len(adopted) != 1 || adopted[0].ID != sess || adopted[0].Orphaned || !adopted[0].Locked {
		t.Fatalf("adopted %+v; want session %s, not orphaned, locked", adopted, sess)
	}
	// What the old lease still holds belongs to nothing that survived.
	if err := reg.RevokeLease(b1.ctx, b1.reg.LeaseID()); err != nil {
		t.Fatal(err)
	}
	after, err := reg.Lookup(b1.ctx, tok)
	if err != nil || after.Fence != before.Fence || after.Session.ID != sess {
		t.Fatalf("claim after the restart: %+v, %v; want session %s with fence %d kept", after, err, sess, before.Fence)
	}
	// Another broker redirects to the restarted one, never creates.
	t2 := b2.dial("term-2")
	t2.present(tok, key)
	if r, ok := t2.next().(*proto.Redirect); !ok || r.ServerID != "b1" || r.Fence != before.Fence {
		t.Fatalf("insert at b2 after b1's restart: %+v; want a redirect to b1 with fence %d", r, before.Fence)
	}
}

// unansweredChallenge dials a terminal to a new broker and inserts an
// enrolled token there whose key it does not hold: the token's challenge,
// returned, stays unanswered.
func unansweredChallenge(t *testing.T) (tm *term, tok string, ch *proto.Challenge) {
	t.Helper()
	e := newEnv(t, "b1", nil)
	tok, _ = e.enroll("cid")
	tm = e.dial("term-1")
	tm.insert(tok)
	return tm, tok, expectMsg[proto.Challenge](tm)
}

// TestCardPulledMidChallenge: a token removed while its challenge is
// outstanding gets Error{cancelled}, distinct from a failed proof
// (auth_failed), so a terminal can tell "card pulled" from "wrong key".
func TestCardPulledMidChallenge(t *testing.T) {
	t.Parallel()
	tm, tok, _ := unansweredChallenge(t)
	tm.remove(tok)
	for {
		switch m := tm.next().(type) {
		case *proto.Cancel:
			continue
		case *proto.Error:
			if m.Code != proto.ErrCancelled || m.Token != tok {
				t.Fatalf("card pulled mid-challenge: %+v; want cancelled for %s", m, tok)
			}
			return
		default:
			t.Fatalf("card pulled mid-challenge: %T %+v; want Error{cancelled}", m, m)
		}
	}
}

// TestCardTappedTwicePulledMidChallenge: a card presented again while its
// first insert's challenge is outstanding (a badge tapped twice), then
// pulled: the removal cancels both inserts, each answered Error{cancelled}
// at once (before, it cancelled the second only: the first waited out its
// proof timeout and was answered auth_failed, as a wrong key would be).
func TestCardTappedTwicePulledMidChallenge(t *testing.T) {
	t.Parallel()
	tm, tok, ch := unansweredChallenge(t)
	tm.insert(tok)
	tm.remove(tok)
	for answered := 0; answered < 2; {
		switch m := tm.next().(type) {
		case *proto.Cancel:
			if m.ID != ch.ID {
				t.Fatalf("Cancel{%d}; want only the first insert's challenge (%d) withdrawn", m.ID, ch.ID)
			}
		case *proto.Error:
			if m.Code != proto.ErrCancelled || m.Token != tok {
				t.Fatalf("insert %d of the card pulled mid-challenge answered %+v; want cancelled for %s", answered+1, m, tok)
			}
			answered++
		default:
			t.Fatalf("card tapped twice, pulled mid-challenge: %T %+v; want Error{cancelled} for each insert", m, m)
		}
	}
}

// TestLocalResumeConfirmsClaim: a broker whose claim of a suspended
// session vanished without its knowing (its lease revoked, the renewals not
// yet told; here the key is deleted) must not attach the session when the
// token comes back to it if another broker has created a session for the
// token meanwhile: the token would be live at two terminals. It confirms
// the claim first, finds the other session and orphans its own. With the
// claim stream (Config.Claims), what tells it is the stream's report of
// the change, once it has arrived; without, a read on every hot-desk.
func TestLocalResumeConfirmsClaim(t *testing.T) {
	t.Parallel()
	for _, watch := range []bool{true, false} {
		t.Run(fmt.Sprintf("claim_watch=%v", watch), func(t *testing.T) {
			t.Parallel()
			eps := etcdtest.Start(t)
			b1 := newEnvWith(t, "b1", envOptions{eps: eps, noClaimWatch: !watch})
			b2 := newEnvWith(t, "b2", envOptions{eps: eps, noClaimWatch: !watch})
			tok, key, sess := createAt(t, b1, "zoe")
			// Once b1 has written the suspension (a write refused because the key
			// is gone would re-claim it: the key is b1's to re-create while
			// nobody else holds it), the key goes.
			b1.waitSuspendedWritten(tok)
			if watch {
				// Once the stream has confirmed it is current (its first
				// Progress mark may still be on its way).
				testutil.WaitFor(t, 10*time.Second, "b1's claim stream to show its own claim in place", func() bool { return b1.claimHeld(tok) })
			}
			b1.deleteClaim(t, tok)
			b2.expectNewSession(t, tok, key, sess)
			if watch {
				testutil.WaitFor(t, 10*time.Second, "b1's claim stream to show the change", func() bool { return !b1.claimHeld(tok) })
			}
			t1 := b1.dial("term-1")
			t1.present(tok, key)
			// An error, not the old session attached.
			if er := expectMsg[proto.Error](t1); er.Code != proto.ErrStaleFence {
				t.Fatalf("insert at b1 after b2 took the token: error %+v; want %s", er, proto.ErrStaleFence)
			}
			for _, si := range b1.b.Sessions() {
				if si.ID == sess && !si.Orphaned {
					t.Fatalf("b1's session %+v not orphaned", si)
				}
			}
		})
	}
}

// TestLocalHotDeskStalledClaimStream: a claim stream that stalls without
// failing — the broker's etcd connection silent (a partition, a frozen
// member), the client waiting for it, no Lost — must not vouch for a
// claim past its freshness bound. Here the key is deleted while the
// broker is cut off yet its lease still healthy: a hot-desk must not
// attach the session on the stream's word (it has no key any more; another
// broker may create one); it reads, which fails while the broker is cut off.
func TestLocalHotDeskStalledClaimStream(t *testing.T) {
	t.Parallel()
	eps := etcdtest.Start(t)
	proxy := etcdtest.NewProxy(t, eps[0])
	// A long lease: the broker stays ready (healthy) through the cut.
	e := newEnvWith(t, "b1", envOptions{eps: eps, clientEps: []string{proxy.URL()}, ttl: time.Minute})
	// Healed before e's cleanup (registered after it, so run before it):
	// the broker's shutdown then releases and revokes through a working
	// link instead of waiting out two 5 s timeouts.
	t.Cleanup(proxy.Heal)
	direct := etcdtest.Client(t, eps)
	tok, key, _ := createAt(t, e, "vic")
	e.waitSuspendedWritten(tok)
	testutil.WaitFor(t, 10*time.Second, "the claim stream to show the claim", func() bool { return e.claimHeld(tok) })

	proxy.Blackhole()
	if _, err := direct.Delete(e.ctx, "/hotdesk/sessions/"+tok); err != nil {
		t.Fatal(err)
	}
	// The broker's clock moves on; the stream confirms nothing any more
	// (one confirmation may still have been on its way: then again).
	testutil.WaitFor(t, 10*time.Second, "the stalled claim stream to stop vouching for the claim", func() bool {
		if !e.claimHeld(tok) {
			return true
		}
		e.clk.Advance(100 * time.Millisecond)
		return false
	})
	if err := e.b.Ready(); err != nil {
		t.Fatalf("broker not ready: %v; the test needs its lease healthy through the cut", err)
	}
	tm := e.dial("term-2")
	tm.present(tok, key)
	// An error, not the session attached without its key.
	if er := expectMsg[proto.Error](tm); er.Code != proto.ErrUnavailable {
		t.Fatalf("hot-desk while cut off, the key deleted: error %+v; want %s", er, proto.ErrUnavailable)
	}
}

// waitSuspendedWritten waits until the registry holds the suspension of
// e's session for tok and nothing more of it is being written: a write
// refused for want of the key would re-claim it at once, so a test that
// deletes the key waits for this first.
func (e *env) waitSuspendedWritten(tok string) {
	e.t.Helper()
	testutil.WaitFor(e.t, 10*time.Second, "the record of the suspension, and no write after it", func() bool {
		c, err := e.reg.Lookup(e.ctx, tok)
		e.b.mu.Lock()
		defer e.b.mu.Unlock()
		s := e.b.byToken[tok]
		return err == nil && c.Session.State == "suspended" && s != nil && !s.pubRunning && !s.pubDirty
	})
}

// claimHeld reports whether e's claim stream shows the claim of e's
// session for tok in place.
func (e *env) claimHeld(tok string) bool {
	e.b.mu.Lock()
	s := e.b.byToken[tok]
	e.b.mu.Unlock()
	return s != nil && e.b.claimHeld(s)
}

// deleteClaim deletes the claim of tok in etcd behind e's broker's back.
func (e *env) deleteClaim(t *testing.T, tok string) {
	t.Helper()
	if _, err := e.cli.Delete(e.ctx, "/hotdesk/sessions/"+tok); err != nil {
		t.Fatal(err)
	}
}

// expectNewSession inserts tok at a new terminal of e, which must attach
// it to a session of its own, not sess: the claim of sess is gone.
func (e *env) expectNewSession(t *testing.T, tok string, key ed25519.PrivateKey, sess string) {
	t.Helper()
	tm := e.dial("term-2")
	tm.present(tok, key)
	if att := expectMsg[proto.Attached](tm); att.ServerID != e.rec.ID || att.SessionID == sess {
		t.Fatalf("insert at %s with the claim gone: %+v; want a new session on %s", e.rec.ID, att, e.rec.ID)
	}
}

// hookedLookups calls before ahead of each of the registry's
// linearizable Lookups; an error from it is the Lookup's.
type hookedLookups struct {
	Reclaimer
	before func() error
}

func (h *hookedLookups) Lookup(ctx context.Context, key string) (registry.Claim, error) {
	if err := h.before(); err != nil {
		return registry.Claim{}, err
	}
	return h.Reclaimer.Lookup(ctx, key)
}

// TestLocalHotDeskWithoutRead: with the claim stream, hot-desks to a
// session of this server (a takeover, then a resume) read nothing from the
// registry while the stream shows the claim in place; without it, each
// confirms the claim with a read. Once the key changes under the broker
// (here: deleted), the next hot-desk reads and re-claims it.
func TestLocalHotDeskWithoutRead(t *testing.T) {
	t.Parallel()
	for _, watch := range []bool{true, false} {
		t.Run(fmt.Sprintf("claim_watch=%v", watch), func(t *testing.T) {
			t.Parallel()
			var reads atomic.Int32 // the registry's linearizable Lookups
			e := newEnvWith(t, "b1", envOptions{noClaimWatch: !watch,
				wrap: func(r Registry) Registry {
					return &hookedLookups{Reclaimer: r.(Reclaimer), before: func() error { reads.Add(1); return nil }}
				}})
			tok, key, t1, att := e.login("hal", "term-1")
			// The attach's own record written (the claim's latest write).
			testutil.WaitFor(t, 10*time.Second, "the session's record of term-1", func() bool {
				c, err := e.reg.Lookup(e.ctx, tok)
				return err == nil && c.Session.Terminal == "term-1"
			})
			if watch {
				testutil.WaitFor(t, 10*time.Second, "the claim stream to show the claim", func() bool { return e.claimHeld(tok) })
			}
			before := reads.Load()
			t2 := e.dial("term-2")
			t2.present(tok, key) // a takeover
			if a := expectMsg[proto.Attached](t2); a.SessionID != att.SessionID {
				t.Fatalf("takeover attached %s; want %s", a.SessionID, att.SessionID)
			}
			expectMsg[proto.Detached](t1)
			t2.remove(tok)
			expectMsg[proto.Detached](t2)
			t1.present(tok, key) // a resume
			if a := expectMsg[proto.Attached](t1); a.SessionID != att.SessionID {
				t.Fatalf("resume attached %s; want %s", a.SessionID, att.SessionID)
			}
			got := reads.Load() - before
			switch {
			case watch && got != 0:
				// A write of our own can race the hot-desk (the stream
				// showed it before the broker stored its result): that
				// costs one read, not one per hot-desk.
				if got > 1 {
					t.Fatalf("%d registry reads for 2 local hot-desks with the claim stream; want none", got)
				}
			case !watch && got < 2:
				t.Fatalf("%d registry reads for 2 local hot-desks without the claim stream; want one each", got)
			}
			if !watch {
				return
			}
			t1.remove(tok)
			expectMsg[proto.Detached](t1)
			// Once the suspension is written (a write refused for want of
			// the key would re-claim it at once), the key goes.
			e.waitSuspendedWritten(tok)
			c := e.claim(t, tok)
			e.deleteClaim(t, tok)
			testutil.WaitFor(t, 10*time.Second, "the claim stream to show the deletion", func() bool { return !e.claimHeld(tok) })
			before = reads.Load()
			t1.present(tok, key)
			if a := expectMsg[proto.Attached](t1); a.SessionID != att.SessionID {
				t.Fatalf("resume after the deletion attached %s; want %s", a.SessionID, att.SessionID)
			}
			if reads.Load() == before {
				t.Fatal("a hot-desk after the key was deleted did not read the registry")
			}
			if nc := e.claim(t, tok); nc.Fence <= c.Fence || nc.Session.ID != att.SessionID {
				t.Fatalf("claim after the deletion: %+v; want session %s re-claimed with a fence after %d", nc, att.SessionID, c.Fence)
			}
		})
	}
}

// TestAdoptedUnclaimedIsReclaimed: a desktop adopted at a restart whose
// claim could not be made then (etcd slow) is claimed as soon as the
// registry answers: its previous claim taken over with its fence if it is
// still there, a new one if it is gone. It is not orphaned. Until its
// claim is read its lock state is unknown, so it counts as locked (and
// stays so if the claim, which held the lock, is gone); Reestablish can
// take over a claim it never learnt too.
func TestAdoptedUnclaimedIsReclaimed(t *testing.T) {
	t.Parallel()
	for _, keyGone := range []bool{false, true} {
		t.Run(fmt.Sprintf("key_gone=%v", keyGone), func(t *testing.T) {
			t.Parallel()
			b1 := newEnv(t, "b1", nil)
			tok, _, sess := createAt(t, b1, "una")
			before := b1.claim(t, tok)
			// The next Lookup fails, as with an etcd that times out at start-up.
			var fails atomic.Int32
			fails.Store(1)
			failNext := func() error {
				if fails.Add(-1) >= 0 {
					return errors.New("injected: etcd timed out")
				}
				return nil
			}
			nb, reg := restartKeeping(t, b1, func(r *registry.Registry) Reclaimer { return &hookedLookups{Reclaimer: r, before: failNext} })
			if got := nb.Sessions(); len(got) != 1 || got[0].ID != sess || !got[0].Locked || nb.Unclaimed() != 1 {
				t.Fatalf("adopted %+v, %d unclaimed; want session %s unclaimed and locked", got, nb.Unclaimed(), sess)
			}
			if keyGone {
				if err := reg.RevokeLease(b1.ctx, b1.reg.LeaseID()); err != nil {
					t.Fatal(err)
				}
			}
			testutil.WaitFor(t, 10*time.Second, "the adopted session claimed in the background", func() bool {
				b1.clk.Advance(time.Second)
				return nb.Unclaimed() == 0
			})
			after, err := reg.Lookup(b1.ctx, tok)
			if err != nil || after.Session.ID != sess || after.Session.ServerID != "b1" {
				t.Fatalf("claim: %+v, %v; want session %s of b1", after, err, sess)
			}
			if !keyGone && after.Fence != before.Fence {
				t.Errorf("fence %d; want %d kept", after.Fence, before.Fence)
			}
			if got := nb.Sessions(); len(got) != 1 || got[0].Orphaned || got[0].Locked != keyGone {
				t.Fatalf("session %+v; want not orphaned, locked %v", got, keyGone)
			}
		})
	}
}

// TestReestablishTakesOverUnknownClaim: Reclaim with a claim whose fence
// the broker never learnt (0) takes over the key our session holds.
func TestReestablishTakesOverUnknownClaim(t *testing.T) {
	t.Parallel()
	b1 := newEnv(t, "b1", nil)
	tok, _, sess := createAt(t, b1, "uma")
	before := b1.claim(t, tok)
	fresh := b1.reopenRegistry(t, b1.ttl, b1.reg.LeaseID())
	c, ok, err := fresh.Reclaim(b1.ctx, registry.Claim{Key: tok}, registry.Session{ID: sess})
	if err != nil || !ok || c.Fence != before.Fence {
		t.Fatalf("Reclaim(fence 0) = %+v, %v, %v; want our claim taken over with fence %d", c, ok, err, before.Fence)
	}
}

// gatedAuth is the kiosk login, held (like a PIN prompt nobody answers
// yet) while gate is set, until gate is closed.
type gatedAuth struct {
	auth.Kiosk
	mu      sync.Mutex
	gate    chan struct{}
	entered chan struct{}
}

func (g *gatedAuth) hold() (release func()) {
	gate := make(chan struct{})
	g.mu.Lock()
	g.gate = gate
	g.mu.Unlock()
	return sync.OnceFunc(func() { close(gate) })
}

func (g *gatedAuth) Authenticate(ctx context.Context, req auth.Request, conv auth.Conversation) (auth.Result, error) {
	g.mu.Lock()
	gate := g.gate
	g.gate = nil
	g.mu.Unlock()
	if gate != nil {
		g.entered <- struct{}{}
		<-gate
	}
	return g.Kiosk.Authenticate(ctx, req, conv)
}

// sickRegistry reports its lease unhealthy once sick is set, as a registry
// whose renewals stopped does, without signalling it (so that only the
// insert in progress can notice).
type sickRegistry struct {
	Registry
	sick atomic.Bool
}

func (s *sickRegistry) Healthy() bool { return !s.sick.Load() && s.Registry.Healthy() }

// TestTakeoverMeetsLostLease: a takeover whose login ends after the lease
// went overdue cuts the old terminal and then may not attach the new one:
// the session is suspended (its timer running), not left active and shown
// nowhere for ever.
func TestTakeoverMeetsLostLease(t *testing.T) {
	t.Parallel()
	ga := &gatedAuth{Kiosk: auth.Kiosk{User: "kiosk"}, entered: make(chan struct{}, 1)}
	sick := &sickRegistry{}
	e := newEnvWith(t, "b1", envOptions{authn: ga, wrap: func(r Registry) Registry { sick.Registry = r; return sick }})
	tok, key, t1, att := e.login("tia", "term-1")
	release := ga.hold()
	defer release()
	t2 := e.dial("term-2")
	t2.present(tok, key)
	<-ga.entered
	sick.sick.Store(true)
	release()
	if det := expectMsg[proto.Detached](t1); det.Reason != proto.DetachTakeover {
		t.Fatalf("term-1: %+v; want detached by the takeover", det)
	}
	if er := expectMsg[proto.Error](t2); er.Code != proto.ErrUnavailable {
		t.Fatalf("term-2: %+v; want unavailable (no lease)", er)
	}
	if si := sessionInfo(t, e.b, att.SessionID); si.State != Suspended || si.Terminal != "" {
		t.Fatalf("session after the refused takeover: %+v; want suspended at no terminal", si)
	}
}

// TestLeaseLossDetachesPastAHeldLock: when the lease goes, every shown
// session is detached at once, even while a login holds another token's
// lock (a PIN prompt takes up to the auth timeout). One after another in
// map order, the sessions after the held one waited for it: against that
// this test passes only when A comes last, one time in three.
func TestLeaseLossDetachesPastAHeldLock(t *testing.T) {
	t.Parallel()
	e := newEnvWith(t, "b1", envOptions{ttl: 120 * time.Second})
	tokA, _, tA, attA := e.login("ava", "term-a")
	_, _, tB, attB := e.login("ben", "term-b")
	_, _, tC, attC := e.login("cy", "term-c")
	unlockA := sync.OnceFunc(e.b.keys.Lock(tokA)) // a login in progress for A's token
	defer unlockA()
	if _, err := e.cli.Revoke(e.ctx, e.reg.LeaseID()); err != nil {
		t.Fatal(err)
	}
	// The login ends in 10 s at the latest: the others must be told before.
	stop := time.AfterFunc(10*time.Second, unlockA)
	for _, c := range []struct {
		tm  *term
		att *proto.Attached
	}{{tB, attB}, {tC, attC}} {
		det := expectMsg[proto.Detached](c.tm)
		if det.Reason != proto.DetachLocked || det.SessionID != c.att.SessionID {
			t.Fatalf("%s: %+v; want %s detached, locked", c.tm.id, det, c.att.SessionID)
		}
	}
	if !stop.Stop() {
		t.Fatal("a terminal was detached only once A's token lock was free")
	}
	unlockA()
	if det := expectMsg[proto.Detached](tA); det.Reason != proto.DetachLocked || det.SessionID != attA.SessionID {
		t.Fatalf("term-a once its lock is free: %+v; want %s detached, locked", det, attA.SessionID)
	}
}

// TestReconfirmAfterLogin: a resume confirms the session's claim
// before its login, but a login with a prompt takes as long as its user.
// Here, while the login at b1 waits, the key goes and b2 gives the token a
// new session at another terminal; once the login ends (seconds later on
// b1's clock) b1 must confirm the claim again, find b2's session and
// orphan its own instead of showing the token at a second terminal.
func TestReconfirmAfterLogin(t *testing.T) {
	t.Parallel()
	for _, watch := range []bool{true, false} {
		t.Run(map[bool]string{true: "watch", false: "read"}[watch], func(t *testing.T) {
			t.Parallel()
			eps := etcdtest.Start(t)
			ga := &gatedAuth{Kiosk: auth.Kiosk{User: "kiosk"}, entered: make(chan struct{}, 1)}
			b1 := newEnvWith(t, "b1", envOptions{eps: eps, authn: ga, noClaimWatch: !watch})
			b2 := newEnvWith(t, "b2", envOptions{eps: eps, noClaimWatch: !watch})
			tok, key, sess := createAt(t, b1, "lia")
			b1.waitSuspendedWritten(tok)
			release := ga.hold()
			defer release()
			t1 := b1.dial("term-1")
			t1.present(tok, key)
			<-ga.entered // the claim is confirmed; the login waits
			b1.deleteClaim(t, tok)
			b2.expectNewSession(t, tok, key, sess)
			if watch { // the stream's delivery delay is the documented window
				testutil.WaitFor(t, 10*time.Second, "b1's claim stream to show the change", func() bool { return !b1.claimHeld(tok) })
			}
			b1.clk.Advance(3 * time.Second) // the person types their PIN
			release()
			// An error, not the old session attached.
			if er := expectMsg[proto.Error](t1); er.Code != proto.ErrStaleFence {
				t.Fatalf("login at b1 ended after b2 took the token: error %+v; want %s", er, proto.ErrStaleFence)
			}
			if si := sessionInfo(t, b1.b, sess); !si.Orphaned {
				t.Fatalf("b1's session %+v not orphaned", si)
			}
		})
	}
}

// TestRestartKeepsSuspendDeadline: a suspended desktop's suspend timeout
// counts from its suspension, across restarts of its broker; restarting
// it used to start the timeout afresh, so a broker restarted more often
// than the timeout kept suspended desktops for ever. The terminal it was
// suspended from is kept too (administrators see it; it used to be lost
// with the restart).
func TestRestartKeepsSuspendDeadline(t *testing.T) {
	t.Parallel()
	e := newEnv(t, "b1", nil)
	tok, _, sess := createAt(t, e, "sue")
	e.waitSuspendedWritten(tok)
	suspended := e.clk.Now()
	if c := e.claim(t, tok); c.Session.SuspendedUnixMs != suspended.UnixMilli() || c.Session.LastTerminal != "term-create-sue" {
		t.Fatalf("record of the suspension: %+v; want suspended_unix_ms %d, last terminal term-create-sue", c.Session, suspended.UnixMilli())
	}
	e.clk.Advance(20 * time.Hour) // of the 24 h suspend timeout
	nb, _ := restartKeeping(t, e, nil)
	adopted := nb.Sessions()
	if len(adopted) != 1 || adopted[0].ID != sess || !adopted[0].ExpiresAt.Equal(suspended.Add(24*time.Hour)) {
		t.Fatalf("adopted %+v; want %s expiring 24 h after its suspension (%v)", adopted, sess, suspended.Add(24*time.Hour))
	}
	if adopted[0].LastTerminal != "term-create-sue" {
		t.Fatalf("adopted session's last terminal %q; want term-create-sue", adopted[0].LastTerminal)
	}
	e.clk.Advance(4*time.Hour + time.Second)
	testutil.WaitFor(t, 20*time.Second, "the session to expire 24 h after its suspension", func() bool {
		return len(nb.Sessions()) == 0
	})
}
