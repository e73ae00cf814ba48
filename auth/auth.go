// Package auth decides who may have a session. A token only locates a
// session; an Authenticator establishes the user, talking to the person at
// the terminal through a Conversation relayed over the terminal protocol.
//
// Authenticate must return promptly when ctx is cancelled (card pulled,
// terminal gone), must never log an answer, and must be safe for concurrent
// use: one slow or failing login never holds up another.
//
// A token alone proves nothing about the account behind it: every grant
// made without a secret (the card policy, a hot-desk that does not
// authenticate again) is subject to the account stack of the policy's PAM
// service, through an AccountChecker (Chooser), or through a
// SessionOpener that checks the account and opens the PAM session of a
// card login's new desktop in one transaction. A refusal there wraps
// ErrDenied and ErrAccount (and ErrAccountExpired when the account
// expired); a check that could not be made refuses too. Only kiosk
// policies grant without it. Positive answers may be reused for a short
// bounded time (AccountCache), never refusals.
package auth

import (
	"context"
	"errors"

	"github.com/hotdesk/hotdesk/internal/rlimit"
	"github.com/hotdesk/hotdesk/proto"
)

// ErrDenied is returned (wrapped) when authentication fails.
var ErrDenied = errors.New("auth: denied")

// ErrNoAnswer means the person at the terminal did not answer a prompt in time
// (auth/pam's prompt timeout wraps it). Nothing was typed: not a wrong
// secret.
var ErrNoAnswer = errors.New("auth: no answer from the terminal in time")

// Request describes who is asking for a session.
type Request struct {
	Token      string // typed token id presenting
	User       string // user the token is registered to, if known
	TerminalID string
	RemoteAddr string
	// Existing is true when the request would resume an existing session.
	Existing bool
	// Locked is true when that session was locked (by an administrator):
	// a policy that skips authentication on a hot-desk asks all the same.
	Locked bool
	// Reconnect is true when the request resumes that session at the
	// terminal that showed it when its connection was lost, within the
	// broker's grace: no secret is asked, as for a hot-desk under a policy
	// that skips it (Locked overrides it).
	Reconnect bool
}

// Result is a successful authentication.
//
// An Authenticator that fails may still fill in User when it learned who was
// trying (e.g. PAM asked for the login name); it is used only for rate
// limiting and audit (see Limiter.Guard), never as an identity.
type Result struct {
	User string
	// Env is the environment the authenticator prepared for the user's
	// session ("NAME=value", e.g. from pam_env), for the compositor. Nil when
	// there is none.
	Env []string
	// Limits are the resource limits the login session set (pam_limits,
	// from limits.conf), for the desktop's processes; nil when it set
	// none.
	Limits []rlimit.Limit
	// Session, when non-nil, holds resources opened for the desktop session
	// (a PAM session and credentials). The caller owns it and must Close it
	// exactly once when the desktop session is destroyed, or when it decides
	// not to create the session after all.
	Session Session
	// NoSecret: the grant asked no secret (a card login, a hot-desk
	// without re-authentication, a kiosk). It proves the token, not the
	// user's password: the Limiter's guard does not clear the user's
	// failed logins for it, or the owner's card taps would wipe an
	// attacker's guesses at the password from other terminals.
	NoSecret bool
}

// Session is an open login session held by an authenticator (for PAM:
// pam_open_session and pam_setcred(ESTABLISH) done, the handle kept alive).
type Session interface {
	// Close ends the session: for PAM, pam_close_session, then
	// pam_setcred(DELETE), then pam_end. It is safe to call more than once;
	// calls after the first return the first call's result. ctx bounds the
	// wait; when it expires the session's resources are forcibly released.
	Close(ctx context.Context) error
}

// DesktopBinder is a Session that can outlive the daemon that opened it.
// Told the process of the desktop it was opened for, it stays open while
// that process runs even if the daemon stops first (a restart that keeps
// the desktops), and closes when the process ends; Close still closes it
// at once while the daemon runs.
type DesktopBinder interface {
	BindDesktop(pid int) error
}

// Conversation relays prompts to the person at the terminal.
type Conversation interface {
	// Prompt shows text; for PromptEchoOff/EchoOn it returns the answer.
	Prompt(ctx context.Context, style proto.PromptStyle, text string) (string, error)
}

// Authenticator authenticates one request.
type Authenticator interface {
	Authenticate(ctx context.Context, req Request, conv Conversation) (Result, error)
}

// Kiosk is the no-login policy (Sun Ray's kiosk mode): every token gets a
// session as one configured local user; no prompt is shown.
type Kiosk struct {
	User string
}

var _ Authenticator = Kiosk{}

// Authenticate implements Authenticator.
func (k Kiosk) Authenticate(ctx context.Context, req Request, _ Conversation) (Result, error) {
	if err := ctx.Err(); err != nil {
		return Result{}, err
	}
	u := k.User
	if req.User != "" && u == "" {
		u = req.User
	}
	if u == "" {
		u = "kiosk"
	}
	return Result{User: u, NoSecret: true}, nil
}
