package proto

// Version is the terminal↔broker protocol version this package speaks.
const Version = 1

// Type identifies a message on the wire. Values are part of the protocol:
// never renumber, only append (see PROTOCOL.md).
type Type uint16

const (
	TypeHello         Type = 1  // terminal → broker, first frame
	TypeWelcome       Type = 2  // broker → terminal, answer to Hello
	TypeTokenInserted Type = 3  // terminal → broker
	TypeTokenRemoved  Type = 4  // terminal → broker
	TypeChallenge     Type = 5  // broker → terminal: prove possession of a token key
	TypeProof         Type = 6  // terminal → broker: signature over a Challenge
	TypeAuthPrompt    Type = 7  // broker → terminal: a PAM-style prompt
	TypeAuthAnswer    Type = 8  // terminal → broker
	TypeAttached      Type = 9  // broker → terminal
	TypeDetached      Type = 10 // broker → terminal
	TypeRedirect      Type = 11 // broker → terminal
	TypeError         Type = 12 // either direction
	TypePing          Type = 13 // either direction
	TypePong          Type = 14 // either direction
	TypePair          Type = 15 // terminal → broker: enroll a token key with a pairing code
	TypePaired        Type = 16 // broker → terminal
	TypeCardError     Type = 17 // terminal → broker: a token device could not be read
	TypeCancel        Type = 18 // either direction: abandon an outstanding Challenge or AuthPrompt
	TypeAttach        Type = 19 // terminal → broker, on the attach listener: redeem a ticket
	TypeAttachOK      Type = 20 // broker → terminal, on the attach listener: the display stream follows
)

// Hello is the terminal's first frame.
type Hello struct {
	// Versions lists the protocol versions the terminal speaks; the broker picks one.
	Versions []uint16 `cbor:"1,keyasint"`
	// TerminalID is a stable identifier of the terminal (e.g. derived from its
	// hardware or configured); it is shown to administrators and bound into challenges.
	TerminalID string `cbor:"2,keyasint"`
	// Name is a human label for the terminal (location, desk number).
	Name string `cbor:"3,keyasint,omitempty"`
	// Hops counts redirects followed to reach this broker (loop guard, ≤ 3).
	Hops uint8 `cbor:"4,keyasint,omitempty"`
	// Fence is the fencing value from the Redirect that led here (0 if none).
	Fence int64 `cbor:"5,keyasint,omitempty"`
	// Token is the token the redirect was about, re-reported by the terminal
	// after Welcome as a TokenInserted; carried here only for logging.
	Token string `cbor:"6,keyasint,omitempty"`
}

// Welcome answers Hello.
type Welcome struct {
	Version  uint16 `cbor:"1,keyasint"`
	ServerID string `cbor:"2,keyasint"`
	// Nonce is fresh per connection; it is bound into token challenges.
	Nonce []byte `cbor:"3,keyasint"`
	// PingInterval, in milliseconds, is how often the broker expects traffic.
	PingInterval uint32 `cbor:"4,keyasint,omitempty"`
	// Members are the brokers of the server group as the group registry
	// lists them (PROTOCOL.md §11), at most MaxMembers; a terminal may
	// connect to and trust any of them.
	Members []Member `cbor:"5,keyasint,omitempty"`
}

// MaxMembers bounds Welcome.Members (the decoder's array limit).
const MaxMembers = 64

// Member is one broker of the server group, as published in its registry
// server record.
type Member struct {
	ServerID string `cbor:"1,keyasint"`
	// Addr is the broker's advertised terminal address, host:port.
	Addr string `cbor:"2,keyasint"`
	// Fingerprint is the SHA-256 of its certificate (32 bytes).
	Fingerprint []byte `cbor:"3,keyasint"`
	// Draining members take no new sessions; terminals prefer others.
	Draining bool `cbor:"4,keyasint,omitempty"`
}

// TokenInserted reports a token presented at the terminal.
type TokenInserted struct {
	// Token is the typed token id, "<type>.<id>" (soft.…, uid.…, piv.…, hce.…).
	Token string `cbor:"1,keyasint"`
	// Reader names the reader or provider slot where it was presented.
	Reader string `cbor:"2,keyasint,omitempty"`
	// Resume is the ResumeKey of the last Attached for this token, sent
	// when presenting it again on a new connection after the one that
	// showed its session was lost (the token never left): within the
	// broker's grace the session is resumed without a login prompt.
	Resume []byte `cbor:"3,keyasint,omitempty"`
}

// ResumeKeyLen is the length of Attached.ResumeKey.
const ResumeKeyLen = 32

// TokenRemoved reports that a token left the terminal.
type TokenRemoved struct {
	Token  string `cbor:"1,keyasint"`
	Reader string `cbor:"2,keyasint,omitempty"`
}

// Challenge asks the terminal to prove possession of Token's private key by
// signing SignedChallenge(...) (see tokens/soft and PROTOCOL.md).
type Challenge struct {
	ID    uint32 `cbor:"1,keyasint"`
	Token string `cbor:"2,keyasint"`
	Nonce []byte `cbor:"3,keyasint"`
	// ServerID is the broker's id; it is part of the signed message.
	ServerID string `cbor:"4,keyasint"`
}

// Proof answers a Challenge.
type Proof struct {
	ID        uint32 `cbor:"1,keyasint"`
	Token     string `cbor:"2,keyasint"`
	Signature []byte `cbor:"3,keyasint"`
}

// PromptStyle mirrors PAM's message styles.
type PromptStyle uint8

const (
	PromptEchoOff PromptStyle = 1 // secret input (password, PIN)
	PromptEchoOn  PromptStyle = 2 // visible input (user name)
	PromptError   PromptStyle = 3 // error text, no answer expected
	PromptInfo    PromptStyle = 4 // informational text, no answer expected
)

// AuthPrompt is one turn of an authentication conversation.
type AuthPrompt struct {
	ID    uint32      `cbor:"1,keyasint"`
	Style PromptStyle `cbor:"2,keyasint"`
	Text  string      `cbor:"3,keyasint"`
	// Token is the token whose login asks (optional: a terminal with
	// several tokens inserted shows whose prompt it is).
	Token string `cbor:"4,keyasint,omitempty"`
}

// AuthAnswer answers an AuthPrompt with style EchoOff or EchoOn.
type AuthAnswer struct {
	ID   uint32 `cbor:"1,keyasint"`
	Text string `cbor:"2,keyasint"`
}

// Attached tells the terminal which session it now shows.
type Attached struct {
	SessionID string `cbor:"1,keyasint"`
	Token     string `cbor:"2,keyasint"`
	User      string `cbor:"3,keyasint,omitempty"`
	// Endpoint says where the display stream is (e.g. "wayland:/path/sock",
	// "rdp://host:port").
	Endpoint string `cbor:"4,keyasint"`
	// Ticket is a single-use credential for Endpoint.
	Ticket []byte `cbor:"5,keyasint,omitempty"`
	// Resumed is true when an existing session was resumed or taken over.
	Resumed bool `cbor:"6,keyasint,omitempty"`
	// ServerID names the broker that owns the session.
	ServerID string `cbor:"7,keyasint"`
	// ResumeKey (ResumeKeyLen random bytes, new at each Attached) is what
	// the terminal sends back in TokenInserted.Resume if its connection is
	// lost while it shows the session: proof that it is the terminal that
	// showed it.
	ResumeKey []byte `cbor:"8,keyasint,omitempty"`
}

// DetachReason says why a terminal lost its session.
type DetachReason uint8

const (
	DetachTokenRemoved DetachReason = 1 // token pulled: session suspended
	DetachTakeover     DetachReason = 2 // the token was presented at another terminal
	DetachDestroyed    DetachReason = 3 // session ended (timeout, admin kill, compositor exit)
	DetachShutdown     DetachReason = 4 // broker shutting down
	DetachAdmin        DetachReason = 5 // administrator detached the session
	DetachLocked       DetachReason = 6 // token disabled or lease lost: session locked
)

// Detached tells the terminal it no longer shows SessionID.
type Detached struct {
	SessionID string       `cbor:"1,keyasint"`
	Reason    DetachReason `cbor:"2,keyasint"`
	Message   string       `cbor:"3,keyasint,omitempty"`
	// Terminal names the terminal that took the session over (Reason == DetachTakeover).
	Terminal string `cbor:"4,keyasint,omitempty"`
}

// Redirect sends the terminal to the broker that owns the token's session.
type Redirect struct {
	Token    string `cbor:"1,keyasint"`
	ServerID string `cbor:"2,keyasint"`
	Addr     string `cbor:"3,keyasint"`
	// Fingerprint is the SHA-256 of the target broker's certificate (DER),
	// as published in the group registry; the terminal must pin it.
	Fingerprint []byte `cbor:"4,keyasint"`
	// Fence is the create revision of the session's claim in the registry.
	Fence int64 `cbor:"5,keyasint"`
}

// ErrorCode classifies an Error message.
type ErrorCode uint16

const (
	ErrBadFrame       ErrorCode = 1  // malformed, oversized or undecodable frame; connection closes
	ErrBadVersion     ErrorCode = 2  // no common protocol version; connection closes
	ErrProtocol       ErrorCode = 3  // message not valid in this state; connection closes
	ErrUnknownToken   ErrorCode = 4  // token not enrolled / unknown
	ErrAuthFailed     ErrorCode = 5  // authentication or proof failed
	ErrRateLimited    ErrorCode = 6  // too many attempts; try later
	ErrUnavailable    ErrorCode = 7  // broker not ready (no registry lease, draining, full)
	ErrInternal       ErrorCode = 8  // broker-side failure
	ErrPairing        ErrorCode = 9  // pairing code invalid, expired or used
	ErrTooManyHops    ErrorCode = 10 // redirect loop guard
	ErrStaleFence     ErrorCode = 11 // redirect fence older than the current owner's
	ErrTokenDisabled  ErrorCode = 12 // token disabled by an administrator
	ErrCompositor     ErrorCode = 13 // the session could not be created
	ErrCardError      ErrorCode = 14 // a card could not be identified
	ErrSessionLimited ErrorCode = 15 // user reached the maximum number of sessions
	ErrCancelled      ErrorCode = 16 // the insert was abandoned: its token was removed (e.g. mid-challenge)
)

// Error reports a failure. Token, when set, names the token the error is about.
type Error struct {
	Code    ErrorCode `cbor:"1,keyasint"`
	Message string    `cbor:"2,keyasint"`
	Token   string    `cbor:"3,keyasint,omitempty"`
	// Detail refines Code for a terminal to act on (one of the Detail…
	// constants; a terminal ignores one it does not know), and
	// RetryAfterMs says when trying again can succeed (a lockout's end).
	Detail       string `cbor:"4,keyasint,omitempty"`
	RetryAfterMs uint32 `cbor:"5,keyasint,omitempty"`
}

// Error details (Error.Detail): what the Message says in words, for the
// terminal to act on without reading it.
const (
	DetailLockedOut      = "locked_out"      // rate_limited: refused, locked out after failed logins (RetryAfterMs: until when)
	DetailLockoutStarted = "lockout_started" // auth_failed: this failure locked the token, user or terminal out (RetryAfterMs)
	DetailNoAnswer       = "no_answer"       // auth_failed: nothing was answered in time (not a wrong secret)
	DetailDeclined       = "declined"        // auth_failed: the person declined a prompt at the terminal (Cancel)
	DetailKeyRefused     = "key_refused"     // pairing: the key, kind or label was refused; the code is still valid
	DetailProofRefused   = "proof_refused"   // pairing: the Pair's Signature is missing or does not prove the key; the code is still valid
	DetailKeyEnrolled    = "key_enrolled"    // pairing: the proven key is enrolled already (present the token); the code is still valid
)

// Ping asks the peer for a Pong with the same Seq.
type Ping struct {
	Seq uint64 `cbor:"1,keyasint"`
}

// Pong answers Ping.
type Pong struct {
	Seq uint64 `cbor:"1,keyasint"`
}

// MaxPairCodeLen bounds Pair.Code: a longer code is never valid, and a
// terminal does not send it (nor ask a phone to sign it).
const MaxPairCodeLen = 64

// Pair enrolls a token public key with a one-time pairing code.
type Pair struct {
	Code string `cbor:"1,keyasint"`
	// Kind is the token type ("soft" for ed25519 software tokens, "hce"
	// for phones).
	Kind      string `cbor:"2,keyasint"`
	PublicKey []byte `cbor:"3,keyasint"`
	Label     string `cbor:"4,keyasint,omitempty"`
	// Signature proves possession of PublicKey's private key: its
	// ed25519 signature of tokens/soft.PairMessage(TerminalID of the
	// Hello, Welcome.ServerID, Welcome.Nonce, Code, Kind, PublicKey)
	// (PROTOCOL.md §8.4). A Pair without one is refused.
	Signature []byte `cbor:"5,keyasint"`
}

// Paired confirms an enrollment.
type Paired struct {
	Token string `cbor:"1,keyasint"`
	User  string `cbor:"2,keyasint,omitempty"`
}

// CardError reports a token device that could not be identified.
type CardError struct {
	Reader  string `cbor:"1,keyasint"`
	Message string `cbor:"2,keyasint"`
}

// Cancel abandons an outstanding Challenge or AuthPrompt with the given ID.
type Cancel struct {
	ID uint32 `cbor:"1,keyasint"`
}

// Attach is the first and only frame a terminal sends on the broker's
// attach listener: it redeems the single-use Ticket of an Attached message.
// After AttachOK the connection carries the session's display stream.
type Attach struct {
	Ticket     []byte `cbor:"1,keyasint"`
	TerminalID string `cbor:"2,keyasint"`
}

// AttachOK accepts an Attach; every byte after it is the display stream.
type AttachOK struct {
	SessionID string `cbor:"1,keyasint"`
}
