package auth

import (
	"container/heap"
	"container/list"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"
	"unicode"

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
	Kind      string // the locked key's kind: token, user, terminal or source
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
	// SourceMaxFailures is the number of failures within Window that locks
	// a source out ("source:…", the peer's netsrc.Source: an IPv4 address
	// or an IPv6 /64), whatever terminal ids, tokens and users its attempts
	// name (default 4 × MaxFailures: the terminals of one office share a
	// /64, and their users' typos must not lock the office out).
	SourceMaxFailures int
	// Window is how long a failure counts (default 15 minutes). A key whose
	// last failure and lockout are older than Window is forgotten.
	Window time.Duration
	// BaseLockout is the first lockout (default 30 s); every further lockout
	// of the same key within Window doubles it, up to MaxLockout (default
	// 15 minutes).
	BaseLockout time.Duration
	MaxLockout  time.Duration
	// MaxKeys bounds memory (default 65536): at most this many keys
	// without a lockout in force are tracked (when full, the least
	// recently failed is forgotten), and at most this many lockouts in
	// force (never forgotten before they end; see Limiter).
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

// Lockout is one key's lockout: since and until when, and how many
// lockouts of the key led to it (the back-off exponent).
type Lockout struct {
	Key   string // "token:…", "user:…", "terminal:…" or "source:…"
	Until time.Time
	Level int
	// Since is when the failures that led to it began (the first of
	// those it counted), by the clock of the member that imposed it (zero
	// in one given to Apply: unknown, cleared by any ClearBefore); an
	// administrator's clearing made after it does not clear it, one made
	// before it does, even if the member imposed it before hearing of the
	// clearing (see ClearBefore). It is "imposed" below.
	Since time.Time
}

// Limiter counts failed authentications per token, per user, per
// terminal (as Guard keys it: the terminal id at the peer's address) and
// per source (the peer's netsrc.Source, whatever terminal id it gives) and
// locks a key out with exponential back-off. It is safe for concurrent use
// and its memory is bounded by MaxKeys.
//
// A terminal chooses its own id, so the terminal key alone would start
// over with every new id: the source key bounds what one address (one
// IPv6 /64) can try in all, at SourceMaxFailures. User names are compared
// case-insensitively (folded: "ALICE" and "alice" are one key), as PAM
// and NSS compare them against a directory (sssd, Active Directory).
//
// Success clears the token's and the user's counters; a terminal's and a
// source's counters are not cleared by a success (an attacker at a
// terminal could otherwise interleave a login of their own), they decay
// after Window.
//
// Keys are the peer's choice (user names, token ids, terminal ids), so
// memory is bounded in two parts of MaxKeys each. Keys with failures but
// no lockout in force are forgotten least recently failed first when
// their part is full. A lockout in force is never forgotten to make room
// (a flood of new names must not end a lockout, nor reset its back-off):
// it holds its place in the other part until it ends. When that part is
// full too (MaxKeys lockouts in force at once, which takes failures from
// many sources), a key reaching its limit is still refused for its
// lockout, but held with the keys without one, where a flood of new keys
// can push it out: the limiter then fails closed for every key it can
// hold, and never refuses a key for lack of room, which would lock out
// people who never failed.
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
	keys map[string]*entry
	// lru holds the entries without a lockout held in locks; front = most
	// recently failed; len ≤ MaxKeys.
	lru *list.List // of *entry
	// locks holds lockouts in force, soonest ending first; len ≤ MaxKeys.
	// An entry is in exactly one of lru and locks.
	locks lockHeap
}

type entry struct {
	key         string
	el          *list.Element // in lru, or nil
	hidx        int           // index in locks, or -1
	failures    int           // here
	first       time.Time     // of the current counting window
	failedSince time.Time     // when the first of failures came (zero: none)
	group       int           // the group's count, as last Observed
	groupFirst  time.Time     // its window's first failure
	last        time.Time     // last failure or lockout
	level       int           // lockouts so far (back-off exponent)
	lockedUntil time.Time
	lockedSince time.Time // when the failures that led to the lockout ending at lockedUntil began (zero: unknown)
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
	defaults.Set(&cfg.SourceMaxFailures, 4*cfg.MaxFailures)
	defaults.Set(&cfg.MaxKeys, 65536)
	l := &Limiter{cfg: cfg, clk: cfg.Clock, log: cfg.Logger, keys: make(map[string]*entry), lru: list.New()}
	if l.clk == nil {
		l.clk = clock.Real{}
	}
	if l.log == nil {
		l.log = hclog.NewNullLogger()
	}
	return l
}

// keysOf returns the limiter keys of an attempt; empty parts are skipped.
// source is the peer's netsrc.Source.
func keysOf(token, user, terminal, source string) []string {
	out := make([]string, 0, 4)
	if token != "" {
		out = append(out, "token:"+token)
	}
	if user != "" {
		out = append(out, UserKey(user))
	}
	if terminal != "" {
		out = append(out, "terminal:"+terminal)
	}
	if source != "" {
		out = append(out, "source:"+source)
	}
	return out
}

// maxUserKeyName bounds the name in a user key. PAM may learn a name of
// any length from the person at the terminal (a frame's worth), and the
// limiter keeps up to MaxKeys keys: a longer name is kept as its first
// bytes and a hash of the whole, still one key per name.
const maxUserKeyName = 256

// UserKey is the limiter's key of user: "user:" and the name case-folded
// (foldCase), so that the spellings a case-insensitive directory accepts
// for one account count as one; a name longer than maxUserKeyName bytes
// is bounded (its first bytes, "#" and a hash). UserKey of the name in a
// key it returned returns that key.
func UserKey(user string) string {
	name := foldCase(user)
	if len(name) > maxUserKeyName {
		sum := sha256.Sum256([]byte(name))
		h := hex.EncodeToString(sum[:16])
		name = strings.ToValidUTF8(name[:maxUserKeyName-len(h)-1], "") + "#" + h
	}
	return "user:" + name
}

// foldCase maps every rune of s to the lower case of the least rune of
// its Unicode simple case folding orbit, so that the names
// strings.EqualFold takes for one ("SAM", "ſam", "sam") fold to one
// ("sam"); strings.ToLower does not ("ſ" and "ς" are lower case
// already). It joins a little more than EqualFold ("İ" folds as "i"):
// for a limiter key, more spellings counting as one only fails closed.
func foldCase(s string) string {
	return strings.Map(func(r rune) rune {
		least := r
		for f := unicode.SimpleFold(r); f != r; f = unicode.SimpleFold(f) {
			least = min(least, f)
		}
		return unicode.ToLower(least)
	}, s)
}

// normKey returns key with a user key folded (see UserKey).
func normKey(key string) string {
	if name, ok := strings.CutPrefix(key, "user:"); ok {
		return UserKey(name)
	}
	return key
}

// Check reports whether an attempt by token, user and terminal may proceed.
// It returns nil, or an error wrapping ErrDenied and ErrLocked that names
// the locked key kind and the remaining lockout.
func (l *Limiter) Check(token, user, terminal string) error {
	return l.check(keysOf(token, user, terminal, ""))
}

func (l *Limiter) check(keys []string) error { return l.checkAt(keys, l.clk.Now()) }

// checkAt is check at the time now.
func (l *Limiter) checkAt(keys []string, now time.Time) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.sweep(now)
	for _, k := range keys {
		e, ok := l.keys[k]
		if !ok {
			continue
		}
		if now.Before(e.lockedUntil) {
			kind, _, _ := strings.Cut(k, ":")
			return &LockoutError{Kind: kind, Remaining: e.lockedUntil.Sub(now)}
		}
	}
	return nil
}

// Failure records a failed attempt against every non-empty key.
func (l *Limiter) Failure(token, user, terminal string) {
	l.failure(keysOf(token, user, terminal, ""))
}

// failure counts a failed attempt against keys, locking out those at
// their limit; it returns the time it counted it at.
func (l *Limiter) failure(keys []string) time.Time {
	var started []Lockout
	var counted []string
	defer func() {
		notify(l.cfg.OnLockout, started)
		notify(l.cfg.OnFailure, counted)
	}()
	now := l.clk.Now()
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, k := range keys {
		e := l.get(k, now)
		if now.Sub(e.first) > l.cfg.Window {
			e.failures, e.first = 0, now
		}
		if e.failures == 0 {
			e.failedSince = now
		}
		e.failures++
		e.last = now
		if e.failures >= l.maxFailures(k) {
			started = append(started, l.lock(e, now, e.failedSince))
		} else {
			counted = append(counted, k)
		}
	}
	return now
}

// maxFailures returns the failures within Window that lock key out.
func (l *Limiter) maxFailures(key string) int {
	if strings.HasPrefix(key, "source:") {
		return l.cfg.SourceMaxFailures
	}
	return l.cfg.MaxFailures
}

// maxLevel bounds the back-off level another member's lockout brings
// (Apply): 2^63 times any lockout is past every duration, and a level from
// the registry is anyone's who may write there.
const maxLevel = 64

// lock starts e's next lockout, backing off from its level, and forgets
// its failures (the lockout consumed them). since is when the failures
// that led to it began (the first of those counted here, or of the
// group's count): its Since, which an administrator's clearing made
// after it does not clear, one made before it does (see ClearBefore) —
// a member that hears the clearing late (cut off from the group) must
// not lock the key out on failures the clearing forgot. Caller holds
// l.mu.
func (l *Limiter) lock(e *entry, now, since time.Time) Lockout {
	d := l.cfg.BaseLockout
	for i := 0; i < e.level && d < l.cfg.MaxLockout; i++ {
		if d > l.cfg.MaxLockout/2 {
			// Doubling reaches MaxLockout (and might overflow, to zero
			// after a few more, and go on for level times).
			d = l.cfg.MaxLockout
			break
		}
		d *= 2
	}
	d = min(d, l.cfg.MaxLockout)
	e.level++
	e.failures, e.first, e.group = 0, now, 0
	if since.IsZero() || since.After(now) {
		since = now
	}
	e.lockedUntil, e.lockedSince = now.Add(d), since
	l.hold(e)
	return Lockout{Key: e.key, Until: e.lockedUntil, Level: e.level, Since: since}
}

// hold moves e, whose lockout is in force, from lru to locks, or updates
// its place there; with locks full it stays in lru (see Limiter). Caller
// holds l.mu.
func (l *Limiter) hold(e *entry) {
	switch {
	case e.hidx >= 0:
		heap.Fix(&l.locks, e.hidx)
	case len(l.locks) < l.cfg.MaxKeys:
		l.lru.Remove(e.el)
		e.el = nil
		heap.Push(&l.locks, e)
	}
}

// release moves the entries of locks whose lockout ended to lru (as most
// recently used: an ended lockout's back-off level still counts). Caller
// holds l.mu.
func (l *Limiter) release(now time.Time) {
	for len(l.locks) > 0 && !now.Before(l.locks[0].lockedUntil) {
		e := heap.Pop(&l.locks).(*entry)
		e.el = l.lru.PushFront(e)
	}
}

// forget removes e. Caller holds l.mu.
func (l *Limiter) forget(e *entry) {
	if e.hidx >= 0 {
		heap.Remove(&l.locks, e.hidx)
	} else {
		l.lru.Remove(e.el)
	}
	delete(l.keys, e.key)
}

// sweep forgets the entries without a lockout in force that have been
// quiet (no failure, lockout or group count) for more than a window: get
// would start them over anyway, back-off included, so they hold nothing
// but memory. Without it every key that ever failed (each mistyped user
// name, each terminal id) stayed until MaxKeys others pushed it out. It
// walks lru from its least recently failed end and stops at the first
// entry quiet for less than a window, so its cost is that of the entries
// it forgets (an ended lockout goes to the front when released, so an
// entry may wait behind a younger one for one more window). Caller holds
// l.mu.
func (l *Limiter) sweep(now time.Time) {
	for el := l.lru.Back(); el != nil; {
		e := el.Value.(*entry)
		prev := el.Prev()
		switch {
		case now.Sub(e.last) <= l.cfg.Window:
			return
		case now.Before(e.lockedUntil):
			// A lockout held here because locks is full: kept.
		default:
			l.forget(e)
		}
		el = prev
	}
}

// lockHeap orders lockouts in force by their end, soonest first.
type lockHeap []*entry

func (h lockHeap) Len() int           { return len(h) }
func (h lockHeap) Less(i, j int) bool { return h[i].lockedUntil.Before(h[j].lockedUntil) }
func (h lockHeap) Swap(i, j int) {
	h[i], h[j] = h[j], h[i]
	h[i].hidx, h[j].hidx = i, j
}
func (h *lockHeap) Push(x any) {
	e := x.(*entry)
	e.hidx = len(*h)
	*h = append(*h, e)
}
func (h *lockHeap) Pop() any {
	old := *h
	e := old[len(old)-1]
	old[len(old)-1] = nil
	e.hidx = -1
	*h = old[:len(old)-1]
	return e
}

// notify calls the hook f (OnLockout, OnFailure, OnReset), when set, with
// each of xs in turn. Callers do not hold l.mu.
func notify[T any](f func(T), xs []T) {
	if f == nil {
		return
	}
	for _, x := range xs {
		f(x)
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
	key = normKey(key)
	now := l.clk.Now()
	var started []Lockout
	defer func() { notify(l.cfg.OnLockout, started) }()
	l.mu.Lock()
	defer l.mu.Unlock()
	if n == 0 {
		if e, ok := l.keys[key]; ok {
			e.group = 0
		}
		return false
	}
	if now.Sub(first) > l.cfg.Window {
		return false
	}
	l.release(now)
	l.sweep(now) // quiet keys do not count as room taken
	if _, ok := l.keys[key]; !ok && n < l.maxFailures(key) && l.lru.Len() >= l.cfg.MaxKeys {
		return false
	}
	e := l.get(key, now)
	e.group, e.groupFirst = n, first
	e.last = now
	if n >= l.maxFailures(key) && !now.Before(e.lockedUntil) {
		started = append(started, l.lock(e, now, first))
	}
	return len(started) > 0
}

// Limits returns the failures that lock a key out and the window they
// count in (the configured values or their defaults); a source key's
// limit is SourceMaxFailures (see LimitOf).
func (l *Limiter) Limits() (maxFailures int, window time.Duration) {
	return l.cfg.MaxFailures, l.cfg.Window
}

// LimitOf returns the failures within the window that lock key out:
// SourceMaxFailures for a source key, MaxFailures for the others.
func (l *Limiter) LimitOf(key string) int { return l.maxFailures(key) }

// Locked reports whether key ("user:…", "token:…", "terminal:…",
// "source:…") is locked out here now.
func (l *Limiter) Locked(key string) bool {
	key = normKey(key)
	now := l.clk.Now()
	l.mu.Lock()
	defer l.mu.Unlock()
	e, ok := l.keys[key]
	return ok && now.Before(e.lockedUntil)
}

// Clear forgets key's failures, lockout and back-off level: an
// administrator ended its lockout.
func (l *Limiter) Clear(key string) {
	key = normKey(key)
	l.mu.Lock()
	defer l.mu.Unlock()
	if e, ok := l.keys[key]; ok {
		l.forget(e)
	}
}

// ClearBefore is Clear for an administrator's clearing made at t, which
// this member may hear late or again and again (a registry that lists
// its clearings again after a watch failure): it forgets what key held
// from before t and keeps what came after. A lockout imposed after t
// (Lockout.Since: its failures began after t; one Applied without it
// counts as imposed before) is
// kept, its back-off level and the failures counted since with it.
// Otherwise the lockout and back-off level are forgotten, and failures
// are kept only if their counting window began after t (the failures of
// a window that began before t cannot be told apart from those after,
// and are forgotten with it), the group's count heard (Observe) likewise.
// It reports whether it forgot anything.
func (l *Limiter) ClearBefore(key string, t time.Time) bool {
	key = normKey(key)
	now := l.clk.Now()
	l.mu.Lock()
	defer l.mu.Unlock()
	e, ok := l.keys[key]
	if !ok || e.lockedSince.After(t) {
		return false
	}
	locked := e.level > 0 || !e.lockedUntil.IsZero() // imposed before t, or at an unknown time
	if !locked && (e.failures == 0 || e.first.After(t)) && (e.group == 0 || e.groupFirst.After(t)) {
		return false // nothing from before t
	}
	kept := *e
	l.forget(e)
	if !kept.first.After(t) {
		kept.failures = 0
	}
	if !kept.groupFirst.After(t) {
		kept.group = 0
	}
	if kept.failures > 0 || kept.group > 0 {
		ne := l.get(key, now)
		ne.failures, ne.first, ne.last, ne.failedSince = kept.failures, kept.first, kept.last, kept.failedSince
		ne.group, ne.groupFirst = kept.group, kept.groupFirst
	}
	return true
}

// Apply imposes a lockout that another member of the group started: the
// key is refused until lo.Until (at most MaxLockout from now: the clocks
// of a group may differ), its failures here are forgotten (the lockout
// consumed the group's), and its next lockout here backs off from
// lo.Level. A lockout already longer, or a higher level, is kept (and
// with it its imposition time, for ClearBefore; lo.Since is that of lo
// when lo replaces it). It reports whether lo was still in force (an
// ended one imposes nothing).
func (l *Limiter) Apply(lo Lockout) bool {
	now := l.clk.Now()
	if lo.Key == "" || !now.Before(lo.Until) {
		return false
	}
	key := normKey(lo.Key)
	until := lo.Until
	if limit := now.Add(l.cfg.MaxLockout); until.After(limit) {
		until = limit
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	e := l.get(key, now)
	e.last = now
	e.failures, e.first, e.group = 0, now, 0
	if until.After(e.lockedUntil) {
		e.lockedUntil, e.lockedSince = until, lo.Since
		l.hold(e)
	}
	e.level = max(e.level, min(lo.Level, maxLevel))
	return true
}

// Success clears the counters and lockout level of token and user (see the
// type's doc for terminals); OnReset hears of those that had failures,
// here or in the group's count (see Observe).
func (l *Limiter) Success(token, user string) {
	var reset []string
	defer func() { notify(l.cfg.OnReset, reset) }()
	now := l.clk.Now()
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, k := range keysOf(token, user, "", "") {
		if e, ok := l.keys[k]; ok {
			if e.failures > 0 || e.group > 0 && now.Sub(e.groupFirst) <= l.cfg.Window {
				reset = append(reset, k)
			}
			l.forget(e)
		}
	}
}

// Len reports how many keys are tracked.
func (l *Limiter) Len() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.keys)
}

// get returns k's entry, creating it as needed, and marks it most
// recently used. To make room it forgets the least recently used entry
// without a lockout in force, never one with (see Limiter). Caller holds
// l.mu.
func (l *Limiter) get(k string, now time.Time) *entry {
	l.release(now)
	l.sweep(now)
	if e, ok := l.keys[k]; ok {
		// A key quiet for a whole window starts over, back-off included.
		if now.Sub(e.last) > l.cfg.Window && !now.Before(e.lockedUntil) {
			*e = entry{key: k, first: now, el: e.el, hidx: e.hidx}
		}
		if e.el != nil {
			l.lru.MoveToFront(e.el)
		}
		return e
	}
	for l.lru.Len() >= l.cfg.MaxKeys {
		l.forget(l.lru.Back().Value.(*entry))
	}
	e := &entry{key: k, first: now, hidx: -1}
	e.el = l.lru.PushFront(e)
	l.keys[k] = e
	return e
}

// Guard wraps next: every request is checked against the limiter (its
// token, its user, its terminal id at the peer's address and the peer's
// source) before next runs, failures that are denials (errors.Is(err, ErrDenied)) are counted,
// and every decision is one audit line at info level:
//
//	"auth decision" token=… user=… terminal=… rhost=… outcome=granted|denied|locked|aborted|error reason=…
//
// Answers never reach the log. Aborts (ctx cancelled, conversation failed)
// are not counted as failures: no secret was judged; refusals of the
// account stack (ErrAccount), an administrator's decision, are counted
// against the token only (a card presented again and again). When next learns the
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

// sourceKey is the limiter's source key of req: the peer's netsrc.Source
// (an IPv4 address or an IPv6 /64), whatever terminal id it gives.
func sourceKey(req Request) string {
	if req.RemoteAddr == "" {
		return ""
	}
	return netsrc.Source(req.RemoteAddr)
}

func (g *guard) Authenticate(ctx context.Context, req Request, conv Conversation) (Result, error) {
	l := g.l
	term, src := terminalKey(req), sourceKey(req)
	if err := l.check(keysOf(req.Token, req.User, term, src)); err != nil {
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
	case errors.Is(err, ErrAccount):
		// The account stack refused the account: an administrator's
		// decision, no guess. Counting it against the user, terminal or
		// source would let a disabled user's card lock a shared terminal
		// out. It is counted against the token alone: uncounted, a card
		// whose account is refused (an off-boarded employee's) could be
		// presented again and again, from any number of terminal ids
		// (account refusals are never cached), each time starting a PAM
		// account check.
		if req.Token != "" {
			l.failure(keysOf(req.Token, "", "", ""))
		}
		Audit(l.log, req, user, "denied", err.Error())
		return Result{User: res.User}, err
	case errors.Is(err, ErrDenied):
		keys := keysOf(req.Token, user, term, src)
		at := l.failure(keys)
		Audit(l.log, req, user, "denied", err.Error())
		// At the failure's time: the lockout it started is told whole
		// (read later, a loaded machine told 3599999 ms of an hour).
		var lo *LockoutError
		if errors.As(l.checkAt(keys, at), &lo) {
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
	if res.NoSecret {
		// The token is proven, the user's password is not: the user's
		// failures stand.
		l.Success(req.Token, "")
	} else {
		l.Success(req.Token, user)
	}
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
