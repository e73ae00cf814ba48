// Package adminapi is hotdesk's local admin API, shared by hotdeskd (Server)
// and hotdeskctl (Client): HTTP/1.1 with JSON bodies over a unix socket.
//
// Routes:
//
//	GET    /v1/sessions       → []SessionInfo of the whole group; query
//	                            user, terminal, server, state, token filter;
//	                            header Hotdesk-Unanswered: the members that
//	                            did not answer (see UnansweredHeader)
//	DELETE /v1/sessions/{id}  → 204; 404 if the backend reports ErrNotFound
//	POST   /v1/sessions/{id}/disconnect, /v1/sessions/{id}/lock → 204
//	                            (forwarded to the owner wherever it runs)
//	GET    /v1/terminals      → []TerminalInfo (every broker's terminals)
//	GET    /v1/events         → NDJSON stream of event.Event objects (the
//	                            group's events and membership changes); query
//	                            n (the last n first), follow=1 (then live,
//	                            until the client goes)
//	GET    /v1/pairings       → []PairingInfo (pending codes, ids only)
//	DELETE /v1/pairings/{id}  → 204 (code revoked)
//	POST   /v1/tokens/pair    PairRequest → PairResponse
//	GET    /v1/tokens         → []TokenInfo
//	POST   /v1/tokens         RegisterRequest → TokenInfo (locate-only cards: uid.…, piv.…)
//	POST   /v1/tokens/{id}/alias   AliasRequest{of} → TokenInfo (same user as token "of")
//	POST   /v1/tokens/{id}/disable, /v1/tokens/{id}/enable → 204
//	DELETE /v1/tokens/{id}    → 204
//	GET    /v1/lockouts       → []LockoutInfo (login lockouts in force, group-wide)
//	DELETE /v1/lockouts/{key} → 204 (the lockout and the key's failure count
//	                            ended at every broker; key as listed, e.g.
//	                            user:alice); 404 if neither
//	GET    /v1/failures       → []FailureInfo (the group's counts of failed
//	                            logins, by key)
//	GET    /v1/servers        → []ServerInfo (every member of the group)
//	POST   /v1/servers/{id}/drain, /v1/servers/{id}/undrain → 204
//	GET    /livez             → 200 {"status":"ok"} while the server answers
//	GET    /readyz            → 200 {"status":"ready"}, or 503 with the reason
//
// Errors are an ErrorResponse with status 400 (bad request: an {id} or a
// user that CheckID or CheckUser refuses, a state not in SessionStates, or
// the backend returned ErrInvalid), 403 (peer refused), 404, 405, 413 (body
// over MaxBodyBytes), 500 or 503 (not ready; any path but /livez while
// the daemon's start is not done, see Server.Starting; or every
// connection slot taken: the answer to a new connection then, at once). Only 500 is logged
// as an error; the client's mistakes (400, 404) are logged at debug level.
// proto/ADMIN.md §4 is this API's reference for clients.
//
// Access control: every request is checked against the credentials the
// kernel recorded when the peer connected (SO_PEERCRED). Allowed are uid 0,
// the daemon's own uid, and, when an admin group is configured, a peer whose
// effective gid or supplementary groups (from /proc/<pid>/status) include it.
// Refused peers get 403 and the server logs one line with their uid, gid and
// pid. Request and response bodies are bounded; the server never logs a
// request body.
package adminapi

import (
	"context"
	"errors"
	"fmt"
	"math"
	"strings"
	"time"

	"github.com/hotdesk/hotdesk/internal/event"
	"github.com/hotdesk/hotdesk/internal/printable"
)

// Sentinel errors, matched with errors.Is.
var (
	// ErrNotFound: no such session. Backend.KillSession wraps it for an
	// unknown id (→ 404); Client methods return it for a 404.
	ErrNotFound = errors.New("adminapi: not found")
	// ErrInvalid: the request is malformed or refused by the backend as
	// invalid (→ 400/413).
	ErrInvalid = errors.New("adminapi: invalid request")
	// ErrForbidden: the peer is not allowed to use the admin API (→ 403).
	ErrForbidden = errors.New("adminapi: forbidden")
	// ErrNotReady: the daemon reports not ready (→ 503 on /readyz).
	ErrNotReady = errors.New("adminapi: not ready")
)

// MaxBodyBytes bounds a request body.
const MaxBodyBytes = 64 << 10

// SessionInfo describes one session as the admin sees it.
type SessionInfo struct {
	ID          string     `json:"id"`
	Token       string     `json:"token"`
	User        string     `json:"user"`
	State       string     `json:"state"`
	Terminal    string     `json:"terminal,omitempty"`
	ServerID    string     `json:"server_id"`
	Endpoint    string     `json:"endpoint,omitempty"`
	PID         int        `json:"pid,omitempty"`
	Created     time.Time  `json:"created"`
	Updated     time.Time  `json:"updated"`
	SuspendedAt *time.Time `json:"suspended_at,omitempty"`
	ExpiresAt   *time.Time `json:"expires_at,omitempty"`
	// Orphaned: the token was claimed by OrphanOwner while this server had
	// lost its registry lease; the session is kept suspended, never
	// destroyed silently.
	Orphaned    bool   `json:"orphaned,omitempty"`
	OrphanOwner string `json:"orphan_owner,omitempty"`
	// LastTerminal is where the session was last shown (set while it is
	// suspended, when known).
	LastTerminal string `json:"last_terminal,omitempty"`
	// IdleSince is when the session last changed hands (attached,
	// suspended): the IDLE column counts from it.
	IdleSince *time.Time `json:"idle_since,omitempty"`
	// Partial: the owner did not answer; the row comes from the group
	// registry and lacks the owner's details.
	Partial bool `json:"partial,omitempty"`
}

// SessionList is a listing of the group's sessions.
type SessionList struct {
	Sessions []SessionInfo
	// Unanswered are the ids of the members that were asked for their
	// sessions and did not answer (in time, or with their sessions: an
	// error instead), sorted. What the group registry
	// still holds of their sessions is in Sessions, marked Partial; a
	// member whose lease expired meanwhile has no rows at all.
	Unanswered []string
}

// Warnings explains Unanswered to an administrator: one sentence for each
// member that did not answer, saying what its rows (or their absence)
// mean; none when every member answered. filtered says whether the
// listing was filtered (its absent rows may be filtered out).
func (sl SessionList) Warnings(filtered bool) []string {
	var out []string
	for _, id := range sl.Unanswered {
		n := 0
		for _, s := range sl.Sessions {
			if s.ServerID == id && s.Partial {
				n++
			}
		}
		if n > 0 {
			rows := fmt.Sprintf("the %d sessions listed for it come", n)
			if n == 1 {
				rows = "the session listed for it comes"
			}
			out = append(out, fmt.Sprintf("server %s did not answer: %s from the group registry, marked partial "+
				"(no PID, endpoint, orphan or last-terminal details; the state may be out of date)", id, rows))
			continue
		}
		which := "no session of it"
		if filtered {
			which = "no session of it that matches"
		}
		out = append(out, fmt.Sprintf("server %s did not answer, and the group registry holds %s "+
			"(if its lease expired, it is stopped, cut off or dead): sessions it still runs are not listed", id, which))
	}
	return out
}

// UnansweredHeader is the response header of GET /v1/sessions naming the
// members that did not answer (SessionList.Unanswered): their ids
// separated by commas, each percent-encoded as a URL query value (a server
// id's own characters, letters, digits, '.', '_' and '-', never are). It
// is absent when every member asked answered. The body is the same
// []SessionInfo either way, so a client that does not know the header
// still reads the listing; it only misses the warning.
const UnansweredHeader = "Hotdesk-Unanswered"

// SessionFilter selects sessions; empty fields match everything.
type SessionFilter struct {
	User     string `json:"user,omitempty"`
	Terminal string `json:"terminal,omitempty"` // current or last terminal
	Server   string `json:"server,omitempty"`
	State    string `json:"state,omitempty"`
	Token    string `json:"token,omitempty"`
}

// SessionStates are the states a SessionFilter may select ("orphaned":
// sessions whose server has left the group). Any other is ErrInvalid.
var SessionStates = []string{"creating", "active", "suspended", "orphaned"}

// MaxIDLen bounds an id in a path ({id}) and a user name in a request.
const MaxIDLen = 256

// CheckID returns an error wrapping ErrInvalid unless id may name an
// object (session, token, pairing code, server): 1 to MaxIDLen printable
// ASCII characters other than "/", backslash and space.
func CheckID(id string) error { return checkName("id", id, `/\`) }

// MaxLabelLen bounds a token's or pairing code's label, in bytes (as
// registry/pairing's MaxLabelLen bounds one a terminal sends).
const MaxLabelLen = 128

// CheckLabel returns an error wrapping ErrInvalid unless label is at most
// MaxLabelLen bytes of printable UTF-8 (empty: no label).
func CheckLabel(label string) error {
	if len(label) > MaxLabelLen || !printable.String(label) {
		return fmt.Errorf("%w: invalid label: at most %d bytes of printable characters", ErrInvalid, MaxLabelLen)
	}
	return nil
}

// MaxLockoutKeyLen bounds a lockout key in a request.
const MaxLockoutKeyLen = 512

// CheckLockoutKey returns an error wrapping ErrInvalid unless key may be
// a lockout's key as Lockouts lists it: 1 to MaxLockoutKeyLen bytes of
// printable UTF-8. Unlike an id it may hold "/" (an IPv6 source,
// "source:2001:db8:1:2::/64"), spaces and any letter (a terminal's id,
// "terminal:desk 5@10.0.0.7"): it travels path-escaped.
func CheckLockoutKey(key string) error {
	if key == "" || len(key) > MaxLockoutKeyLen || !printable.String(key) {
		return fmt.Errorf("%w: invalid lockout key %q: 1 to %d printable characters", ErrInvalid, key, MaxLockoutKeyLen)
	}
	return nil
}

// CheckUser returns an error wrapping ErrInvalid unless name may be a
// local user name: 1 to MaxIDLen printable ASCII characters other than
// ":", "/" and space (a login may still refuse it: the name must exist).
func CheckUser(name string) error { return checkName("user", name, ":/") }

// checkName returns an error wrapping ErrInvalid, naming s as what, unless
// s is 1 to MaxIDLen printable ASCII characters other than space and those
// in forbidden.
func checkName(what, s, forbidden string) error {
	if s == "" || len(s) > MaxIDLen {
		return fmt.Errorf("%w: invalid %s %q: 1 to %d characters", ErrInvalid, what, s, MaxIDLen)
	}
	for i := 0; i < len(s); i++ {
		if c := s[i]; c <= ' ' || c >= 0x7f || strings.IndexByte(forbidden, c) >= 0 {
			return fmt.Errorf("%w: invalid %s %q: character %q", ErrInvalid, what, s, c)
		}
	}
	return nil
}

// Match reports whether s passes the filter.
func (f SessionFilter) Match(s SessionInfo) bool {
	return (f.User == "" || s.User == f.User) &&
		(f.Terminal == "" || s.Terminal == f.Terminal || s.LastTerminal == f.Terminal) &&
		(f.Server == "" || s.ServerID == f.Server) &&
		(f.State == "" || s.State == f.State || (f.State == "orphaned" && s.Orphaned)) &&
		(f.Token == "" || s.Token == f.Token)
}

// TerminalInfo is one connected terminal.
type TerminalInfo struct {
	ID        string    `json:"id"`
	Name      string    `json:"name,omitempty"`
	Addr      string    `json:"addr,omitempty"`
	ServerID  string    `json:"server_id"`
	Tokens    []string  `json:"tokens,omitempty"` // tokens in its readers now
	Session   string    `json:"session,omitempty"`
	User      string    `json:"user,omitempty"`
	Connected time.Time `json:"connected"`
	LastSeen  time.Time `json:"last_seen"`
}

// PairingInfo is one pending pairing code (its id: the code's first group;
// the secret is never shown again).
type PairingInfo struct {
	ID        string    `json:"id"`
	User      string    `json:"user"`
	Label     string    `json:"label,omitempty"`
	CreatedBy string    `json:"created_by,omitempty"`
	Expires   time.Time `json:"expires"`
}

// LockoutInfo is one login lockout in force in the group: after too many
// failed logins the key (user:<name>, token:<id> or terminal:<id>@<address>)
// is refused at every broker until Until.
type LockoutInfo struct {
	Key    string    `json:"key"`
	Server string    `json:"server"` // the broker where it started
	Until  time.Time `json:"until"`
	Level  int       `json:"level"` // lockouts of the key so far (each doubles the next)
}

// FailureInfo is the group's count of failed logins of one key (as in
// LockoutInfo) in its failure window: at Count = max_failures the key is
// locked out (and its count starts over).
type FailureInfo struct {
	Key    string    `json:"key"`
	Count  int       `json:"count"`
	Since  time.Time `json:"since"`  // the window's first failure
	Server string    `json:"server"` // the broker that counted the last one
}

// TokenInfo is one token of the token registry.
type TokenInfo struct {
	ID           string    `json:"id"`
	Kind         string    `json:"kind"`
	User         string    `json:"user"`
	Label        string    `json:"label,omitempty"`
	RegisteredBy string    `json:"registered_by,omitempty"`
	Registered   time.Time `json:"registered"`
	Disabled     bool      `json:"disabled,omitempty"`
}

// RegisterRequest registers a locate-only token (a card read by UID or
// PIV CHUID) to a user. Key-holding tokens are enrolled by pairing code.
type RegisterRequest struct {
	ID    string `json:"id"`
	User  string `json:"user"`
	Label string `json:"label,omitempty"`
}

// AliasRequest registers a token to the same user as token Of.
type AliasRequest struct {
	Of    string `json:"of"`
	Label string `json:"label,omitempty"`
}

// ServerInfo describes one member of the server group.
type ServerInfo struct {
	ID          string    `json:"id"`
	Addr        string    `json:"addr"`
	Fingerprint string    `json:"fingerprint"`
	Sessions    int       `json:"sessions"`
	Capacity    int       `json:"capacity,omitempty"` // 0: no cap
	Weight      int       `json:"weight"`
	Draining    bool      `json:"draining"`
	Started     time.Time `json:"started"`
	Self        bool      `json:"self"` // the daemon answering
	Version     string    `json:"version,omitempty"`
	// SettingsDiffer lists the group-wide settings this member runs
	// with other values than the answering daemon (proto/ADMIN.md).
	SettingsDiffer []SettingDiff `json:"settings_differ,omitempty"`
	// ClockOffsetMs is how far this member's clock is ahead of the
	// answering daemon's (negative: behind), from its last readings; nil
	// for the answering daemon and for a member not read yet.
	ClockOffsetMs *int64 `json:"clock_offset_ms,omitempty"`
}

// ClockAllowance is how far apart the clocks of a group's members may be
// (registry.ClearSkew): a member whose ClockOffsetMs is beyond it either
// way is out of step.
const ClockAllowance = time.Second

// ClockOutOfStep says how far s's clock is from the answering daemon's
// (DescribeOffset), or "" when it is within ClockAllowance or not known.
func (s ServerInfo) ClockOutOfStep() string {
	if s.ClockOffsetMs == nil {
		return ""
	}
	d := time.Duration(*s.ClockOffsetMs) * time.Millisecond
	if d >= -ClockAllowance && d <= ClockAllowance {
		return ""
	}
	return DescribeOffset(d)
}

// DescribeOffset says a clock's offset in words, to a tenth of a second:
// "3.2s ahead", "1m0s behind", "in step".
func DescribeOffset(d time.Duration) string {
	d = d.Round(100 * time.Millisecond)
	switch {
	case d > 0:
		return fmt.Sprintf("%v ahead", d)
	case d < 0:
		// -d of the least Duration is itself: a reading of the
		// earliest time (anyone who may write to etcd can put one).
		return fmt.Sprintf("%v behind", -max(d, -math.MaxInt64))
	}
	return "in step"
}

// SettingDiff is one group-wide setting on which a member differs from
// the answering daemon.
type SettingDiff struct {
	Key    string `json:"key"`    // as in hotdesk.hcl, e.g. "auth.max_lockout"
	Theirs string `json:"theirs"` // the member's value
	Ours   string `json:"ours"`   // the answering daemon's
}

func (d SettingDiff) String() string {
	return fmt.Sprintf("%s = %s (here: %s)", d.Key, d.Theirs, d.Ours)
}

// PairRequest asks for a pairing code that registers the next token
// presented with it to User.
type PairRequest struct {
	User       string `json:"user"`
	Label      string `json:"label,omitempty"`
	TTLSeconds int    `json:"ttl_seconds,omitempty"` // 0 = the daemon's default
}

// PairResponse is a pairing code and when it expires, with what the
// daemon wants the administrator to know about it (e.g. a user this host
// does not know).
type PairResponse struct {
	Code     string    `json:"code"`
	Expires  time.Time `json:"expires"`
	Warnings []string  `json:"warnings,omitempty"`
}

// ErrorResponse is the body of every error status.
type ErrorResponse struct {
	Error string `json:"error"`
}

// Backend is what the daemon provides to the Server. Methods are called
// concurrently, with the request's context.
type Backend interface {
	// Sessions lists the group's sessions that pass f, with the members
	// that did not answer.
	Sessions(ctx context.Context, f SessionFilter) (SessionList, error)
	// KillSession destroys a session wherever it runs; an unknown id
	// returns an error wrapping ErrNotFound.
	KillSession(ctx context.Context, id string) error
	// DisconnectSession and LockSession suspend a session wherever it
	// runs (lock: its terminal is told it was locked).
	DisconnectSession(ctx context.Context, id string) error
	LockSession(ctx context.Context, id string) error
	// Terminals lists the terminals connected to any broker of the group.
	Terminals(ctx context.Context) ([]TerminalInfo, error)
	// Events writes the last n events (n <= 0: none), then, if follow,
	// every new one until ctx ends; emit returns an error when the client
	// is gone.
	Events(ctx context.Context, n int, follow bool, emit func(event.Event) error) error
	// Pairings lists pending pairing codes; RevokePairing deletes one.
	Pairings(ctx context.Context) ([]PairingInfo, error)
	RevokePairing(ctx context.Context, id string) error
	// PairToken creates a pairing code; createdBy is "uid:<n>" of the peer.
	// req.User is non-empty and req.TTLSeconds >= 0 (the server checks).
	PairToken(ctx context.Context, createdBy string, req PairRequest) (PairResponse, error)
	// Ready returns nil when the daemon is ready, else the reason.
	Ready() error
	// Tokens lists the token registry.
	Tokens(ctx context.Context) ([]TokenInfo, error)
	// RegisterToken adds a token; by is "uid:<n>" of the peer.
	RegisterToken(ctx context.Context, by string, req RegisterRequest) (TokenInfo, error)
	// AliasToken registers id to the user of req.Of.
	AliasToken(ctx context.Context, by, id string, req AliasRequest) (TokenInfo, error)
	// SetTokenDisabled disables (locking every session it is attached to,
	// group-wide) or enables a token.
	SetTokenDisabled(ctx context.Context, id string, disabled bool) error
	// DeleteToken removes a token from the registry.
	DeleteToken(ctx context.Context, id string) error
	// Lockouts lists the login lockouts in force in the group;
	// ClearLockout ends one and the key's failure count everywhere
	// (ErrNotFound if neither is there); Failures lists the group's
	// failure counts.
	Lockouts(ctx context.Context) ([]LockoutInfo, error)
	ClearLockout(ctx context.Context, key string) error
	Failures(ctx context.Context) ([]FailureInfo, error)
	// Servers lists the group's members.
	Servers(ctx context.Context) ([]ServerInfo, error)
	// SetDraining drains (no new sessions) or undrains server id ("" or
	// "self": the daemon's own); an unknown id wraps ErrNotFound.
	SetDraining(ctx context.Context, id string, draining bool) error
}
