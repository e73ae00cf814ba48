package broker

import (
	"context"
	"crypto/sha256"
	"net"
	"sync"
	"time"
	"unicode/utf8"

	"github.com/hotdesk/hotdesk/proto"
	"github.com/hotdesk/hotdesk/registry"
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
		m, ok := memberOf(s)
		if !ok || len(list) == proto.MaxMembers {
			continue
		}
		list = append(list, m)
	}
	c.list, c.at = list, b.clk.Now()
	return list
}

// maxMemberAddr bounds a member's address (a host name of at most 253
// bytes, ":" and a port): MaxMembers of them must fit one Welcome.
const maxMemberAddr = 261

// memberOf returns the group member server record s describes, or false if
// it cannot be one: a member that published no address or fingerprint
// (yet), or a corrupted or hostile record. One such record must not break
// the Welcome of every terminal: an address of 70 KB made it a frame too
// large to send (and one that is not UTF-8, which a JSON record cannot
// carry, a frame the terminal refuses).
func memberOf(s registry.ServerRecord) (proto.Member, bool) {
	if len(s.Fingerprint) != sha256.Size || s.Addr == "" || len(s.Addr) > maxMemberAddr ||
		!utf8.ValidString(s.Addr) || s.ID == "" || len(s.ID) > registry.MaxKeyLen || !utf8.ValidString(s.ID) {
		return proto.Member{}, false
	}
	if _, _, err := net.SplitHostPort(s.Addr); err != nil {
		return proto.Member{}, false
	}
	return proto.Member{ServerID: s.ID, Addr: s.Addr, Fingerprint: s.Fingerprint, Draining: s.Draining}, true
}
