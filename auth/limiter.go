package auth

import (
	"container/list"
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/hashicorp/go-hclog"

	"github.com/hotdesk/hotdesk/internal/clock"
	"github.com/hotdesk/hotdesk/internal/defaults"
	"github.com/hotdesk/hotdesk/internal/netsrc"
)

// ErrLocked is returned (wrapped, together with ErrDenied) when a token, user
// or terminal is locked out after too many failed attempts. The request is
// refused before any authenticator runs, even with the right secret.
var ErrLocked = errors.New("auth: locked out")

// LockoutError says which key is locked out and for how long. Check
// returns it for a refused attempt (it matches ErrDenied and ErrLocked);
// the guard wraps one with Started set, together with the failure, for the
// failed attempt that started the lockout (it matches neither: that attempt
// was tried and failed, and says so), so that the person learns of the
// lockout, and its length, on the attempt that caused it.
type LockoutError struct {
	Kind      string // the locked key's kind: token, user or terminal
	Remaining time.Duration
	Started   bool
}

func (e *LockoutError) Error() string {
	if e.Started {
		return fmt.Sprintf("auth: %s now locked out for %s", e.Kind, e.Remaining.Round(time.Second))
	}
	return fmt.Sprintf("auth: check: %v: %v: %s locked for %s", ErrDenied, ErrLocked, e.Kind, e.Remaining.Round(time.Second))
}

// Is matches ErrDenied and ErrLocked for a refused attempt.
func (e *LockoutError) Is(target error) bool {
	return !e.Started && (target == ErrDenied || target == ErrLocked)
}

// LimiterConfig configures a Limiter. Zero fields take the defaults.
type LimiterConfig struct {
	// MaxFailures is the number of failures within Window that locks a key
	// (default 5).
	MaxFailures int
	// Window is how long a failure counts (default 15 minutes). A key whose
	// last failure and lockout are older than Window is forgotten.
	Window time.Duration
	// BaseLockout is the first lockout (default 30 s); every further lockout
	// of the same key within Window doubles it, up to MaxLockout (default
	// 15 minutes).
	BaseLockout time.Duration
	MaxLockout  time.Duration
	// MaxKeys bounds memory: at most this many keys are tracked (default
	// 65536). When full, the least recently failed key is forgotten.
	MaxKeys int
	// Clock is the time source (default clock.Real).
	Clock clock.Clock
	// Logger receives the audit lines ("auth decision"); default: none.
	Logger hclog.Logger
	// OnLockout, if set, is called for every lockout that failures here
	// start (outside the limiter's lock; it must not block): a server
	// group shares them, and every member Applies the others'.
	OnLockout func(Lockout)
	// OnFailure, if set, is called with every key a failure counted that
	// did not start a lockout (that one is OnLockout's), and OnReset with
	// every key whose failures a success cleared (only keys with failures
	// counted: a success after none calls nothing). Both are called
	// outside the limiter's lock and must not block: a server group
	// counts failures together, and every member Observes the group's
	// counts.
	OnFailure func(key string)
	OnReset   func(key string)
}

// Lockout is one key's lockout: until when, and how many lockouts of the
// key led to it (the back-off exponent).
type Lockout struct {
	Key   string // "token:…", "user:…" or "terminal:…"
	Until time.Time
	Level int
}

// Limiter counts failed authentications per token, per user and per
// terminal (as Guard keys it: the terminal id at the peer's address) and
// locks a key out with exponential back-off. It is safe for
// concurrent use and its memory is bounded by MaxKeys.
//
// Success clears the token's and the user's counters; a terminal's counter
// is not cleared by a success (an attacker at a terminal could otherwise
// interleave a login of their own), it decays after Window.
//
// In a server group the counts are the group's: OnFailure and OnReset
// report this member's to a shared count, Observe hears the shared count
// (and starts the lockout when it reaches MaxFailures), Apply imposes the
// lockouts other members start. The count here, of this member's own
// failures, is the fast path and the fallback when the group's count is
// out of reach: MaxFailures failures at this member lock the key out in
// any case.
type Limiter struct {
	cfg LimiterConfig
	clk clock.Clock
	log hclog.Logger

	mu   sync.Mutex
	keys map[string]*list.Element // of *entry
	lru  *list.List               // front = most recently failed
}

type entry struct {
	key         string
	failures    int       // here
	first       time.Time // of the current counting window
	group       int       // the group's count, as last Observed
	groupFirst  time.Time // its window's first failure
	last        time.Time // last failure or lockout
	level       int       // lockouts so far (back-off exponent)
	lockedUntil time.Time
}

// NewLimiter returns a Limiter for cfg.
func NewLimiter(cfg LimiterConfig) *Limiter {
	defaults.Set(&cfg.MaxFailures, 5)
	defaults.Set(&cfg.Window, 15*time.Minute)
	defaults.Set(&cfg.BaseLockout, 30*time.Second)
	defaults.Set(&cfg.MaxLockout, 15*time.Minute)
	if cfg.MaxLockout < cfg.BaseLockout {
		cfg.MaxLockout = cfg.BaseLockout
	}
	defaults.Set(&cfg.MaxKeys, 65536)
	l := &Limiter{cfg: cfg, clk: cfg.Clock, log: cfg.Logger, keys: make(map[string]*list.Element), lru: list.New()}
	if l.clk == nil {
		l.clk = clock.Real{}
	}
	if l.log == nil {
		l.log = hclog.NewNullLogger()
	}
	return l
}

// keysOf returns the limiter keys of an attempt; empty parts are skipped.
func keysOf(token, user, terminal string) []string {
	out := make([]string, 0, 3)
	if token != "" {
		out = append(out, "token:"+token)
	}
	if user != "" {
		out = append(out, "user:"+user)
	}
	if terminal != "" {
		out = append(out, "terminal:"+terminal)
	}
	return out
}

// Check reports whether an attempt by token, user and terminal may proceed.
// It returns nil, or an error wrapping ErrDenied and ErrLocked that names
// the locked key kind and the remaining lockout.
func (l *Limiter) Check(token, user, terminal string) error {
	now := l.clk.Now()
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, k := range keysOf(token, user, terminal) {
		el, ok := l.keys[k]
		if !ok {
			continue
		}
		e := el.Value.(*entry)
		if now.Before(e.lockedUntil) {
			kind, _, _ := strings.Cut(k, ":")
			return &LockoutError{Kind: kind, Remaining: e.lockedUntil.Sub(now)}
		}
	}
	return nil
}

// Failure records a failed attempt against every non-empty key.
func (l *Limiter) Failure(token, user, terminal string) {
	var started []Lockout
	var counted []string
	defer func() {
		l.report(started)
		if f := l.cfg.OnFailure; f != nil {
			for _, k := range counted {
				f(k)
			}
		}
	}()
	now := l.clk.Now()
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, k := range keysOf(token, user, terminal) {
		e := l.get(k, now)
		if now.Sub(e.first) > l.cfg.Window {
			e.failures, e.first = 0, now
		}
		e.failures++
		e.last = now
		if e.failures >= l.cfg.MaxFailures {
			started = append(started, l.lock(e, now))
		} else {
			counted = append(counted, k)
		}
	}
}

// lock starts e's next lockout, backing off from its level, and forgets
// its failures (the lockout consumed them). Caller holds l.mu.
func (l *Limiter) lock(e *entry, now time.Time) Lockout {
	d := l.cfg.BaseLockout
	for i := 0; i < e.level && d < l.cfg.MaxLockout; i++ {
		d *= 2
	}
	d = min(d, l.cfg.MaxLockout)
	e.level++
	e.failures, e.first, e.group = 0, now, 0
	e.lockedUntil = now.Add(d)
	return Lockout{Key: e.key, Until: e.lockedUntil, Level: e.level}
}

// report calls OnLockout for each lockout started. Caller does not hold
// l.mu.
func (l *Limiter) report(started []Lockout) {
	if f := l.cfg.OnLockout; f != nil {
		for _, lo := range started {
			f(lo)
		}
	}
}

// Observe hears the group's count of key's failures: n failures since
// first, counted by every member (n = 0: the group's count ended — a
// success, a lockout or an administrator cleared it, or its window
// passed; a count whose window is over is ignored). When n reaches
// MaxFailures and the key is not locked out already, a lockout starts
// here as Failure's would (OnLockout is called) and Observe reports true:
// with a count incremented atomically for the group, exactly one member
// sees its failure reach the limit. The count is not added to this
// member's own: a count heard late (a watch lags) would lock out early.
// A key with failures in the group's count is reported by OnReset when a
// success clears it here, even without failures of its own. A count under
// MaxFailures of a key not tracked here is not tracked when the limiter
// is full: counts heard never evict this member's keys.
func (l *Limiter) Observe(key string, n int, first time.Time) bool {
	if key == "" || n < 0 {
		return false
	}
	now := l.clk.Now()
	var started []Lockout
	defer func() { l.report(started) }()
	l.mu.Lock()
	defer l.mu.Unlock()
	if n == 0 {
		if el, ok := l.keys[key]; ok {
			el.Value.(*entry).group = 0
		}
		return false
	}
	if now.Sub(first) > l.cfg.Window {
		return false
	}
	if _, ok := l.keys[key]; !ok && n < l.cfg.MaxFailures && len(l.keys) >= l.cfg.MaxKeys {
		return false
	}
	e := l.get(key, now)
	e.group, e.groupFirst = n, first
	e.last = now
	if n >= l.cfg.MaxFailures && !now.Before(e.lockedUntil) {
		started = append(started, l.lock(e, now))
	}
	return len(started) > 0
}

// Limits returns the failures that lock a key out and the window they
// count in (the configured values or their defaults).
func (l *Limiter) Limits() (maxFailures int, window time.Duration) {
	return l.cfg.MaxFailures, l.cfg.Window
}

// Locked reports whether key ("user:…", "token:…", "terminal:…") is
// locked out here now.
func (l *Limiter) Locked(key string) bool {
	now := l.clk.Now()
	l.mu.Lock()
	defer l.mu.Unlock()
	el, ok := l.keys[key]
	return ok && now.Before(el.Value.(*entry).lockedUntil)
}

// Clear forgets key's failures, lockout and back-off level: an
// administrator ended its lockout.
func (l *Limiter) Clear(key string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if el, ok := l.keys[key]; ok {
		l.lru.Remove(el)
		delete(l.keys, key)
	}
}

// Apply imposes a lockout that another member of the group started: the
// key is refused until lo.Until (at most MaxLockout from now: the clocks
// of a group may differ), its failures here are forgotten (the lockout
// consumed the group's), and its next lockout here backs off from
// lo.Level. A lockout already longer, or a higher level, is kept. It
// reports whether lo was still in force (an ended one imposes nothing).
func (l *Limiter) Apply(lo Lockout) bool {
	now := l.clk.Now()
	if lo.Key == "" || !now.Before(lo.Until) {
		return false
	}
	until := lo.Until
	if limit := now.Add(l.cfg.MaxLockout); until.After(limit) {
		until = limit
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	e := l.get(lo.Key, now)
	e.last = now
	e.failures, e.first, e.group = 0, now, 0
	if until.After(e.lockedUntil) {
		e.lockedUntil = until
	}
	e.level = max(e.level, lo.Level)
	return true
}

// Success clears the counters and lockout level of token and user (see the
// type's doc for terminals); OnReset hears of those that had failures,
// here or in the group's count (see Observe).
func (l *Limiter) Success(token, user string) {
	var reset []string
	defer func() {
		if f := l.cfg.OnReset; f != nil {
			for _, k := range reset {
				f(k)
			}
		}
	}()
	now := l.clk.Now()
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, k := range keysOf(token, user, "") {
		if el, ok := l.keys[k]; ok {
			if e := el.Value.(*entry); e.failures > 0 || e.group > 0 && now.Sub(e.groupFirst) <= l.cfg.Window {
				reset = append(reset, k)
			}
			l.lru.Remove(el)
			delete(l.keys, k)
		}
	}
}

// Len reports how many keys are tracked.
func (l *Limiter) Len() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.keys)
}

// get returns k's entry, creating it (and evicting) as needed, and marks it
// most recently used. Caller holds l.mu.
func (l *Limiter) get(k string, now time.Time) *entry {
	if el, ok := l.keys[k]; ok {
		e := el.Value.(*entry)
		// A key quiet for a whole window starts over, back-off included.
		if now.Sub(e.last) > l.cfg.Window && !now.Before(e.lockedUntil) {
			*e = entry{key: k, first: now}
		}
		l.lru.MoveToFront(el)
		return e
	}
	for len(l.keys) >= l.cfg.MaxKeys {
		el := l.lru.Back()
		l.lru.Remove(el)
		delete(l.keys, el.Value.(*entry).key)
	}
	e := &entry{key: k, first: now}
	l.keys[k] = l.lru.PushFront(e)
	return e
}

// Guard wraps next: every request is checked against the limiter before next
// runs, failures that are denials (errors.Is(err, ErrDenied)) are counted,
// and every decision is one audit line at info level:
//
//	"auth decision" token=… user=… terminal=… rhost=… outcome=granted|denied|locked|aborted|error reason=…
//
// Answers never reach the log. Aborts (ctx cancelled, conversation failed)
// are not counted as failures: no secret was judged. When next learns the
// user only during authentication (Result.User on a request without User),
// that user's lockout is checked afterwards and a success is refused if the
// user is locked (closing any Session that was opened).
func (l *Limiter) Guard(next Authenticator) Authenticator {
	return &guard{l: l, next: next}
}

type guard struct {
	l    *Limiter
	next Authenticator
}

// terminalKey is the limiter's terminal key of req: the terminal id is
// chosen by the peer, so it counts together with the peer's address (a
// client naming another terminal must not lock that terminal out): its
// netsrc.Host, an IPv4-mapped IPv6 address as IPv4, as Gate counts it.
func terminalKey(req Request) string {
	if req.TerminalID == "" || req.RemoteAddr == "" {
		return req.TerminalID
	}
	return req.TerminalID + "@" + netsrc.Host(req.RemoteAddr)
}

func (g *guard) Authenticate(ctx context.Context, req Request, conv Conversation) (Result, error) {
	l := g.l
	term := terminalKey(req)
	if err := l.Check(req.Token, req.User, term); err != nil {
		Audit(l.log, req, req.User, "locked", err.Error())
		return Result{}, err
	}
	res, err := g.next.Authenticate(ctx, req, conv)
	user := req.User
	if user == "" {
		user = res.User
	}
	switch {
	case err == nil && req.User == "" && user != "":
		if lerr := l.Check("", user, ""); lerr != nil {
			if res.Session != nil {
				cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 30*time.Second)
				_ = res.Session.Close(cctx)
				cancel()
			}
			Audit(l.log, req, user, "locked", lerr.Error())
			return Result{}, lerr
		}
	case err == nil:
	case errors.Is(err, ErrDenied):
		l.Failure(req.Token, user, term)
		Audit(l.log, req, user, "denied", err.Error())
		var lo *LockoutError
		if errors.As(l.Check(req.Token, user, term), &lo) {
			lo.Started = true
			return Result{User: res.User}, fmt.Errorf("%w; %w", err, lo)
		}
		return Result{User: res.User}, err
	case ctx.Err() != nil || errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded):
		Audit(l.log, req, user, "aborted", err.Error())
		return Result{User: res.User}, err
	default:
		Audit(l.log, req, user, "error", err.Error())
		return Result{User: res.User}, err
	}
	l.Success(req.Token, user)
	Audit(l.log, req, user, "granted", "")
	return res, nil
}

// Audit writes one "auth decision" line. reason must not contain secrets
// (error texts of this module and of auth/pam never do).
func Audit(log hclog.Logger, req Request, user, outcome, reason string) {
	if log == nil {
		return
	}
	args := []any{"token", req.Token, "user", user, "terminal", req.TerminalID, "rhost", req.RemoteAddr, "outcome", outcome}
	if req.Existing {
		args = append(args, "existing", true)
	}
	if reason != "" {
		args = append(args, "reason", reason)
	}
	log.Info("auth decision", args...)
}
