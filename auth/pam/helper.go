package pam

import (
	"errors"
	"fmt"
	"io"
	"os"
	"runtime"
	"sort"

	"github.com/hotdesk/hotdesk/internal/rlimit"
	"github.com/msteinert/pam/v2"
	"golang.org/x/sys/unix"
)

// Helper exit codes.
const (
	helperOK       = 0 // a result was delivered (whatever the outcome)
	helperProtocol = 2 // the parent spoke nonsense or went away early
)

// helperMarkerEnv is set (to "1") in every helper's environment by the
// Authenticator.
const helperMarkerEnv = "HOTDESK_PAM_HELPER"

// In a helper, the transaction must run on the process's main thread: some
// modules act on the thread group leader through /proc/self (pam_loginuid
// writes /proc/self/loginuid, which the kernel refuses with EPERM from any
// other thread, failing open_session at random). Locking the OS thread in an
// init function keeps the main goroutine on the main thread through main.
func init() {
	if os.Getenv(helperMarkerEnv) == "1" {
		runtime.LockOSThread()
	}
}

// errNotMainThread is why a helper refuses to run a transaction.
var errNotMainThread = errors.New("pam: helper is not on the main thread (start it through Authenticator, which sets " + helperMarkerEnv + "=1)")

// onMainThread reports whether the calling goroutine runs on the thread
// group leader.
func onMainThread() bool { return unix.Gettid() == unix.Getpid() }

// HelperMain is the entry point of the helper process ("hotdeskd pam-helper"):
// it speaks the helper protocol on file descriptors 3 (from the parent) and 4
// (to the parent), as set up by Authenticator, and returns the exit code.
// Stdout and stderr stay free for whatever PAM modules print. It must be
// called from main (the main goroutine, kept on the main thread by this
// package's init when the Authenticator started the process).
func HelperMain() int {
	if !onMainThread() {
		fmt.Fprintf(os.Stderr, "pam-helper: %v\n", errNotMainThread)
		return helperProtocol
	}
	in := os.NewFile(3, "pam-helper-in")
	out := os.NewFile(4, "pam-helper-out")
	defer in.Close()
	defer out.Close()
	return RunHelper(in, out)
}

// RunHelper runs one PAM transaction driven by the parent over r/w and
// returns the process exit code — or, for account checks, one after the
// other as long as the parent sends them and each left the helper fit
// for the next (wireResult.Reusable). The whole transaction runs on one locked OS
// thread, and End is called on every path. If the transaction opened a
// session, RunHelper keeps it until the parent sends close or r ends (the
// parent died), then closes the session, deletes the credentials and ends.
func RunHelper(r io.Reader, w io.Writer) int {
	runtime.LockOSThread()
	// Orphans of module-spawned processes become our children, so the parent
	// can find (and kill) them while we live.
	_ = unix.Prctl(unix.PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)
	// The thread is never unlocked: it dies with the process, so no other
	// goroutine ever runs on a thread that PAM modules touched.
	m, err := readMsg(r)
	if err == nil && m.Start == nil {
		err = fmt.Errorf("pam: %w: first message is not start", ErrProtocol)
	}
	if err != nil {
		fmt.Fprintf(os.Stderr, "pam-helper: %v\n", err)
		return helperProtocol
	}
	var base string // the process as it started (procState), for account checks
	if m.Start.AccountOnly {
		base = procState()
	}
	h := &helper{r: r, w: w, start: m.Start, base: base}
	code := h.run()
	// After an account check the helper waits for the parent to close its
	// end: living on, it keeps what a module left behind (its children,
	// as a subreaper) where the parent can find and kill it. One that
	// left nothing behind may be given another check instead
	// (Config.AccountHelperUses).
	for code == helperOK && h.start.AccountOnly {
		m, err := readMsg(r)
		if errors.Is(err, io.EOF) {
			return helperOK
		}
		if err == nil && (m.Start == nil || !m.Start.AccountOnly || !h.reusable) {
			err = fmt.Errorf("pam: %w: a helper takes another account check only after one that left no process behind", ErrProtocol)
		}
		if err != nil {
			fmt.Fprintf(os.Stderr, "pam-helper: %v\n", err)
			return helperProtocol
		}
		h = &helper{r: r, w: w, start: m.Start, base: base}
		code = h.run()
	}
	return code
}

type helper struct {
	r     io.Reader
	w     io.Writer
	start *wireStart
	// broken is set once the parent is gone or spoke nonsense.
	broken error
	// reusable is set by an account check's result when no process a
	// module started is left (childless) and the process is as it started
	// (base): the helper may run another.
	reusable bool
	// base is procState before the helper's first account check.
	base string
}

// RespondPAM relays one PAM message to the parent and waits for the answer.
func (h *helper) RespondPAM(style pam.Style, msg string) (string, error) {
	if h.broken != nil {
		return "", h.broken
	}
	if h.start.AccountOnly || h.start.NoSecret {
		// An account check, or a card login's session, asks nobody: a
		// message (pam_unix's "password expires in N days") is dropped,
		// a prompt refused (the module gets PAM_CONV_ERR).
		if style == pam.PromptEchoOff || style == pam.PromptEchoOn {
			return "", errAccountPrompt
		}
		return "", nil
	}
	if len(msg) > maxText {
		msg = msg[:maxText]
	}
	if err := writeMsg(h.w, &wireMsg{Prompt: &wirePrompt{Style: uint8(style), Text: msg}}); err != nil {
		h.broken = err
		return "", err
	}
	m, err := readMsg(h.r)
	if err == nil && m.Answer == nil {
		err = fmt.Errorf("pam: %w: expected answer", ErrProtocol)
	}
	if err != nil {
		h.broken = err
		return "", err
	}
	// Go strings cannot be wiped: the answer lives on as the string handed to
	// libpam (which copies it into C memory that PAM wipes) until collected.
	s := string(m.Answer.Text)
	clear(m.Answer.Text)
	return s, nil
}

func (h *helper) run() int {
	st := h.start
	var (
		tx  *pam.Transaction
		err error
	)
	if st.ConfDir != "" {
		tx, err = pam.StartConfDir(st.Service, st.User, h, st.ConfDir)
	} else {
		tx, err = pam.Start(st.Service, st.User, h)
	}
	if err != nil {
		return h.result(&wireResult{Stage: "start", Code: code(err), Message: err.Error()})
	}
	ended := false
	end := func() {
		if !ended {
			ended = true
			_ = tx.End()
		}
	}
	defer end()

	fail := func(stage string, err error) int {
		user, _ := tx.GetItem(pam.User)
		end()
		return h.result(&wireResult{Stage: stage, Code: code(err), Message: err.Error(), User: user})
	}
	if st.TTY != "" {
		if err := tx.SetItem(pam.Tty, st.TTY); err != nil {
			return fail("set_item", err)
		}
	}
	if st.RHost != "" {
		if err := tx.SetItem(pam.Rhost, st.RHost); err != nil {
			return fail("set_item", err)
		}
	}
	var flags pam.Flags
	if !st.AllowNullAuthtok {
		flags |= pam.DisallowNullAuthtok
	}
	if st.AccountOnly {
		return h.account(tx, flags, fail, end)
	}
	if st.NoSecret {
		// A card login: the account stack as in an account check (a
		// password that must be changed passes), then the session.
		if err := tx.AcctMgmt(flags); err != nil && !errors.Is(err, pam.ErrNewAuthtokReqd) {
			return fail("account", err)
		}
	} else {
		if err := tx.Authenticate(flags); err != nil {
			return fail("authenticate", err)
		}
		if err := tx.AcctMgmt(flags); err != nil {
			if !errors.Is(err, pam.ErrNewAuthtokReqd) {
				return fail("account", err)
			}
			if err := tx.ChangeAuthTok(pam.ChangeExpiredAuthtok); err != nil {
				return fail("chauthtok", err)
			}
		}
	}
	user, err := tx.GetItem(pam.User)
	if err != nil {
		return fail("get_item", err)
	}
	if !st.OpenSession {
		end()
		return h.result(&wireResult{OK: true, User: user})
	}
	// creds: pam_setcred(ESTABLISH) succeeded, so a failed DELETE is
	// one to report.
	creds := true
	if err := tx.SetCred(pam.EstablishCred); err != nil {
		if !st.NoSecret {
			return fail("setcred", err)
		}
		// Without pam_authenticate the auth modules have nothing to
		// establish, and some refuse (pam_deny, the stack of a service
		// whose logins never ask a secret): as systemd's PAMName= does,
		// the session opens all the same. The account stack decided.
		creds = false
	}
	// DELETE is due whether or not ESTABLISH succeeded as a whole, as
	// systemd calls it: a module before the one that refused may have
	// established credentials (tickets, tokens, keys) it must remove. A
	// stack that refused ESTABLISH may refuse DELETE too: not reported.
	deleteCreds := func() error {
		err := tx.SetCred(pam.DeleteCred)
		if !creds {
			return nil
		}
		return err
	}
	// What the session's modules change of the helper's resource limits
	// (pam_limits: limits.conf) is the desktop's to have.
	before, lerr := rlimit.Current()
	if err := tx.OpenSession(0); err != nil {
		_ = deleteCreds()
		return fail("open_session", err)
	}
	var limits []rlimit.Limit
	if after, err := rlimit.Current(); err == nil && lerr == nil {
		limits = rlimit.Changed(before, after)
	}
	if code := h.result(&wireResult{OK: true, User: user, Env: sessionEnv(tx), Limits: limits}); code != helperOK {
		// The parent is gone: nobody owns the session; close it now.
		_ = tx.CloseSession(0)
		_ = deleteCreds()
		return code
	}
	m, rerr := h.hold()
	closed := closeSession(tx, deleteCreds)
	ended = true
	if rerr != nil || m.Close == nil {
		return helperProtocol
	}
	if err := writeMsg(h.w, &wireMsg{Closed: closed}); err != nil {
		return helperProtocol
	}
	return helperOK
}

// sessionEnv returns the PAM session's environment as sorted KEY=value
// strings, at most maxEnv of them.
func sessionEnv(tx *pam.Transaction) []string {
	envMap, _ := tx.GetEnvList()
	env := make([]string, 0, len(envMap))
	for k, v := range envMap {
		env = append(env, k+"="+v)
	}
	sort.Strings(env)
	if len(env) > maxEnv {
		env = env[:maxEnv]
	}
	return env
}

// hold holds the open session until the parent's next message that is not
// a bind (returned: a close, or anything else), or until the parent is gone
// (rerr): then, if it bound the session to a desktop, until that desktop
// ends (hotdeskd restarts without ending desktops).
func (h *helper) hold() (m *wireMsg, rerr error) {
	desktop := -1 // pidfd of the bound desktop
	for {
		m, rerr = readMsg(h.r)
		if rerr != nil || m.Bind == nil {
			break
		}
		if desktop < 0 && m.Bind.PID > 1 {
			if fd, err := unix.PidfdOpen(m.Bind.PID, 0); err == nil {
				desktop = fd
			}
		}
	}
	if rerr != nil && desktop >= 0 {
		waitExit(desktop)
	}
	if desktop >= 0 {
		unix.Close(desktop)
	}
	return m, rerr
}

// closeSession closes the session, deletes its credentials and ends tx,
// reporting the first stage that failed.
func closeSession(tx *pam.Transaction, deleteCreds func() error) *wireClosed {
	closed := &wireClosed{}
	if err := tx.CloseSession(0); err != nil {
		closed = &wireClosed{Stage: "close_session", Code: code(err), Message: err.Error()}
	}
	if err := deleteCreds(); err != nil && closed.Stage == "" {
		closed = &wireClosed{Stage: "setcred", Code: code(err), Message: err.Error()}
	}
	if err := tx.End(); err != nil && closed.Stage == "" {
		closed = &wireClosed{Stage: "end", Code: code(err), Message: err.Error()}
	}
	return closed
}

// errAccountPrompt is what an account check's conversation answers a
// prompt with: libpam passes PAM_CONV_ERR to the module.
var errAccountPrompt = errors.New("pam: an account check asks nothing")

// account runs an account check: pam_acct_mgmt alone. A password that
// must be changed (PAM_NEW_AUTHTOK_REQD) leaves the account valid: the
// next login with a password changes it; no secret is asked here.
func (h *helper) account(tx *pam.Transaction, flags pam.Flags, fail func(string, error) int, end func()) int {
	if err := tx.AcctMgmt(flags); err != nil && !errors.Is(err, pam.ErrNewAuthtokReqd) {
		return fail("account", err)
	}
	user, err := tx.GetItem(pam.User)
	if err != nil {
		return fail("get_item", err)
	}
	end()
	return h.result(&wireResult{OK: true, User: user})
}

// result sends the transaction's result. An account check's says
// whether the helper is fit for another (Reusable): only if the
// transaction has ended, no process a module started is left, and the
// modules left the process as it was before the first check (procState:
// its credentials, environment, umask, directories, limits and signals
// would otherwise be the next user's check's).
func (h *helper) result(res *wireResult) int {
	if h.broken != nil {
		return helperProtocol
	}
	if h.start.AccountOnly {
		h.reusable = childless() && procState() == h.base
		res.Reusable = h.reusable
	}
	if err := writeMsg(h.w, &wireMsg{Result: res}); err != nil {
		return helperProtocol
	}
	return helperOK
}

// code extracts the PAM status from err (0 if it carries none).
func code(err error) int {
	var pe pam.Error
	if errors.As(err, &pe) {
		return int(pe)
	}
	return 0
}

// childless reaps the helper's children that have exited and reports
// whether none is left. The helper is a child subreaper, so a process a
// module started (pam_exec's command, a daemon it double-forked) is its
// child as long as it lives.
func childless() bool {
	for {
		var ws unix.WaitStatus
		pid, err := unix.Wait4(-1, &ws, unix.WNOHANG, nil)
		switch {
		case errors.Is(err, unix.ECHILD):
			return true
		case errors.Is(err, unix.EINTR):
		case err != nil, pid == 0:
			return false // pid 0: a child is still running
		}
	}
}

// waitExit returns when the process of pidfd fd has ended.
func waitExit(fd int) {
	for {
		n, err := unix.Poll([]unix.PollFd{{Fd: int32(fd), Events: unix.POLLIN}}, -1)
		if n > 0 || (err != nil && !errors.Is(err, unix.EINTR)) {
			return
		}
	}
}
