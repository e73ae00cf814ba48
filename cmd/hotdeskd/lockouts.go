package main

import (
	"context"
	"errors"
	"sync/atomic"
	"time"

	"github.com/hashicorp/go-hclog"

	"github.com/hotdesk/hotdesk/auth"
	"github.com/hotdesk/hotdesk/internal/clock"
	"github.com/hotdesk/hotdesk/registry"
)

// shareQueue bounds the failures and successes waiting to be shared, and
// lockoutQueue the lockouts, in a queue of their own (a spray of failures
// must not crowd them out: the group's count that started a lockout is
// consumed, so a lockout not shared would hold at this broker only): past
// it one is dropped (and logged), never waited for.
const (
	shareQueue   = 256
	lockoutQueue = 64
)

// shareRetry is how long, once the registry failed a failure count, the
// next failures and successes are counted here only before the registry
// is tried again: an outage costs one timeout per shareRetry, not one per
// login.
const shareRetry = 5 * time.Second

// shareOp is one thing to share: a lockout started here, a failure of
// key, or a success that cleared key's failures.
type shareOp struct {
	lockout *auth.Lockout
	key     string
	reset   bool
}

// lockoutShare makes the login failures and lockouts of the group
// everyone's. A failure this broker's limiter counts is added to the
// group's count of its key in the registry, and the failure that brings
// the count to max_failures (at whichever broker) starts the lockout
// there; every broker's counts are heard by this one's limiter, so that
// a success here clears the key's count if it has failures anywhere (and
// writes nothing if it has none). A lockout this broker's
// limiter starts is published, and every broker's lockouts are imposed on
// this one's limiter. Failures and successes go through one bounded
// queue, in order, lockouts through another; logins never wait for the
// registry. While the registry is out of reach, failures are counted here
// only (logged once), so each broker still locks a key out after
// max_failures of its own; they are added to the group's count once it is
// back (see missedFailure), and the lockouts started here are kept and
// published once it is back, unless an administrator cleared the key
// since they started (the registry refuses them then: registry.ErrCleared).
// A clearing clears here only what predates it (see cleared).
type lockoutShare struct {
	store   *registry.Store
	server  string        // this broker's id
	limiter *auth.Limiter // set once built, before run
	clk     clock.Clock   // the limiter's: for shareRetry and lockouts' remaining time
	queue   chan shareOp
	locks   chan shareOp  // lockouts started here (lockoutQueue)
	dropped atomic.Int64  // ops dropped since the last drop was logged
	retry   chan struct{} // the retry timer fired (buffered 1)
	log     hclog.Logger

	// run's own:
	down      bool                    // the registry failed the last count or clear
	downSince time.Time               // when it last failed, on clk (tried again after shareRetry)
	resets    map[string]struct{}     // keys whose clearing the registry missed, retried first
	missed    map[string]*missedCount // failures the registry missed, by key, counted next
	unshared  map[string]auth.Lockout // lockouts not yet published, by key (at most lockoutQueue)
	retryArm  clock.Timer             // the retry timer (armRetry), while armed
}

// newLockoutShare returns the share of server's failures and lockouts
// through store; clk must be the clock of the limiter it is wired to.
func newLockoutShare(store *registry.Store, server string, clk clock.Clock, log hclog.Logger) *lockoutShare {
	return &lockoutShare{store: store, server: server, clk: clk, queue: make(chan shareOp, shareQueue),
		locks: make(chan shareOp, lockoutQueue), retry: make(chan struct{}, 1), log: log,
		resets: map[string]struct{}{}, missed: map[string]*missedCount{}, unshared: map[string]auth.Lockout{}}
}

// started is the limiter's OnLockout: it logs lo and queues it without
// blocking. The failures that started it may have been counted here or
// anywhere in the group.
func (s *lockoutShare) started(lo auth.Lockout) {
	s.log.Info("login lockout started", "key", lo.Key, "level", lo.Level,
		"remaining", lo.Until.Sub(s.clk.Now()).Round(time.Second))
	s.enqueue(shareOp{lockout: &lo, key: lo.Key})
}

// failed is the limiter's OnFailure: it queues the key's failure for the
// group's count without blocking.
func (s *lockoutShare) failed(key string) { s.enqueue(shareOp{key: key}) }

// succeeded is the limiter's OnReset: it queues the clearing of the
// group's count of key without blocking.
func (s *lockoutShare) succeeded(key string) { s.enqueue(shareOp{key: key, reset: true}) }

func (s *lockoutShare) enqueue(op shareOp) {
	q := s.queue
	if op.lockout != nil {
		q = s.locks
	}
	select {
	case q <- op:
	default:
		// The first drop of a burst is logged, the rest counted (see run).
		if s.dropped.Add(1) == 1 {
			what := "failure not counted by the group"
			switch {
			case op.lockout != nil:
				what = "lockout not shared with the group"
			case op.reset:
				what = "failures not cleared in the group"
			}
			s.log.Warn(what+": too many at once", "key", op.key)
		}
	}
}

// run shares the queued ops and applies the group's lockouts and counts,
// until ctx ends.
func (s *lockoutShare) run(ctx context.Context) {
	group := s.store.WatchLockouts(ctx)
	counts := s.store.WatchFailures(ctx)
	for {
		select {
		case <-ctx.Done():
			if s.retryArm != nil {
				s.retryArm.Stop()
			}
			return
		case <-s.retry:
			s.retryArm = nil
			s.retryLockouts(ctx)
			s.retryCounts(ctx)
		case op := <-s.locks:
			s.share(ctx, op)
			s.logDropped()
		case op := <-s.queue:
			s.share(ctx, op)
			s.logDropped()
		case f, ok := <-counts:
			if !ok {
				return
			}
			// Its own counts too (hearing one twice is harmless): a
			// broker restarted under the same id learns them back.
			if s.limiter.Observe(f.Key, f.Count, time.UnixMilli(f.FirstUnixMs)) {
				s.log.Debug("the group's failures reached max_failures", "key", f.Key, "failures", f.Count, "server", f.Server)
			}
		case lo, ok := <-group:
			if !ok {
				return
			}
			if lo.Cleared || lo.ClearedUnixMs != 0 {
				// A clearing, or a lockout imposed after one that
				// carries its time: this broker may not have heard of
				// the clearing (it was replaced before a re-list).
				s.cleared(lo)
			}
			if lo.Cleared {
				continue
			}
			if lo.Server == s.server {
				continue // this broker's own, in force here already
			}
			until := time.UnixMilli(lo.UntilUnixMs)
			if s.limiter.Apply(auth.Lockout{Key: lo.Key, Until: until, Level: lo.Level, Since: unixMsTime(lo.SinceUnixMs)}) {
				s.log.Info("login lockout imposed by another server", "key", lo.Key, "server", lo.Server,
					"remaining", until.Sub(s.clk.Now()).Round(time.Second))
			}
		}
	}
}

// cleared applies an administrator's clearing of lo.Key (lo is the
// clearing, or a lockout imposed after it that carries its time), as
// often as the registry lists it (it stays there as long as a lockout
// imposed before it may last): the limiter forgets the key's lockout and
// failures from before the clearing, and a lockout of the key waiting to
// be published is dropped if imposed before it (the registry would
// refuse it anyway). A lockout imposed here after the clearing stays, in
// force and waiting to be published: a broker that hears of the clearing
// late (a re-list after a watch failure, or after an outage) must not
// lose it. A clearing without its time (an older broker's) clears
// everything, as those brokers do.
func (s *lockoutShare) cleared(lo registry.Lockout) {
	cut, stamped := lo.ClearCutoff()
	forgot := false
	if u, ok := s.unshared[lo.Key]; ok && (!stamped || !u.Since.After(cut)) {
		delete(s.unshared, lo.Key) // cleared before it could be shared
		forgot = true
	}
	if stamped {
		forgot = s.limiter.ClearBefore(lo.Key, cut) || forgot
	} else {
		s.limiter.Clear(lo.Key)
		forgot = true
	}
	args := []any{"key", lo.Key}
	if lo.Cleared {
		args = append(args, "via", lo.Server) // a lockout's Server imposed it
	}
	if forgot {
		s.log.Info("login lockout cleared by an administrator", args...)
	} else {
		s.log.Debug("login lockout clearing heard again: nothing here from before it", args...)
	}
}

// unixMsTime is the time of ms, a registry record's, or the zero time
// for 0 (unknown).
func unixMsTime(ms int64) time.Time {
	if ms == 0 {
		return time.Time{}
	}
	return time.UnixMilli(ms)
}

// unixMs is the registry's form of t, 0 for the zero time.
func unixMs(t time.Time) int64 {
	if t.IsZero() {
		return 0
	}
	return t.UnixMilli()
}

// logDropped logs how many ops were dropped since the last time, if more
// than the one enqueue logged.
func (s *lockoutShare) logDropped() {
	if n := s.dropped.Swap(0); n > 1 {
		s.log.Warn("failures, successes or lockouts not shared with the group: too many at once", "dropped", n)
	}
}

// share does op in the registry, within a bounded time.
func (s *lockoutShare) share(ctx context.Context, op shareOp) {
	if op.lockout != nil {
		_ = s.publish(ctx, *op.lockout)
		return
	}
	if s.down && s.clk.Now().Sub(s.downSince) < shareRetry {
		if op.reset {
			s.missedReset(op.key)
		} else {
			s.missedFailure(op.key)
		}
		return // counted here only, as logged; the group's count later
	}
	if !op.reset && s.limiter.Locked(op.key) {
		// A failure queued before its key's lockout (shared ahead of
		// it): the lockout consumed it, and counted now it would start
		// the next window's count at the group.
		return
	}
	_, window := s.limiter.Limits()
	maxFailures := s.limiter.LimitOf(op.key)
	pctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	err := s.retryResets(pctx)
	switch {
	case err != nil:
		if op.reset {
			s.missedReset(op.key)
		}
	case op.reset:
		if err = s.store.ClearFailures(pctx, op.key); err != nil {
			s.missedReset(op.key)
		}
	default:
		var f registry.Failures
		f, err = s.store.CountFailure(pctx, op.key, window, maxFailures)
		if err == nil && s.limiter.Observe(f.Key, f.Count, time.UnixMilli(f.FirstUnixMs)) {
			s.log.Debug("the group's failures reached max_failures", "key", f.Key, "failures", f.Count)
		}
	}
	switch {
	case err != nil && ctx.Err() != nil:
	case errors.Is(err, registry.ErrBadKey):
		// The key's fault, not the registry's: counted here only. Taken
		// for an outage, a login name too long to store, typed every
		// shareRetry, would stop the group counting anyone's failures.
		s.log.Debug("failure not counted by the group: key too long", "bytes", len(op.key))
	case errors.Is(err, registry.ErrContended):
		// Reachable, but too many brokers counting this key at once.
		s.log.Warn("failure not counted by the group", "key", op.key, "error", err)
	case err != nil:
		if !op.reset {
			s.missedFailure(op.key)
		}
		if !s.down {
			s.log.Warn("failed logins not counted by the group: registry out of reach; counting here only", "key", op.key, "error", err)
		}
		s.down, s.downSince = true, s.clk.Now()
	case s.down:
		s.down = false
		s.log.Info("failed logins counted by the group again")
	}
}

// publish shares lo with the group. One the registry failed is kept and
// tried again each shareRetry until it is shared, ends, or is replaced or
// cleared: the group's count of its failures may be consumed already, so
// a lockout not shared would hold at this broker only. One the registry
// refuses as cleared by an administrator after it was imposed
// (registry.ErrCleared) is done with: the clearing stands, and the
// watch brings it here too (see cleared). It returns PublishLockout's
// error.
func (s *lockoutShare) publish(ctx context.Context, lo auth.Lockout) error {
	pctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	err := s.store.PublishLockout(pctx, registry.Lockout{Key: lo.Key, UntilUnixMs: lo.Until.UnixMilli(),
		SinceUnixMs: unixMs(lo.Since), Level: lo.Level})
	cancel()
	if err == nil || ctx.Err() != nil || errors.Is(err, registry.ErrBadKey) || errors.Is(err, registry.ErrCleared) {
		switch {
		case err == nil || ctx.Err() != nil:
		case errors.Is(err, registry.ErrCleared):
			s.log.Info("lockout not shared with the group: an administrator cleared it since", "key", lo.Key)
		default:
			s.log.Debug("lockout not shared with the group: key too long", "bytes", len(lo.Key))
		}
		delete(s.unshared, lo.Key)
		return err
	}
	_, again := s.unshared[lo.Key]
	if !again {
		s.log.Warn("lockout not shared with the group; trying again", "key", lo.Key, "error", err)
	}
	if again || len(s.unshared) < lockoutQueue {
		s.unshared[lo.Key] = lo // a later lockout of the key replaces it
	} else {
		s.log.Warn("lockout not shared with the group: too many waiting", "key", lo.Key)
	}
	if len(s.unshared) > 0 {
		s.armRetry()
	}
	return err
}

// armRetry has run try again, shareRetry from now, what the registry
// missed (lockouts, clearings, failures), unless that is armed already.
func (s *lockoutShare) armRetry() {
	if s.retryArm != nil {
		return
	}
	s.retryArm = s.clk.AfterFunc(shareRetry, func() {
		select {
		case s.retry <- struct{}{}:
		default:
		}
	})
}

// retryCounts does the clearings and counts of failures the registry
// missed, when the retry timer fires: no other failure or success may
// come to carry them (see share). Still out of reach, it tries again
// shareRetry later.
func (s *lockoutShare) retryCounts(ctx context.Context) {
	if len(s.resets) == 0 && len(s.missed) == 0 {
		return
	}
	pctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	err := s.retryResets(pctx)
	if err == nil {
		err = s.retryFailures(pctx)
	}
	switch {
	case err != nil && ctx.Err() == nil:
		s.down, s.downSince = true, s.clk.Now()
		s.armRetry()
	case err == nil && s.down:
		s.down = false
		s.log.Info("failed logins counted by the group again")
	}
}

// retryLockouts publishes the lockouts publish kept, dropping those over.
// The first that fails ends the round (the registry is still out of
// reach: one timeout per shareRetry, not one per lockout).
func (s *lockoutShare) retryLockouts(ctx context.Context) {
	now := s.clk.Now()
	for key, lo := range s.unshared {
		if !lo.Until.After(now) {
			delete(s.unshared, key) // over: nothing left to share
			continue
		}
		err := s.publish(ctx, lo)
		if _, failed := s.unshared[key]; failed {
			return // publish armed the next round
		}
		if err == nil {
			s.log.Info("lockout shared with the group", "key", key)
		}
	}
}

// missedReset remembers that the group's count of key was not cleared
// after a success (the registry was out of reach): left, the failures
// before the success would count on with the next ones, and one typo
// after the outage could lock the user out. At most shareQueue are kept.
func (s *lockoutShare) missedReset(key string) {
	delete(s.missed, key) // the success ends them here too
	if len(s.resets) < shareQueue {
		s.resets[key] = struct{}{}
		s.armRetry()
	} else if _, ok := s.resets[key]; !ok {
		s.log.Debug("failures not cleared in the group: too many missed", "key", key)
	}
}

// missedCount is a key's failures the group's count missed: how many,
// and when the first was (on the share's clock).
type missedCount struct {
	n     int
	first time.Time
}

// missedFailure remembers a failure of key that the group did not count
// (the registry out of reach), to be added to the group's count once the
// registry is back (retryFailures): without it, what a broker cut off from
// etcd saw would not count at the group afterwards, and each broker of a
// group that lost its etcd would give a guesser max_failures of its own
// again after the outage. At most shareQueue keys are kept. A failure
// whose count's outcome was unknown (the registry may have committed it)
// may so count twice: the lockout then comes one failure early.
func (s *lockoutShare) missedFailure(key string) {
	m, ok := s.missed[key]
	if !ok {
		if len(s.missed) >= shareQueue {
			s.log.Debug("failure not counted by the group: too many missed", "key", key)
			return
		}
		m = &missedCount{first: s.clk.Now()}
		s.missed[key] = m
	}
	m.n++
	s.armRetry()
}

// retryFailures adds the failures missedFailure kept to the group's
// counts, after the clearings (retryResets), on the retry timer only (a
// login's failure is not held up by them; the order of failures does not
// matter to a count, a clearing's does): at most replayBatch at a time,
// the rest at the next retry, so that a backlog of many keys does not
// overrun the call's bound and pass for an outage. Those of a key locked
// out here since (its lockout consumed them; it is published itself) or
// whose window has passed are dropped, and so are a key's the registry
// refuses (too long, or contended). It stops at the first other error,
// keeping what is left.
func (s *lockoutShare) retryFailures(ctx context.Context) error {
	_, window := s.limiter.Limits()
	now := s.clk.Now()
	budget := replayBatch
	for key, m := range s.missed {
		if budget == 0 {
			s.armRetry()
			return nil
		}
		for m.n > 0 && budget > 0 && !s.limiter.Locked(key) && now.Sub(m.first) <= window {
			budget--
			f, err := s.store.CountFailure(ctx, key, window, s.limiter.LimitOf(key))
			if errors.Is(err, registry.ErrBadKey) || errors.Is(err, registry.ErrContended) {
				m.n = 0 // dropped
				break
			}
			if err != nil {
				return err
			}
			m.n--
			if s.limiter.Observe(f.Key, f.Count, time.UnixMilli(f.FirstUnixMs)) {
				s.log.Debug("the group's failures reached max_failures", "key", f.Key, "failures", f.Count)
			}
		}
		if m.n > 0 && budget == 0 && !s.limiter.Locked(key) && now.Sub(m.first) <= window {
			s.armRetry() // the rest of this key's next time
			return nil
		}
		delete(s.missed, key)
	}
	return nil
}

// replayBatch bounds the failures retryFailures counts at a time.
const replayBatch = 64

// retryResets clears the counts missedReset kept, before anything else
// is counted; it stops at the first error.
func (s *lockoutShare) retryResets(ctx context.Context) error {
	for key := range s.resets {
		if err := s.store.ClearFailures(ctx, key); err != nil {
			return err
		}
		delete(s.resets, key)
	}
	return nil
}
