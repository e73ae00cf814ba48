package pam_test

import (
	"errors"
	"os"
	"path/filepath"
	"slices"
	"testing"

	"github.com/hotdesk/hotdesk/auth"
	"github.com/hotdesk/hotdesk/auth/pam"
	"github.com/hotdesk/hotdesk/internal/rlimit"
	"github.com/hotdesk/hotdesk/internal/testutil"
)

// TestCardSessionOpen: with auth.Chooser.Sessions (hotdeskd's open_session), a
// card login that starts a new desktop gets the PAM session a password
// login gets — account stack, then pam_setcred and pam_open_session,
// never pam_authenticate (whose stack denies everyone here) — held by
// its helper until Result.Session is closed; a card resuming its desktop
// has its account checked only. The session's helper is a fresh one,
// never an account check's kept for the next (AccountHelperUses). Real
// PAM: pam_matrix, pam_env, pam_exec hooks logging every call.
//
// Its name is a prefix of no other test's: helpers are found by it.
func TestCardSessionOpen(t *testing.T) {
	t.Parallel()
	needMatrix(t)
	tmp := t.TempDir()
	hook, readHook := pamHook(t, tmp)
	db := passdb(t, "alice:secret:hotdesk")
	dir := confDir(t, map[string]string{"hotdesk": "auth optional pam_exec.so quiet " + hook + "\nauth required pam_deny.so\n" +
		"account optional pam_exec.so quiet " + hook + "\n" +
		"account required " + testutil.MatrixModule + " passdb=" + db + "\n" +
		pamEnvSession(t, tmp, "HOTDESK_TEST=card\n") +
		"session required pam_exec.so quiet " + hook + "\n"})
	a := newAuth(t, pam.Config{ConfDir: dir, OpenSession: true, AccountHelperUses: 10})
	c := &auth.Chooser{Policies: &auth.Policies{Default: auth.Policy{Kind: auth.KindCard}}, Services: a, Sessions: a}
	const at = " alice hotdesk/term-1 192.0.2.7\n"

	// A resume: the account is checked, no session opened; the check's
	// helper waits for the next check.
	conv := newScript("", "never asked")
	resume := func() {
		t.Helper()
		r := req("alice")
		r.Existing = true
		res, err := c.Authenticate(t.Context(), r, conv)
		if err != nil || res.User != "alice" || res.Session != nil {
			t.Fatalf("card resume: user, session, err = %q, %v, %v; want alice, none, nil", res.User, res.Session, err)
		}
	}
	resume()
	want := "account" + at
	if got := readHook(); got != want {
		t.Errorf("hook log after a resume = %q; want %q", got, want)
	}
	if got := processesWith(t, helperMarker(t)); len(got) != 1 {
		t.Fatalf("helpers = %v; want the idle one", got)
	}

	// A new desktop: account, then the session, in a helper of its own.
	res, err := c.Authenticate(t.Context(), req("alice"), conv)
	if err != nil || res.User != "alice" || res.Session == nil {
		t.Fatalf("new card login: user, session, err = %q, %v, %v; want alice, a session, nil", res.User, res.Session, err)
	}
	if !res.NoSecret {
		t.Error("NoSecret = false; want true (the limiter must not clear the user's failures)")
	}
	if !slices.Contains(res.Env, "HOTDESK_TEST=card") {
		t.Errorf("env = %q; want HOTDESK_TEST=card from pam_env", res.Env)
	}
	if _, ok := res.Session.(auth.DesktopBinder); !ok {
		t.Errorf("session %T is no DesktopBinder; want one bound to its desktop as a login's", res.Session)
	}
	want += "account" + at + "open_session" + at
	if got := readHook(); got != want {
		t.Errorf("hook log = %q; want %q (no auth)", got, want)
	}
	if got := processesWith(t, helperMarker(t)); len(got) != 2 {
		t.Errorf("helpers = %v; want the idle one and one holding the session", got)
	}

	// A resume of that desktop: the account checked again, no session.
	resume()
	want += "account" + at
	if got := readHook(); got != want {
		t.Errorf("hook log after the resume = %q; want %q", got, want)
	}

	if err := res.Session.Close(t.Context()); err != nil {
		t.Fatalf("close: %v", err)
	}
	want += "close_session" + at
	if got := readHook(); got != want {
		t.Errorf("hook log after close = %q; want %q", got, want)
	}
	if got := conv.prompts(); len(got) != 0 {
		t.Errorf("prompts at the terminal = %q; want none", got)
	}
	a.Close()
	noHelpers(t)
}

// TestCardSessionRefused: an account the account stack refuses (unknown
// to pam_matrix, pam_deny, expired) gets no session: the login is denied
// as an account check's (auth.ErrAccount), the session stack never runs,
// no helper is left. A password that must be changed does not stop the
// card: its session opens.
func TestCardSessionRefused(t *testing.T) {
	t.Parallel()
	needMatrix(t)
	mod := testModule(t)
	hook, readHook := pamHook(t, t.TempDir())
	db := passdb(t, "alice:secret:hotdesk")
	session := "session required pam_exec.so quiet " + hook + "\n"
	dir := confDir(t, map[string]string{
		"hotdesk":   "auth required pam_deny.so\naccount required " + testutil.MatrixModule + " passdb=" + db + "\n" + session,
		"denied":    "auth required pam_deny.so\naccount required pam_deny.so\n" + session,
		"expired":   "auth required pam_deny.so\naccount required " + mod + " acct=expired\n" + session,
		"chauthtok": "auth required pam_deny.so\naccount required " + mod + " acct=new_authtok\n" + session,
	})
	a := newAuth(t, pam.Config{ConfDir: dir, OpenSession: true})
	pol := &auth.Policies{
		Default: auth.Policy{Kind: auth.KindCard},
		Tokens: map[string]auth.Policy{
			"uid.denied":    {Kind: auth.KindCard, Service: "denied"},
			"uid.expired":   {Kind: auth.KindCard, Service: "expired"},
			"uid.chauthtok": {Kind: auth.KindCard, Service: "chauthtok"},
		},
	}
	c := &auth.Chooser{Policies: pol, Services: a, Sessions: a}
	for _, tt := range []struct {
		token, user string
		want        []error
	}{
		{"uid.card", "carol", []error{auth.ErrDenied, auth.ErrAccount}},
		{"uid.denied", "alice", []error{auth.ErrDenied, auth.ErrAccount}},
		{"uid.expired", "alice", []error{auth.ErrDenied, auth.ErrAccount, pam.ErrAccountExpired}},
	} {
		r := req(tt.user)
		r.Token = tt.token
		res, err := c.Authenticate(t.Context(), r, newScript(""))
		for _, want := range tt.want {
			if !errors.Is(err, want) {
				t.Errorf("%s (%s): err = %v; want %v", tt.token, tt.user, err, want)
			}
		}
		if res.Session != nil {
			t.Errorf("%s (%s): a session was opened for a refused account", tt.token, tt.user)
		}
		noHelpers(t)
	}
	if got := readHook(); got != "" {
		t.Errorf("session stack ran for refused accounts: %q", got)
	}
	r := req("alice")
	r.Token = "uid.chauthtok"
	res, err := c.Authenticate(t.Context(), r, newScript(""))
	if err != nil || res.Session == nil {
		t.Fatalf("password change due: session, err = %v, %v; want a session, nil", res.Session, err)
	}
	if err := res.Session.Close(t.Context()); err != nil {
		t.Fatalf("close: %v", err)
	}
	if got := readHook(); got != "open_session alice hotdesk/term-1 192.0.2.7\nclose_session alice hotdesk/term-1 192.0.2.7\n" {
		t.Errorf("hook log = %q; want the session opened and closed", got)
	}
	noHelpers(t)
}

// TestCardSessionNoPrompt: the modules of a card login's session talk to
// nobody, as account modules do: a message is dropped, a prompt refused
// (PAM_CONV_ERR). A session module that insists (required) fails the
// login — not a denial, no session left —; an optional one lets the
// session open. Nothing reaches the terminal either way.
func TestCardSessionNoPrompt(t *testing.T) {
	t.Parallel()
	mod := testModule(t)
	account := "auth required pam_deny.so\naccount required " + mod + "\n"
	dir := confDir(t, map[string]string{
		"insists":  account + "session required " + mod + " sess_info=Welcome sess_prompt\n",
		"optional": account + "session optional " + mod + " sess_info=Welcome sess_prompt\nsession required pam_permit.so\n",
	})
	a := newAuth(t, pam.Config{ConfDir: dir, OpenSession: true})
	pol := &auth.Policies{
		Default: auth.Policy{Kind: auth.KindCard, Service: "optional"},
		Tokens:  map[string]auth.Policy{"uid.insists": {Kind: auth.KindCard, Service: "insists"}},
	}
	c := &auth.Chooser{Policies: pol, Services: a, Sessions: a}

	conv := newScript("", "1234")
	r := req("alice")
	r.Token = "uid.insists"
	res, err := c.Authenticate(t.Context(), r, conv)
	if err == nil || errors.Is(err, auth.ErrDenied) || res.Session != nil {
		t.Errorf("prompting session module (required): session, err = %v, %v; want none, an error that is no denial", res.Session, err)
	}
	noHelpers(t)

	res, err = c.Authenticate(t.Context(), req("alice"), conv)
	if err != nil || res.Session == nil {
		t.Fatalf("prompting session module (optional): session, err = %v, %v; want a session, nil", res.Session, err)
	}
	if err := res.Session.Close(t.Context()); err != nil {
		t.Errorf("close: %v", err)
	}
	if got := conv.prompts(); len(got) != 0 {
		t.Errorf("prompts at the terminal = %q; want none", got)
	}
	noHelpers(t)
}

// TestCardCredDelete: a card login's pam_setcred(ESTABLISH) may fail as a
// whole (pam_deny in the auth stack of a service whose logins never ask a
// secret) after a module before it established its credentials: the
// session opens all the same, as with systemd's PAMName=, and as systemd
// does, pam_setcred(DELETE) is called at the close, so that such a module
// removes what it established (tickets, tokens, keys).
//
// Its name is a prefix of no other test's: helpers are found by it.
func TestCardCredDelete(t *testing.T) {
	t.Parallel()
	mod := testModule(t)
	credLog := filepath.Join(t.TempDir(), "cred.log")
	dir := confDir(t, map[string]string{"hotdesk": "auth optional " + mod + " cred_log=" + credLog + "\nauth required pam_deny.so\n" +
		"account required pam_permit.so\nsession required pam_permit.so\n"})
	a := newAuth(t, pam.Config{ConfDir: dir, OpenSession: true})
	c := &auth.Chooser{Policies: &auth.Policies{Default: auth.Policy{Kind: auth.KindCard}}, Services: a, Sessions: a}
	res, err := c.Authenticate(t.Context(), req("alice"), newScript(""))
	if err != nil || res.Session == nil {
		t.Fatalf("card login: session, err = %v, %v; want a session, nil", res.Session, err)
	}
	if err := res.Session.Close(t.Context()); err != nil {
		t.Fatalf("close: %v", err)
	}
	b, err := os.ReadFile(credLog)
	if err != nil {
		t.Fatal(err)
	}
	if got := string(b); got != "establish\ndelete\n" {
		t.Errorf("setcred calls = %q; want establish, then delete at the close", got)
	}
	a.Close()
	noHelpers(t)
}

// TestLimitsOfSession: what pam_limits sets when the session opens (from
// its limits.conf, as for an ssh login) is the Result's Limits, for the
// desktop; a limit it leaves as it was is not there. A real account
// (pam_limits looks the user up).
func TestLimitsOfSession(t *testing.T) {
	t.Parallel()
	needMatrix(t)
	const user = "hdlimits"
	testutil.AddAccount(t, user)
	conf := filepath.Join(t.TempDir(), "limits.conf")
	if err := os.WriteFile(conf, []byte(user+" soft nofile 900\n"+user+" hard nofile 1000\n@nosuchgroup hard nproc 1\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	db := passdb(t, user+":secret:hotdesk")
	dir := confDir(t, map[string]string{"hotdesk": "auth required pam_deny.so\n" +
		"account required " + testutil.MatrixModule + " passdb=" + db + "\n" +
		"session required pam_limits.so conf=" + conf + "\n"})
	a := newAuth(t, pam.Config{ConfDir: dir, OpenSession: true})
	c := &auth.Chooser{Policies: &auth.Policies{Default: auth.Policy{Kind: auth.KindCard}}, Services: a, Sessions: a}
	res, err := c.Authenticate(t.Context(), req(user), newScript("", "never asked"))
	if err != nil || res.Session == nil {
		t.Fatalf("card login with pam_limits: session, err = %v, %v; want a session", res.Session, err)
	}
	t.Cleanup(func() { _ = res.Session.Close(t.Context()) })
	want := []rlimit.Limit{{Resource: "nofile", Soft: 900, Hard: 1000}}
	if !slices.Equal(res.Limits, want) {
		t.Errorf("Limits = %+v; want %+v (nofile only: nproc's rule is another group's)", res.Limits, want)
	}
}
