// Package event defines the admin event: one thing that happened in the
// server group, as administrators see it.
//
// The kind names and the JSON field names below are the admin contract,
// shared by every place an event leaves the daemon: the events stored in
// the group registry (proto/ADMIN.md §2), the event hook's stdin and
// argv[1], `hotdeskctl events --json`, the admin API's GET /v1/events and
// the dashboard. Add kinds and fields; never rename or remove one. An event
// never carries a secret (no PIN, password, key or pairing code).
//
// The package is a leaf: the broker makes events, the daemon stores and
// serves them, and the admin clients read them, all without depending on
// one another.
package event

import "time"

// Kind names what happened.
type Kind string

// The kinds of event. The broker emits all but the server membership kinds
// (ServerJoined, ServerLeft, ServerDraining, ServerUndrained) and the
// token registry changes an admin makes, which hotdeskd emits: joined and
// left about itself (at start and stop), draining and undrained by the
// server that set the flag, token kinds by the server whose admin API made
// the change; a server that died (its record vanished) is reported left by
// every follower of the group's events.
const (
	TerminalConnected    Kind = "terminal_connected"    // a terminal's handshake completed (TerminalName, Remote, Hops set)
	TerminalDisconnected Kind = "terminal_disconnected" // a terminal's connection ended
	TokenInserted        Kind = "token_inserted"        // a terminal reported a token presented, before it is looked up
	TokenRemoved         Kind = "token_removed"         // a terminal reported a token taken away
	TokenRefused         Kind = "token_refused"         // a presented token was refused (Reason says why)
	SessionAttached      Kind = "attached"              // a new session shown for the first time
	SessionResumed       Kind = "resumed"               // a suspended session shown again
	SessionTakeover      Kind = "takeover"              // an active session moved to another terminal (Target: the terminal it left)
	SessionSuspended     Kind = "suspended"             // a session no longer shown, still running (Reason says why)
	SessionDestroyed     Kind = "destroyed"             // a session ended (Reason says why)
	SessionLocked        Kind = "locked"                // an administrator locked a session already suspended: its next resume asks a login (a shown one is suspended instead)
	SessionOrphaned      Kind = "orphaned"              // a session's token is claimed by another server's session (Target: that server)
	SessionRestored      Kind = "restored"              // an orphan given back to its token, which had no session any more (a resumed follows)
	TerminalRedirected   Kind = "redirect"              // a terminal was sent to the server owning its token (Target: that server)
	LoginGranted         Kind = "login_granted"         // a user authenticated at a terminal
	LoginRefused         Kind = "login_refused"         // an authentication at a terminal failed
	LoginLockout         Kind = "lockout"               // a login was refused: too many failed ones before it (lockout)
	ServerJoined         Kind = "server_joined"         // a server joined the group
	ServerLeft           Kind = "server_left"           // a server left the group (clean stop or lease expiry)
	ServerDraining       Kind = "server_draining"       // a server was set draining: it takes no new sessions
	ServerUndrained      Kind = "server_undrained"      // a server's draining was lifted
	TokenRegistered      Kind = "token_registered"      // a token was enrolled for User: by an admin (Reason "by <who>"), by a pairing code at Terminal, or a card by its own first login at Terminal (Reason "self-registration")
	TokenDisabled        Kind = "token_disabled"        // an admin disabled a token (its sessions are locked, new ones refused)
	TokenEnabled         Kind = "token_enabled"         // an admin enabled a disabled token
	TokenDeleted         Kind = "token_deleted"         // an admin deleted a token's registration
)

// Event is one thing that happened in the group. Fields that do not apply
// to a kind are empty and left out of the JSON.
type Event struct {
	Kind     Kind      `json:"kind"`
	Time     time.Time `json:"time"`
	Server   string    `json:"server"` // the server that saw it happen (the one named, for membership kinds)
	Session  string    `json:"session,omitempty"`
	User     string    `json:"user,omitempty"`
	Token    string    `json:"token,omitempty"`
	Terminal string    `json:"terminal,omitempty"`
	// TerminalName and Remote describe the terminal (connect events).
	TerminalName string `json:"terminal_name,omitempty"`
	Remote       string `json:"remote,omitempty"`
	// Hops is how many redirects brought the terminal here.
	Hops int `json:"hops,omitempty"`
	// Target is the server a redirect sends to, the server that owns an
	// orphaned session's token, or the terminal a takeover took the session from.
	Target string `json:"target,omitempty"`
	Reason string `json:"reason,omitempty"`
}
