package pam_test

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/hotdesk/hotdesk/auth"
	"github.com/hotdesk/hotdesk/auth/pam"
	"github.com/hotdesk/hotdesk/internal/testutil"
	"github.com/hotdesk/hotdesk/proto"
)

// unixUser creates a real local user with password pw (removed in cleanup);
// extra runs after creation, e.g. chage.
func unixUser(t *testing.T, pw string, chage ...string) string {
	t.Helper()
	needRoot(t)
	b := make([]byte, 4)
	_, _ = rand.Read(b)
	name := "hdpt" + hex.EncodeToString(b)
	// The tools refuse at once while another process (a test beside this
	// one, a daemon adding a kiosk account) holds the lock of /etc/passwd
	// or /etc/shadow: try again a few times then.
	run := func(stdin string, argv ...string) {
		t.Helper()
		var out []byte
		var err error
		for attempt := 1; attempt <= 10; attempt++ {
			cmd := exec.Command(argv[0], argv[1:]...)
			cmd.Stdin = strings.NewReader(stdin)
			if out, err = cmd.CombinedOutput(); err == nil || !strings.Contains(string(out), "lock") {
				break
			}
			time.Sleep(time.Duration(attempt) * 50 * time.Millisecond)
		}
		if err != nil {
			t.Fatalf("%s: %v\n%s", strings.Join(argv, " "), err, out)
		}
	}
	run("", "useradd", "-M", "-s", "/usr/sbin/nologin", name)
	t.Cleanup(func() { testutil.RemoveAccounts(t, name) })
	run(name+":"+pw+"\n", "chpasswd")
	if len(chage) > 0 {
		run("", append(append([]string{"chage"}, chage...), name)...)
	}
	return name
}

const unixService = "auth required pam_unix.so\naccount required pam_unix.so\npassword required pam_unix.so\nsession required pam_unix.so\n"

// TestUnixAccounts: real pam_unix with real users: right and wrong password,
// expired account, password change required.
func TestUnixAccounts(t *testing.T) {
	t.Parallel()
	needRoot(t)
	dir := confDir(t, map[string]string{"hotdesk": unixService})
	a := newAuth(t, pam.Config{ConfDir: dir})
	const pw, newPW = "Old-Pw-5821", "Fresh-Pw-7713x"

	t.Run("right and wrong password", func(t *testing.T) {
		t.Parallel() // each case has a user of its own; pam_unix fails slowly
		u := unixUser(t, pw)
		if res, err := a.Authenticate(t.Context(), req(u), newScript("", pw)); err != nil || res.User != u {
			t.Fatalf("right: user, err = %q, %v; want %q, nil", res.User, err, u)
		}
		if _, err := a.Authenticate(t.Context(), req(u), newScript("", "nope")); !errors.Is(err, auth.ErrDenied) {
			t.Fatalf("wrong: err = %v; want %v", err, auth.ErrDenied)
		}
	})
	t.Run("expired account", func(t *testing.T) {
		t.Parallel() // each case has a user of its own; pam_unix fails slowly
		u := unixUser(t, pw, "-E", "0")
		_, err := a.Authenticate(t.Context(), req(u), newScript("", pw))
		for _, want := range []error{auth.ErrDenied, pam.ErrAccountExpired} {
			if !errors.Is(err, want) {
				t.Errorf("err = %v; want %v", err, want)
			}
		}
	})
	t.Run("password change required", func(t *testing.T) {
		t.Parallel() // each case has a user of its own; pam_unix fails slowly
		u := unixUser(t, pw, "-d", "0")
		conv := newScript("", pw)
		conv.by = map[string]string{"urrent": pw, "New": newPW, "new": newPW}
		res, err := a.Authenticate(t.Context(), req(u), conv)
		if err != nil || res.User != u {
			t.Fatalf("user, err = %q, %v; want %q, nil (prompts %q)", res.User, err, u, conv.prompts())
		}
		var asked []string
		for _, p := range conv.prompts() {
			if p.Style == proto.PromptEchoOff {
				asked = append(asked, p.Text)
			}
		}
		if !slices.ContainsFunc(asked, func(s string) bool { return strings.Contains(s, "New") }) {
			t.Errorf("secret prompts = %q; want a new-password prompt", asked)
		}
		// The change is real: the new password works, the old one no longer.
		if _, err := a.Authenticate(t.Context(), req(u), newScript("", newPW)); err != nil {
			t.Errorf("new password: err = %v; want nil", err)
		}
		if _, err := a.Authenticate(t.Context(), req(u), newScript("", pw)); !errors.Is(err, auth.ErrDenied) {
			t.Errorf("old password: err = %v; want %v", err, auth.ErrDenied)
		}
	})
	t.Run("password change refused", func(t *testing.T) {
		t.Parallel() // each case has a user of its own; pam_unix fails slowly
		u := unixUser(t, pw, "-d", "0")
		conv := newScript("", pw)
		conv.by = map[string]string{"urrent": pw, "New": "", "new": ""}
		_, err := a.Authenticate(t.Context(), req(u), conv)
		for _, want := range []error{auth.ErrDenied, pam.ErrPasswordChange} {
			if !errors.Is(err, want) {
				t.Errorf("err = %v; want %v (prompts %q)", err, want, conv.prompts())
			}
		}
	})
}

// TestShippedService runs configs/pam.d/hotdesk (with this system's common-*
// files) against a real user, session included.
func TestShippedService(t *testing.T) {
	t.Parallel()
	needRoot(t)
	services := map[string]string{}
	for _, f := range []string{"common-auth", "common-account", "common-password", "common-session"} {
		b, err := os.ReadFile(filepath.Join("/etc/pam.d", f))
		if err != nil {
			testutil.SkipOrFail(t, "system PAM config %s: %v", f, err)
		}
		services[f] = string(b)
	}
	b, err := os.ReadFile("../../configs/pam.d/hotdesk")
	if err != nil {
		t.Fatal(err)
	}
	services["hotdesk"] = string(b)
	a := newAuth(t, pam.Config{ConfDir: confDir(t, services), OpenSession: true})
	u := unixUser(t, "Shipped-Pw-1")
	res, err := a.Authenticate(t.Context(), req(u), newScript("", "Shipped-Pw-1"))
	if err != nil || res.User != u {
		t.Fatalf("user, err = %q, %v; want %q, nil", res.User, err, u)
	}
	if res.Session == nil {
		t.Fatal("session = nil; want open")
	}
	if err := res.Session.Close(t.Context()); err != nil {
		t.Errorf("close: %v", err)
	}
	// Its account stack alone (a card login): the user passes, an expired
	// one does not. (Debian's common-account ends pam_unix's refusal in
	// pam_deny: PAM_AUTH_ERR, not PAM_ACCT_EXPIRED.)
	if err := a.CheckAccount(t.Context(), "hotdesk", req(u)); err != nil {
		t.Errorf("account check: %v; want nil", err)
	}
	expired := unixUser(t, "Shipped-Pw-2", "-E", "0")
	if err := a.CheckAccount(t.Context(), "hotdesk", req(expired)); !errors.Is(err, auth.ErrDenied) || !errors.Is(err, auth.ErrAccount) {
		t.Errorf("account check, expired: %v; want %v", err, auth.ErrAccount)
	}
	noHelpers(t)
}

// TestShippedServiceRefusesRoot: configs/pam.d/hotdesk (passwords) refuses
// root whatever the password, as hotdesk-pin refuses root whatever the PIN
// and sshd root's password by default: a root desktop never exists (it
// would run as a pooled account), so the prompt would only let anyone who
// reaches the terminal port guess root's password; its account stack (a
// card login) refuses root too. Its common-auth is a
// pam_matrix stack here, which takes root's password as right.
func TestShippedServiceRefusesRoot(t *testing.T) {
	t.Parallel()
	needMatrix(t)
	b, err := os.ReadFile("../../configs/pam.d/hotdesk")
	if err != nil {
		t.Fatal(err)
	}
	db := passdb(t, "alice:secret:hotdesk", "root:secret:hotdesk")
	// libpam resolves @include in /etc/pam.d, not in the service's
	// directory: the includes are put in place here.
	svc := string(b)
	for inc, with := range map[string]string{
		"@include common-auth":     testutil.MatrixStack(db),
		"@include common-account":  "",
		"@include common-password": "password required pam_deny.so",
		"@include common-session":  "session required pam_permit.so",
	} {
		if strings.Count(svc, inc+"\n") != 1 {
			t.Fatalf("configs/pam.d/hotdesk: %q not found once", inc)
		}
		svc = strings.Replace(svc, inc+"\n", with+"\n", 1)
	}
	a := newAuth(t, pam.Config{ConfDir: confDir(t, map[string]string{"hotdesk": svc})})
	if res, err := a.Authenticate(t.Context(), req("alice"), newScript("", "secret")); err != nil || res.User != "alice" {
		t.Fatalf("alice: user, err = %q, %v; want alice, nil", res.User, err)
	}
	if res, err := a.Authenticate(t.Context(), req("root"), newScript("", "secret")); !errors.Is(err, auth.ErrDenied) {
		t.Errorf("root with the right password: user, err = %q, %v; want denied", res.User, err)
	}
	// Its account stack alone (a card registered to root) refuses root too.
	if err := a.CheckAccount(t.Context(), "hotdesk", req("alice")); err != nil {
		t.Errorf("alice's account check: %v; want nil", err)
	}
	if err := a.CheckAccount(t.Context(), "hotdesk", req("root")); !errors.Is(err, auth.ErrAccount) {
		t.Errorf("root's account check: %v; want %v", err, auth.ErrAccount)
	}
}
