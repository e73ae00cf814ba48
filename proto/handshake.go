package proto

import (
	"crypto/rand"
	"fmt"
	"math"
	"slices"
	"time"

	"github.com/hotdesk/hotdesk/internal/printable"
	"github.com/hotdesk/hotdesk/tokens"
)

// Handshake limits (see PROTOCOL.md).
const (
	// MaxHops is the most redirects a terminal may follow to reach a broker.
	MaxHops = 3
	// MaxTerminalIDLen and MaxNameLen bound Hello.TerminalID and Hello.Name, in bytes.
	MaxTerminalIDLen = 128
	MaxNameLen       = 128
	// MaxVersions bounds Hello.Versions.
	MaxVersions = 16
	// NonceLen is the length of Welcome.Nonce.
	NonceLen = 32
)

// supportedVersions lists the versions this package speaks, highest first.
var supportedVersions = []uint16{Version}

// ClientHandshake is the terminal side of the handshake: it sends h (with
// Versions defaulting to {Version}) and waits, within c's read timeout, for
// the broker's Welcome. An Error from the broker is returned as a
// *ProtocolError (errors.Is(err, ErrBadVersion) etc. work on it). A Welcome
// that picks a version h did not offer, lacks a ServerID or has a nonce that
// is not NonceLen bytes, or any other first message, is an error wrapping
// ErrProtocol. On error the caller should close c.
func ClientHandshake(c *Conn, h Hello) (Welcome, error) {
	if len(h.Versions) == 0 {
		h.Versions = []uint16{Version}
	}
	if err := checkHello(h); err != nil {
		return Welcome{}, fmt.Errorf("proto: client handshake: %w", err)
	}
	if err := c.Send(&h); err != nil {
		return Welcome{}, fmt.Errorf("proto: client handshake: %w", err)
	}
	m, err := c.Recv()
	if err != nil {
		return Welcome{}, fmt.Errorf("proto: client handshake: %w", err)
	}
	switch b := m.Body.(type) {
	case *Welcome:
		switch {
		case !slices.Contains(h.Versions, b.Version):
			return Welcome{}, fmt.Errorf("proto: client handshake: %w: broker chose version %d, not offered", ErrProtocol, b.Version)
		case len(b.Nonce) != NonceLen:
			return Welcome{}, fmt.Errorf("proto: client handshake: %w: welcome nonce is %d bytes; want %d", ErrProtocol, len(b.Nonce), NonceLen)
		case b.ServerID == "":
			return Welcome{}, fmt.Errorf("proto: client handshake: %w: welcome without server id", ErrProtocol)
		}
		return *b, nil
	case *Error:
		return Welcome{}, &ProtocolError{Code: b.Code, Message: b.Message}
	}
	return Welcome{}, fmt.Errorf("proto: client handshake: %w: got %v; want welcome", ErrProtocol, m.Type)
}

// ServerHandshake is the broker side of the handshake: it reads the Hello
// within c's read timeout, validates it (see PROTOCOL.md), picks the highest
// common version and answers with Welcome{Version, serverID, 32 fresh random
// bytes, pingInterval in milliseconds}. When it fails it has already sent
// the terminal the Error it should get (best effort, ErrorFor), and the
// returned error wraps the cause: ErrBadVersion when no version is common,
// ErrTooManyHops when Hops > MaxHops, ErrProtocol for an invalid Hello or
// another first message, or the Recv error. On error the caller closes c.
//
// members, if given, fills Welcome.Members (PROTOCOL.md §11): it is called
// once the Hello is valid, and its result is cut to MaxMembers.
func ServerHandshake(c *Conn, serverID string, pingInterval time.Duration, members ...func() []Member) (Hello, Welcome, error) {
	fail := func(err error) (Hello, Welcome, error) {
		if e := ErrorFor(err); e != nil {
			_ = c.Send(e)
		}
		return Hello{}, Welcome{}, fmt.Errorf("proto: server handshake: %w", err)
	}
	m, err := c.Recv()
	if err != nil {
		return fail(err)
	}
	h, ok := m.Body.(*Hello)
	if !ok {
		return fail(fmt.Errorf("%w: got %v; want hello", ErrProtocol, m.Type))
	}
	version, err := pickVersion(h.Versions)
	if err != nil {
		return fail(err)
	}
	if err := checkHello(*h); err != nil {
		return fail(err)
	}
	w := Welcome{Version: version, ServerID: serverID, Nonce: make([]byte, NonceLen), PingInterval: millis(pingInterval)}
	if _, err := rand.Read(w.Nonce); err != nil {
		return fail(fmt.Errorf("%w: nonce: %w", ErrInternal, err))
	}
	for _, f := range members {
		w.Members = append(w.Members, f()...)
	}
	if len(w.Members) > MaxMembers {
		w.Members = w.Members[:MaxMembers]
	}
	if err := c.Send(&w); err != nil {
		return Hello{}, Welcome{}, fmt.Errorf("proto: server handshake: %w", err)
	}
	return *h, w, nil
}

// pickVersion returns the highest version both sides speak.
func pickVersion(offered []uint16) (uint16, error) {
	if len(offered) > MaxVersions {
		return 0, fmt.Errorf("%w: %d versions offered, limit %d", ErrProtocol, len(offered), MaxVersions)
	}
	for _, v := range supportedVersions {
		if slices.Contains(offered, v) {
			return v, nil
		}
	}
	return 0, fmt.Errorf("%w: terminal offers %v, broker speaks %v", ErrBadVersion, offered, supportedVersions)
}

// checkHello validates everything in h except the version list's contents.
func checkHello(h Hello) error {
	switch {
	case len(h.Versions) > MaxVersions:
		return fmt.Errorf("%w: %d versions offered, limit %d", ErrProtocol, len(h.Versions), MaxVersions)
	case h.TerminalID == "" || len(h.TerminalID) > MaxTerminalIDLen:
		return fmt.Errorf("%w: terminal id must be 1 to %d bytes", ErrProtocol, MaxTerminalIDLen)
	case !printable.String(h.TerminalID):
		return fmt.Errorf("%w: terminal id %q is not printable", ErrProtocol, h.TerminalID)
	case len(h.Name) > MaxNameLen:
		return fmt.Errorf("%w: terminal name longer than %d bytes", ErrProtocol, MaxNameLen)
	case !printable.String(h.Name):
		return fmt.Errorf("%w: terminal name %q is not printable", ErrProtocol, h.Name)
	case h.Fence < 0:
		return fmt.Errorf("%w: negative fence %d", ErrProtocol, h.Fence)
	}
	if h.Token != "" {
		if _, _, err := tokens.ParseID(h.Token); err != nil {
			return fmt.Errorf("%w: hello token: %w", ErrProtocol, err)
		}
	}
	// Last, as PROTOCOL.md §6 step 3 orders it: a malformed Hello is a
	// protocol error however many hops it has come.
	if h.Hops > MaxHops {
		return fmt.Errorf("%w: %d hops, limit %d", ErrTooManyHops, h.Hops, MaxHops)
	}
	return nil
}

// DefaultPingInterval is the ping interval of a Welcome that carries none
// (PROTOCOL.md §10), and the hotdesk broker's default.
const DefaultPingInterval = 15 * time.Second

// PingEvery returns PingInterval as a duration, DefaultPingInterval when the
// broker sent none.
func (w *Welcome) PingEvery() time.Duration {
	if w.PingInterval == 0 {
		return DefaultPingInterval
	}
	return time.Duration(w.PingInterval) * time.Millisecond
}

// millis converts d to whole milliseconds for the wire, clamped to uint32.
func millis(d time.Duration) uint32 {
	switch ms := d.Milliseconds(); {
	case ms <= 0:
		return 0
	case ms > math.MaxUint32:
		return math.MaxUint32
	default:
		return uint32(ms)
	}
}
