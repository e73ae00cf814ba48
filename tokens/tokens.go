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
//
// Reading: a provider whose identification of a token takes noticeable
// time (a smart card: tens of milliseconds, up to a timeout of seconds for
// a mute card) may report the moment a token arrives with a Reading event,
// so that a terminal shows "Reading card…" at once. The contract, per
// reader:
//
//   - Reading has a Reader and no Token: a card is in that reader and is
//     being identified. A second Reading at the reader never comes before
//     the first has ended.
//   - Every Reading is ended by exactly one later event at the same
//     reader: Inserted (identified: Token set), Error (it could not be
//     identified, or the reader became unavailable; Token empty), or
//     Removed with an empty Token (the card left before it was
//     identified) — or by the end of the stream. No other event at that
//     reader comes in between.
//   - A Removed with an empty Token ends a Reading and nothing else: it
//     comes only after a Reading. A Removed with a Token is about a token
//     reported Inserted before.
//   - Inserted and Error need not follow a Reading: a provider may not
//     report Reading at all (tokens/soft does not: a software key needs
//     no reading), or not for every card (tokens/pcsc does not while a
//     token's removal grace runs at the reader: the card may be that
//     token coming back, which produces no event).
//
// Consumers must tolerate Reading: one that does not show progress ignores
// Reading and Removed events with an empty Token.
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
	// Inserted: a token was presented (and identified: Token is set).
	Inserted Kind = iota + 1
	// Removed: a token left the reader. Token is the token reported
	// Inserted before; empty, it is a card that left the reader before it
	// was identified, and ends a Reading (see the package documentation).
	Removed
	// Error: a device could not be read or identified ("card error"), or
	// a reader or the whole provider became unavailable. It ends a Reading
	// at its Reader.
	Error
	// Reading: a card is in Reader and is being identified; no Token yet.
	// Ended by exactly one Inserted, Error or Removed with an empty Token
	// at the same Reader (see the package documentation).
	Reading
)

func (k Kind) String() string {
	switch k {
	case Inserted:
		return "inserted"
	case Removed:
		return "removed"
	case Error:
		return "error"
	case Reading:
		return "reading"
	}
	return fmt.Sprintf("kind(%d)", uint8(k))
}

// Event is one token event. Token is empty for Reading events, for Error
// events whose token could not be identified and for Removed events that
// end a Reading; Err is set only for Error events.
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
