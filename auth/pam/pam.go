// Package pam authenticates hotdesk users with Linux-PAM
// (github.com/msteinert/pam/v2), relaying every PAM message to the terminal
// through an auth.Conversation.
//
// Isolation: each login runs in its own helper process — the daemon
// re-executed as "hotdeskd pam-helper", whose main calls HelperMain — on one
// locked OS thread, with pam_end always called. A module that crashes, hangs
// or sleeps (fail delay) harms only its own login; the broker and other
// terminals never wait for it. The helper runs in its own process group,
// which is killed (SIGKILL) when the login's context is cancelled (card
// pulled, terminal gone), when the conversation fails, or when the login or
// a prompt times out.
//
// The full login sequence is: pam_start(service, user) (with the configured
// PAM config directory, if any), PAM_TTY = "hotdesk/<terminal id>" (pamTTY),
// PAM_RHOST = terminal address, pam_authenticate, pam_acct_mgmt (an expired
// password leads to pam_chauthtok(PAM_CHANGE_EXPIRED_AUTHTOK), whose prompts
// also go to the terminal), and with Config.OpenSession pam_setcred(ESTABLISH) and
// pam_open_session; the helper then holds the handle until the returned
// auth.Result.Session is closed (pam_close_session, pam_setcred(DELETE),
// pam_end) or the daemon dies (its pipe closes and the helper cleans up).
//
// An account check (CheckAccount, auth.AccountChecker) is the same helper
// running pam_start, PAM_TTY, PAM_RHOST, pam_acct_mgmt and pam_end only:
// for logins that ask no secret (card policy, hot-desk without
// re-authentication). The helper answers the account modules itself —
// messages dropped, prompts refused with PAM_CONV_ERR — and sends no
// prompt to the parent, which takes one as a protocol error. With
// Config.AccountHelperUses a helper runs several account checks, one
// after the other, each its own PAM transaction (never a login's): one
// that ends leaving no process behind waits for the next.
//
// A card login that starts a new desktop gets the session a password
// login gets (OpenSessionWithoutSecret, auth.SessionOpener — as gdm's
// smartcard login, su from root or systemd's PAMName= run account and
// session without authenticate): in a fresh helper (never one that ran
// account checks) pam_start, PAM_TTY, PAM_RHOST, pam_acct_mgmt (refusals
// as an account check's), pam_setcred(ESTABLISH) (a failure ignored, as
// systemd does: without pam_authenticate the auth modules have nothing
// to establish) and pam_open_session, no pam_authenticate; the helper answers the modules itself as in an
// account check, and then holds the session exactly as a login's
// (auth.Result.Session, BindDesktop, Env). A card resuming its desktop
// has its account checked only: the desktop holds its session.
//
// Secrets: answers travel as CBOR byte strings and every buffer holding one
// is wiped after use, on both sides. The Conversation returns a Go string and
// libpam needs one, and Go strings cannot be wiped: those copies live until
// garbage-collected (in the helper, until it exits). Answers are never logged.
package pam

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/msteinert/pam/v2"
	"golang.org/x/sys/unix"

	"github.com/hotdesk/hotdesk/auth"
	"github.com/hotdesk/hotdesk/internal/clock"
	"github.com/hotdesk/hotdesk/internal/defaults"
	"github.com/hotdesk/hotdesk/internal/rlimit"
	"github.com/hotdesk/hotdesk/proto"
)

var (
	// ErrAccountExpired: the account has expired (pam_acct_mgmt said
	// PAM_ACCT_EXPIRED). Wrapped together with auth.ErrDenied. It is
	// auth.ErrAccountExpired, which the broker can test without linking
	// PAM.
	ErrAccountExpired = auth.ErrAccountExpired
	// ErrPasswordChange: a password change was required and did not succeed.
	// Wrapped together with auth.ErrDenied.
	ErrPasswordChange = errors.New("pam: password change failed")
	// ErrTimeout: the whole login took longer than Config.Timeout.
	ErrTimeout = errors.New("pam: login timed out")
	// ErrPromptTimeout: the person did not answer a prompt within
	// Config.PromptTimeout.
	// It is auth.ErrNoAnswer too (errors.Is).
	ErrPromptTimeout error = promptTimeout{}
	// ErrConversation: the conversation failed (terminal gone); the login was
	// aborted.
	ErrConversation = errors.New("pam: conversation failed")
	// ErrHelper: the helper process failed (crashed, killed, could not start).
	ErrHelper = errors.New("pam: helper failed")
	// ErrProtocol: a malformed helper protocol frame.
	ErrProtocol = errors.New("pam: helper protocol error")
	// ErrSystem: PAM failed for a reason that is not a decision about the
	// user (bad service file, module missing, session could not be opened).
	ErrSystem = errors.New("pam: system error")
)

// Config configures an Authenticator. Zero fields take the defaults.
type Config struct {
	// Service is the default PAM service (default "hotdesk").
	Service string
	// ConfDir is the PAM configuration directory ("" = the system's
	// /etc/pam.d). Needs Linux-PAM ≥ 1.4 (pam_start_confdir).
	ConfDir string
	// HelperCommand is the argv that starts a helper (default
	// {os.Executable(), "pam-helper"}); the program must call HelperMain
	// from main. The helper's environment has HOTDESK_PAM_HELPER=1, which
	// makes this package keep main on the main thread.
	HelperCommand []string
	// HelperEnv is appended to the daemon's environment for the helper.
	HelperEnv []string
	// Timeout bounds a whole login, prompts included (default 2 minutes).
	Timeout time.Duration
	// PromptTimeout bounds the wait for one answer (default 1 minute).
	PromptTimeout time.Duration
	// OpenSession opens a PAM session and establishes credentials after a
	// successful login; the Result then carries Session and Env.
	// (OpenSessionWithoutSecret opens one whatever this says.)
	OpenSession bool
	// AllowNullAuthtok lets accounts with an empty password in (default:
	// PAM_DISALLOW_NULL_AUTHTOK is passed).
	AllowNullAuthtok bool
	// MaxHelpers bounds concurrent logins (default 128); further logins wait
	// for a slot (or their ctx). Helpers holding an open session do not count.
	MaxHelpers int
	// Limiter, if set, refuses locked tokens/users/terminals before PAM runs,
	// counts denials and writes the audit lines (auth.Limiter.Guard, to the
	// limiter's logger). Without it the audit lines go to Logger. Set a
	// limiter either here or around an auth.Chooser, not both.
	Limiter *auth.Limiter
	// NoAudit leaves the audit lines to the caller (a Limiter.Guard around
	// an auth.Chooser that delegates here), so each decision is logged once.
	NoAudit bool
	// Clock is the time source for the timeouts (default clock.Real).
	Clock clock.Clock
	// Logger receives debug and error lines (default: none). Never answers.
	Logger hclog.Logger
	// SpareHelper keeps one account-check helper started ahead, idle until
	// a check needs it (then another is started in the background), so a
	// check does not wait for a process to start: on a busy 2-core machine
	// that is most of its time. Each check still runs in a process of its
	// own, used once unless AccountHelperUses says otherwise. Close stops
	// the spare.
	SpareHelper bool
	// AccountHelperUses is how many account checks one helper process
	// runs, one after the other, before it exits (default 1: a process
	// per check). Above 1, a helper that answered a check cleanly — its
	// transaction ended (pam_end), no process a module started left
	// behind, the process's credentials, environment, umask, directories,
	// limits and signals as when it started, the check's context not
	// ended — waits idle for the next check instead of exiting (at most
	// IdleHelpers wait; one idleHelperAge old is given no more checks,
	// and ends at the next check or Close), so a check costs one PAM
	// transaction, not a process start: what dovecot's auth workers do
	// (passdb pam max_requests). A crash, hang or timeout still harms one
	// check, whose helper is killed; the check is not made again, unless
	// its idle helper was killed from outside (SIGKILL, SIGTERM) before it
	// answered. Logins (pam_authenticate, sessions) always run in a
	// process of their own.
	AccountHelperUses int
}

// IdleHelpers bounds the account-check helpers kept idle (the spare and
// those waiting for another check); idleHelperAge is how long after its
// start a helper may still be given a check.
const (
	IdleHelpers   = 2
	idleHelperAge = 10 * time.Minute
)

// Authenticator authenticates with PAM through helper processes. It is safe
// for concurrent use.
type Authenticator struct {
	cfg   Config
	clk   clock.Clock
	log   hclog.Logger
	slots chan struct{}

	spareMu sync.Mutex
	// Guarded by spareMu:
	idle      []*helperProc // account-check helpers waiting, the last used last
	refilling bool          // a spare is being started
	closed    bool          // Close was called: no more spares
	// End of fields guarded by spareMu.
	spareWG sync.WaitGroup // the goroutine starting a spare
}

var (
	_ auth.Authenticator        = (*Authenticator)(nil)
	_ auth.ServiceAuthenticator = (*Authenticator)(nil)
	_ auth.AccountChecker       = (*Authenticator)(nil)
	_ auth.SessionOpener        = (*Authenticator)(nil)
)

// New validates cfg and returns an Authenticator.
func New(cfg Config) (*Authenticator, error) {
	if cfg.Service == "" {
		cfg.Service = auth.DefaultService
	}
	if cfg.ConfDir != "" {
		if fi, err := os.Stat(cfg.ConfDir); err != nil {
			return nil, fmt.Errorf("pam: config dir: %w", err)
		} else if !fi.IsDir() {
			return nil, fmt.Errorf("pam: config dir %s is not a directory", cfg.ConfDir)
		}
		if !pam.CheckPamHasStartConfdir() {
			return nil, fmt.Errorf("pam: config dir %s: %w: libpam lacks pam_start_confdir", cfg.ConfDir, ErrSystem)
		}
	}
	if len(cfg.HelperCommand) == 0 {
		exe, err := os.Executable()
		if err != nil {
			return nil, fmt.Errorf("pam: helper command: %w", err)
		}
		cfg.HelperCommand = []string{exe, "pam-helper"}
	}
	defaults.Set(&cfg.Timeout, 2*time.Minute)
	defaults.Set(&cfg.PromptTimeout, time.Minute)
	defaults.Set(&cfg.MaxHelpers, 128)
	defaults.Set(&cfg.AccountHelperUses, 1)
	a := &Authenticator{cfg: cfg, clk: cfg.Clock, log: cfg.Logger, slots: make(chan struct{}, cfg.MaxHelpers)}
	if a.clk == nil {
		a.clk = clock.Real{}
	}
	if a.log == nil {
		a.log = hclog.NewNullLogger()
	}
	return a, nil
}

// Authenticate runs the login with the default service. See
// AuthenticateService.
func (a *Authenticator) Authenticate(ctx context.Context, req auth.Request, conv auth.Conversation) (auth.Result, error) {
	return a.AuthenticateService(ctx, a.cfg.Service, req, conv)
}

// AuthenticateService runs one PAM login against service. req.User, when
// set, becomes PAM_USER (PAM does not ask for a login name); otherwise PAM
// asks and Result.User is PAM_USER after authentication. Denials wrap
// auth.ErrDenied (and ErrAccountExpired / ErrPasswordChange, and the
// pam.Error status); a cancelled ctx returns an error wrapping ctx's error;
// a failed conversation wraps ErrConversation and the conversation's error.
func (a *Authenticator) AuthenticateService(ctx context.Context, service string, req auth.Request, conv auth.Conversation) (auth.Result, error) {
	run := loginFunc(func(ctx context.Context, req auth.Request, conv auth.Conversation) (auth.Result, error) {
		return a.login(ctx, service, req, conv, txLogin)
	})
	if a.cfg.Limiter != nil {
		return a.cfg.Limiter.Guard(run).Authenticate(ctx, req, conv)
	}
	res, err := run(ctx, req, conv)
	if a.cfg.NoAudit {
		return res, err
	}
	// Without a limiter, still one audit line per decision.
	user := req.User
	if user == "" {
		user = res.User
	}
	switch {
	case err == nil:
		auth.Audit(a.log, req, user, "granted", "")
	case errors.Is(err, auth.ErrDenied):
		auth.Audit(a.log, req, user, "denied", err.Error())
	case ctx.Err() != nil:
		auth.Audit(a.log, req, user, "aborted", err.Error())
	default:
		auth.Audit(a.log, req, user, "error", err.Error())
	}
	return res, err
}

// CheckAccount implements auth.AccountChecker: in a helper of its own
// (fresh, or with Config.AccountHelperUses one that answered earlier
// checks and is idle), as a login, pam_start(service, req.User), PAM_TTY and PAM_RHOST as for a
// login, pam_acct_mgmt, pam_end — no pam_authenticate, no session. The
// helper answers the account modules itself: messages (a password expiry
// warning) are dropped, prompts refused with PAM_CONV_ERR; nothing
// reaches the terminal. PAM_NEW_AUTHTOK_REQD (the password must be
// changed) passes: the account is valid, and no password is asked here.
//
// A refusal wraps auth.ErrDenied and auth.ErrAccount, and the PAM status
// (ErrAccountExpired for PAM_ACCT_EXPIRED; pam.ErrPermDenied,
// pam.ErrUserUnknown, pam.ErrAuth for pam_nologin …); a check that could
// not be made (helper failed, module missing, a module that insists on
// prompting) wraps ErrSystem, ErrHelper or ErrConversation and is not a
// denial. Helper slots, Timeout and audit lines (unless NoAudit) are as
// for logins; Config.Limiter is not consulted (no secret is judged).
func (a *Authenticator) CheckAccount(ctx context.Context, service string, req auth.Request) error {
	if req.User == "" {
		return fmt.Errorf("pam: account check: %w: no user", ErrSystem)
	}
	_, err := a.login(ctx, service, req, nil, txAccount)
	if errors.Is(err, errIdleHelperGone) {
		a.log.Warn("pam: idle account-check helper killed; checking again in another", "terminal", req.TerminalID, "error", err)
		_, err = a.login(ctx, service, req, nil, txAccount)
	}
	a.auditNoSecret(ctx, req, err, "account check")
	return err
}

// OpenSessionWithoutSecret implements auth.SessionOpener, for a card
// login that starts a new desktop: in a fresh helper (never one that ran
// account checks), pam_start(service, req.User), PAM_TTY and PAM_RHOST
// as for a login, pam_acct_mgmt (refusals as CheckAccount's: auth.ErrDenied
// and auth.ErrAccount; PAM_NEW_AUTHTOK_REQD passes), then
// pam_setcred(ESTABLISH) — a failure ignored (DELETE is still called at
// the close, its failure then unreported), as systemd's PAMName= does:
// the auth modules never ran, and
// a card-only service's auth stack may be pam_deny — and
// pam_open_session — no pam_authenticate. As
// in an account check the helper answers the modules itself (messages
// dropped, prompts refused with PAM_CONV_ERR); nothing reaches the
// terminal. The session is held as a login's, whatever Config.OpenSession
// says (the caller asked for it): Result.Session (an auth.DesktopBinder),
// Result.Env from the PAM environment, Result.NoSecret set. A denial at
// any stage wraps auth.ErrAccount (no secret was judged); a session that
// could not be opened wraps ErrSystem. Helper slots, Timeout and audit
// lines (unless NoAudit) are as for logins; Config.Limiter is not
// consulted.
func (a *Authenticator) OpenSessionWithoutSecret(ctx context.Context, service string, req auth.Request) (auth.Result, error) {
	if req.User == "" {
		return auth.Result{}, fmt.Errorf("pam: card session: %w: no user", ErrSystem)
	}
	res, err := a.login(ctx, service, req, nil, txCardSession)
	a.auditNoSecret(ctx, req, err, "account check, session opened")
	if err != nil {
		return auth.Result{User: res.User}, err
	}
	res.NoSecret = true
	return res, nil
}

// auditNoSecret writes the audit line of a transaction that asked no
// secret, unless NoAudit.
func (a *Authenticator) auditNoSecret(ctx context.Context, req auth.Request, err error, granted string) {
	if a.cfg.NoAudit {
		return
	}
	switch {
	case err == nil:
		auth.Audit(a.log, req, req.User, "granted", granted)
	case errors.Is(err, auth.ErrDenied):
		auth.Audit(a.log, req, req.User, "denied", err.Error())
	case ctx.Err() != nil:
		auth.Audit(a.log, req, req.User, "aborted", err.Error())
	default:
		auth.Audit(a.log, req, req.User, "error", err.Error())
	}
}

// errIdleHelperGone marks a check whose helper, reused from the idle
// ones, was killed from outside before answering: the check is made
// again, once.
var errIdleHelperGone = errors.New("pam: idle helper gone")

// accountError is a denial of an account check: auth.ErrAccount too.
type accountError struct{ error }

func (e accountError) Unwrap() error        { return e.error }
func (e accountError) Is(target error) bool { return target == auth.ErrAccount }

type loginFunc func(context.Context, auth.Request, auth.Conversation) (auth.Result, error)

func (f loginFunc) Authenticate(ctx context.Context, req auth.Request, conv auth.Conversation) (auth.Result, error) {
	return f(ctx, req, conv)
}

// helperProc is a running helper.
type helperProc struct {
	cmd    *exec.Cmd
	toH    *os.File // parent's write end
	fromH  *os.File // parent's read end
	stderr *boundedBuffer
	born   time.Time // when it was started (on the Authenticator's clock)
	uses   int       // account checks it has answered

	mu   sync.Mutex
	done chan struct{} // closed, under mu, once the helper is reaped
	werr error
}

// kill kills the helper's process group if it has not been reaped.
func (p *helperProc) kill() {
	p.mu.Lock()
	defer p.mu.Unlock()
	select {
	case <-p.done:
		return // reaped: the pid may be reused
	default:
	}
	// Not reaped yet (reaping happens under p.mu): the pid, and with it the
	// process group id, still belongs to the helper.
	killTree(p.cmd.Process.Pid)
}

// killTree kills the helper's process group and every descendant of the
// helper, including those that left the group (pam_exec runs its command in
// a new session). The helper is a child subreaper, so a module's
// double-forked daemons are still its descendants while it lives. The tree
// is stopped first so that nothing forks while it is being collected.
func killTree(pid int) {
	_ = syscall.Kill(-pid, syscall.SIGSTOP)
	seen := map[int]bool{}
	for range 8 {
		grew := false
		for _, d := range descendants(pid) {
			if !seen[d] {
				seen[d] = true
				grew = true
				_ = syscall.Kill(d, syscall.SIGSTOP)
			}
		}
		if !grew {
			break
		}
	}
	for d := range seen {
		_ = syscall.Kill(d, syscall.SIGKILL)
	}
	_ = syscall.Kill(-pid, syscall.SIGKILL)
}

// descendants lists the live descendants of pid from /proc.
func descendants(pid int) []int {
	ents, err := os.ReadDir("/proc")
	if err != nil {
		return nil
	}
	children := map[int][]int{}
	for _, e := range ents {
		c, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		b, err := os.ReadFile("/proc/" + e.Name() + "/stat")
		if err != nil {
			continue
		}
		// pid (comm) state ppid ...; comm may contain spaces and parentheses.
		i := bytes.LastIndexByte(b, ')')
		if i < 0 {
			continue
		}
		f := strings.Fields(string(b[i+1:]))
		if len(f) < 2 {
			continue
		}
		if pp, err := strconv.Atoi(f[1]); err == nil {
			children[pp] = append(children[pp], c)
		}
	}
	var out []int
	queue := []int{pid}
	for len(queue) > 0 && len(out) < 4096 {
		q := queue[0]
		queue = queue[1:]
		for _, c := range children[q] {
			out = append(out, c)
			queue = append(queue, c)
		}
	}
	return out
}

// wait waits for the helper to be reaped and returns its exit error.
func (p *helperProc) wait() error {
	<-p.done
	return p.werr
}

func (a *Authenticator) spawn() (*helperProc, error) {
	hin, toH, err := os.Pipe()
	if err != nil {
		return nil, fmt.Errorf("%w: pipe: %w", ErrHelper, err)
	}
	fromH, hout, err := os.Pipe()
	if err != nil {
		hin.Close()
		toH.Close()
		return nil, fmt.Errorf("%w: pipe: %w", ErrHelper, err)
	}
	p := &helperProc{toH: toH, fromH: fromH, stderr: &boundedBuffer{max: 4096}, born: a.clk.Now(), done: make(chan struct{})}
	cmd := exec.Command(a.cfg.HelperCommand[0], a.cfg.HelperCommand[1:]...)
	cmd.Env = append(append(os.Environ(), a.cfg.HelperEnv...), helperMarkerEnv+"=1")
	cmd.ExtraFiles = []*os.File{hin, hout} // fds 3 and 4
	cmd.Stderr = p.stderr
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	// A process a module started that left the group may hold stderr open;
	// do not wait for it forever.
	cmd.WaitDelay = 2 * time.Second
	p.cmd = cmd
	err = cmd.Start()
	hin.Close()
	hout.Close()
	if err != nil {
		toH.Close()
		fromH.Close()
		return nil, fmt.Errorf("%w: start: %w", ErrHelper, err)
	}
	go func() {
		pid := cmd.Process.Pid
		// Wait for the exit without reaping, so kill can still target the
		// process group safely; then kill stragglers (processes modules left
		// behind) and reap.
		var info unix.Siginfo
		for {
			err := unix.Waitid(unix.P_PID, pid, &info, unix.WEXITED|unix.WNOWAIT, nil)
			if err != unix.EINTR {
				break
			}
		}
		_ = syscall.Kill(-pid, syscall.SIGKILL)
		p.mu.Lock()
		p.werr = cmd.Wait()
		close(p.done)
		p.mu.Unlock()
		toH.Close()
	}()
	return p, nil
}

// Close stops the idle helpers (the spare, Config.SpareHelper, and those
// waiting for another check, Config.AccountHelperUses) and waits for one
// being started. Logins, account checks and sessions in progress are not
// affected; later account checks start their helper when they need it,
// and it exits after the check.
func (a *Authenticator) Close() {
	a.spareMu.Lock()
	a.closed = true
	idle := a.idle
	a.idle = nil
	a.spareMu.Unlock()
	for _, p := range idle {
		p.discard()
	}
	a.spareWG.Wait()
}

// killedFromOutside reports whether the helper, reaped, was ended by
// SIGKILL or SIGTERM: sent from outside (an administrator, the OOM
// killer), not a crash of its own, which the Go runtime reports with exit
// status 2.
func (p *helperProc) killedFromOutside() bool {
	select {
	case <-p.done:
	default:
		return false
	}
	if p.cmd.ProcessState == nil {
		return false
	}
	ws, ok := p.cmd.ProcessState.Sys().(syscall.WaitStatus)
	return ok && ws.Signaled() && (ws.Signal() == syscall.SIGKILL || ws.Signal() == syscall.SIGTERM)
}

// discard ends an idle helper: one never given a transaction, or one
// waiting for another account check.
func (p *helperProc) discard() {
	p.kill()
	_ = p.wait()
	p.toH.Close()
	p.fromH.Close()
}

// accountHelper returns the idle helper used last if there is a live one
// young enough (with SpareHelper, starting the next spare in the
// background once none is left), else a new helper.
func (a *Authenticator) accountHelper() (*helperProc, error) {
	var p *helperProc
	var stale []*helperProc
	a.spareMu.Lock()
	for p == nil && len(a.idle) > 0 {
		p = a.idle[len(a.idle)-1]
		a.idle = a.idle[:len(a.idle)-1]
		select {
		case <-p.done: // it died idle (killed from outside)
		default:
			if a.clk.Now().Sub(p.born) < idleHelperAge {
				continue
			}
		}
		stale, p = append(stale, p), nil
	}
	a.spareMu.Unlock()
	for _, s := range stale {
		s.discard()
	}
	if a.cfg.SpareHelper {
		a.refillSpare()
	}
	if p != nil {
		return p, nil
	}
	return a.spawn()
}

// keepIdle puts p, whose account check answered res, back among the idle
// helpers for the next check, if it may run another: res says it is fit
// (Reusable), it has run fewer than AccountHelperUses checks, the check's
// context did not end (stopKiller stopped the kill in time) and there is
// room. It reports whether it kept p; if not, the caller ends it.
func (a *Authenticator) keepIdle(p *helperProc, res *wireResult, stopKiller func() bool) bool {
	p.uses++
	if !res.Reusable || p.uses >= a.cfg.AccountHelperUses || !stopKiller() {
		return false
	}
	a.spareMu.Lock()
	defer a.spareMu.Unlock()
	if a.closed || len(a.idle) >= IdleHelpers {
		return false
	}
	a.idle = append(a.idle, p)
	return true
}

// refillSpare starts a spare helper in the background unless an idle one
// is there or one is being started, or the Authenticator is closed.
func (a *Authenticator) refillSpare() {
	a.spareMu.Lock()
	defer a.spareMu.Unlock()
	if a.closed || a.refilling || len(a.idle) > 0 {
		return
	}
	a.refilling = true
	a.spareWG.Add(1)
	go func() {
		defer a.spareWG.Done()
		p, err := a.spawn()
		a.spareMu.Lock()
		a.refilling = false
		keep := err == nil && !a.closed && len(a.idle) < IdleHelpers
		if keep {
			// Below the ones kept after a check: those are taken first.
			a.idle = append([]*helperProc{p}, a.idle...)
		}
		a.spareMu.Unlock()
		if err != nil {
			a.log.Warn("pam: spare helper", "error", err)
		} else if !keep {
			p.discard()
		}
	}()
}

// txKind is what a helper's transaction does.
type txKind int

const (
	// txLogin: pam_authenticate, pam_acct_mgmt, and with
	// Config.OpenSession the session; prompts relayed.
	txLogin txKind = iota
	// txAccount: pam_acct_mgmt alone (CheckAccount); no prompt.
	txAccount
	// txCardSession: pam_acct_mgmt, then the session, held as a login's
	// (OpenSessionWithoutSecret); no prompt.
	txCardSession
)

// login runs one transaction of kind in a helper of its own: a login or
// a card session in a fresh one, an account check in an idle one if
// there is one (accountHelper). Only a login's helper sends prompts.
func (a *Authenticator) login(ctx context.Context, service string, req auth.Request, conv auth.Conversation, kind txKind) (auth.Result, error) {
	accountOnly := kind == txAccount
	select {
	case a.slots <- struct{}{}:
	case <-ctx.Done():
		return auth.Result{}, fmt.Errorf("pam: waiting for a helper slot: %w", ctx.Err())
	}
	release := func() { <-a.slots }

	lctx, cancel := context.WithCancelCause(ctx)
	timer := a.clk.AfterFunc(a.cfg.Timeout, func() { cancel(ErrTimeout) })
	spawn := a.spawn
	if accountOnly {
		spawn = a.accountHelper
	}
	p, err := spawn()
	if err != nil {
		timer.Stop()
		cancel(nil)
		release()
		return auth.Result{}, err
	}
	log := a.log.With("terminal", req.TerminalID, "token", req.Token, "service", service, "helper_pid", p.cmd.Process.Pid)
	log.Debug("pam helper started")
	// Kill the helper when the login is cancelled, unless it finished first.
	stopKiller := context.AfterFunc(lctx, p.kill)
	cleanup := func() {
		stopKiller()
		timer.Stop()
		cancel(nil)
		release()
	}
	reused := p.uses > 0
	abort := func(err error) (auth.Result, error) {
		if reused && errors.Is(err, ErrHelper) && lctx.Err() == nil && p.killedFromOutside() {
			// An idle helper killed from outside before or as it was
			// given the check: CheckAccount tries once more. Not one that
			// crashed running it (a module's SIGSEGV or abort ends the
			// helper with a status): that check is not made again.
			err = fmt.Errorf("%w: %w", errIdleHelperGone, err)
		}
		p.kill()
		_ = p.wait()
		p.fromH.Close()
		cleanup()
		log.Debug("pam login aborted", "error", err)
		return auth.Result{}, err
	}

	err = writeMsg(p.toH, &wireMsg{Start: &wireStart{
		Service: service, ConfDir: a.cfg.ConfDir, User: req.User, TTY: pamTTY(req.TerminalID), RHost: hostOf(req.RemoteAddr),
		OpenSession: kind == txCardSession || (kind == txLogin && a.cfg.OpenSession), AllowNullAuthtok: a.cfg.AllowNullAuthtok,
		AccountOnly: accountOnly, NoSecret: kind == txCardSession,
	}})
	if err != nil {
		return abort(a.helperError(lctx, p, err))
	}
	prompts := 0
	for {
		m, err := readMsg(p.fromH)
		if err != nil {
			return abort(a.helperError(lctx, p, err))
		}
		switch {
		case m.Prompt != nil && kind != txLogin:
			return abort(fmt.Errorf("pam: %w: a prompt from a transaction that asks nobody", ErrProtocol))
		case m.Prompt != nil:
			prompts++
			if prompts > maxPrompts {
				return abort(fmt.Errorf("pam: %w: more than %d prompts", ErrProtocol, maxPrompts))
			}
			answer, err := a.ask(lctx, conv, m.Prompt)
			if err != nil {
				if lctx.Err() != nil {
					return abort(a.ctxError(ctx, lctx))
				}
				if errors.Is(err, ErrPromptTimeout) {
					return abort(err)
				}
				return abort(fmt.Errorf("pam: %w: %w", ErrConversation, err))
			}
			err = writeMsg(p.toH, &wireMsg{Answer: &wireAnswer{Text: answer}})
			clear(answer)
			if err != nil {
				return abort(a.helperError(lctx, p, err))
			}
		case m.Result != nil && accountOnly && a.keepIdle(p, m.Result, stopKiller):
			// The helper waits for the next check.
			cleanup()
			return outcome(m.Result, kind, log)
		case m.Result != nil:
			return a.finish(lctx, p, m.Result, kind, log, cleanup, abort)
		default:
			return abort(fmt.Errorf("pam: %w: unexpected message", ErrProtocol))
		}
	}
}

// ask relays one prompt with the prompt timeout and returns the answer as
// bytes (nil for info and error messages).
func (a *Authenticator) ask(ctx context.Context, conv auth.Conversation, pr *wirePrompt) ([]byte, error) {
	style := proto.PromptStyle(pr.Style)
	switch style {
	case proto.PromptEchoOff, proto.PromptEchoOn, proto.PromptError, proto.PromptInfo:
	default:
		return nil, fmt.Errorf("pam: unsupported message style %d", pr.Style)
	}
	pctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	t := a.clk.AfterFunc(a.cfg.PromptTimeout, func() { cancel(ErrPromptTimeout) })
	defer t.Stop()
	text, err := conv.Prompt(pctx, style, pr.Text)
	if err != nil {
		if errors.Is(context.Cause(pctx), ErrPromptTimeout) && ctx.Err() == nil {
			return nil, fmt.Errorf("%w: %w", ErrPromptTimeout, err)
		}
		return nil, err
	}
	if style == proto.PromptError || style == proto.PromptInfo {
		return nil, nil
	}
	if len(text) > maxText {
		return nil, fmt.Errorf("pam: answer longer than %d bytes", maxText)
	}
	return []byte(text), nil
}

// finish turns the helper's result into the login's outcome.
func (a *Authenticator) finish(lctx context.Context, p *helperProc, res *wireResult, kind txKind, log hclog.Logger,
	cleanup func(), abort func(error) (auth.Result, error)) (auth.Result, error) {
	accountOnly := kind == txAccount
	if !res.OK || accountOnly || (kind == txLogin && !a.cfg.OpenSession) {
		if accountOnly && !res.Reusable {
			// A process a module started is left: end it with the helper.
			p.kill()
		}
		// The helper ends the transaction and exits by itself (an
		// account check's once its end of the pipe closes).
		p.toH.Close()
		werr := p.wait()
		p.fromH.Close()
		cleanup()
		if werr != nil && res.OK && (res.Reusable || !accountOnly) {
			log.Debug("pam helper exit", "error", werr)
		}
		return outcome(res, kind, log)
	}
	// The helper holds the session: it outlives this login's context.
	cleanup()
	s := &session{p: p, clk: a.clk, log: log}
	limits := slices.DeleteFunc(res.Limits, func(l rlimit.Limit) bool { return !rlimit.Known(l.Resource) })
	return auth.Result{User: res.User, Env: res.Env, Limits: limits, Session: s}, nil
}

// outcome is the login's or account check's outcome of a result that
// opened no session.
func outcome(res *wireResult, kind txKind, log hclog.Logger) (auth.Result, error) {
	if res.OK {
		return auth.Result{User: res.User}, nil
	}
	err := resultError(res)
	if kind != txLogin && errors.Is(err, auth.ErrDenied) {
		// No secret was judged: whatever stage refused, it is the
		// account's refusal.
		err = accountError{err}
	}
	log.Debug("pam login failed", "stage", res.Stage, "error", err)
	return auth.Result{User: res.User}, err
}

// resultError maps a failed helper result to an error.
func resultError(res *wireResult) error {
	pe := pam.Error(res.Code)
	var status error = pe
	if res.Code == 0 {
		status = errors.New(res.Message)
	}
	switch {
	case pe == pam.ErrAcctExpired:
		return fmt.Errorf("pam: %s: %w: %w: %w", res.Stage, auth.ErrDenied, ErrAccountExpired, status)
	case res.Stage == "chauthtok", pe == pam.ErrNewAuthtokReqd, pe == pam.ErrAuthtokExpired:
		if pe == pam.ErrConv {
			return fmt.Errorf("pam: %s: %w: %w", res.Stage, ErrConversation, status)
		}
		return fmt.Errorf("pam: %s: %w: %w: %w", res.Stage, auth.ErrDenied, ErrPasswordChange, status)
	case pe == pam.ErrAuth, pe == pam.ErrUserUnknown, pe == pam.ErrMaxtries, pe == pam.ErrPermDenied,
		pe == pam.ErrCredInsufficient, pe == pam.ErrAuthinfoUnavail, pe == pam.ErrCredExpired:
		return fmt.Errorf("pam: %s: %w: %w", res.Stage, auth.ErrDenied, status)
	case pe == pam.ErrConv:
		return fmt.Errorf("pam: %s: %w: %w", res.Stage, ErrConversation, status)
	}
	return fmt.Errorf("pam: %s: %w: %w", res.Stage, ErrSystem, status)
}

// ctxError reports why lctx (derived from the caller's ctx) ended.
func (a *Authenticator) ctxError(ctx, lctx context.Context) error {
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("pam: login aborted: %w", err)
	}
	return fmt.Errorf("pam: login aborted: %w", context.Cause(lctx))
}

// helperError explains a broken pipe to the helper: the context, a crash, or
// a protocol error.
func (a *Authenticator) helperError(lctx context.Context, p *helperProc, err error) error {
	if lctx.Err() != nil {
		p.kill()
		_ = p.wait()
		if cerr := context.Cause(lctx); errors.Is(cerr, ErrTimeout) {
			return fmt.Errorf("pam: login aborted: %w", cerr)
		}
		return fmt.Errorf("pam: login aborted: %w", lctx.Err())
	}
	if errors.Is(err, ErrProtocol) || errors.Is(err, proto.ErrFrameTooLarge) {
		return err
	}
	// Most likely the helper died: report how.
	p.toH.Close()
	werr := p.wait()
	msg := p.stderr.String()
	if werr != nil {
		return fmt.Errorf("%w: %w (stderr: %q)", ErrHelper, werr, msg)
	}
	return fmt.Errorf("%w: %w (stderr: %q)", ErrHelper, err, msg)
}

// session is an open PAM session held by a helper.
type session struct {
	p    *helperProc
	clk  clock.Clock
	log  hclog.Logger
	once sync.Once
	err  error

	wmu sync.Mutex // serialises writes to the helper (BindDesktop, close)
}

var _ auth.DesktopBinder = (*session)(nil)

// BindDesktop implements auth.DesktopBinder: the helper holding the
// session watches process pid (a pidfd), and if hotdeskd goes before
// closing the session, closes it only when that process has ended.
func (s *session) BindDesktop(pid int) error {
	s.wmu.Lock()
	defer s.wmu.Unlock()
	if err := writeMsg(s.p.toH, &wireMsg{Bind: &wireBind{PID: pid}}); err != nil {
		return fmt.Errorf("pam: bind desktop: %w: %w", ErrHelper, err)
	}
	return nil
}

// Close implements auth.Session.
func (s *session) Close(ctx context.Context) error {
	s.once.Do(func() { s.err = s.close(ctx) })
	return s.err
}

func (s *session) close(ctx context.Context) error {
	p := s.p
	defer p.fromH.Close()
	stop := context.AfterFunc(ctx, p.kill)
	defer stop()
	s.wmu.Lock()
	err := writeMsg(p.toH, &wireMsg{Close: &wireClose{}})
	s.wmu.Unlock()
	if err != nil {
		p.kill()
		_ = p.wait()
		return fmt.Errorf("pam: close session: %w: %w", ErrHelper, err)
	}
	m, err := readMsg(p.fromH)
	p.toH.Close()
	if err != nil || m.Closed == nil {
		p.kill()
		_ = p.wait()
		if ctx.Err() != nil {
			return fmt.Errorf("pam: close session: %w", ctx.Err())
		}
		return fmt.Errorf("pam: close session: %w: %v", ErrHelper, err)
	}
	_ = p.wait()
	if m.Closed.Stage != "" {
		return fmt.Errorf("pam: %s: %w: %w", m.Closed.Stage, ErrSystem, pam.Error(m.Closed.Code))
	}
	s.log.Debug("pam session closed")
	return nil
}

// hostOf strips the port from a "host:port" address.
// pamTTY is the PAM_TTY of a login from terminal id: "hotdesk/" and the
// id, every ":" as "_". The id is the peer's choice, and PAM modules read
// PAM_TTY as a device: as the bare id, a terminal calling itself "tty1"
// had logind (pam_systemd) put the session on seat0 VT 1 — the server's
// console, whose active session gets its input and sound devices and
// polkit's allow_active — and one calling itself ":0" was taken for that
// X display and its seat. No tty, console or display name has this form.
func pamTTY(terminalID string) string {
	return "hotdesk/" + strings.ReplaceAll(terminalID, ":", "_")
}

func hostOf(addr string) string {
	if host, _, err := net.SplitHostPort(addr); err == nil {
		return host
	}
	return addr
}

// boundedBuffer keeps the first max bytes written to it.
type boundedBuffer struct {
	mu  sync.Mutex
	max int
	buf bytes.Buffer
}

func (b *boundedBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if room := b.max - b.buf.Len(); room > 0 {
		b.buf.Write(p[:min(len(p), room)])
	}
	return len(p), nil
}

func (b *boundedBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// promptTimeout is ErrPromptTimeout: a pam error that is also
// auth.ErrNoAnswer, for the broker to tell "nothing typed" from a wrong
// secret.
type promptTimeout struct{}

func (promptTimeout) Error() string        { return "pam: prompt timed out" }
func (promptTimeout) Is(target error) bool { return target == auth.ErrNoAnswer }
