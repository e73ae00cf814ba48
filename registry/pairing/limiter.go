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
// lockout. At most globalN attempts (from all sources together) are let
// through per globalWindow. Memory is bounded: at most maxSources sources
// (least recently seen evicted first), each with at most maxFailures
// timestamps, and globalN timestamps.
type limiter struct {
	clk          clock.Clock
	maxFailures  int
	window       time.Duration
	lockout      time.Duration
	globalN      int
	globalWindow time.Duration

	mu      sync.Mutex
	sources *lru[*sourceState]
	// global holds the times of the attempts let through in the last
	// globalWindow, oldest first; len ≤ globalN.
	global []time.Time
}

type sourceState struct {
	failures    []time.Time // within window, oldest first; len < maxFailures
	lockedUntil time.Time
}

// limitResult says why allow refused an attempt.
type limitResult int

const (
	allowed limitResult = iota
	sourceLocked
	globalLimited
)

func (r limitResult) String() string {
	switch r {
	case sourceLocked:
		return "source_locked_out"
	case globalLimited:
		return "global_limit"
	}
	return "allowed"
}

// allow decides whether source may attempt a redemption now and, if so,
// counts the attempt against the global limit.
func (l *limiter) allow(source string) limitResult {
	l.mu.Lock()
	defer l.mu.Unlock()
	now := l.clk.Now()
	if s, ok := l.sources.get(source); ok && now.Before(s.lockedUntil) {
		return sourceLocked
	}
	if l.globalN <= 0 {
		return allowed
	}
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
	return allowed
}

// fail records a failed attempt by source and reports whether it locked
// the source out.
func (l *limiter) fail(source string) (locked bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	now := l.clk.Now()
	s, ok := l.sources.get(source)
	if !ok {
		s = &sourceState{}
		l.sources.put(source, s)
	}
	cut := now.Add(-l.window)
	i := 0
	for i < len(s.failures) && !s.failures[i].After(cut) {
		i++
	}
	s.failures = append(s.failures[:0], s.failures[i:]...)
	s.failures = append(s.failures, now)
	if len(s.failures) >= l.maxFailures {
		s.failures = s.failures[:0]
		s.lockedUntil = now.Add(l.lockout)
		return true
	}
	return false
}

// succeed forgets source's failures after a successful redemption.
func (l *limiter) succeed(source string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.sources.remove(source)
}
