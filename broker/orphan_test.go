package broker

import (
	"context"
	"crypto/ed25519"
	"sync"
	"testing"
	"time"

	"github.com/hotdesk/hotdesk/auth"
	"github.com/hotdesk/hotdesk/internal/testutil"
	"github.com/hotdesk/hotdesk/proto"
	"github.com/hotdesk/hotdesk/registry"
	"github.com/hotdesk/hotdesk/registry/etcdtest"
)

// recordingAuth is the kiosk login, keeping every request it was asked.
type recordingAuth struct {
	auth.Kiosk
	mu   sync.Mutex
	reqs []auth.Request
}

func (r *recordingAuth) Authenticate(ctx context.Context, req auth.Request, conv auth.Conversation) (auth.Result, error) {
	r.mu.Lock()
	r.reqs = append(r.reqs, req)
	r.mu.Unlock()
	return r.Kiosk.Authenticate(ctx, req, conv)
}

func (r *recordingAuth) count() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.reqs)
}

func (r *recordingAuth) last() auth.Request {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.reqs[len(r.reqs)-1]
}

// TestOrphanRestored: b1's session of a token is orphaned (b2 gave the
// token a session while b1's claim was gone); once b2's session has
// ended, the token presented at b1 — or at b2, which finds the orphan in
// the registry's index and sends it to b1 — gets the orphan back (the
// desktop its person left, not an empty new one) after a login as a
// locked session asks, and it is the token's session again: claimed,
// found by the token, resumed at the next hot-desk, out of the index.
func TestOrphanRestored(t *testing.T) {
	t.Parallel()
	for _, at := range []string{"b1", "b2"} {
		t.Run("presented_at_"+at, func(t *testing.T) {
			t.Parallel()
			eps := etcdtest.Start(t)
			ra := &recordingAuth{Kiosk: auth.Kiosk{User: "kiosk"}}
			b1 := newEnvWith(t, "b1", envOptions{eps: eps, authn: ra})
			b2 := newEnvWith(t, "b2", envOptions{eps: eps})
			oc := makeOrphan(t, b1, b2)
			tok, key, sess, t1, tb, newer, orphan := oc.tok, oc.key, oc.sess, oc.t1, oc.tb, oc.newer, oc.info
			indexed := func() []registry.OrphanRecord { return oc.indexed(t, b2) }

			// While b2's session lives, the token goes there, the orphan untouched.
			t1.present(tok, key)
			if r := expectMsg[proto.Redirect](t1); r.ServerID != "b2" {
				t.Fatalf("insert at b1 while b2's session lives: %+v; want a redirect to b2", r)
			}
			if err := b2.b.Kill(b2.ctx, newer.SessionID); err != nil {
				t.Fatal(err)
			}
			expectMsg[proto.Detached](tb)
			tm := map[string]*term{"b1": t1, "b2": tb}[at]
			tm.present(tok, key)
			o := follow(t, tm, tok, key)
			if o.session != sess || o.server != "b1" || o.hops != map[string]int{"b1": 0, "b2": 1}[at] {
				t.Fatalf("insert at %s once the token had no session: %+v; want its orphan %s on b1", at, o, sess)
			}
			if req := ra.last(); !req.Existing || !req.Locked {
				t.Fatalf("restore's login: %+v; want an existing session's, locked (a login as for a new session)", req)
			}
			if si := sessionInfo(t, b1.b, sess); si.Orphaned || si.State != Active || si.PID != orphan.PID || si.Locked {
				t.Fatalf("restored session %+v; want active, no longer an orphan, its desktop (pid %d) the same", si, orphan.PID)
			}
			if c := b1.claim(t, tok); c.Session.ID != sess || c.Session.ServerID != "b1" {
				t.Fatalf("claim after the restore: %+v; want session %s of b1", c, sess)
			}
			testutil.WaitFor(t, 10*time.Second, "the orphan's record gone from the index", func() bool { return len(indexed()) == 0 })
			// The token's session again: a hot-desk resumes it.
			o.term.remove(tok)
			expectMsg[proto.Detached](o.term)
			t3 := b2.dial("term-3")
			t3.present(tok, key)
			if o := follow(t, t3, tok, key); o.session != sess || o.server != "b1" {
				t.Fatalf("hot-desk after the restore: %+v; want session %s on b1", o, sess)
			}
		})
	}
}

// orphanCase is an orphan made by makeOrphan.
type orphanCase struct {
	tok   string
	key   ed25519.PrivateKey
	sess  string          // the orphan, on b1
	info  SessionInfo     // as b1 listed it once orphaned
	t1    *term           // b1's terminal that found it orphaned
	tb    *term           // b2's terminal that shows the token's new session
	newer *proto.Attached // that session
}

// makeOrphan gives a token a session on b1, then (b1's claim gone behind
// its back) a new session on b2; the token presented at b1 finds its
// session there orphaned. It returns once the orphan is in the registry's
// index.
func makeOrphan(t *testing.T, b1, b2 *env) orphanCase {
	t.Helper()
	tok, key, sess := createAt(t, b1, "ora")
	b1.waitSuspendedWritten(tok)
	testutil.WaitFor(t, 10*time.Second, "b1's claim stream to show its own claim in place", func() bool { return b1.claimHeld(tok) })
	b1.deleteClaim(t, tok)
	tb := b2.dial("term-b2")
	tb.present(tok, key)
	newer := expectMsg[proto.Attached](tb)
	if newer.ServerID != "b2" || newer.SessionID == sess {
		t.Fatalf("insert at b2 with b1's claim gone: %+v; want a new session on b2", newer)
	}
	testutil.WaitFor(t, 10*time.Second, "b1's claim stream to show the change", func() bool { return !b1.claimHeld(tok) })
	t1 := b1.dial("term-1")
	t1.present(tok, key)
	if er := expectMsg[proto.Error](t1); er.Code != proto.ErrStaleFence {
		t.Fatalf("insert at b1 after b2 took the token: %+v; want %s", er, proto.ErrStaleFence)
	}
	info := sessionInfo(t, b1.b, sess)
	if !info.Orphaned || info.State != Suspended {
		t.Fatalf("b1's session %+v; want an orphan, suspended", info)
	}
	oc := orphanCase{tok: tok, key: key, sess: sess, info: info, t1: t1, tb: tb, newer: newer}
	testutil.WaitFor(t, 10*time.Second, "the orphan in the registry's index", func() bool {
		os := oc.indexed(t, b2)
		return len(os) == 1 && os[0].SessionID == sess && os[0].ServerID == "b1"
	})
	return oc
}

// indexed lists the orphan index's records of the case's token, as e reads them.
func (oc orphanCase) indexed(t *testing.T, e *env) []registry.OrphanRecord {
	t.Helper()
	os, err := e.reg.Orphans(e.ctx, oc.tok)
	if err != nil {
		t.Fatal(err)
	}
	return os
}

// TestOrphanSuspensionSurvivesRestart: an orphan's suspend timeout
// counts from its suspension across a restart of its broker (within the
// lease's TTL), as a claimed session's does: the new process reads it
// from the orphan index the previous one wrote. It used to count from
// each restart, so an orphan on a server restarted more often than the
// timeout was kept for ever.
func TestOrphanSuspensionSurvivesRestart(t *testing.T) {
	t.Parallel()
	eps := etcdtest.Start(t)
	b1 := newEnvWith(t, "b1", envOptions{eps: eps})
	b2 := newEnvWith(t, "b2", envOptions{eps: eps})
	oc := makeOrphan(t, b1, b2)
	b1.clk.Advance(3 * time.Hour)
	nb, _ := restartKeeping(t, b1, nil)
	si := sessionInfo(t, nb, oc.sess)
	if !si.Orphaned || !si.SuspendedAt.Equal(oc.info.SuspendedAt.Truncate(time.Millisecond)) || !si.ExpiresAt.Equal(si.SuspendedAt.Add(24*time.Hour)) {
		t.Fatalf("orphan after the restart: %+v; want orphaned, suspended since %v (not the restart, %v)", si, oc.info.SuspendedAt, b1.clk.Now())
	}
	// The timeout ends it then, not 24 h after the restart.
	b1.clk.Advance(21*time.Hour + time.Second)
	testutil.WaitFor(t, 10*time.Second, "the orphan ended at its suspend timeout", func() bool {
		for _, s := range nb.Sessions() {
			if s.ID == oc.sess {
				return false
			}
		}
		return true
	})
	if pidAlive(oc.info.PID) {
		t.Fatalf("orphan's compositor (pid %d) still running after its timeout", oc.info.PID)
	}
}

// TestOrphanOfAnotherUserKept: a token enrolled for someone else since its
// orphan was made is not given the old user's orphan: the new user gets a
// new desktop after one login (none asked for the orphan she would not
// get: the policy says the session is the token's user's), and the orphan
// stays one, listed, its desktop running.
func TestOrphanOfAnotherUserKept(t *testing.T) {
	t.Parallel()
	eps := etcdtest.Start(t)
	// The token's user logs in, asked a password as card+password asks it
	// (the login recorded: the kiosk authenticator stands for PAM).
	ra := &recordingAuth{}
	b1 := newEnvWith(t, "b1", envOptions{eps: eps, authn: ra,
		policies: &auth.Policies{Default: auth.Policy{Kind: auth.KindCardPassword}}})
	b2 := newEnvWith(t, "b2", envOptions{eps: eps})
	oc := makeOrphan(t, b1, b2)
	if oc.info.User != "ora" {
		t.Fatalf("orphan %+v; want ora's", oc.info)
	}
	if err := b1.reg.UpdateToken(b1.ctx, oc.tok, func(r *registry.TokenRecord) { r.User = "pia" }); err != nil {
		t.Fatal(err)
	}
	rec, err := b1.reg.Token(b1.ctx, oc.tok)
	if err != nil {
		t.Fatal(err)
	}
	b1.b.TokenChanged(registry.TokenChange{ID: oc.tok, Record: rec}) // as the token watch would
	if err := b2.b.Kill(b2.ctx, oc.newer.SessionID); err != nil {
		t.Fatal(err)
	}
	expectMsg[proto.Detached](oc.tb)
	logins := ra.count()
	oc.t1.present(oc.tok, oc.key)
	att := expectMsg[proto.Attached](oc.t1)
	if att.SessionID == oc.sess || att.User != "pia" || att.Resumed {
		t.Fatalf("insert of the token enrolled for pia: %+v; want a new session of pia's, not ora's orphan %s", att, oc.sess)
	}
	if n := ra.count() - logins; n != 1 {
		t.Fatalf("pia logged in %d times for one presentation; want once (none for ora's orphan, which she would not get)", n)
	}
	if si := sessionInfo(t, b1.b, oc.sess); !si.Orphaned || si.State != Suspended || !pidAlive(si.PID) {
		t.Fatalf("ora's orphan after pia's login: %+v; want kept, an orphan, its desktop running", si)
	}
}

// TestOrphanRestoreLosesRace: another broker claims the token while the
// orphan's login runs (the person at another terminal was quicker): the
// restore loses the claim, the terminal is sent to the winner, and the
// orphan stays one, suspended, its desktop running.
func TestOrphanRestoreLosesRace(t *testing.T) {
	t.Parallel()
	eps := etcdtest.Start(t)
	ga := &gatedAuth{Kiosk: auth.Kiosk{User: "kiosk"}, entered: make(chan struct{}, 1)}
	b1 := newEnvWith(t, "b1", envOptions{eps: eps, authn: ga})
	b2 := newEnvWith(t, "b2", envOptions{eps: eps})
	oc := makeOrphan(t, b1, b2)
	if err := b2.b.Kill(b2.ctx, oc.newer.SessionID); err != nil {
		t.Fatal(err)
	}
	expectMsg[proto.Detached](oc.tb)
	release := ga.hold()
	defer release()
	oc.t1.present(oc.tok, oc.key)
	<-ga.entered // the restore's login waits; b2 claims the token meanwhile
	now := b2.clk.Now().UnixMilli()
	if _, won, err := b2.reg.Claim(b2.ctx, oc.tok, registry.Session{ID: "s-rival", ServerID: "b2", User: "kiosk",
		State: "active", CreatedUnixMs: now, UpdatedUnixMs: now}); err != nil || !won {
		t.Fatalf("b2's claim: won %v, %v", won, err)
	}
	release()
	if r := expectMsg[proto.Redirect](oc.t1); r.ServerID != "b2" || r.Fence == 0 {
		t.Fatalf("restore that lost the claim: %+v; want a redirect to b2's session", r)
	}
	if si := sessionInfo(t, b1.b, oc.sess); !si.Orphaned || si.State != Suspended || !pidAlive(si.PID) {
		t.Fatalf("orphan after losing the claim: %+v; want still an orphan, suspended, its desktop running", si)
	}
	if c := b1.claim(t, oc.tok); c.Session.ID != "s-rival" {
		t.Fatalf("claim %+v; want b2's s-rival", c)
	}
}
