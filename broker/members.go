package broker

import (
	"context"
	"sync"
	"time"

	"github.com/hotdesk/hotdesk/proto"
)

// memberTTL is how long the group member list sent in Welcome is served
// from the cache before the registry is read again (PROTOCOL.md §11).
const memberTTL = 10 * time.Second

// memberReadTimeout bounds the registry read behind a handshake.
const memberReadTimeout = time.Second

// memberRetry is how soon a failed read is tried again: a transient
// registry error must not leave Welcome without the group for a whole
// memberTTL, nor make every handshake wait for a failing registry.
const memberRetry = time.Second

// memberCache holds the group's members for Welcome.Members. Its zero
// value is ready.
type memberCache struct {
	mu       sync.Mutex
	list     []proto.Member // shared, never modified once stored
	at       time.Time      // when list was read (after a failed read: set back so that it is read again memberRetry later); zero: never
	fetching bool
}

// groupMembers returns the brokers of the group as the registry lists them
// (those with a fingerprint). The first call reads the registry; later
// ones get the cached list at once, and one of them refreshes it in the
// background once it is memberTTL old, so a slow registry never delays a
// handshake after the first. A failed read keeps the previous list
// (possibly none) and is tried again memberRetry later. ctx bounds the read; it must outlive the call (the
// Serve context). The refresh goroutine is the broker's (goAttach):
// Shutdown waits for it, and none starts once Shutdown waits.
func (b *Broker) groupMembers(ctx context.Context) []proto.Member {
	c := &b.members
	c.mu.Lock()
	if (!c.at.IsZero() && b.clk.Now().Sub(c.at) < memberTTL) || c.fetching {
		list := c.list
		c.mu.Unlock()
		return list
	}
	c.fetching = true
	first := c.at.IsZero()
	list := c.list
	c.mu.Unlock()
	if first {
		return b.refreshMembers(ctx)
	}
	if !b.goAttach(func() { b.refreshMembers(ctx) }) {
		c.mu.Lock()
		c.fetching = false // shut down
		c.mu.Unlock()
	}
	return list
}

// refreshMembers reads the group's members into the cache and returns the
// cached list.
func (b *Broker) refreshMembers(ctx context.Context) []proto.Member {
	c := &b.members
	rctx, cancel := context.WithTimeout(ctx, memberReadTimeout)
	servers, err := b.registry().Servers(rctx)
	cancel()

	c.mu.Lock()
	defer c.mu.Unlock()
	c.fetching = false
	if err != nil {
		b.log.Debug("reading group members failed", "error", err)
		// Try again memberRetry from now, not on every handshake (a
		// failing registry would hold each one up) nor after a whole TTL.
		c.at = b.clk.Now().Add(memberRetry - memberTTL)
		return c.list
	}
	list := make([]proto.Member, 0, min(len(servers), proto.MaxMembers))
	for _, s := range servers {
		if len(s.Fingerprint) == 0 || s.Addr == "" || len(list) == proto.MaxMembers {
			continue
		}
		list = append(list, proto.Member{ServerID: s.ID, Addr: s.Addr, Fingerprint: s.Fingerprint, Draining: s.Draining})
	}
	c.list, c.at = list, b.clk.Now()
	return list
}
