package broker

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/hotdesk/hotdesk/auth"
	"github.com/hotdesk/hotdesk/auth/pam"
	"github.com/hotdesk/hotdesk/auth/pam/pamtest"
	"github.com/hotdesk/hotdesk/internal/event"
	"github.com/hotdesk/hotdesk/internal/testutil"
	"github.com/hotdesk/hotdesk/proto"
	"github.com/hotdesk/hotdesk/registry"
)

// TestMain doubles as the PAM helper: the Authenticators of these tests
// re-execute this binary, as hotdeskd does with "hotdeskd pam-helper". These
// tests wait on etcd, weston and leases far more than they compute: up to 4
// run at once.
func TestMain(m *testing.M) {
	testutil.RaiseParallel(4)
	pamtest.Main(m)
}

// pamEnv is a broker whose logins run real PAM (pam_matrix with a password
// file) under the given policies.
func pamEnv(t *testing.T, policies *auth.Policies, lim auth.LimiterConfig) *env {
	t.Helper()
	e, _ := pamEnvDB(t, policies, lim)
	return e
}

// pamUsers is the pam_matrix database of pamEnv: carol has no password
// that works (card logins only).
const pamUsers = "alice:alice-pw:hotdesk\nbob:bob-pw:hotdesk\ncarol:carol-pw:hotdesk\n"

// pamEnvDB is pamEnv, also returning the pam_matrix database (pamUsers)
// the test may rewrite: a user it no longer lists is refused by the
// account stack as well.
func pamEnvDB(t *testing.T, policies *auth.Policies, lim auth.LimiterConfig) (*env, string) {
	t.Helper()
	return pamEnvWith(t, policies, lim, envOptions{})
}

// pamEnvWith is pamEnvDB with more of the broker's options (o's authn and
// policies are pamEnvDB's).
func pamEnvWith(t *testing.T, policies *auth.Policies, lim auth.LimiterConfig, o envOptions) (*env, string) {
	t.Helper()
	testutil.NeedMatrix(t)
	dir := t.TempDir()
	db := filepath.Join(dir, "passdb")
	if err := os.WriteFile(db, []byte(pamUsers), 0o600); err != nil {
		t.Fatal(err)
	}
	// pam_succeed_if asks for the login name when PAM_USER is not set
	// (pam_matrix does not).
	stack := "auth requisite pam_succeed_if.so quiet user != root\n" + testutil.MatrixStack(db)
	if err := os.WriteFile(filepath.Join(dir, "hotdesk"), []byte(stack), 0o644); err != nil {
		t.Fatal(err)
	}
	pa, err := pam.New(pam.Config{ConfDir: dir, HelperCommand: []string{os.Args[0]},
		HelperEnv: []string{"HOTDESK_PAM_HELPER=1"}, Timeout: 30 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	if err := policies.Validate(); err != nil {
		t.Fatal(err)
	}
	o.authn, o.policies = auth.NewLimiter(lim).Guard(&auth.Chooser{Policies: policies, Services: pa}), policies
	return newEnvWith(t, "b1", o), db
}

// TestPolicyAccountDisabled: an account the administrator disabled (here:
// removed from the account stack's database) stops its card. With the card
// policy, the desktop it had is not resumed, and the terminal is told why;
// with card+password and no re-authentication, neither. The limiter
// counts it against the token alone: the terminal is not locked out, the
// card presented again and again is.
func TestPolicyAccountDisabled(t *testing.T) {
	t.Parallel()
	e, db := pamEnvDB(t, &auth.Policies{
		Default: auth.Policy{Kind: auth.KindCard},
		Tokens:  map[string]auth.Policy{"uid.0b0b0b0b": {Kind: auth.KindCardPassword, NoReauth: true}},
	}, auth.LimiterConfig{MaxFailures: 2, BaseLockout: time.Hour})
	e.register("uid.0c0c0c0c", "carol")
	e.register("uid.0b0b0b0b", "bob")
	t1 := e.dial("term-1")
	t1.insert("uid.0c0c0c0c")
	if att := expectMsg[proto.Attached](t1); att.User != "carol" {
		t.Fatalf("card login: %+v; want attached as carol", att)
	}
	t1.remove("uid.0c0c0c0c")
	expectMsg[proto.Detached](t1)
	t1.insertAnswering("uid.0b0b0b0b", "bob-pw")
	expectMsg[proto.Attached](t1)
	t1.remove("uid.0b0b0b0b")
	expectMsg[proto.Detached](t1)

	// Off-boarding: both accounts disabled.
	if err := os.WriteFile(db, []byte("alice:alice-pw:hotdesk\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	t2 := e.dial("term-2")
	for range 2 { // twice, four refusals at term-2: the terminal is not locked out
		for _, tok := range []string{"uid.0c0c0c0c", "uid.0b0b0b0b"} {
			t2.insert(tok)
			er := expectMsg[proto.Error](t2)
			if er.Code != proto.ErrAuthFailed || er.Token != tok || !strings.Contains(er.Message, "account disabled") {
				t.Fatalf("%s after its account was disabled: %+v; want auth_failed, account disabled", tok, er)
			}
			if n := t2.promptCount(); n != 0 {
				t.Fatalf("%s: %d prompts; want none", tok, n)
			}
		}
	}
	// Each card was refused twice: a third time it is locked out.
	t2.insert("uid.0c0c0c0c")
	if er := expectMsg[proto.Error](t2); er.Code != proto.ErrRateLimited || er.Detail != proto.DetailLockedOut {
		t.Fatalf("a refused card presented a third time: %+v; want rate_limited, locked out", er)
	}
	for _, s := range e.b.Sessions() {
		if s.Terminal != "" {
			t.Errorf("session %+v attached after its account was disabled", s)
		}
	}
}

func (e *env) register(id, user string) {
	e.t.Helper()
	if err := e.reg.EnrollToken(e.ctx, registry.TokenRecord{ID: id, Kind: strings.SplitN(id, ".", 2)[0], User: user}); err != nil {
		e.t.Fatal(err)
	}
}

// bobAt registers tok for bob, logs him in with his password at a new
// terminal id and returns the terminal and its Attached.
func (e *env) bobAt(tok, id string) (*term, *proto.Attached) {
	e.t.Helper()
	e.register(tok, "bob")
	tm := e.dial(id)
	tm.insertAnswering(tok, "bob-pw")
	return tm, expectMsg[proto.Attached](tm)
}

// insertRefused inserts token at the terminal, which answers the login's
// prompts with answers, and fails unless the login is refused with code.
func (tm *term) insertRefused(token string, code proto.ErrorCode, answers ...string) {
	tm.t.Helper()
	tm.insertAnswering(token, answers...)
	if er := expectMsg[proto.Error](tm); er.Code != code || er.Token != token {
		tm.t.Fatalf("terminal %s: login with %s: %+v; want %v for the token", tm.id, token, er, code)
	}
}

// TestPolicyCardPassword: a registered card plus the user's password, asked
// again on every hot-desk; a wrong password is refused.
func TestPolicyCardPassword(t *testing.T) {
	t.Parallel()
	e := pamEnv(t, &auth.Policies{Default: auth.Policy{Kind: auth.KindCardPassword}}, auth.LimiterConfig{})
	e.register("uid.04a1b2c3", "alice")
	t1 := e.dial("term-1")
	t1.insertRefused("uid.04a1b2c3", proto.ErrAuthFailed, "wrong")
	t1.insertAnswering("uid.04a1b2c3", "alice-pw")
	att := expectMsg[proto.Attached](t1)
	if att.User != "alice" {
		t.Fatalf("attached %+v; want alice", att)
	}
	// Every prompt names the token whose login asks (two cards at one
	// terminal: whose PIN is wanted).
	t1.mu.Lock()
	for i, tok := range t1.promptTokens {
		if tok != "uid.04a1b2c3" {
			t.Errorf("prompt %d for token %q; want uid.04a1b2c3", i, tok)
		}
	}
	t1.mu.Unlock()
	t1.remove("uid.04a1b2c3")
	expectMsg[proto.Detached](t1)
	t2 := e.dial("term-2")
	t2.insertAnswering("uid.04a1b2c3", "alice-pw")
	if a := expectMsg[proto.Attached](t2); a.SessionID != att.SessionID || !a.Resumed {
		t.Fatalf("hot-desk: %+v; want %s resumed", a, att.SessionID)
	}
	if n := t2.promptCount(); n != 1 {
		t.Fatalf("hot-desk answered %d prompts; want 1 (re-authentication)", n)
	}
}

// TestPolicyNoReauth: with reauth off a hot-desk resumes without a prompt.
func TestPolicyNoReauth(t *testing.T) {
	t.Parallel()
	e := pamEnv(t, &auth.Policies{Default: auth.Policy{Kind: auth.KindCardPassword, NoReauth: true}}, auth.LimiterConfig{})
	e.register("uid.0a0b0c0d", "bob")
	t1 := e.dial("term-1")
	t1.insertAnswering("uid.0a0b0c0d", "bob-pw")
	att := expectMsg[proto.Attached](t1)
	t1.remove("uid.0a0b0c0d")
	expectMsg[proto.Detached](t1)
	t2 := e.dial("term-2")
	t2.insert("uid.0a0b0c0d")
	if a := expectMsg[proto.Attached](t2); a.SessionID != att.SessionID || t2.promptCount() != 0 {
		t.Fatalf("hot-desk: %+v after %d prompts; want %s without a prompt", a, t2.promptCount(), att.SessionID)
	}
}

// TestPolicyLockout: after N failures the right password is refused.
func TestPolicyLockout(t *testing.T) {
	t.Parallel()
	e := pamEnv(t, &auth.Policies{Default: auth.Policy{Kind: auth.KindCardPassword}},
		auth.LimiterConfig{MaxFailures: 2, BaseLockout: time.Hour})
	e.register("uid.01020304", "alice")
	t1 := e.dial("term-1")
	// The failure that starts the lockout says so, and for how long.
	for i, want := range []string{"authentication failed", "authentication failed; too many failed logins: try again in 3600 s"} {
		t1.insertAnswering("uid.01020304", "guess")
		er := expectMsg[proto.Error](t1)
		if er.Code != proto.ErrAuthFailed || er.Message != want {
			t.Fatalf("failure %d: %+v; want auth_failed %q", i+1, er, want)
		}
		if i == 1 && (er.Detail != proto.DetailLockoutStarted || er.RetryAfterMs != 3600000) {
			t.Fatalf("the failure that locked out: detail %q, retry after %d ms; want %q, 3600000", er.Detail, er.RetryAfterMs, proto.DetailLockoutStarted)
		}
	}
	// The right password, while locked: refused, with the time left.
	t1.insertAnswering("uid.01020304", "alice-pw")
	if er := expectMsg[proto.Error](t1); er.Code != proto.ErrRateLimited || !strings.HasPrefix(er.Message, "too many failed logins; try again in 3") ||
		er.Detail != proto.DetailLockedOut || er.RetryAfterMs == 0 || er.RetryAfterMs > 3600000 {
		t.Fatalf("while locked: %+v; want rate_limited, locked_out, with the time left", er)
	}
	if len(e.b.Sessions()) != 0 {
		t.Fatalf("a session was created while locked out")
	}
}

// TestPolicyPasswordOnly: the user name locates the session (Sun Ray's
// non-smart-card mobility).
func TestPolicyPasswordOnly(t *testing.T) {
	t.Parallel()
	// reauth_on_hotdesk = false must not apply: a typed user name is no
	// token, so without the password anyone could take alice's desktop.
	e := pamEnv(t, &auth.Policies{Default: auth.Policy{Kind: auth.KindPassword, NoReauth: true}}, auth.LimiterConfig{})
	t1 := e.dial("term-1")
	t1.insertAnswering("user.alice", "alice-pw")
	att := expectMsg[proto.Attached](t1)
	if att.User != "alice" {
		t.Fatalf("attached %+v; want alice", att)
	}
	t2 := e.dial("term-2")
	t2.insertAnswering("user.alice", "alice-pw")
	if a := expectMsg[proto.Attached](t2); a.SessionID != att.SessionID {
		t.Fatalf("second terminal: %+v; want %s", a, att.SessionID)
	}
	if det := expectMsg[proto.Detached](t1); det.Reason != proto.DetachTakeover {
		t.Fatalf("first terminal told %+v; want takeover", det)
	}
	t3 := e.dial("term-3")
	t3.insertRefused("user.alice", proto.ErrAuthFailed, "wrong")
}

// TestPolicySelfRegisterAndLimit: an unknown card enrolls itself to the
// user who logs in with it; a user at the session limit gets no more.
func TestPolicySelfRegisterAndLimit(t *testing.T) {
	t.Parallel()
	e := pamEnv(t, &auth.Policies{Default: auth.Policy{Kind: auth.KindCardPassword, SelfRegister: true, MaxSessions: 1}},
		auth.LimiterConfig{})
	t1 := e.dial("term-1")
	t1.insertAnswering("uid.0badcafe", "alice", "alice-pw") // login name, then password
	if m := t1.next(); func() bool { a, ok := m.(*proto.Attached); return !ok || a.User != "alice" }() {
		t.Fatalf("self-registration: %+v after prompts %q; want attached as alice", m, t1.prompts)
	}
	rec, err := e.reg.Token(e.ctx, "uid.0badcafe")
	if err != nil || rec.User != "alice" || !strings.HasPrefix(rec.RegisteredBy, "self:") {
		t.Fatalf("registered token = %+v, %v; want alice, self-registered", rec, err)
	}
	// A second card of alice would be a second session: over the limit.
	e.register("uid.0c0ffee0", "alice")
	t2 := e.dial("term-2")
	t2.insertRefused("uid.0c0ffee0", proto.ErrSessionLimited, "alice-pw")
}

// pendingPrompt registers token to bob at a card-and-password broker and
// inserts it at term-1, without answering: the login waits at the prompt
// it returns.
func pendingPrompt(t *testing.T, token string) (*env, *term, *proto.AuthPrompt) {
	t.Helper()
	e := pamEnv(t, &auth.Policies{Default: auth.Policy{Kind: auth.KindCardPassword}}, auth.LimiterConfig{})
	e.register(token, "bob")
	t1 := e.dial("term-1")
	t1.insert(token)
	return e, t1, expectMsg[proto.AuthPrompt](t1)
}

// TestPolicyCardPulledMidPrompt: removing the card while the password is
// asked abandons the login cleanly; the terminal is told and can retry.
func TestPolicyCardPulledMidPrompt(t *testing.T) {
	t.Parallel()
	e, t1, p := pendingPrompt(t, "uid.05060708")
	if p.Style != proto.PromptEchoOff {
		t.Fatalf("prompt = %+v; want a secret prompt", p)
	}
	t1.remove("uid.05060708")
	for {
		m := t1.next()
		if _, ok := m.(*proto.Cancel); ok {
			continue
		}
		er, ok := m.(*proto.Error)
		if !ok || er.Code != proto.ErrCancelled {
			t.Fatalf("after pulling the card: %T %+v; want the login abandoned (cancelled)", m, m)
		}
		break
	}
	if len(e.b.Sessions()) != 0 {
		t.Fatalf("a session exists after the card was pulled mid-prompt")
	}
	t1.insertAnswering("uid.05060708", "bob-pw")
	expectMsg[proto.Attached](t1)
}

// TestPromptCancelledAtTerminal: the person cancels a prompt at the
// terminal (Cancel{ID}, T → B): the login fails, the connection stays.
func TestPromptCancelledAtTerminal(t *testing.T) {
	t.Parallel()
	_, t1, p := pendingPrompt(t, "uid.0a0b0c0d")
	if err := t1.conn.Send(&proto.Cancel{ID: p.ID}); err != nil {
		t.Fatal(err)
	}
	er := expectMsg[proto.Error](t1)
	if er.Code != proto.ErrAuthFailed || er.Token != "uid.0a0b0c0d" || er.Detail != proto.DetailDeclined {
		t.Fatalf("after cancelling the prompt: %+v; want auth_failed, declined, for the token", er)
	}
	t1.insertAnswering("uid.0a0b0c0d", "bob-pw")
	expectMsg[proto.Attached](t1)
}

// TestPolicyAdminLock: a session an administrator locked asks for the
// login at its next resume even though the policy lets hot-desks resume
// without one — suspended or active when it was locked — and only then.
func TestPolicyAdminLock(t *testing.T) {
	t.Parallel()
	e := pamEnv(t, &auth.Policies{Default: auth.Policy{Kind: auth.KindCardPassword, NoReauth: true}}, auth.LimiterConfig{})
	tok := "uid.0a0b0c1d"
	t1, att := e.bobAt(tok, "term-1")
	for i, active := range []bool{false, true} {
		tm := e.dial(fmt.Sprintf("term-lock-%d", i))
		if !active {
			t1.remove(tok)
			expectMsg[proto.Detached](t1)
		}
		if err := e.b.Lock(e.ctx, att.SessionID); err != nil {
			t.Fatal(err)
		}
		if active {
			if det := expectMsg[proto.Detached](t1); det.Reason != proto.DetachAdmin {
				t.Fatalf("locked while active: %+v; want detached by the administrator", det)
			}
		}
		if si := sessionInfo(t, e.b, att.SessionID); !si.Locked || si.State != Suspended {
			t.Fatalf("after Lock (active %v): %+v; want locked and suspended", active, si)
		}
		tm.insertRefused(tok, proto.ErrAuthFailed, "wrong")
		tm.insertAnswering(tok, "bob-pw")
		if a := expectMsg[proto.Attached](tm); a.SessionID != att.SessionID || tm.promptCount() != 2 {
			t.Fatalf("resume of the locked session: %+v after %d prompts; want %s after the login", a, tm.promptCount(), att.SessionID)
		}
		if si := sessionInfo(t, e.b, att.SessionID); si.Locked {
			t.Fatalf("resumed session still locked: %+v", si)
		}
		t1 = tm
	}
	// Unlocked by the login: the next hot-desk asks nothing again.
	t1.remove(tok)
	expectMsg[proto.Detached](t1)
	t3 := e.dial("term-3")
	t3.insert(tok)
	if a := expectMsg[proto.Attached](t3); a.SessionID != att.SessionID || t3.promptCount() != 0 {
		t.Fatalf("hot-desk after the lock's login: %+v after %d prompts; want no prompt", a, t3.promptCount())
	}
}

// unansweredAuth is a login whose prompt nobody answered in time.
type unansweredAuth struct{}

func (unansweredAuth) Authenticate(context.Context, auth.Request, auth.Conversation) (auth.Result, error) {
	return auth.Result{}, fmt.Errorf("pam: prompt timed out: %w", auth.ErrNoAnswer)
}

// TestPromptUnanswered: a login whose PIN prompt nobody answered in time
// is refused as auth_failed with a message that says so, for the greeter
// to tell "no PIN entered" from a wrong PIN (it said "Wrong PIN or
// password" to a person who had typed nothing).
func TestPromptUnanswered(t *testing.T) {
	t.Parallel()
	e := newEnvWith(t, "b1", envOptions{authn: unansweredAuth{}})
	tok, key := e.enroll("uma")
	t1 := e.dial("term-1")
	t1.present(tok, key)
	er := expectMsg[proto.Error](t1)
	if er.Code != proto.ErrAuthFailed || er.Token != tok || !strings.Contains(er.Message, "no answer") || er.Detail != proto.DetailNoAnswer {
		t.Fatalf("refusal %+v; want auth_failed, no_answer, for %s saying no answer came", er, tok)
	}
}

// TestReconnectGrace: under a policy that asks the password at every
// hot-desk, a terminal whose connection dropped under its user (or that
// reconnected before the old connection was seen to end) resumes the
// session with the token and the resume key of its last Attached, within
// session.reconnect_grace, the account checked and the login event saying
// why; the same terminal without the key (a terminal id is anyone's to
// claim), another terminal, the same one after the grace, and a password
// login without a token are asked as the policy says.
func TestReconnectGrace(t *testing.T) {
	t.Parallel()
	var events recordedEvents
	e, _ := pamEnvWith(t, &auth.Policies{Default: auth.Policy{Kind: auth.KindCardPassword},
		Users: map[string]auth.Policy{"alice": {Kind: auth.KindPassword}}}, auth.LimiterConfig{},
		envOptions{reconnectGrace: 30 * time.Second, events: &events})
	tok := "uid.0a0b0c2d"
	t1, att := e.bobAt(tok, "term-1")
	sid, key := att.SessionID, att.ResumeKey
	if len(key) != proto.ResumeKeyLen {
		t.Fatalf("Attached without a resume key: %+v", att)
	}
	resume := func(tm *term, key []byte) {
		t.Helper()
		if err := tm.conn.Send(&proto.TokenInserted{Token: tok, Reader: "soft", Resume: key}); err != nil {
			t.Fatal(err)
		}
	}
	drop := func(tm *term) {
		t.Helper()
		tm.conn.Close()
		testutil.WaitFor(t, time.Minute, "the session suspended with its terminal's connection", func() bool {
			return sessionInfo(t, e.b, sid).State == Suspended
		})
	}
	drop(t1)
	// Claiming the terminal's id is not enough: the key.
	impostor := e.dial("term-1")
	impostor.insert(tok)
	expectMsg[proto.AuthPrompt](impostor)
	impostor.conn.Close()
	t1 = e.dial("term-1")
	resume(t1, key)
	a := expectMsg[proto.Attached](t1)
	if a.SessionID != sid || t1.promptCount() != 0 || bytes.Equal(a.ResumeKey, key) {
		t.Fatalf("the terminal back after a drop: %+v after %d prompts; want %s, no prompt, a new key", a, t1.promptCount(), sid)
	}
	key = a.ResumeKey
	if ev := events.last(event.LoginGranted); !strings.Contains(ev.Reason, "reconnect") {
		t.Errorf("login_granted of the reconnect: %+v; want its reason", ev)
	}
	// Back before its old connection was seen to end: the same.
	t1b := e.dial("term-1")
	resume(t1b, key)
	if a = expectMsg[proto.Attached](t1b); a.SessionID != sid || t1b.promptCount() != 0 {
		t.Fatalf("the terminal back on a second connection: %+v after %d prompts; want %s, no prompt", a, t1b.promptCount(), sid)
	}
	key = a.ResumeKey
	expectMsg[proto.Detached](t1)
	// Another terminal is a hot-desk: the password.
	t2 := e.dial("term-2")
	resume(t2, key)
	if p := expectMsg[proto.AuthPrompt](t2); p.Token != tok {
		t.Fatalf("hot-desk to term-2: prompt %+v; want the password asked", p)
	}
	t2.conn.Close()
	// The grace over: the password.
	drop(t1b)
	e.clk.Advance(30 * time.Second)
	t1 = e.dial("term-1")
	resume(t1, key)
	expectMsg[proto.AuthPrompt](t1)
	t1.conn.Close()
	// A password login proves no token: asked again, even at once.
	t3 := e.dial("term-3")
	t3.insertAnswering("user.alice", "alice-pw")
	aatt := expectMsg[proto.Attached](t3)
	t3.conn.Close()
	testutil.WaitFor(t, time.Minute, "alice's session suspended", func() bool {
		return sessionInfo(t, e.b, aatt.SessionID).State == Suspended
	})
	t3 = e.dial("term-3")
	if err := t3.conn.Send(&proto.TokenInserted{Token: "user.alice", Reader: "login", Resume: aatt.ResumeKey}); err != nil {
		t.Fatal(err)
	}
	expectMsg[proto.AuthPrompt](t3)
}

// TestRestartReconnect: the reconnect grace across a restart of the broker
// that keeps its desktops. The terminal that showed the session comes
// back to the next run with the resume key of its last Attached and is
// let in without the password, once (the key is new at each Attached);
// another terminal, the same one without the key, or after the grace is
// asked. So is a session whose token was removed before the restart, one
// an administrator locked, one whose claim expired meanwhile (another
// broker may have given the token a new one: the key is no longer this
// session's), and one whose record was written before the hash existed
// (adopted all the same).
func TestRestartReconnect(t *testing.T) {
	t.Parallel()
	const tok = "uid.0a0b0c3e"
	pol := &auth.Policies{Default: auth.Policy{Kind: auth.KindCardPassword}}
	// start logs bob in at term-1 on a new broker, does before, restarts
	// the broker keeping its desktops and returns the session, the key
	// and a dialer of the restarted broker.
	start := func(t *testing.T, before func(e *env, t1 *term, sid string), stopped func(e *env)) (e *env, sid string, key []byte, nb *Broker, dial func(string) *term) {
		t.Helper()
		e, _ = pamEnvWith(t, pol, auth.LimiterConfig{}, envOptions{reconnectGrace: 30 * time.Second})
		t1, att := e.bobAt(tok, "term-1")
		if before != nil {
			before(e, t1, att.SessionID)
		}
		nb, _ = restartKeeping(t, e, func(reg *registry.Registry) Reclaimer {
			if stopped != nil {
				stopped(e)
			}
			return reg
		})
		if ss := nb.Sessions(); len(ss) != 1 || ss[0].ID != att.SessionID || ss[0].State != Suspended {
			t.Fatalf("adopted %+v; want %s suspended", ss, att.SessionID)
		}
		return e, att.SessionID, att.ResumeKey, nb, e.serve(t, nb)
	}
	resume := func(t *testing.T, tm *term, key []byte) {
		t.Helper()
		if err := tm.conn.Send(&proto.TokenInserted{Token: tok, Reader: "uid", Resume: key}); err != nil {
			t.Fatal(err)
		}
	}
	asked := func(t *testing.T, tm *term, key []byte) {
		t.Helper()
		resume(t, tm, key)
		if p := expectMsg[proto.AuthPrompt](tm); p.Token != tok {
			t.Fatalf("prompt %+v; want the password for %s", p, tok)
		}
		tm.conn.Close()
	}

	t.Run("back", func(t *testing.T) {
		t.Parallel()
		e, sid, key, nb, dial := start(t, nil, nil)
		asked(t, dial("term-2"), key) // a hot-desk
		asked(t, dial("term-1"), nil) // a terminal id is anyone's
		asked(t, dial("term-1"), newResumeKey())
		e.clk.Advance(29 * time.Second) // the grace counts from the restart
		t1 := dial("term-1")
		resume(t, t1, key)
		a := expectMsg[proto.Attached](t1)
		if a.SessionID != sid || t1.promptCount() != 0 || bytes.Equal(a.ResumeKey, key) {
			t.Fatalf("term-1 back after the restart: %+v after %d prompts; want %s, no prompt, a new key", a, t1.promptCount(), sid)
		}
		if st := sessionInfo(t, nb, sid).State; st != Active {
			t.Fatalf("session %s %v; want active", sid, st)
		}
		// The old key is spent.
		t1.conn.Close()
		testutil.WaitFor(t, time.Minute, "the session suspended with term-1's connection", func() bool {
			return sessionInfo(t, nb, sid).State == Suspended
		})
		asked(t, dial("term-1"), key)
	})
	t.Run("grace over", func(t *testing.T) {
		t.Parallel()
		e, _, key, _, dial := start(t, nil, nil)
		e.clk.Advance(30 * time.Second)
		asked(t, dial("term-1"), key)
	})
	t.Run("removed", func(t *testing.T) {
		t.Parallel()
		_, _, key, _, dial := start(t, func(e *env, t1 *term, sid string) {
			t1.remove(tok)
			expectMsg[proto.Detached](t1)
			testutil.WaitFor(t, time.Minute, "the removal in the record", func() bool {
				c, err := e.reg.Lookup(e.ctx, tok)
				return err == nil && c.Session.State == Suspended.String() && c.Session.ResumeKeySHA256 == ""
			})
		}, nil)
		asked(t, dial("term-1"), key)
	})
	t.Run("locked", func(t *testing.T) {
		t.Parallel()
		_, _, key, _, dial := start(t, func(e *env, t1 *term, sid string) {
			if err := e.b.Lock(e.ctx, sid); err != nil {
				t.Fatal(err)
			}
		}, nil)
		asked(t, dial("term-1"), key)
	})
	t.Run("claim expired", func(t *testing.T) {
		t.Parallel()
		_, _, key, _, dial := start(t, func(e *env, t1 *term, sid string) {
			// Its lease gone before the next run: the claim with it.
			testutil.WaitFor(t, time.Minute, "the resume key's hash in the record", func() bool {
				c, err := e.reg.Lookup(e.ctx, tok)
				return err == nil && c.Session.ResumeKeySHA256 != ""
			})
			if _, err := e.cli.Revoke(e.ctx, e.reg.LeaseID()); err != nil {
				t.Fatal(err)
			}
		}, nil)
		asked(t, dial("term-1"), key)
	})
	t.Run("record of before", func(t *testing.T) {
		t.Parallel()
		_, _, key, _, dial := start(t, nil, func(e *env) {
			// The record as a broker of before left it at its stop.
			c, err := e.reg.Lookup(e.ctx, tok)
			if err != nil || c.Session.ResumeKeySHA256 == "" {
				t.Fatalf("record at the stop: %+v, %v; want the resume key's hash", c.Session, err)
			}
			old := c.Session
			old.ResumeTerminal, old.ResumeKeySHA256 = "", ""
			v, err := json.Marshal(old)
			if err != nil {
				t.Fatal(err)
			}
			if _, err := e.cli.Put(e.ctx, "/hotdesk/sessions/"+tok, string(v), clientv3.WithIgnoreLease()); err != nil {
				t.Fatal(err)
			}
		})
		asked(t, dial("term-1"), key)
	})
}

// recordedEvents is an EventSink that keeps every event.
type recordedEvents struct{ testutil.Recorded[event.Event] }

func (r *recordedEvents) Emit(e event.Event) { r.Add(e) }

// last returns the last event of kind kind (zero if none).
func (r *recordedEvents) last(kind event.Kind) event.Event {
	e, _ := r.Last(func(e event.Event) bool { return e.Kind == kind })
	return e
}

// TestReconnectStaleKeys: a resume key proves only the terminal that was
// shown the session last. A key replayed after the session was shown
// elsewhere (a hot-desk raced against the drop: the old terminal's key),
// a key replayed under another connection claiming the id of the terminal
// the session was lost at, and the last key after its token was removed
// at that terminal (the person left: a copied card and a key read from
// the terminal's memory later) are each asked the password.
func TestReconnectStaleKeys(t *testing.T) {
	t.Parallel()
	e, _ := pamEnvWith(t, &auth.Policies{Default: auth.Policy{Kind: auth.KindCardPassword}}, auth.LimiterConfig{},
		envOptions{reconnectGrace: 30 * time.Second})
	tok := "uid.0a0b0c2e"
	t1, att := e.bobAt(tok, "rs-1")
	sid, k1 := att.SessionID, att.ResumeKey
	resume := func(tm *term, key []byte) {
		t.Helper()
		if err := tm.conn.Send(&proto.TokenInserted{Token: tok, Reader: "soft", Resume: key}); err != nil {
			t.Fatal(err)
		}
	}
	// rs-1's link drops unseen; meanwhile bob hot-desks to rs-2.
	t2 := e.dial("rs-2")
	t2.insertAnswering(tok, "bob-pw")
	k2 := expectMsg[proto.Attached](t2).ResumeKey
	expectMsg[proto.Detached](t1)
	t1.conn.Close()
	// rs-1 comes back with the key it held: the session is rs-2's now.
	t1 = e.dial("rs-1")
	resume(t1, k1)
	if p := expectMsg[proto.AuthPrompt](t1); p.Token != tok {
		t.Fatalf("rs-1 back with its old key: %+v; want the password asked", p)
	}
	t1.conn.Close()
	// rs-2's connection is lost: another connection claiming rs-2 with
	// rs-1's old key is asked.
	t2.conn.Close()
	testutil.WaitFor(t, time.Minute, "the session suspended with rs-2's connection", func() bool {
		return sessionInfo(t, e.b, sid).State == Suspended
	})
	imp := e.dial("rs-2")
	resume(imp, k1)
	expectMsg[proto.AuthPrompt](imp)
	imp.conn.Close()
	// rs-2 itself, with its key: resumed without the password.
	t2 = e.dial("rs-2")
	resume(t2, k2)
	a := expectMsg[proto.Attached](t2)
	if a.SessionID != sid || t2.promptCount() != 0 {
		t.Fatalf("rs-2 back with its key: %+v after %d prompts; want %s without one", a, t2.promptCount(), sid)
	}
	// bob takes the card out at rs-2, which then goes away: its last key
	// resumes nothing.
	t2.remove(tok)
	expectMsg[proto.Detached](t2)
	t2.conn.Close()
	t2b := e.dial("rs-2")
	resume(t2b, a.ResumeKey)
	expectMsg[proto.AuthPrompt](t2b)
}
