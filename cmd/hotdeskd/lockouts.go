package main

import (
	"context"
	"time"

	"github.com/hashicorp/go-hclog"

	"github.com/hotdesk/hotdesk/auth"
	"github.com/hotdesk/hotdesk/registry"
)

// lockoutQueue bounds the lockouts waiting to be published: past it one
// is dropped (and logged), never waited for.
const lockoutQueue = 64

// lockoutShare makes the login lockouts of the group everyone's: a
// lockout this broker's limiter starts is published in the registry, and
// every broker's lockouts are imposed on this one's limiter. Failures are
// counted where they happen; a lockout, once started anywhere, holds at
// every broker, and the next one anywhere backs off from it.
type lockoutShare struct {
	store   *registry.Store
	server  string        // this broker's id
	limiter *auth.Limiter // set once built, before run
	queue   chan auth.Lockout
	log     hclog.Logger
}

func newLockoutShare(store *registry.Store, server string, log hclog.Logger) *lockoutShare {
	return &lockoutShare{store: store, server: server, queue: make(chan auth.Lockout, lockoutQueue), log: log}
}

// started is the limiter's OnLockout: it queues lo without blocking.
func (s *lockoutShare) started(lo auth.Lockout) {
	select {
	case s.queue <- lo:
	default:
		s.log.Warn("lockout not shared with the group: too many at once", "key", lo.Key)
	}
}

// run publishes the queued lockouts and applies the group's, until ctx
// ends.
func (s *lockoutShare) run(ctx context.Context) {
	group := s.store.WatchLockouts(ctx)
	for {
		select {
		case <-ctx.Done():
			return
		case lo := <-s.queue:
			pctx, cancel := context.WithTimeout(ctx, 5*time.Second)
			err := s.store.PublishLockout(pctx, registry.Lockout{Key: lo.Key, UntilUnixMs: lo.Until.UnixMilli(), Level: lo.Level})
			cancel()
			if err != nil {
				s.log.Warn("lockout not shared with the group", "key", lo.Key, "error", err)
			}
		case lo, ok := <-group:
			if !ok {
				return
			}
			if lo.Cleared {
				s.limiter.Clear(lo.Key)
				s.log.Info("login lockout cleared by an administrator", "key", lo.Key, "via", lo.Server)
				continue
			}
			if lo.Server == s.server {
				continue // this broker's own, in force here already
			}
			until := time.UnixMilli(lo.UntilUnixMs)
			if s.limiter.Apply(auth.Lockout{Key: lo.Key, Until: until, Level: lo.Level}) {
				s.log.Info("login lockout imposed by another server", "key", lo.Key, "server", lo.Server,
					"remaining", time.Until(until).Round(time.Second))
			}
		}
	}
}
