package pam_test

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/hotdesk/hotdesk/auth"
	"github.com/hotdesk/hotdesk/auth/pam"
	"github.com/hotdesk/hotdesk/internal/testutil"
)

// TestAccountCheck: the logins that ask no secret — the card policy, and a
// hot-desk without re-authentication — go through the account stack of the
// policy's service (real PAM: pam_matrix, pam_nologin and pam_hdtest),
// through auth.Chooser as hotdeskd wires it. pam_authenticate is not run
// (the services' auth stacks deny everyone), and nothing reaches the
// terminal: messages are dropped, prompts refused.
func TestAccountCheck(t *testing.T) {
	t.Parallel()
	needMatrix(t)
	mod := testModule(t)
	nologin := filepath.Join(t.TempDir(), "nologin")
	// pam_matrix admits a user of its database for that entry's service
	// (its first entry): one database per service.
	matrix := func(db string) string {
		return "auth required pam_deny.so\naccount requisite pam_nologin.so file=" + nologin +
			"\naccount required " + testutil.MatrixModule + " passdb=" + db + "\n"
	}
	dir := confDir(t, map[string]string{
		"hotdesk":     matrix(passdb(t, "alice:secret:hotdesk", "bob:secret:hotdesk")),
		"hotdesk-pin": matrix(passdb(t, "alice:secret:hotdesk-pin")),
		"expired":     "auth required pam_deny.so\naccount required " + mod + " acct=expired\n",
		"denied":      "auth required pam_deny.so\naccount required " + mod + " acct=perm_denied\n",
		"chauthtok":   "auth required pam_deny.so\naccount required " + mod + " acct=new_authtok\n",
		"prompting":   "auth required pam_deny.so\naccount required " + mod + " acct_prompt\n",
		"chatty":      "auth required pam_deny.so\naccount required " + mod + " acct_info=Your-password-expires-in-3-days\n",
	})
	a := newAuth(t, pam.Config{ConfDir: dir})
	pol := &auth.Policies{
		Default: auth.Policy{Kind: auth.KindCard},
		Tokens: map[string]auth.Policy{
			"uid.pin":       {Kind: auth.KindCardPIN, NoReauth: true},
			"uid.expired":   {Kind: auth.KindCard, Service: "expired"},
			"uid.denied":    {Kind: auth.KindCard, Service: "denied"},
			"uid.chauthtok": {Kind: auth.KindCard, Service: "chauthtok"},
			"uid.prompting": {Kind: auth.KindCard, Service: "prompting"},
			"uid.chatty":    {Kind: auth.KindCard, Service: "chatty"},
		},
	}
	c := &auth.Chooser{Policies: pol, Services: a}
	notDenied := errors.New("an error that is not a denial")
	tests := []struct {
		name     string
		token    string
		user     string
		existing bool
		nologin  bool
		want     []error // nil: granted
	}{
		{"card", "uid.card", "alice", false, false, nil},
		{"card resume", "uid.card", "alice", true, false, nil},
		{"card unknown to the account stack", "uid.card", "carol", false, false, []error{auth.ErrDenied, auth.ErrAccount}},
		{"card resume unknown to the account stack", "uid.card", "carol", true, false, []error{auth.ErrDenied, auth.ErrAccount}},
		{"card nologin", "uid.card", "alice", true, true, []error{auth.ErrDenied, auth.ErrAccount}},
		{"card expired", "uid.expired", "alice", true, false, []error{auth.ErrDenied, auth.ErrAccount, pam.ErrAccountExpired}},
		{"card denied", "uid.denied", "alice", false, false, []error{auth.ErrDenied, auth.ErrAccount}},
		{"card password change due", "uid.chauthtok", "alice", true, false, nil},
		{"card message dropped", "uid.chatty", "alice", true, false, nil},
		{"card account module prompts", "uid.prompting", "alice", true, false, []error{notDenied}},
		// card+pin without re-authentication: the PIN service's account stack.
		{"pin resume", "uid.pin", "alice", true, false, nil},
		{"pin resume refused", "uid.pin", "bob", true, false, []error{auth.ErrDenied, auth.ErrAccount}},
		{"pin resume nologin", "uid.pin", "alice", true, true, []error{auth.ErrDenied, auth.ErrAccount}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			// pam_nologin's file is shared: these cases run one by one.
			if tt.nologin {
				if err := os.WriteFile(nologin, []byte("Maintenance until 10:00\n"), 0o644); err != nil {
					t.Fatal(err)
				}
				defer os.Remove(nologin)
			}
			r := req(tt.user)
			r.Token, r.Existing = tt.token, tt.existing
			conv := newScript("") // answers nothing
			res, err := c.Authenticate(t.Context(), r, conv)
			if tt.want == nil {
				if err != nil || res.User != tt.user {
					t.Fatalf("user, err = %q, %v; want %q, nil", res.User, err, tt.user)
				}
			}
			for _, want := range tt.want {
				if want == notDenied {
					if err == nil || errors.Is(err, auth.ErrDenied) {
						t.Errorf("err = %v; want an error that is not %v", err, auth.ErrDenied)
					}
					continue
				}
				if !errors.Is(err, want) {
					t.Errorf("err = %v; want %v", err, want)
				}
			}
			if got := conv.prompts(); len(got) != 0 {
				t.Errorf("prompts at the terminal = %q; want none", got)
			}
		})
	}
	noHelpers(t)
}

// TestAccountCheckUnix: real pam_unix with real users (root, as in CI): an
// account expired by the administrator (chage -E 0) no longer gets a
// desktop with its card alone, nor resumes one under card+password without
// re-authentication; a valid one does.
func TestAccountCheckUnix(t *testing.T) {
	t.Parallel()
	needRoot(t)
	dir := confDir(t, map[string]string{"hotdesk": unixService})
	a := newAuth(t, pam.Config{ConfDir: dir})
	pol := &auth.Policies{
		Default: auth.Policy{Kind: auth.KindCard},
		Tokens:  map[string]auth.Policy{"uid.pw": {Kind: auth.KindCardPassword, NoReauth: true}},
	}
	c := &auth.Chooser{Policies: pol, Services: a}
	valid := unixUser(t, "Acct-Pw-1")
	expired := unixUser(t, "Acct-Pw-2", "-E", "0")
	for _, token := range []string{"uid.card", "uid.pw"} {
		r := req(valid)
		r.Token, r.Existing = token, true
		if res, err := c.Authenticate(t.Context(), r, newScript("")); err != nil || res.User != valid {
			t.Errorf("%s, valid account: user, err = %q, %v; want %q, nil", token, res.User, err, valid)
		}
		r = req(expired)
		r.Token, r.Existing = token, true
		_, err := c.Authenticate(t.Context(), r, newScript(""))
		for _, want := range []error{auth.ErrDenied, auth.ErrAccount, pam.ErrAccountExpired} {
			if !errors.Is(err, want) {
				t.Errorf("%s, expired account: err = %v; want %v", token, err, want)
			}
		}
	}
	// A new card session too.
	r := req(expired)
	r.Token = "uid.card"
	if _, err := c.Authenticate(t.Context(), r, newScript("")); !errors.Is(err, pam.ErrAccountExpired) {
		t.Errorf("new card session, expired account: err = %v; want %v", err, pam.ErrAccountExpired)
	}
}

// TestAccountCheckSpare: with SpareHelper, an account check runs in a
// helper started ahead (one process per check all the same), answers as
// without it, and Close leaves no helper behind.
func TestAccountCheckSpare(t *testing.T) {
	t.Parallel()
	needMatrix(t)
	db := passdb(t, "alice:secret:hotdesk")
	dir := confDir(t, map[string]string{
		"hotdesk": "auth required pam_deny.so\naccount required " + testutil.MatrixModule + " passdb=" + db + "\n",
	})
	a := newAuth(t, pam.Config{ConfDir: dir, SpareHelper: true})
	for i := range 3 {
		if err := a.CheckAccount(t.Context(), "hotdesk", req("alice")); err != nil {
			t.Fatalf("check %d, alice: err = %v; want nil", i, err)
		}
		if err := a.CheckAccount(t.Context(), "hotdesk", req("bob")); !errors.Is(err, auth.ErrAccount) {
			t.Fatalf("check %d, bob: err = %v; want %v", i, err, auth.ErrAccount)
		}
	}
	// The next check's helper waits, idle.
	deadline := time.Now().Add(10 * time.Second)
	for len(processesWith(t, helperMarker(t))) != 1 && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
	if got := processesWith(t, helperMarker(t)); len(got) != 1 {
		t.Fatalf("helpers after the checks = %v; want one spare", got)
	}
	a.Close()
	noHelpers(t)
	// Closed: checks still work, without a spare.
	if err := a.CheckAccount(t.Context(), "hotdesk", req("alice")); err != nil {
		t.Fatalf("after Close: err = %v; want nil", err)
	}
	noHelpers(t)
}

// TestAccountHelperReused: with AccountHelperUses, one helper process runs
// that many account checks, one after the other, each a PAM transaction
// of its own (the items of one never reach the next); a denial does not
// end it; an idle helper killed from outside is replaced at the next
// check, which still answers; Close ends the idle ones.
func TestAccountHelperReused(t *testing.T) {
	t.Parallel()
	needMatrix(t)
	// $PPID is the helper running the transaction (pam_exec's parent).
	hook, readHook := accountHook(t, `echo "$PPID $PAM_USER $PAM_TTY $PAM_RHOST" >> "$LOG"`)
	db := passdb(t, "alice:secret:hotdesk")
	dir := confDir(t, map[string]string{
		"hotdesk": hook + "account required " + testutil.MatrixModule + " passdb=" + db + "\n",
	})
	a := newAuth(t, pam.Config{ConfDir: dir, AccountHelperUses: 3})
	checks := []struct {
		user, term string
		denied     bool
	}{
		{"alice", "t1", false}, {"bob", "t2", true}, {"alice", "t3", false}, // helper 1: 3 uses
		{"alice", "t4", false}, {"bob", "t5", true}, // helper 2, idle after
	}
	for i, c := range checks {
		r := req(c.user)
		r.TerminalID, r.RemoteAddr = c.term, fmt.Sprintf("192.0.2.%d:4000", i+1)
		err := a.CheckAccount(t.Context(), "hotdesk", r)
		if c.denied != errors.Is(err, auth.ErrAccount) || (!c.denied && err != nil) {
			t.Fatalf("check %d (%s at %s): err = %v; want denied = %v", i, c.user, c.term, err, c.denied)
		}
	}
	lines := strings.Split(strings.TrimSpace(readHook()), "\n")
	if len(lines) != len(checks) {
		t.Fatalf("hook log = %q; want %d lines", lines, len(checks))
	}
	pids := make([]string, len(lines))
	for i, l := range lines {
		f := strings.Fields(l)
		want := fmt.Sprintf("%s hotdesk/%s 192.0.2.%d", checks[i].user, checks[i].term, i+1)
		if len(f) != 4 || strings.Join(f[1:], " ") != want {
			t.Errorf("check %d saw %q; want its own items %q", i, l, want)
		}
		pids[i] = f[0]
	}
	if pids[0] != pids[1] || pids[1] != pids[2] || pids[3] != pids[4] || pids[2] == pids[3] {
		t.Errorf("helper of each check = %v; want the first three in one process, the last two in another", pids)
	}
	idle := processesWith(t, helperMarker(t))
	if len(idle) != 1 || idle[0] != pids[4] {
		t.Fatalf("idle helpers = %v; want the last check's (%s)", idle, pids[4])
	}
	// Killed while idle: the next check is answered all the same.
	pid, _ := strconv.Atoi(pids[4])
	if err := syscall.Kill(pid, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	if err := a.CheckAccount(t.Context(), "hotdesk", req("alice")); err != nil {
		t.Fatalf("check after the idle helper was killed: err = %v; want nil", err)
	}
	a.Close()
	noHelpers(t)
}

// TestAccountHelperLeftover: an account check whose module leaves a
// process behind (pam_exec running a command that forks into the
// background) ends that process with its helper, which runs no other
// check, AccountHelperUses notwithstanding.
func TestAccountHelperLeftover(t *testing.T) {
	t.Parallel()
	needMatrix(t)
	marker := fmt.Sprintf("%d.%d", 60+os.Getpid()%40, os.Getpid()) // a sleep's duration
	hook, readHook := accountHook(t, `echo $PPID >> "$LOG"`+"\n/bin/sleep "+marker+" </dev/null >/dev/null 2>&1 &")
	db := passdb(t, "alice:secret:hotdesk")
	dir := confDir(t, map[string]string{
		"hotdesk": hook + "account required " + testutil.MatrixModule + " passdb=" + db + "\n",
	})
	a := newAuth(t, pam.Config{ConfDir: dir, AccountHelperUses: 100})
	for i := range 2 {
		if err := a.CheckAccount(t.Context(), "hotdesk", req("alice")); err != nil {
			t.Fatalf("check %d: err = %v; want nil", i, err)
		}
		noHelpers(t, "sleep "+marker)
	}
	if pids := strings.Fields(readHook()); len(pids) != 2 || pids[0] == pids[1] {
		t.Errorf("helper of each check = %v; want two processes", pids)
	}
}

// TestAccountHelperState: a helper whose account check left the process
// changed (a module's setenv, umask) runs no other check: the next
// user's check, in the same process, would run under what the previous
// one left (an environment variable naming the previous user's
// credentials cache, a umask), which a process per check never did.
func TestAccountHelperState(t *testing.T) {
	t.Parallel()
	needMatrix(t)
	mod := testModule(t)
	for _, taint := range []string{"env", "umask"} {
		t.Run(taint, func(t *testing.T) {
			dir := confDir(t, map[string]string{
				"hotdesk": "auth required pam_deny.so\naccount required " + mod + " acct_clean acct_taint=" + taint + "\n",
			})
			a := newAuth(t, pam.Config{ConfDir: dir, AccountHelperUses: 10})
			defer a.Close()
			for i, user := range []string{"alice", "bob", "alice"} {
				if err := a.CheckAccount(t.Context(), "hotdesk", req(user)); err != nil {
					t.Fatalf("check %d (%s): err = %v; want nil (the process as a fresh helper's)", i, user, err)
				}
			}
		})
	}
}

// TestAccountHelperCrash: a reused helper whose module crashes during a
// check fails that check (ErrHelper, not a denial), as a fresh helper's
// crash does: the check is not made again, which would run the modules
// a second time and hide a crash that the earlier checks' leftovers in
// the process may have caused.
func TestAccountHelperCrash(t *testing.T) {
	t.Parallel()
	needMatrix(t)
	mod := testModule(t)
	hook, readHook := accountHook(t, `echo "$PAM_USER" >> "$LOG"`)
	dir := confDir(t, map[string]string{
		"hotdesk": hook + "account required " + mod + " acct_crash=crasher\n",
	})
	a := newAuth(t, pam.Config{ConfDir: dir, AccountHelperUses: 10})
	defer a.Close()
	if err := a.CheckAccount(t.Context(), "hotdesk", req("alice")); err != nil {
		t.Fatalf("alice: err = %v; want nil", err)
	}
	err := a.CheckAccount(t.Context(), "hotdesk", req("crasher"))
	if !errors.Is(err, pam.ErrHelper) || errors.Is(err, auth.ErrDenied) {
		t.Fatalf("crasher: err = %v; want %v, not a denial", err, pam.ErrHelper)
	}
	if got := strings.Fields(readHook()); !slices.Equal(got, []string{"alice", "crasher"}) {
		t.Errorf("checks the modules ran = %q; want alice's and crasher's, once each", got)
	}
}

// accountHook writes a pam_exec hook running body (as logHook) and returns
// the start of a service that denies pam_authenticate and runs the hook
// first in its account stack (the caller adds the account modules that
// decide), and a function reading the hook's log.
func accountHook(t *testing.T, body string) (service string, readHook func() string) {
	t.Helper()
	hook, readHook := logHook(t, t.TempDir(), body)
	return "auth required pam_deny.so\naccount optional pam_exec.so quiet " + hook + "\n", readHook
}
