package pam_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"

	"github.com/hotdesk/hotdesk/auth"
	"github.com/hotdesk/hotdesk/auth/pam"
	"github.com/hotdesk/hotdesk/internal/clock"
	"github.com/hotdesk/hotdesk/internal/testutil"
	"github.com/hotdesk/hotdesk/proto"
)

func TestMatrixLogin(t *testing.T) {
	t.Parallel()
	needMatrix(t)
	db := passdb(t, "alice:secret:hotdesk", "bob:hunter2:hotdesk", "carol:other:elsewhere")
	a := newAuth(t, pam.Config{ConfDir: confDir(t, map[string]string{"hotdesk": matrixService(db)})})

	tests := []struct {
		name     string
		reqUser  string // known from the token registry
		typed    string // typed at a login prompt
		answer   string
		wantUser string
		wantErr  error
		wantAsk  []prompt
	}{
		{name: "right password", reqUser: "alice", answer: "secret", wantUser: "alice",
			wantAsk: []prompt{{proto.PromptEchoOff, "Password: "}}},
		{name: "wrong password", reqUser: "alice", answer: "Secret", wantErr: auth.ErrDenied,
			wantAsk: []prompt{{proto.PromptEchoOff, "Password: "}}},
		{name: "empty password", reqUser: "bob", answer: "", wantErr: auth.ErrDenied},
		{name: "unknown user", reqUser: "mallory", answer: "secret", wantErr: auth.ErrDenied},
		{name: "user of another service", reqUser: "carol", answer: "other", wantErr: auth.ErrDenied},
		{name: "login name asked", typed: "bob", answer: "hunter2", wantUser: "bob",
			wantAsk: []prompt{{proto.PromptEchoOn, "login:"}, {proto.PromptEchoOff, "Password: "}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			conv := newScript(tt.typed, tt.answer)
			res, err := a.Authenticate(t.Context(), req(tt.reqUser), conv)
			if !errors.Is(err, tt.wantErr) || (tt.wantErr == nil && err != nil) {
				t.Fatalf("err = %v; want %v", err, tt.wantErr)
			}
			if err == nil && res.User != tt.wantUser {
				t.Errorf("user = %q; want %q", res.User, tt.wantUser)
			}
			if res.Session != nil {
				t.Errorf("session = %v; want none without OpenSession", res.Session)
			}
			if tt.wantAsk != nil {
				if got := conv.prompts(); !equalPrompts(got, tt.wantAsk) {
					t.Errorf("prompts = %q; want %q", got, tt.wantAsk)
				}
			}
		})
	}
}

func equalPrompts(a, b []prompt) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

// TestPINPrompt runs a real module with its own prompt text (a card PIN),
// plus an informational message that must reach the terminal too.
func TestPINPrompt(t *testing.T) {
	t.Parallel()
	mod := testModule(t)
	dir := confDir(t, map[string]string{
		"hotdesk-pin": "auth required " + mod + " prompt=PIN: secret=123456 info=Insert-card-PIN\naccount required " + mod + "\n",
	})
	a := newAuth(t, pam.Config{ConfDir: dir, Service: "hotdesk-pin"})
	tests := []struct {
		name    string
		pin     string
		wantErr error
	}{
		{"right PIN", "123456", nil},
		{"wrong PIN", "654321", auth.ErrDenied},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			conv := newScript("", tt.pin)
			res, err := a.Authenticate(t.Context(), req("alice"), conv)
			if !errors.Is(err, tt.wantErr) || (tt.wantErr == nil && err != nil) {
				t.Fatalf("err = %v; want %v", err, tt.wantErr)
			}
			if err == nil && res.User != "alice" {
				t.Errorf("user = %q; want alice", res.User)
			}
			want := []prompt{{proto.PromptInfo, "Insert-card-PIN"}, {proto.PromptEchoOff, "PIN: "}}
			if got := conv.prompts(); !equalPrompts(got, want) {
				t.Errorf("prompts = %q; want %q", got, want)
			}
		})
	}
}

// TestModuleCrash: a module that aborts kills only its own login.
func TestModuleCrash(t *testing.T) {
	t.Parallel()
	needMatrix(t)
	mod := testModule(t)
	db := passdb(t, "alice:secret:hotdesk")
	dir := confDir(t, map[string]string{
		"crash":   "auth required " + mod + " crash\n",
		"hotdesk": matrixService(db),
	})
	a := newAuth(t, pam.Config{ConfDir: dir})
	_, err := a.AuthenticateService(t.Context(), "crash", req("alice"), newScript("", "x"))
	if !errors.Is(err, pam.ErrHelper) {
		t.Fatalf("crash: err = %v; want %v", err, pam.ErrHelper)
	}
	if errors.Is(err, auth.ErrDenied) {
		t.Errorf("crash: err = %v; a crash is not a denial", err)
	}
	res, err := a.Authenticate(t.Context(), req("alice"), newScript("", "secret"))
	if err != nil || res.User != "alice" {
		t.Fatalf("after crash: user, err = %q, %v; want alice, nil", res.User, err)
	}
}

type outcome struct {
	res auth.Result
	err error
}

func goAuth(ctx context.Context, a *pam.Authenticator, service string, r auth.Request, conv auth.Conversation) <-chan outcome {
	ch := make(chan outcome, 1)
	go func() {
		res, err := a.AuthenticateService(ctx, service, r, conv)
		ch <- outcome{res, err}
	}()
	return ch
}

// TestSleepingModule: a module that hangs (pam_exec sleep) holds up only its
// own login; cancelling it kills the helper's whole process group.
func TestSleepingModule(t *testing.T) {
	t.Parallel()
	needMatrix(t)
	db := passdb(t, "alice:secret:hotdesk", "alice:secret:sleepy")
	marker := fmt.Sprintf("%d.%d", 50+os.Getpid()%40, os.Getpid())
	dir := confDir(t, map[string]string{
		"hotdesk": matrixService(db),
		"sleepy":  matrixService(db) + "auth required pam_exec.so quiet /bin/sleep " + marker + "\n",
	})
	a := newAuth(t, pam.Config{ConfDir: dir})

	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	conv := newScript("", "secret")
	slow := goAuth(ctx, a, "sleepy", req("alice"), conv)
	<-conv.answered
	testutil.WaitFor(t, 20*time.Second, "the module to sleep", func() bool { return len(processesWith(t, "sleep "+marker)) > 0 })

	for i := range 3 {
		res, err := a.Authenticate(t.Context(), req("alice"), newScript("", "secret"))
		if err != nil || res.User != "alice" {
			t.Fatalf("login %d beside the sleeper: user, err = %q, %v; want alice, nil", i, res.User, err)
		}
	}
	select {
	case o := <-slow:
		t.Fatalf("sleeping login finished early: %+v", o)
	default:
	}
	cancel()
	o := <-slow
	if !errors.Is(o.err, context.Canceled) {
		t.Errorf("err = %v; want %v", o.err, context.Canceled)
	}
	noHelpers(t, "sleep "+marker)
}

// TestCardPulledMidPrompt: the context is cancelled while the terminal shows
// the password prompt. Not parallel: it counts the process's goroutines.
func TestCardPulledMidPrompt(t *testing.T) {
	needMatrix(t)
	db := passdb(t, "alice:secret:hotdesk")
	a := newAuth(t, pam.Config{ConfDir: confDir(t, map[string]string{"hotdesk": matrixService(db)})})
	before := runtime.NumGoroutine()

	ctx, cancel := context.WithCancel(t.Context())
	conv := newScript("", "secret")
	conv.block = true
	ch := goAuth(ctx, a, "hotdesk", req("alice"), conv)
	<-conv.answered
	cancel()
	o := <-ch
	if !errors.Is(o.err, context.Canceled) {
		t.Errorf("err = %v; want %v", o.err, context.Canceled)
	}
	if errors.Is(o.err, auth.ErrDenied) {
		t.Errorf("err = %v; a pulled card is not a denial", o.err)
	}
	noHelpers(t)
	testutil.WaitFor(t, 20*time.Second, "goroutines to end", func() bool { return runtime.NumGoroutine() <= before })
}

// TestTerminalGoneMidPrompt: the conversation fails (terminal disconnected).
func TestTerminalGoneMidPrompt(t *testing.T) {
	t.Parallel()
	needMatrix(t)
	db := passdb(t, "alice:secret:hotdesk")
	a := newAuth(t, pam.Config{ConfDir: confDir(t, map[string]string{"hotdesk": matrixService(db)})})
	errGone := errors.New("terminal disconnected")
	conv := newScript("", "secret")
	conv.err = errGone
	_, err := a.Authenticate(t.Context(), req("alice"), conv)
	for _, want := range []error{pam.ErrConversation, errGone} {
		if !errors.Is(err, want) {
			t.Errorf("err = %v; want %v", err, want)
		}
	}
	if errors.Is(err, auth.ErrDenied) {
		t.Errorf("err = %v; want no denial", err)
	}
	noHelpers(t)
}

// TestTimeouts drives the prompt and login timeouts with a fake clock.
func TestTimeouts(t *testing.T) {
	t.Parallel()
	needMatrix(t)
	db := passdb(t, "alice:secret:hotdesk")
	dir := confDir(t, map[string]string{"hotdesk": matrixService(db)})
	tests := []struct {
		name    string
		advance time.Duration
		want    error
	}{
		{"prompt", 30 * time.Second, pam.ErrPromptTimeout},
		{"login", time.Minute, pam.ErrTimeout},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			clk := clock.NewFake(time.Unix(1_000_000, 0))
			a := newAuth(t, pam.Config{ConfDir: dir, Clock: clk, PromptTimeout: 30 * time.Second, Timeout: time.Minute})
			if tt.name == "login" {
				a = newAuth(t, pam.Config{ConfDir: dir, Clock: clk, PromptTimeout: 2 * time.Minute, Timeout: time.Minute})
			}
			conv := newScript("", "secret")
			conv.block = true
			ch := goAuth(t.Context(), a, "hotdesk", req("alice"), conv)
			<-conv.answered
			clk.Advance(tt.advance)
			o := <-ch
			if !errors.Is(o.err, tt.want) {
				t.Errorf("err = %v; want %v", o.err, tt.want)
			}
			// An unanswered prompt is the broker's "no answer in time".
			if got := errors.Is(o.err, auth.ErrNoAnswer); got != (tt.name == "prompt") {
				t.Errorf("err = %v: errors.Is auth.ErrNoAnswer = %v", o.err, got)
			}
			noHelpers(t)
		})
	}
}

// TestLockout: after N failures the right password is refused without PAM
// running, until the lockout ends; every decision is audited, no secret is.
func TestLockout(t *testing.T) {
	t.Parallel()
	needMatrix(t)
	db := passdb(t, "alice:Right-Pw-3141:hotdesk", "bob:Bobs-Pw-2718:hotdesk")
	clk := clock.NewFake(time.Unix(1_000_000, 0))
	var logs testutil.LockedBuffer
	audit := hclog.New(&hclog.LoggerOptions{Name: "audit", Output: &logs, JSONFormat: true})
	lim := auth.NewLimiter(auth.LimiterConfig{MaxFailures: 3, BaseLockout: time.Minute, Clock: clk, Logger: audit})
	a := newAuth(t, pam.Config{ConfDir: confDir(t, map[string]string{"hotdesk": matrixService(db)}), Limiter: lim})

	login := func(user, term, pw string) (*script, error) {
		conv := newScript("", pw)
		r := req(user)
		r.TerminalID = term
		r.Token = "uid." + user
		_, err := a.Authenticate(t.Context(), r, conv)
		return conv, err
	}
	for i := range 3 {
		if _, err := login("alice", "term-a", fmt.Sprintf("Wrong-Pw-%d", i)); !errors.Is(err, auth.ErrDenied) || errors.Is(err, auth.ErrLocked) {
			t.Fatalf("failure %d: err = %v; want denied, not locked", i, err)
		}
	}
	steps := []struct {
		name, user, term, pw string
		want                 error
	}{
		{"right password while locked", "alice", "term-b", "Right-Pw-3141", auth.ErrLocked},
		{"other user at the locked terminal", "bob", "term-a", "Bobs-Pw-2718", auth.ErrLocked},
		{"other user elsewhere", "bob", "term-c", "Bobs-Pw-2718", nil},
	}
	for _, s := range steps {
		conv, err := login(s.user, s.term, s.pw)
		if !errors.Is(err, s.want) || (s.want == nil && err != nil) {
			t.Fatalf("%s: err = %v; want %v", s.name, err, s.want)
		}
		if s.want != nil && len(conv.prompts()) != 0 {
			t.Errorf("%s: prompts = %q; want none (PAM must not run)", s.name, conv.prompts())
		}
	}
	clk.Advance(time.Minute + time.Second)
	if _, err := login("alice", "term-a", "Right-Pw-3141"); err != nil {
		t.Fatalf("after the lockout: err = %v; want nil", err)
	}

	out := logs.String()
	for _, secret := range []string{"Right-Pw", "Wrong-Pw", "Bobs-Pw"} {
		if strings.Contains(out, secret) {
			t.Errorf("audit log contains a secret (%s):\n%s", secret, out)
		}
	}
	var outcomes []string
	for _, line := range strings.Split(strings.TrimSpace(out), "\n") {
		var m map[string]any
		if err := json.Unmarshal([]byte(line), &m); err != nil {
			t.Fatalf("audit line %q: %v", line, err)
		}
		if m["@message"] != "auth decision" || m["token"] == "" || m["terminal"] == "" || m["rhost"] != "192.0.2.7:4242" {
			t.Errorf("audit line %q lacks fields", line)
		}
		outcomes = append(outcomes, fmt.Sprint(m["outcome"]))
	}
	want := []string{"denied", "denied", "denied", "locked", "locked", "granted", "granted"}
	if !slices.Equal(outcomes, want) {
		t.Errorf("audit outcomes = %v; want %v", outcomes, want)
	}
}

// TestConcurrentLogins: 50 logins at once, some failing with a fail delay;
// the successes must not wait for the failures' delay. The delay (10 min)
// outlasts any machine's 40 PAM conversations and the failures are
// cancelled once every success is in: the order says what the test means,
// not how fast the machine is.
func TestConcurrentLogins(t *testing.T) {
	t.Parallel()
	needMatrix(t)
	const n, failing = 50, 10
	var lines []string
	for i := range n {
		lines = append(lines, fmt.Sprintf("user%d:pw%d:hotdesk", i, i))
	}
	db := passdb(t, lines...)
	dir := confDir(t, map[string]string{
		"hotdesk": "auth optional pam_faildelay.so delay=600000000\n" + matrixService(db),
	})
	a := newAuth(t, pam.Config{ConfDir: dir, Timeout: time.Hour, Logger: hclog.NewNullLogger()})

	type done struct {
		i   int
		err error
	}
	finished := make(chan done, n)
	run := func(ctx context.Context, i int, pw string) *script {
		conv := newScript("", pw)
		go func() {
			_, err := a.Authenticate(ctx, req(fmt.Sprintf("user%d", i)), conv)
			finished <- done{i, err}
		}()
		return conv
	}
	// The failures go first: once they have answered, PAM is judging or
	// sleeping in its fail delay.
	fctx, cancelFailures := context.WithCancel(t.Context())
	defer cancelFailures()
	for i := range failing {
		conv := run(fctx, i, "wrong")
		<-conv.answered
	}
	for i := failing; i < n; i++ {
		run(t.Context(), i, fmt.Sprintf("pw%d", i))
	}
	// Every success completes while the failures still sleep.
	for range n - failing {
		d := <-finished
		if d.i < failing {
			t.Fatalf("failure %d finished (%v) before every success did; the successes waited for it", d.i, d.err)
		}
		if d.err != nil {
			t.Errorf("login %d: err = %v; want success", d.i, d.err)
		}
	}
	cancelFailures()
	for range failing {
		if d := <-finished; d.i >= failing || !errors.Is(d.err, context.Canceled) {
			t.Errorf("login %d after cancelling the failures: err = %v; want cancelled", d.i, d.err)
		}
	}
}

// pamHook writes a pam_exec hook into dir that logs "TYPE USER TTY RHOST"
// of every call; readHook returns the log so far.
func pamHook(t *testing.T, dir string) (hook string, readHook func() string) {
	t.Helper()
	return logHook(t, dir, `echo "$PAM_TYPE $PAM_USER $PAM_TTY $PAM_RHOST" >> "$LOG"`)
}

// logHook writes the pam_exec hook dir/hook.sh running body (a shell
// script, in which $LOG names the hook's log file, dir/hook.log);
// readHook returns the log so far, "" before the hook first writes it.
func logHook(t *testing.T, dir, body string) (hook string, readHook func() string) {
	t.Helper()
	hookLog := filepath.Join(dir, "hook.log")
	hook = filepath.Join(dir, "hook.sh")
	if err := os.WriteFile(hook, []byte("#!/bin/sh\nLOG="+hookLog+"\n"+body+"\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	return hook, func() string {
		b, err := os.ReadFile(hookLog)
		if err != nil && !errors.Is(err, os.ErrNotExist) {
			t.Fatal(err)
		}
		return string(b)
	}
}

// pamEnvSession returns the session line of pam_env setting env (lines
// NAME=value) from an envfile written in dir, with an empty conffile.
func pamEnvSession(t *testing.T, dir, env string) string {
	t.Helper()
	envFile := filepath.Join(dir, "env")
	if err := os.WriteFile(envFile, []byte(env), 0o644); err != nil {
		t.Fatal(err)
	}
	emptyConf := filepath.Join(dir, "pam_env.conf")
	if err := os.WriteFile(emptyConf, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	return "session required pam_env.so readenv=1 user_readenv=0 conffile=" + emptyConf + " envfile=" + envFile + "\n"
}

// TestOpenSession: with OpenSession the helper holds the PAM session (PAM_TTY
// and PAM_RHOST set, env from pam_env) until Result.Session is closed.
func TestOpenSession(t *testing.T) {
	t.Parallel()
	needMatrix(t)
	tmp := t.TempDir()
	db := passdb(t, "alice:secret:hotdesk")
	hook, readHook := pamHook(t, tmp)
	dir := confDir(t, map[string]string{"hotdesk": matrixService(db) +
		"auth optional pam_exec.so quiet " + hook + "\n" +
		pamEnvSession(t, tmp, "HOTDESK_TEST=yes\n") +
		"session required pam_exec.so quiet " + hook + "\n"})
	a := newAuth(t, pam.Config{ConfDir: dir, OpenSession: true})

	res, err := a.Authenticate(t.Context(), req("alice"), newScript("", "secret"))
	if err != nil {
		t.Fatalf("err = %v; want nil", err)
	}
	if res.Session == nil {
		t.Fatal("session = nil; want an open session")
	}
	if !slices.Contains(res.Env, "HOTDESK_TEST=yes") {
		t.Errorf("env = %q; want HOTDESK_TEST=yes", res.Env)
	}
	want := "auth alice hotdesk/term-1 192.0.2.7\nopen_session alice hotdesk/term-1 192.0.2.7\n"
	if got := readHook(); got != want {
		t.Errorf("hook log = %q; want %q", got, want)
	}
	if len(processesWith(t, helperMarker(t))) != 1 {
		t.Errorf("helpers = %v; want one holding the session", processesWith(t, helperMarker(t)))
	}
	if err := res.Session.Close(t.Context()); err != nil {
		t.Fatalf("close: %v", err)
	}
	want += "close_session alice hotdesk/term-1 192.0.2.7\n"
	if got := readHook(); got != want {
		t.Errorf("hook log = %q; want %q", got, want)
	}
	if err := res.Session.Close(t.Context()); err != nil {
		t.Errorf("second close: %v; want nil", err)
	}
	noHelpers(t)

	// A failed login opens nothing and leaves no helper.
	if res, err := a.Authenticate(t.Context(), req("alice"), newScript("", "wrong")); !errors.Is(err, auth.ErrDenied) || res.Session != nil {
		t.Errorf("wrong password: session, err = %v, %v; want nil, denied", res.Session, err)
	}
	noHelpers(t)
}

// TestTTYNamesNoDevice: PAM_TTY carries the terminal id, which the peer
// chooses, in a namespace of its own: "hotdesk/<id>", ":" as "_". As the
// bare id, a terminal calling itself "tty1" had logind (pam_systemd in
// Debian's common-session) put the desktop's session on seat0 VT 1, the
// server's console: the active session there gets the console's input
// and sound devices and polkit's allow_active; one calling itself ":0"
// was taken for an X display, whose seat the session then joined.
func TestTTYNamesNoDevice(t *testing.T) {
	t.Parallel()
	needMatrix(t)
	db := passdb(t, "alice:secret:hotdesk")
	hook, readHook := pamHook(t, t.TempDir())
	dir := confDir(t, map[string]string{"hotdesk": matrixService(db) +
		"auth optional pam_exec.so quiet " + hook + "\n"})
	a := newAuth(t, pam.Config{ConfDir: dir})
	want := ""
	for _, c := range []struct{ id, tty string }{
		{"tty1", "hotdesk/tty1"},
		{"/dev/tty2", "hotdesk//dev/tty2"},
		{":0", "hotdesk/_0"},
		{"console", "hotdesk/console"},
		{"desk-12", "hotdesk/desk-12"},
		{"00:1a:2b:3c:4d:5e", "hotdesk/00_1a_2b_3c_4d_5e"},
	} {
		r := req("alice")
		r.TerminalID = c.id
		if _, err := a.Authenticate(t.Context(), r, newScript("", "secret")); err != nil {
			t.Fatalf("terminal %q: %v", c.id, err)
		}
		want += "auth alice " + c.tty + " 192.0.2.7\n"
	}
	if got := readHook(); got != want {
		t.Errorf("PAM_TTY seen by the modules:\n%s\nwant:\n%s", got, want)
	}
}

// TestSessionOutlivesDaemon: a session bound to its desktop stays open
// when the daemon lets go of its helper without closing it (hotdeskd
// stopped, desktops kept), and is closed when the desktop ends.
func TestSessionOutlivesDaemon(t *testing.T) {
	t.Parallel()
	needMatrix(t)
	db := passdb(t, "alice:secret:hotdesk")
	hook, readHook := pamHook(t, t.TempDir())
	dir := confDir(t, map[string]string{"hotdesk": matrixService(db) + "session required pam_exec.so quiet " + hook + "\n"})
	a := newAuth(t, pam.Config{ConfDir: dir, OpenSession: true})
	desktop := exec.Command("sleep", "300")
	if err := desktop.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan struct{})
	go func() { desktop.Wait(); close(exited) }()
	t.Cleanup(func() { desktop.Process.Kill(); <-exited })

	res, err := a.Authenticate(t.Context(), req("alice"), newScript("", "secret"))
	if err != nil || res.Session == nil {
		t.Fatalf("login: %v, session %v; want an open session", err, res.Session)
	}
	if err := res.Session.(auth.DesktopBinder).BindDesktop(desktop.Process.Pid); err != nil {
		t.Fatal(err)
	}
	pam.Abandon(res.Session)
	// Before the fix the helper closed the session as soon as the daemon's
	// end of the pipe closed: give it ample time to do so wrongly.
	deadline := time.Now().Add(2 * time.Second)
	for time.Now().Before(deadline) {
		if strings.Contains(readHook(), "close_session") {
			t.Fatalf("session closed while its desktop runs: %q", readHook())
		}
		time.Sleep(50 * time.Millisecond)
	}
	if len(processesWith(t, helperMarker(t))) != 1 {
		t.Fatalf("helpers = %v; want the one holding the session", processesWith(t, helperMarker(t)))
	}
	desktop.Process.Kill()
	<-exited
	testutil.WaitFor(t, 10*time.Second, "the session closed once its desktop ended", func() bool {
		return strings.Contains(readHook(), "close_session alice")
	})
	noHelpers(t)
}
