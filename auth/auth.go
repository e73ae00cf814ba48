// Package auth decides who may have a session. A token only locates a
// session; an Authenticator establishes the user, talking to the person at
// the terminal through a Conversation relayed over the terminal protocol.
//
// Authenticate must return promptly when ctx is cancelled (card pulled,
// terminal gone), must never log an answer, and must be safe for concurrent
// use: one slow or failing login never holds up another.
package auth

import (
	"context"
	"errors"

	"github.com/hotdesk/hotdesk/proto"
)

// ErrDenied is returned (wrapped) when authentication fails.
var ErrDenied = errors.New("auth: denied")

// Request describes who is asking for a session.
type Request struct {
	Token      string // typed token id presenting
	User       string // user the token is registered to, if known
	TerminalID string
	RemoteAddr string
	// Existing is true when the request would resume an existing session.
	Existing bool
}

// Result is a successful authentication.
type Result struct {
	User string
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
	return Result{User: u}, nil
}
