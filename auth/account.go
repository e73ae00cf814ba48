package auth

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"sync"
	"time"

	"github.com/hotdesk/hotdesk/internal/clock"
	"github.com/hotdesk/hotdesk/internal/defaults"
	"github.com/hotdesk/hotdesk/internal/netsrc"
)

// ErrAccount is wrapped, together with ErrDenied, when the account stack
// (PAM's pam_acct_mgmt: account expired or locked, pam_nologin,
// access.conf, a directory's disabled account) refuses a user whom no
// secret was asked of. Such a refusal is an administrator's decision, not
// a guess: the Limiter counts it against the token alone (not the user,
// terminal or source), so that a refused card presented again and again is
// locked out rather than checked each time.
var ErrAccount = errors.New("auth: account refused")

// ErrAccountExpired is wrapped, together with ErrAccount or a login's
// denial, when the account has expired (PAM_ACCT_EXPIRED), for the
// terminal to be told so.
var ErrAccountExpired = errors.New("auth: account expired")

// ErrNoAccountCheck is returned when a login needs an account check and none is
// configured (Chooser.Accounts unset and its Services cannot check
// accounts). The login is refused: a disabled account must not get in for
// want of a checker.
var ErrNoAccountCheck = errors.New("auth: no account check configured")

// AccountChecker consults the account stack of a PAM service for
// req.User without authenticating (pam_acct_mgmt only, with PAM_TTY and
// PAM_RHOST as for a login). It returns nil if the account may log in, an
// error wrapping ErrDenied and ErrAccount if the account stack refused
// it, and any other error if the check could not be made (which callers
// treat as a refusal too). It never prompts the person at the terminal.
// It must be safe for concurrent use and return promptly when ctx ends.
type AccountChecker interface {
	CheckAccount(ctx context.Context, service string, req Request) error
}

// SessionOpener opens the login session of a user granted without a
// secret (a card login that starts a new desktop), as a password login
// opens one after authenticating: pam_acct_mgmt (with PAM_TTY and
// PAM_RHOST as for a login; refusals as AccountChecker's), then
// pam_setcred(ESTABLISH) and pam_open_session — no pam_authenticate, and
// like an account check it never prompts the person at the terminal. The
// Result carries the Session (and Env) the caller owns as a login's; an
// error means no session is open. It must be safe for concurrent use and
// return promptly when ctx ends. auth/pam's Authenticator implements it.
type SessionOpener interface {
	OpenSessionWithoutSecret(ctx context.Context, service string, req Request) (Result, error)
}

// AccountCacheConfig configures an AccountCache. Zero fields take the
// defaults.
type AccountCacheConfig struct {
	// TTL is how long a positive answer is reused (default 60 s): an
	// account disabled meanwhile keeps access for at most this long.
	TTL time.Duration
	// Max bounds the entries kept (default 4096); when full, expired
	// entries are dropped, then the oldest.
	Max int
	// Clock is the time source (default clock.Real).
	Clock clock.Clock
}

// AccountCache is an AccountChecker that remembers positive answers of
// next for a short bounded time, so that hot-desking back and forth does
// not start a PAM helper every time. Refusals and errors are never kept.
// Answers are keyed by everything the account stack sees: the service,
// the user, PAM_RHOST (the terminal's address) and PAM_TTY (its id), so a
// rule of access.conf that depends on the terminal is never bypassed by
// an answer given for another one. It is safe for concurrent use; its
// memory is bounded by Max.
type AccountCache struct {
	next AccountChecker
	cfg  AccountCacheConfig
	clk  clock.Clock

	mu sync.Mutex
	// ok holds, by key, when each positive answer was given; guarded by mu.
	ok map[string]time.Time
	// gen counts Forget calls (guarded by mu): an answer to a check that
	// started before one is not kept.
	gen uint64
	// swept is when expired answers were last dropped (guarded by mu):
	// once a TTL, so the cache holds the answers of the last two TTLs,
	// not every terminal and user seen until Max of them are.
	swept time.Time
}

var _ AccountChecker = (*AccountCache)(nil)

// NewAccountCache returns an AccountCache in front of next.
func NewAccountCache(next AccountChecker, cfg AccountCacheConfig) *AccountCache {
	defaults.Set(&cfg.TTL, 60*time.Second)
	defaults.Set(&cfg.Max, 4096)
	c := &AccountCache{next: next, cfg: cfg, clk: cfg.Clock, ok: map[string]time.Time{}}
	if c.clk == nil {
		c.clk = clock.Real{}
	}
	return c
}

// CheckAccount implements AccountChecker.
func (c *AccountCache) CheckAccount(ctx context.Context, service string, req Request) error {
	key := accountKey(service, req)
	c.mu.Lock()
	at, hit := c.ok[key]
	now := c.clk.Now()
	if hit && now.Sub(at) >= 0 && now.Sub(at) < c.cfg.TTL {
		c.mu.Unlock()
		return nil
	}
	delete(c.ok, key)
	gen := c.gen
	c.mu.Unlock()
	if err := c.next.CheckAccount(ctx, service, req); err != nil {
		return err
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.gen != gen {
		// Forgotten meanwhile: this answer may predate why.
		return nil
	}
	if at := c.clk.Now(); len(c.ok) >= c.cfg.Max || at.Sub(c.swept) >= c.cfg.TTL || at.Before(c.swept) {
		c.pruneLocked(at)
		c.swept = at
	}
	// The time the check started: the answer is no newer than that.
	c.ok[key] = now
	return nil
}

// Forget drops every remembered answer (e.g. after an administrator
// disabled accounts and wants it to count at once); an answer to a check
// under way is not kept either.
func (c *AccountCache) Forget() {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.gen++
	clear(c.ok)
}

// Len returns the number of answers remembered.
func (c *AccountCache) Len() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.ok)
}

// pruneLocked drops expired answers and, while the cache is full, the
// oldest.
func (c *AccountCache) pruneLocked(now time.Time) {
	for k, at := range c.ok {
		if now.Sub(at) >= c.cfg.TTL || now.Before(at) {
			delete(c.ok, k)
		}
	}
	for len(c.ok) >= c.cfg.Max {
		var oldest string
		var ot time.Time
		for k, at := range c.ok {
			if oldest == "" || at.Before(ot) {
				oldest, ot = k, at
			}
		}
		delete(c.ok, oldest)
	}
}

// accountKey is the cache key of a check: what the account stack sees.
// The terminal id is the peer's choice and may be long: the key holds a
// hash of the parts, so its size is fixed.
func accountKey(service string, req Request) string {
	h := sha256.New()
	for _, part := range []string{service, req.User, netsrc.Host(req.RemoteAddr), req.TerminalID} {
		h.Write([]byte(part))
		h.Write([]byte{0})
	}
	return hex.EncodeToString(h.Sum(nil)[:16])
}
