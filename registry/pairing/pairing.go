// Package pairing enrolls token keys with one-time pairing codes.
//
// An administrator asks for a code for a user (Create); the user types it
// at a terminal, which sends it with a freshly generated token public key
// and a signature with that key proving its possession (proto.Pair); the
// broker calls Redeem, which checks the proof and the code, consumes the
// code and enrolls the key as a token of that user. Without the proof,
// whoever held a code could enrol anybody's public key to the code's user
// (and that person's token would then log in to an account not theirs).
//
// A code reads "XXXX-XXXX-XXXX" in Crockford base32: the first group is the
// code's id (20 bits, the registry key), the other eight characters its
// secret (40 bits). The registry stores only a salted Argon2id hash of the
// secret (a salt per code; tens of milliseconds per check, so that whoever
// reads the registry cannot try the 2^40 secrets), under a lease of the
// code's lifetime. Codes stored by an earlier version as plain SHA-256 are
// accepted until they expire (minutes). The hashes run a few at a time
// (half the CPUs), and only for attempts the per-source limit let through:
// however many sources an attacker holds, checks use at most that share
// of the CPU, and a person's check waits its turn. Codes are single use: of any number of
// concurrent redemptions of one code exactly one enrolls its key. A
// redemption is idempotent for that key, though: the registry keeps a
// trace of it (the code's record and the token it enrolled) for as long
// as the code was valid, so a Pair whose answer was lost — a registry
// error of unknown outcome after the transaction committed, or an answer
// that never arrived — succeeds when sent again with the same code and
// key, instead of finding the code used; Redeem also reads back itself
// when a redemption's outcome is unknown.
//
// Guessing is bounded per source: a source (the terminal's address; the
// broker passes an IPv6 /64 as one, netsrc.Source) with
// too many failures within a window is locked out, and only that source:
// an attacker can lock out nobody but itself. An attempt counts from the
// moment it is let through, so a source's concurrent attempts share its
// budget (at most MaxFailures judged per window, not one per connection);
// an attempt that is no guess (a bad key, no proof, a registry error)
// gives its place back. A locked-out source is never forgotten to make
// room for others, and its refused attempts are logged once per burst. A code's secret is 40 bits,
// so wrong secrets never burn the code (that would let anyone who learns a
// code id deny its user the enrolment); a code that keeps getting wrong
// secrets is logged (every MaxWrongSecrets). A global limit over all
// sources exists (WithGlobalLimit) but is off by default: it would let one
// attacker stop every enrolment. The failure
// counters live in this Pairer's memory (bounded, least recently used
// evicted), so each broker of a group counts on its own. The peer is never
// told why a code was refused (ErrInvalidCode); logs say why, without ever
// containing a code's secret.
package pairing

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"runtime"
	"strconv"
	"time"

	"github.com/hashicorp/go-hclog"

	"github.com/hotdesk/hotdesk/internal/burstlog"
	"github.com/hotdesk/hotdesk/internal/clock"
	"github.com/hotdesk/hotdesk/internal/printable"
	"github.com/hotdesk/hotdesk/registry"
	"github.com/hotdesk/hotdesk/tokens/nfc"
	"github.com/hotdesk/hotdesk/tokens/soft"
)

// Errors. Test for them with errors.Is.
var (
	// ErrInvalidCode: the code is malformed, unknown, expired, already used
	// or its secret is wrong (deliberately not told apart).
	ErrInvalidCode = errors.New("pairing: invalid code")
	// ErrRateLimited: the source is locked out or the global limit is hit.
	ErrRateLimited = errors.New("pairing: rate limited")
	// ErrBadKey: the token kind is not supported or its key is malformed.
	ErrBadKey = errors.New("pairing: bad token key")
	// ErrNoProof: the request carries no proof of possession of its key
	// (a terminal of before proofs); the code is untouched.
	ErrNoProof = errors.New("pairing: no proof of possession")
	// ErrBadProof: the request's proof of possession does not verify
	// with its key; the code is untouched.
	ErrBadProof = errors.New("pairing: bad proof of possession")
	// ErrKeyEnrolled: the proven key is already enrolled as a token; the
	// code stays valid.
	ErrKeyEnrolled = errors.New("pairing: key already enrolled")
	// ErrBusy: every secret check slot stayed taken for SlotWait (a flood
	// of attempts from many sources); the attempt was not judged and the
	// code is untouched: try again shortly.
	ErrBusy = errors.New("pairing: busy")
)

// LockoutError is the ErrRateLimited of a source locked out after too many
// failed attempts: Remaining is how long it stays locked out (a terminal
// can tell the person when to try again, PROTOCOL.md §7.4).
type LockoutError struct {
	Remaining time.Duration
}

func (e *LockoutError) Error() string {
	return fmt.Sprintf("pairing: source locked out for %v", e.Remaining.Round(time.Second))
}

func (e *LockoutError) Unwrap() error { return ErrRateLimited }

// Request is one redemption: a Pair message and the connection it came on.
type Request struct {
	Code      string
	Kind      string // soft.Kind or nfc.KindHCE
	PublicKey []byte
	Label     string
	// Signature proves possession of PublicKey's private key: its ed25519
	// signature of soft.PairMessage(TerminalID, ServerID, Nonce, Code,
	// Kind, PublicKey), where TerminalID is the Hello's, and ServerID and
	// Nonce the broker's Welcome on the connection the Pair came on.
	Signature  []byte
	TerminalID string
	ServerID   string
	Nonce      []byte
}

// Defaults and limits.
const (
	DefaultMaxFailures   = 5
	DefaultFailureWindow = 15 * time.Minute
	DefaultLockout       = 15 * time.Minute
	// DefaultGlobalLimit 0: no global limit.
	DefaultGlobalLimit  = 0
	DefaultGlobalWindow = time.Minute
	// MaxWrongSecrets: every this many wrong secrets for one code, a
	// warning is logged (the code stays valid for its user).
	MaxWrongSecrets = 3
	// MaxAgain bounds the Pairs answered Paired again for one spent code
	// (a terminal sending its Pair again after the answer was lost, the
	// reference terminal up to 3 times; a phone tapped several times at
	// once): each costs a secret check and a token_registered event, so a
	// terminal that keeps sending it gets the used code's refusal after
	// these, counted as a guess.
	MaxAgain = 16
	// MaxLabelLen and MaxUserLen bound labels and user names, in bytes.
	MaxLabelLen = 128
	MaxUserLen  = 256
	// maxSourceLen bounds a source key kept in memory.
	maxSourceLen = 256
	// defaultMaxSources bounds the sources tracked; defaultMaxCodes the
	// codes whose wrong secrets are counted.
	defaultMaxSources = 10000
	defaultMaxCodes   = 10000
	// createAttempts bounds retries when a new code's id is taken.
	createAttempts = 8
	// refusalLogEvery: at most one "pairing attempt rate limited" line
	// per reason this often, with the count of refusals it stands for.
	refusalLogEvery = 10 * time.Second
	// readBackTimeout bounds the reads that resolve a redemption of
	// unknown outcome, made even if the request's context has ended.
	readBackTimeout = 10 * time.Second
)

// Store is the part of the registry pairing needs; *registry.Registry
// implements it.
type Store interface {
	// PutPairing stores p under a lease of ttl; registry.ErrExists if its id is taken.
	PutPairing(ctx context.Context, p registry.Pairing, ttl time.Duration) error
	// Pairing returns code id and its mod revision; registry.ErrNotFound if absent or expired.
	Pairing(ctx context.Context, id string) (registry.Pairing, int64, error)
	// RedeemPairing deletes code id and stores t at once, iff the code is
	// unchanged since modRev and t's id is not enrolled, and leaves the
	// trace RedeemedPairing reads; else nothing changes:
	// registry.ErrNotFound if the code is not as it was read (whether or
	// not t's id is enrolled), registry.ErrExists otherwise (t's id is
	// enrolled; the code stays valid). Other errors may leave the outcome
	// unknown (registry.OutcomeUnknown).
	RedeemPairing(ctx context.Context, id string, modRev int64, t registry.TokenRecord) error
	// RedeemedPairing returns the trace of code id's redemption (the code
	// as it was, TokenID the token it enrolled) until the code would have
	// expired; registry.ErrNotFound if there is none.
	RedeemedPairing(ctx context.Context, id string) (registry.Pairing, error)
	// Token returns the enrolled token id; registry.ErrNotFound if none.
	Token(ctx context.Context, id string) (registry.TokenRecord, error)
}

var (
	_ Store = (*registry.Store)(nil)
	_ Store = (*registry.Registry)(nil)
)

// Option configures a Pairer.
type Option func(*Pairer)

// WithClock sets the clock for expiry and rate limits (default clock.Real).
func WithClock(c clock.Clock) Option { return func(p *Pairer) { p.clk = c } }

// WithLogger sets the logger (default: none).
func WithLogger(l hclog.Logger) Option { return func(p *Pairer) { p.log = l } }

// WithLimits sets the per-source limit: maxFailures failed redemptions
// within window lock the source out for lockout. Non-positive values keep
// the defaults (5, 15 min, 15 min).
func WithLimits(maxFailures int, window, lockout time.Duration) Option {
	return func(p *Pairer) {
		if maxFailures > 0 {
			p.lim.maxFailures = maxFailures
		}
		if window > 0 {
			p.lim.window = window
		}
		if lockout > 0 {
			p.lim.lockout = lockout
		}
	}
}

// WithGlobalLimit lets at most n redemption attempts from all sources
// together through per window. Off by default: one attacker could use it
// up and stop every enrolment. Non-positive values keep it off.
func WithGlobalLimit(n int, window time.Duration) Option {
	return func(p *Pairer) {
		if n > 0 {
			p.lim.globalN = n
		}
		if window > 0 {
			p.lim.globalWindow = window
		}
	}
}

// WithMaxSources bounds the number of sources whose failures are tracked
// (default 10000); the least recently seen is forgotten first.
func WithMaxSources(n int) Option {
	return func(p *Pairer) {
		if n > 0 {
			p.maxSources = n
		}
	}
}

// Pairer creates and redeems pairing codes. It is safe for concurrent use.
type Pairer struct {
	store      Store
	clk        clock.Clock
	log        hclog.Logger
	lim        limiter
	maxSources int
	refusals   *burstlog.Logger // "pairing attempt rate limited", per reason
	// hashSlots bounds the slow secret hashes running at once (see
	// checkSecret): a check holds one while it hashes.
	hashSlots chan struct{}
	kdf       kdfParams // of the codes Create stores

	// wrong counts wrong secrets per code ("<id>@<modRev>") and Pairs
	// answered again per spent code ("again:<id>"), under lim.mu.
	wrong *lru[int]
}

// New returns a Pairer storing codes and tokens in store.
func New(store Store, opts ...Option) *Pairer {
	p := &Pairer{
		store: store,
		clk:   clock.Real{},
		log:   hclog.NewNullLogger(),
		lim: limiter{
			maxFailures:  DefaultMaxFailures,
			window:       DefaultFailureWindow,
			lockout:      DefaultLockout,
			globalN:      DefaultGlobalLimit,
			globalWindow: DefaultGlobalWindow,
		},
		maxSources: defaultMaxSources,
		kdf:        currentKDF,
	}
	for _, o := range opts {
		o(p)
	}
	p.lim.clk = p.clk
	p.lim.sources = newLRU[*sourceState](p.maxSources)
	p.wrong = newLRU[int](defaultMaxCodes)
	p.refusals = burstlog.New(p.log, refusalLogEvery, p.clk.Now)
	p.hashSlots = make(chan struct{}, max(1, runtime.GOMAXPROCS(0)/2))
	return p
}

// Create makes a new code for user, valid for ttl, and returns it as
// "XXXX-XXXX-XXXX" with its expiry. label becomes the token's label unless
// the redeeming terminal sends one; createdBy (the administrator) is
// recorded as "pairing:<createdBy>" in the enrolled token.
func (p *Pairer) Create(ctx context.Context, user, label, createdBy string, ttl time.Duration) (code string, expires time.Time, err error) {
	switch {
	case user == "" || len(user) > MaxUserLen || !printable.String(user):
		return "", time.Time{}, fmt.Errorf("pairing: create: user must be 1 to %d printable bytes", MaxUserLen)
	case len(label) > MaxLabelLen || !printable.String(label):
		return "", time.Time{}, fmt.Errorf("pairing: create: label must be at most %d printable bytes", MaxLabelLen)
	case len(createdBy) > MaxUserLen || !printable.String(createdBy):
		return "", time.Time{}, fmt.Errorf("pairing: create: created-by must be at most %d printable bytes", MaxUserLen)
	case ttl <= 0:
		return "", time.Time{}, fmt.Errorf("pairing: create: ttl %v is not positive", ttl)
	}
	for range createAttempts {
		canon, err := newCode()
		if err != nil {
			return "", time.Time{}, fmt.Errorf("pairing: create: %w", err)
		}
		id, secret := canon[:IDLen], canon[IDLen:]
		salt, sum, kdf, err := p.kdf.newHash(secret)
		if err != nil {
			return "", time.Time{}, fmt.Errorf("pairing: create: %w", err)
		}
		expires = p.clk.Now().Add(ttl)
		err = p.store.PutPairing(ctx, registry.Pairing{
			ID:            id,
			SecretHash:    sum,
			SecretSalt:    salt,
			SecretKDF:     kdf,
			User:          user,
			Label:         label,
			CreatedBy:     createdBy,
			ExpiresUnixMs: expires.UnixMilli(),
		}, ttl)
		if errors.Is(err, registry.ErrExists) {
			continue
		}
		if err != nil {
			return "", time.Time{}, fmt.Errorf("pairing: create: %w", err)
		}
		p.log.Info("pairing code created", "code_id", id, "user", user, "created_by", createdBy, "expires", expires)
		return format(canon), expires, nil
	}
	return "", time.Time{}, fmt.Errorf("pairing: create: no free code id after %d attempts", createAttempts)
}

// Enrolment is what a successful Redeem enrolled.
type Enrolment struct {
	registry.TokenRecord
	// Again is set when an earlier redemption enrolled the token (this
	// Pair, sent again after its answer was lost, or the same Pair
	// racing it): the enrolment was already reported once, if its
	// answer reached the broker.
	Again bool
}

// Redeem checks req and, if its code is valid and its key proven, consumes
// the code and enrolls req.PublicKey as a token of the code's user: ID
// soft.TokenID(pub) for kind "soft", nfc.HCETokenID(pub) for "hce" (pub a
// 32-byte ed25519 key either way), Label the requested label or else the
// code's, RegisteredBy "pairing:<createdBy>".
//
// source identifies the requester (terminal id and remote address) for rate
// limiting, which is checked first: a locked-out source, one with as many
// attempts in flight as it has failures left, or any source while the
// global limit is hit, gets ErrRateLimited whatever the code (logged once
// per burst per reason). A bad kind,
// key or label is ErrBadKey; a missing signature ErrNoProof (the code is
// untouched by both). Then the proof of possession is verified, before the
// code is looked at: a signature that does not verify (another key's, one
// over another connection's nonce or another code, a login proof) is
// ErrBadProof, counts as a failure of source like a wrong code, and
// neither reads nor consumes the code, so a person who holds a code cannot
// enrol a key they do not hold, and a forged proof does not burn the
// code of the person it was meant for. A malformed, unknown, expired, used
// or wrong code is ErrInvalidCode and counts as a failure of source; the
// secret's hash is compared in constant time, and an unknown code costs a
// hash too (wrong secrets do not burn a code).
// The code is consumed and the key enrolled in one registry transaction:
// a key already enrolled (as a token of anyone) is ErrKeyEnrolled and
// leaves the code valid. Registry failures are returned wrapped.
//
// A redemption is idempotent for the key it enrolled. If the transaction's
// outcome is unknown (a timeout or a leader change after etcd may have
// committed it; registry.OutcomeUnknown), Redeem reads back, even if ctx
// has ended: a redemption that was applied is a success like any other,
// and one that was not, or that cannot be read back, is returned as the
// registry failure it is (the code may or may not be consumed). A Pair
// sent again with the same code and key then finds the code gone and
// the trace its redemption left (kept as long as the code was valid):
// with the code's secret, for the token of that key, enrolled with that
// key for the code's user, it succeeds again, returning the token's
// record (Enrolment.Again), neither counted as a failure of source nor as
// a success (which would forget its failures). Any other key, or the same key after the
// code's validity, finds the code used (ErrInvalidCode, counted).
func (p *Pairer) Redeem(ctx context.Context, source string, req Request) (Enrolment, error) {
	if len(source) > maxSourceLen {
		source = source[:maxSourceLen]
	}
	if r := p.lim.allow(source); r != allowed {
		// Once per reason per refusalLogEvery, with the count: a
		// locked-out source's flood costs a line, not a line each.
		p.refusals.Warn(r.String(), "pairing attempt rate limited", "source", source)
		if r == sourceLocked {
			if d := p.lim.lockedFor(source); d > 0 {
				return Enrolment{}, fmt.Errorf("pairing: redeem: %w", &LockoutError{Remaining: d})
			}
		}
		return Enrolment{}, fmt.Errorf("pairing: redeem: %w", ErrRateLimited)
	}
	// The attempt is reserved (counted as a failure of source until it is
	// judged): every return below fails it (a guess), succeeds, or
	// releases it (no guess).
	a := &attempt{p: p, source: source}
	defer a.releaseUnjudged()
	enr, err := p.redeem(ctx, a, req)
	if err != nil {
		return Enrolment{}, fmt.Errorf("pairing: redeem: %w", err)
	}
	return enr, nil
}

// attempt is one redemption, reserved in the limiter for its source until
// it is judged a failed guess or a success; one judged neither (no guess:
// a bad request, a registry failure, a redemption answered again) is
// released when Redeem returns.
type attempt struct {
	p      *Pairer
	source string
	judged bool
}

// guessed judges the attempt a failed guess of its source and logs msg
// (with the source and args) at info, the lockout it may cause at warn.
func (a *attempt) guessed(msg string, args ...any) {
	a.judged = true
	locked := a.p.lim.fail(a.source)
	a.p.log.Info(msg, append([]any{"source", a.source}, args...)...)
	if locked {
		a.p.log.Warn("pairing source locked out", "source", a.source, "lockout", a.p.lim.lockout)
	}
}

// refuse judges the attempt a failed guess of the code codeID (for the
// reason given) and returns ErrInvalidCode.
func (a *attempt) refuse(reason, codeID string) (Enrolment, error) {
	a.guessed("pairing code refused", "code_id", codeID, "reason", reason)
	return Enrolment{}, ErrInvalidCode
}

func (a *attempt) succeed() {
	a.judged = true
	a.p.lim.succeed(a.source)
}

func (a *attempt) releaseUnjudged() {
	if !a.judged {
		a.p.lim.release(a.source)
	}
}

// redeem is Redeem once the attempt is reserved: the request is checked,
// its proof verified, its code looked up and its secret checked; errors
// are returned without Redeem's prefix.
func (p *Pairer) redeem(ctx context.Context, a *attempt, req Request) (Enrolment, error) {
	tokenID, err := keyID(req.Kind, req.PublicKey)
	if err != nil {
		return Enrolment{}, err
	}
	if len(req.Label) > MaxLabelLen || !printable.String(req.Label) {
		return Enrolment{}, fmt.Errorf("%w: label must be at most %d printable bytes", ErrBadKey, MaxLabelLen)
	}
	if len(req.Signature) == 0 {
		return Enrolment{}, fmt.Errorf("%w: the pair request has no signature", ErrNoProof)
	}
	if err := verifyProof(req); err != nil {
		a.guessed("pairing refused: proof of possession failed", "token_id", tokenID, "error", err)
		return Enrolment{}, err
	}
	id, secret, err := ParseCode(req.Code)
	if err != nil {
		return a.refuse("malformed", "")
	}
	pr, rev, err := p.store.Pairing(ctx, id)
	if errors.Is(err, registry.ErrNotFound) {
		return p.redeemGone(ctx, a, id, secret, tokenID, req)
	}
	if err != nil {
		return Enrolment{}, err
	}
	ok, err := p.checkSecret(ctx, secret, pr.SecretSalt, pr.SecretHash, pr.SecretKDF)
	if errors.Is(err, errKDF) {
		p.log.Warn("pairing code refused: its stored hash is of an unknown kind", "code_id", id, "error", err)
		return a.refuse("unsupported secret hash", id)
	}
	if err != nil {
		return Enrolment{}, err
	}
	if !ok {
		if n := p.countWrong(id, rev); n%MaxWrongSecrets == 0 {
			p.log.Warn("pairing code keeps getting wrong secrets", "code_id", id, "user", pr.User, "wrong_secrets", n)
		}
		return a.refuse("wrong secret", id)
	}
	return p.enrol(ctx, a, pr, rev, tokenID, req)
}

// redeemGone answers a code id that names no pending code. Perhaps it was
// redeemed for this very key by a Pair whose answer was lost: the trace of
// the redemption holds the code's secret hash, checked as the code's would
// be. Without a trace, as long as a wrong secret takes: the time of the
// answer does not tell which code ids are pending.
func (p *Pairer) redeemGone(ctx context.Context, a *attempt, id, secret, tokenID string, req Request) (Enrolment, error) {
	used, err := p.store.RedeemedPairing(ctx, id)
	salt, sum, kdf := dummySalt, []byte(nil), p.kdf.String()
	switch {
	case err == nil:
		salt, sum, kdf = used.SecretSalt, used.SecretHash, used.SecretKDF
	case !errors.Is(err, registry.ErrNotFound):
		return Enrolment{}, err
	}
	ok, err := p.checkSecret(ctx, secret, salt, sum, kdf)
	if errors.Is(err, errKDF) {
		return a.refuse("unsupported secret hash", id)
	}
	if err != nil {
		return Enrolment{}, err
	}
	if ok {
		tok, again, err := p.enrolledBy(ctx, used, tokenID, req.Kind, req.PublicKey)
		if err != nil {
			return Enrolment{}, err
		}
		if again && p.countAgain(id) <= MaxAgain {
			// No guess, and no new success either: the attempt is
			// released.
			p.log.Info("pairing code redeemed again by the key it enrolled", "code_id", id, "token_id", tokenID, "user", tok.User, "source", a.source)
			return Enrolment{TokenRecord: tok, Again: true}, nil
		}
	}
	return a.refuse("unknown, expired or used", id)
}

// enrol consumes the pending code pr (at revision rev) and enrolls the
// request's key as tokenID, in one transaction: a key already enrolled
// leaves the code valid.
func (p *Pairer) enrol(ctx context.Context, a *attempt, pr registry.Pairing, rev int64, tokenID string, req Request) (Enrolment, error) {
	label := req.Label
	if label == "" {
		label = pr.Label
	}
	rec := registry.TokenRecord{
		ID:               tokenID,
		Kind:             req.Kind,
		PublicKey:        append([]byte(nil), req.PublicKey...),
		User:             pr.User,
		Label:            label,
		RegisteredBy:     "pairing:" + pr.CreatedBy,
		RegisteredUnixMs: p.clk.Now().UnixMilli(),
	}
	switch err := p.store.RedeemPairing(ctx, pr.ID, rev, rec); {
	case errors.Is(err, registry.ErrExists):
		// The sender proved it holds the key: telling it the key is
		// enrolled tells it nothing about anyone else's. Not a guess.
		p.log.Info("pairing refused: key already enrolled", "source", a.source, "code_id", pr.ID, "token_id", tokenID)
		return Enrolment{}, fmt.Errorf("token %s: %w", tokenID, ErrKeyEnrolled)
	case errors.Is(err, registry.ErrNotFound):
		// Lost a race with another redemption of the same code: not a
		// guess, so not counted against source. If that one enrolled
		// this very key (the Pair sent twice, or again while the first
		// was in flight), this one succeeded as well.
		tok, again, err := p.redeemedFor(ctx, pr, tokenID, req.Kind, req.PublicKey)
		if err != nil {
			return Enrolment{}, err
		}
		if again {
			p.log.Info("pairing code redeemed again by the key it enrolled", "code_id", pr.ID, "token_id", tokenID, "user", tok.User, "source", a.source)
			return Enrolment{TokenRecord: tok, Again: true}, nil
		}
		p.log.Info("pairing code refused", "source", a.source, "code_id", pr.ID, "reason", "consumed concurrently")
		return Enrolment{}, ErrInvalidCode
	case registry.OutcomeUnknown(err):
		// etcd may have committed the transaction: telling the terminal
		// to try again would send it to a spent code. Read back, even
		// if ctx has ended (the terminal left; the audit stays right).
		rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), readBackTimeout)
		tok, applied, rerr := p.redeemedFor(rctx, pr, tokenID, req.Kind, req.PublicKey)
		cancel()
		if rerr != nil {
			p.log.Warn("pairing outcome unknown: the code may be consumed and the key enrolled", "source", a.source, "code_id", pr.ID, "token_id", tokenID, "error", err, "read_back_error", rerr)
			return Enrolment{}, fmt.Errorf("outcome unknown (read back: %v): %w", rerr, err)
		}
		if !applied {
			return Enrolment{}, fmt.Errorf("not applied: %w", err)
		}
		p.log.Info("pairing redemption of unknown outcome read back as applied", "code_id", pr.ID, "token_id", tokenID, "error", err)
		rec = tok
	case err != nil:
		return Enrolment{}, err
	}
	p.forgetWrong(pr.ID, rev)
	a.succeed()
	p.log.Info("token enrolled by pairing code", "code_id", pr.ID, "token_id", tokenID, "user", pr.User, "source", a.source)
	return Enrolment{TokenRecord: rec}, nil
}

// redeemedFor reports whether code pr was redeemed for tokenID, of kind
// with key pub, and the token is still enrolled so (enrolledBy); tok is
// its record.
func (p *Pairer) redeemedFor(ctx context.Context, pr registry.Pairing, tokenID, kind string, pub []byte) (tok registry.TokenRecord, ok bool, err error) {
	used, err := p.store.RedeemedPairing(ctx, pr.ID)
	if errors.Is(err, registry.ErrNotFound) {
		return registry.TokenRecord{}, false, nil
	}
	if err != nil {
		return registry.TokenRecord{}, false, err
	}
	if !bytes.Equal(used.SecretSalt, pr.SecretSalt) || !bytes.Equal(used.SecretHash, pr.SecretHash) {
		return registry.TokenRecord{}, false, nil // another code of that id
	}
	return p.enrolledBy(ctx, used, tokenID, kind, pub)
}

// enrolledBy reports whether the redemption that left the trace used
// enrolled tokenID, and the token is still enrolled with kind and key pub
// for the code's user; tok is its record.
func (p *Pairer) enrolledBy(ctx context.Context, used registry.Pairing, tokenID, kind string, pub []byte) (tok registry.TokenRecord, ok bool, err error) {
	if used.TokenID != tokenID {
		return registry.TokenRecord{}, false, nil
	}
	tok, err = p.store.Token(ctx, tokenID)
	if errors.Is(err, registry.ErrNotFound) {
		return registry.TokenRecord{}, false, nil // deleted since
	}
	if err != nil {
		return registry.TokenRecord{}, false, err
	}
	return tok, tok.Kind == kind && bytes.Equal(tok.PublicKey, pub) && tok.User == used.User, nil
}

// verifyProof checks req.Signature over soft.PairMessage of req; any
// failure is ErrBadProof.
func verifyProof(req Request) error {
	msg, err := soft.PairMessage(req.TerminalID, req.ServerID, req.Nonce, req.Code, req.Kind, req.PublicKey)
	if err != nil {
		return fmt.Errorf("%w: %w", ErrBadProof, err)
	}
	if err := soft.Verify(req.PublicKey, msg, req.Signature); err != nil {
		return fmt.Errorf("%w: %w", ErrBadProof, err)
	}
	return nil
}

// maxKindLen bounds how much of an unsupported kind an error quotes (a
// token type is at most 16 letters).
const maxKindLen = 32

// keyID validates a token key of kind and returns its token id. A key of
// small order (soft.WeakKey) is refused: anyone could prove possession of it.
func keyID(kind string, pub []byte) (string, error) {
	if (kind == soft.Kind || kind == nfc.KindHCE) && soft.WeakKey(pub) {
		return "", fmt.Errorf("%w: %s public key is a point of small order (anyone could sign for it)", ErrBadKey, kind)
	}
	switch kind {
	case soft.Kind:
		if len(pub) != 32 {
			return "", fmt.Errorf("%w: soft public key is %d bytes; want 32", ErrBadKey, len(pub))
		}
		return soft.TokenID(pub), nil
	case nfc.KindHCE:
		// A phone by host card emulation: an ed25519 key like a soft token,
		// its id derived from the key, not from the (random) UID.
		if len(pub) != 32 {
			return "", fmt.Errorf("%w: phone public key is %d bytes; want 32", ErrBadKey, len(pub))
		}
		return nfc.HCETokenID(pub), nil
	}
	if len(kind) > maxKindLen { // the peer's text, logged by the caller
		kind = kind[:maxKindLen] + "…"
	}
	return "", fmt.Errorf("%w: unsupported token kind %q", ErrBadKey, kind)
}

// countWrong counts one more wrong secret for code id at revision rev and
// returns the count.
func (p *Pairer) countWrong(id string, rev int64) int {
	return p.count(id + "@" + strconv.FormatInt(rev, 10))
}

// countAgain counts one more Pair answered again for spent code id and
// returns how many there were.
func (p *Pairer) countAgain(id string) int { return p.count("again:" + id) }

// count adds one to the count of k (p.wrong) and returns it.
func (p *Pairer) count(k string) int {
	p.lim.mu.Lock()
	defer p.lim.mu.Unlock()
	n, _ := p.wrong.get(k)
	n++
	p.wrong.put(k, n)
	return n
}

func (p *Pairer) forgetWrong(id string, rev int64) {
	p.lim.mu.Lock()
	defer p.lim.mu.Unlock()
	p.wrong.remove(id + "@" + strconv.FormatInt(rev, 10))
}
