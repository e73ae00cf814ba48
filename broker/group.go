package broker

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"maps"
	"math"
	"time"

	"github.com/hotdesk/hotdesk/proto"
	"github.com/hotdesk/hotdesk/registry"
)

// place chooses the server for a new session: the least loaded member of
// the group (live sessions ÷ weight) that is neither draining nor full.
// Ties go to this server, so a balanced group never redirects for nothing;
// a terminal that was already redirected here for placement stays here if
// this server can take it.
func (b *Broker) place(ctx context.Context, hops uint8) (registry.ServerRecord, error) {
	lctx, cancel := context.WithTimeout(ctx, remoteTimeout)
	servers, err := b.registry().Servers(lctx)
	cancel()
	if err != nil {
		return registry.ServerRecord{}, err
	}
	local := b.liveCount()
	var best registry.ServerRecord
	bestScore, found := math.Inf(1), false
	for _, srv := range servers {
		if srv.ID == b.cfg.ServerID {
			srv.Sessions = local // our own count is exact
			if b.cfg.MaxSessions > 0 {
				srv.Capacity = b.cfg.MaxSessions
			}
		}
		if srv.Draining || (srv.Capacity > 0 && srv.Sessions >= srv.Capacity) {
			continue
		}
		if srv.ID == b.cfg.ServerID && hops > 0 {
			return srv, nil // placed here by another broker
		}
		w := float64(max(srv.Weight, 1))
		score := float64(srv.Sessions) / w
		if score < bestScore || (score == bestScore && srv.ID == b.cfg.ServerID) {
			best, bestScore, found = srv, score, true
		}
	}
	if !found {
		return registry.ServerRecord{}, errNoCapacity
	}
	return best, nil
}

var errNoCapacity = errors.New("broker: no server of the group can take a new session")

// RouteLooker is an optional capability of a Registry (*registry.Registry
// has it): a session's claim and its owner's record in one local read.
type RouteLooker interface {
	LookupRoute(ctx context.Context, key string) (registry.Claim, registry.ServerRecord, error)
}

// redirectAway answers an insert of token at t with a Redirect when the
// local registry view says another server owns its session: the claim
// and the owner's address and fingerprint from one local read
// (LookupRoute; else LookupLocal and ServerLocal). done=false: not owned
// elsewhere as far as this view knows (or the view is unavailable), and
// the insert takes the full path. A stale view is safe: the owner
// re-checks the redirect, and a creation goes through the claim
// transaction.
func (b *Broker) redirectAway(ctx context.Context, t *terminal, token string, hops uint8) (done bool, err error) {
	lctx, cancel := context.WithTimeout(ctx, remoteTimeout)
	defer cancel()
	reg := b.registry()
	rl, ok := reg.(RouteLooker)
	if !ok {
		c, err := reg.LookupLocal(lctx, token)
		if err != nil || c.Session.ServerID == b.cfg.ServerID {
			return false, nil
		}
		return true, b.redirect(ctx, t, c, hops)
	}
	c, srv, err := rl.LookupRoute(lctx, token)
	switch {
	case c.Key == "" || c.Session.ServerID == b.cfg.ServerID:
		return false, nil // absent, ours, or unreadable: the full path
	case hops >= proto.MaxHops:
		return true, fail(proto.ErrTooManyHops, "too many redirects", nil)
	case err != nil:
		// The owner's lease is gone or going: its claims vanish with it.
		return true, fail(proto.ErrUnavailable, "session owner unreachable; retry shortly", err)
	}
	return true, b.redirectTo(t, c.Key, srv, c.Fence, hops)
}

// liveCount is the number of sessions this server runs, orphans excluded.
func (b *Broker) liveCount() int {
	b.mu.Lock()
	defer b.mu.Unlock()
	n := 0
	for _, s := range b.byID {
		if !s.orphaned {
			n++
		}
	}
	return n
}

// countChanged asks the publisher to write this server's session count to
// its server record; bursts of changes are coalesced into one write.
func (b *Broker) countChanged() {
	select {
	case b.countCh <- struct{}{}:
	default:
	}
}

// publishCounts writes the live session count until Shutdown.
func (b *Broker) publishCounts() {
	for {
		select {
		case <-b.stop:
			return
		case <-b.countCh:
		}
		n := b.liveCount()
		ctx, cancel := context.WithTimeout(b.life, remoteTimeout)
		err := b.registry().UpdateServer(ctx, func(r *registry.ServerRecord) { r.Sessions = n })
		cancel()
		if err != nil {
			b.log.Debug("publishing session count failed", "sessions", n, "error", err)
		}
	}
}

// Reestablish moves every session this broker runs to reg, a registry with
// a new lease, after the old lease was lost. A session whose key another
// server took meanwhile is kept, suspended, and reported as orphaned: it
// is never destroyed here (an administrator may kill it, or its suspend
// timeout ends it). It returns the orphans. On error (etcd unreachable
// again) it can simply be called again: re-claiming is idempotent.
func (b *Broker) Reestablish(ctx context.Context, reg Reclaimer) ([]SessionInfo, error) {
	b.mu.Lock()
	sessions := make([]*Session, 0, len(b.byID))
	for _, s := range b.byID {
		if !s.orphaned {
			sessions = append(sessions, s)
		}
	}
	b.mu.Unlock()

	var orphans []SessionInfo
	for _, s := range sessions {
		unlock := b.keys.Lock(s.Token)
		if b.current(s) == nil {
			unlock()
			continue
		}
		b.mu.Lock()
		old := s.claim
		b.mu.Unlock()
		c, ok, err := reg.Reclaim(ctx, old, b.record(s, s.term))
		if err != nil {
			unlock()
			return orphans, fmt.Errorf("broker: reclaim %s: %w", s.ID, err)
		}
		if ok {
			b.mu.Lock()
			s.setClaimLocked(c)
			b.mu.Unlock()
		} else {
			b.orphanTokenLocked(s, c.Session.ServerID)
			b.mu.Lock()
			orphans = append(orphans, b.infoLocked(s))
			b.mu.Unlock()
		}
		unlock()
	}
	b.mu.Lock()
	b.reg = reg
	b.mu.Unlock()
	select {
	case b.regChanged <- struct{}{}:
	default:
	}
	b.countChanged()
	b.orphansChanged() // the old lease's records went with it
	b.log.Info("registry lease re-established", "sessions", len(sessions)-len(orphans), "orphans", len(orphans))
	return orphans, nil
}

// tokenCacheTTL bounds how long a token record is served from memory
// without a change notice (TokenChanged) from the registry's watch.
const tokenCacheTTL = 30 * time.Second

type cachedToken struct {
	rec registry.TokenRecord
	at  time.Time
}

// tokenRecord returns token's registry record, from the cache when fresh:
// a resume on the same server then needs no etcd read. A disabled record
// is never served from the cache: a token is refused on the registry's
// word, so that an enable made through another broker a moment ago works
// here before this broker's watch has told it (within milliseconds).
func (b *Broker) tokenRecord(ctx context.Context, token string) (registry.TokenRecord, error) {
	now := b.clk.Now()
	b.mu.Lock()
	c, ok := b.tokenCache[token]
	gen := b.tokenGen
	b.mu.Unlock()
	if ok && now.Sub(c.at) < tokenCacheTTL && !c.at.After(now) && !c.rec.Disabled {
		return c.rec, nil
	}
	lctx, cancel := context.WithTimeout(ctx, remoteTimeout)
	rec, err := b.registry().Token(lctx, token)
	cancel()
	if err != nil {
		return rec, err
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.tokenGen != gen {
		// A change arrived while we read: this answer may predate it
		// (a token just disabled would be served enabled for the TTL).
		return rec, nil
	}
	if d := now.Sub(b.tokenCacheSwept); d >= tokenCacheTTL || d <= -tokenCacheTTL {
		// Expired records are never served again: forget them, at most
		// once a TTL, so that the cache holds the tokens read within the
		// last two TTLs, not every token ever read. now is when this
		// read started: reads finishing out of order are up to a
		// remoteTimeout apart, and neither sweeps again nor drops the
		// fresher records of the other; only a clock set back by a TTL
		// or more does (those records would never expire).
		maps.DeleteFunc(b.tokenCache, func(_ string, c cachedToken) bool {
			age := now.Sub(c.at)
			return age >= tokenCacheTTL || age <= -tokenCacheTTL
		})
		b.tokenCacheSwept = now
	}
	if len(b.tokenCache) >= maxCachedTokens {
		clear(b.tokenCache) // bounded: start over rather than track ages
	}
	b.tokenCache[token] = cachedToken{rec: rec, at: now}
	return rec, nil
}

// recheckToken reads token's record again, bypassing the cache, for an
// insert verified with rec while the token registry changed: a token
// disabled, deleted or given another key or user meanwhile is refused.
// Caller holds the token lock.
func (b *Broker) recheckToken(ctx context.Context, token string, rec registry.TokenRecord) (registry.TokenRecord, error) {
	lctx, cancel := context.WithTimeout(ctx, remoteTimeout)
	fresh, err := b.registry().Token(lctx, token)
	cancel()
	switch {
	case errors.Is(err, registry.ErrNotFound):
		return fresh, fail(proto.ErrUnknownToken, "token not enrolled", err)
	case err != nil:
		return fresh, fail(proto.ErrUnavailable, "registry unavailable", err)
	case fresh.Disabled:
		return fresh, fail(proto.ErrTokenDisabled, "token disabled", nil)
	case fresh.Kind != rec.Kind || fresh.User != rec.User || !bytes.Equal(fresh.PublicKey, rec.PublicKey):
		return fresh, fail(proto.ErrUnavailable, "token changed while it was checked; present it again", nil)
	}
	return fresh, nil
}

const maxCachedTokens = 65536

// TokenChanged handles a change of the token registry (every broker of the
// group gets every change from registry.WatchTokens): the cached record is
// dropped, and if the token was disabled or deleted the session it shows
// here is locked: suspended, its terminal told. The session itself stays
// for its user to resume with another of their tokens. The lock is
// group-wide because every broker does this.
//
// It returns at once: the lock and suspend run in the background (under
// the token's lock, which a login in progress may hold for minutes), so
// that the next change is seen without waiting for them; a login or an
// insert in progress re-reads the token when it ends (recheckIfChanged).
func (b *Broker) TokenChanged(ch registry.TokenChange) {
	b.mu.Lock()
	delete(b.tokenCache, ch.ID)
	b.tokenGen++
	closed := b.closed
	b.mu.Unlock()
	if closed || (!ch.Deleted && !ch.Record.Disabled) {
		return
	}
	b.goAttach(func() {
		token := ch.ID
		unlock := b.keys.Lock(token)
		defer unlock()
		b.mu.Lock()
		s := b.byToken[token]
		active := s != nil && s.state == Active
		b.mu.Unlock()
		if active {
			b.log.Info("token disabled: locking its session", "token", token, "session", s.ID)
			b.suspendTokenLocked(b.life, s, proto.DetachLocked, "token disabled by an administrator")
		}
	})
}
