// Package tokens defines how token devices report themselves to hotdesk.
//
// A token (smart card, NFC badge, phone, software key) is a session
// locator, not an identity: its id says which session to find, while proof of
// possession and user authentication happen separately (see tokens/soft and
// package auth). Token ids are typed, "<type>.<id>", e.g. "soft.3xk…",
// "uid.04a1b2c3", "piv.<guid>".
//
// A Provider is a stream of Events. Watch returns a channel that is closed
// when ctx is cancelled or the provider fails for good; a failure of one
// device is an Event of kind Error on the stream, never a closed channel.
package tokens

import (
	"context"
	"fmt"
	"strings"
	"time"
)

// Kind says what happened to a token.
type Kind uint8

const (
	Inserted Kind = iota + 1 // a token was presented
	Removed                  // a token left the reader
	Error                    // a device could not be read or identified ("card error")
)

func (k Kind) String() string {
	switch k {
	case Inserted:
		return "inserted"
	case Removed:
		return "removed"
	case Error:
		return "error"
	}
	return fmt.Sprintf("kind(%d)", uint8(k))
}

// Event is one token event. Token is empty for Error events whose token could
// not be identified; Err is set only for Error events.
type Event struct {
	Kind   Kind
	Token  string
	Reader string
	At     time.Time
	Err    error
}

// Provider watches token devices.
type Provider interface {
	// Watch starts watching and returns the event stream. The channel is
	// closed after ctx is cancelled; the caller must drain it until closed.
	Watch(ctx context.Context) (<-chan Event, error)
}

// MaxIDLen bounds the length of a typed token id.
const MaxIDLen = 128

// ParseID splits a typed token id into its type and id and validates it:
// a lower-case type of 1–16 letters, a dot, and 1 or more characters from
// [A-Za-z0-9_-], in total at most MaxIDLen bytes. The id of a "user" token
// (a password login without a card: the id is the user name) may also
// contain dots, not first or last and not two in a row ("user.john.doe").
func ParseID(s string) (typ, id string, err error) {
	if len(s) > MaxIDLen {
		return "", "", fmt.Errorf("tokens: id longer than %d bytes", MaxIDLen)
	}
	typ, id, ok := strings.Cut(s, ".")
	if !ok || typ == "" || id == "" {
		return "", "", fmt.Errorf("tokens: id %q is not <type>.<id>", s)
	}
	if len(typ) > 16 {
		return "", "", fmt.Errorf("tokens: type %q too long", typ)
	}
	for _, c := range typ {
		if c < 'a' || c > 'z' {
			return "", "", fmt.Errorf("tokens: type %q must be lower-case letters", typ)
		}
	}
	for _, c := range id {
		if c == '.' && typ == "user" {
			continue
		}
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '_' || c == '-') {
			return "", "", fmt.Errorf("tokens: id %q has invalid character %q", s, c)
		}
	}
	if typ == "user" && (id[0] == '.' || id[len(id)-1] == '.' || strings.Contains(id, "..")) {
		return "", "", fmt.Errorf("tokens: user name %q: a dot may not start or end it or follow another", id)
	}
	return typ, id, nil
}
