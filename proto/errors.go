package proto

import (
	"errors"
	"fmt"
	"io"
	"net"
	"strings"
	"unicode/utf8"
)

// maxErrorText bounds the Message of an Error built by ErrorFor.
const maxErrorText = 200

var errorCodeNames = map[ErrorCode]string{
	ErrBadFrame:       "bad_frame",
	ErrBadVersion:     "bad_version",
	ErrProtocol:       "protocol_error",
	ErrUnknownToken:   "unknown_token",
	ErrAuthFailed:     "auth_failed",
	ErrRateLimited:    "rate_limited",
	ErrUnavailable:    "unavailable",
	ErrInternal:       "internal",
	ErrPairing:        "pairing",
	ErrTooManyHops:    "too_many_hops",
	ErrStaleFence:     "stale_fence",
	ErrTokenDisabled:  "token_disabled",
	ErrCompositor:     "compositor",
	ErrCardError:      "card_error",
	ErrSessionLimited: "session_limited",
	ErrCancelled:      "cancelled",
}

var detachReasonNames = map[DetachReason]string{
	DetachTokenRemoved: "token_removed",
	DetachTakeover:     "takeover",
	DetachDestroyed:    "destroyed",
	DetachShutdown:     "shutdown",
	DetachAdmin:        "admin",
	DetachLocked:       "locked",
}

var promptStyleNames = map[PromptStyle]string{
	PromptEchoOff: "echo_off",
	PromptEchoOn:  "echo_on",
	PromptError:   "error",
	PromptInfo:    "info",
}

// enumName returns names[v], or kind(v) for a value without a name.
func enumName[T ~uint8 | ~uint16](names map[T]string, v T, kind string) string {
	if s, ok := names[v]; ok {
		return s
	}
	return fmt.Sprintf("%s(%d)", kind, v)
}

// String returns the snake_case name of c, e.g. "bad_version".
func (c ErrorCode) String() string { return enumName(errorCodeNames, c, "error_code") }

// Error makes an ErrorCode usable as a sentinel: local failures that map to
// a protocol error wrap the code, so errors.Is(err, ErrBadVersion) works and
// ErrorFor picks the code for the peer.
func (c ErrorCode) Error() string { return c.String() }

// Closes reports whether the sender closes the connection after an Error
// with this code: bad_frame, bad_version and protocol_error end the
// connection; every other code answers one request (Token names it) and the
// connection stays usable. An Error sent during the handshake (including
// too_many_hops) is always followed by a close.
func (c ErrorCode) Closes() bool {
	switch c {
	case ErrBadFrame, ErrBadVersion, ErrProtocol:
		return true
	}
	return false
}

// String returns the snake_case name of t, e.g. "token_inserted".
func (t Type) String() string {
	if ti, ok := types[t]; ok {
		return ti.name
	}
	return fmt.Sprintf("type(%d)", uint16(t))
}

// String returns the snake_case name of r, e.g. "token_removed".
func (r DetachReason) String() string { return enumName(detachReasonNames, r, "detach_reason") }

// String returns the snake_case name of s, e.g. "echo_off".
func (s PromptStyle) String() string { return enumName(promptStyleNames, s, "prompt_style") }

// ProtocolError is an Error message received from the peer, returned by the
// handshake functions. errors.Is(err, code) matches its Code.
type ProtocolError struct {
	Code    ErrorCode
	Message string
}

func (e *ProtocolError) Error() string {
	if e.Message == "" {
		return "proto: peer error " + e.Code.String()
	}
	return fmt.Sprintf("proto: peer error %v: %s", e.Code, e.Message)
}

// Is reports whether target is e's ErrorCode.
func (e *ProtocolError) Is(target error) bool {
	c, ok := target.(ErrorCode)
	return ok && c == e.Code
}

// ErrorFor maps an error from Recv (or from ServerHandshake) to the Error
// message the peer should get before the connection is closed:
//
//   - nil for nil, io.EOF, a closed connection, a *ProtocolError (the peer
//     sent it) and transport failures (the connection is unusable);
//   - ErrBadFrame for ErrFrameTooLarge and ErrMalformed;
//   - ErrProtocol for ErrUnknownType and for a read timeout;
//   - the wrapped ErrorCode for errors that wrap one (ErrBadVersion,
//     ErrTooManyHops, ErrProtocol ...).
//
// The Message is the error text, valid UTF-8 and at most 200 bytes.
func ErrorFor(err error) *Error {
	var pe *ProtocolError
	var code ErrorCode
	var ne net.Error
	switch {
	case err == nil, errors.Is(err, io.EOF), errors.Is(err, net.ErrClosed), errors.As(err, &pe):
		return nil
	case errors.Is(err, ErrFrameTooLarge), errors.Is(err, ErrMalformed):
		return &Error{Code: ErrBadFrame, Message: errorText(err)}
	case errors.Is(err, ErrUnknownType):
		return &Error{Code: ErrProtocol, Message: errorText(err)}
	case errors.As(err, &code):
		return &Error{Code: code, Message: errorText(err)}
	case errors.As(err, &ne) && ne.Timeout():
		return &Error{Code: ErrProtocol, Message: "read timeout"}
	}
	return nil
}

// errorText renders err for a peer: valid UTF-8, bounded.
func errorText(err error) string {
	s := strings.ToValidUTF8(err.Error(), "?")
	if len(s) <= maxErrorText {
		return s
	}
	s = s[:maxErrorText]
	for len(s) > 0 && !utf8.ValidString(s) {
		s = s[:len(s)-1]
	}
	return s
}
