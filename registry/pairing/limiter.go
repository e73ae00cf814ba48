package pairing

import (
	"container/list"
	"sync"
	"time"

	"github.com/hotdesk/hotdesk/internal/clock"
)

// lru is a map of at most max entries that evicts the least recently used
// one. It is not safe for concurrent use.
type lru[V any] struct {
	max   int
	items map[string]*list.Element
	order *list.List // of *lruEntry[V]; front = most recently used
}

type lruEntry[V any] struct {
	key string
	val V
}

func newLRU[V any](max int) *lru[V] {
	return &lru[V]{max: max, items: make(map[string]*list.Element), order: list.New()}
}

// get returns the value of key and marks it used.
func (c *lru[V]) get(key string) (V, bool) {
	if el, ok := c.items[key]; ok {
		c.order.MoveToFront(el)
		return el.Value.(*lruEntry[V]).val, true
	}
	var zero V
	return zero, false
}

// put sets key to val, evicting the least recently used entry if full.
func (c *lru[V]) put(key string, val V) {
	if el, ok := c.items[key]; ok {
		el.Value.(*lruEntry[V]).val = val
		c.order.MoveToFront(el)
		return
	}
	if c.order.Len() >= c.max {
		oldest := c.order.Back()
		c.order.Remove(oldest)
		delete(c.items, oldest.Value.(*lruEntry[V]).key)
	}
	c.items[key] = c.order.PushFront(&lruEntry[V]{key: key, val: val})
}

func (c *lru[V]) remove(key string) {
	if el, ok := c.items[key]; ok {
		c.order.Remove(el)
		delete(c.items, key)
	}
}

func (c *lru[V]) len() int { return c.order.Len() }

// limiter tracks failed redemptions per source and all attempts globally.
// A source with maxFailures failures within window is locked out for
// lockout. An attempt is reserved when allow lets it through and counts
// as a failure until it is judged: a source gets at most maxFailures
// attempts in flight and failed together within window, however many it
// sends at once; release gives back the reservation of an attempt that
// was no guess. At most globalN attempts (from all sources together) are
// let through per globalWindow.
//
// Memory is bounded: at most maxSources sources without a lockout in force
// (least recently seen evicted first), each with at most maxFailures
// timestamps, at most maxSources locked-out sources, and globalN
// timestamps. A locked-out source is never evicted to make room (the
// sources are the peer's choice: an IPv6 /48 holds 65536 /64s); with
// maxSources lockouts in force, a source that reaches its limit is still
// refused until its lockout ends, held with the sources without one,
// where a flood of new sources can push it out.
type limiter struct {
	clk          clock.Clock
	maxFailures  int
	window       time.Duration
	lockout      time.Duration
	globalN      int
	globalWindow time.Duration

	mu      sync.Mutex
	sources *lru[*sourceState] // without a lockout held in locked
	// locked holds locked-out sources (≤ sources.max) in locks, in the
	// order their lockouts end (every lockout is as long).
	locked map[string]*list.Element // of *lockedSource, in locks
	locks  *list.List               // front = soonest ending
	// global holds the times of the attempts let through in the last
	// globalWindow, oldest first; len ≤ globalN.
	global []time.Time
}

type sourceState struct {
	failures    []time.Time // within window, oldest first; len < maxFailures
	pending     int         // attempts let through and not yet judged
	lockedUntil time.Time
}

type lockedSource struct {
	key string
	s   *sourceState
}

// limitResult says why allow refused an attempt.
type limitResult int

const (
	allowed limitResult = iota
	sourceLocked
	sourceBusy
	globalLimited
)

func (r limitResult) String() string {
	switch r {
	case sourceLocked:
		return "source_locked_out"
	case sourceBusy:
		return "source_attempts_in_flight"
	case globalLimited:
		return "global_limit"
	}
	return "allowed"
}

// lockedFor returns how long source stays locked out (0: it is not).
func (l *limiter) lockedFor(source string) time.Duration {
	l.mu.Lock()
	defer l.mu.Unlock()
	now := l.clk.Now()
	if s := l.lookup(source, now); s != nil && now.Before(s.lockedUntil) {
		return s.lockedUntil.Sub(now)
	}
	return 0
}

// allow decides whether source may attempt a redemption now and, if so,
// reserves the attempt (see limiter) and counts it against the global
// limit. Every attempt allowed must end in exactly one of fail, release
// and succeed.
func (l *limiter) allow(source string) limitResult {
	l.mu.Lock()
	defer l.mu.Unlock()
	now := l.clk.Now()
	s := l.lookup(source, now)
	if s != nil && now.Before(s.lockedUntil) {
		return sourceLocked
	}
	if s != nil && len(l.prune(s, now))+s.pending >= l.maxFailures {
		return sourceBusy
	}
	if l.globalN > 0 {
		cut := now.Add(-l.globalWindow)
		i := 0
		for i < len(l.global) && !l.global[i].After(cut) {
			i++
		}
		l.global = append(l.global[:0], l.global[i:]...)
		if len(l.global) >= l.globalN {
			return globalLimited
		}
		l.global = append(l.global, now)
	}
	if s == nil {
		s = &sourceState{}
		l.sources.put(source, s)
	}
	s.pending++
	return allowed
}

// fail records a failed attempt by source (ending its reservation) and
// reports whether it locked the source out.
func (l *limiter) fail(source string) (locked bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	now := l.clk.Now()
	s := l.lookup(source, now)
	if s == nil { // evicted while the attempt ran, or never allowed
		s = &sourceState{}
		l.sources.put(source, s)
	}
	if s.pending > 0 {
		s.pending--
	}
	if now.Before(s.lockedUntil) {
		return false // a lockout started by another attempt holds
	}
	s.failures = append(l.prune(s, now), now)
	if len(s.failures) < l.maxFailures {
		return false
	}
	s.failures = s.failures[:0]
	s.lockedUntil = now.Add(l.lockout)
	if l.locked == nil {
		l.locked, l.locks = make(map[string]*list.Element), list.New()
	}
	if len(l.locked) < l.sources.max {
		l.sources.remove(source)
		l.locked[source] = l.locks.PushBack(&lockedSource{key: source, s: s})
	}
	return true
}

// release ends the reservation of an attempt by source that was no guess
// (a bad key, no proof, a registry error, a race lost): it is not counted.
func (l *limiter) release(source string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if s := l.lookup(source, l.clk.Now()); s != nil && s.pending > 0 {
		s.pending--
	}
}

// succeed ends source's attempt and forgets its failures after a
// successful redemption. Its other attempts still in flight stay counted,
// and a lockout one of them started holds: one good code does not buy the
// source a new budget for the guesses it sent alongside.
func (l *limiter) succeed(source string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	now := l.clk.Now()
	s := l.lookup(source, now)
	if s == nil {
		return
	}
	if s.pending > 0 {
		s.pending--
	}
	s.failures = s.failures[:0]
	if s.pending == 0 && !now.Before(s.lockedUntil) {
		l.sources.remove(source)
	}
}

// lookup returns source's state, or nil, after forgetting the lockouts
// that ended by now (their failures were consumed: such a source starts
// over). Caller holds l.mu.
func (l *limiter) lookup(source string, now time.Time) *sourceState {
	for l.locks != nil && l.locks.Len() > 0 {
		front := l.locks.Front().Value.(*lockedSource)
		if now.Before(front.s.lockedUntil) {
			break
		}
		l.locks.Remove(l.locks.Front())
		delete(l.locked, front.key)
	}
	if el, ok := l.locked[source]; ok {
		return el.Value.(*lockedSource).s
	}
	s, _ := l.sources.get(source)
	return s
}

// prune drops s's failures older than window and returns the rest.
// Caller holds l.mu.
func (l *limiter) prune(s *sourceState, now time.Time) []time.Time {
	cut := now.Add(-l.window)
	i := 0
	for i < len(s.failures) && !s.failures[i].After(cut) {
		i++
	}
	s.failures = append(s.failures[:0], s.failures[i:]...)
	return s.failures
}
