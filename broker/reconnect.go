package broker

import (
	"time"

	"github.com/hotdesk/hotdesk/internal/netsrc"
)

// Reconnects (Config.ReconnectGrace). A terminal whose link drops, or
// which restarts, under a person who never left connects again and
// presents the token still in its reader: under a policy that asks a PIN
// or password at every hot-desk, the person would type it again for a
// blip of the network. Within the grace, the same terminal (its id, from
// the same IP address) resumes the session it showed with the token alone
// (the token's proof is still asked; the account is checked again), as a
// hot-desk does under reauth_on_hotdesk = false. It is no hot-desk: the
// token went nowhere, and whoever is at that terminal saw the desktop
// until the link dropped. A session an administrator locked, or shown
// again anywhere since, asks as the policy says, and so does a password
// login without a token (its "token" proves nobody's presence: the next
// person at the terminal could name the user).

// lostTerminal is the terminal a session was shown at when that
// terminal's connection ended.
type lostTerminal struct {
	term string    // its id
	host string    // its IP address (netsrc.Host)
	at   time.Time // when the connection ended
}

// markLost records that s was shown at t when t's connection ended.
// Caller holds b.mu.
func (b *Broker) markLost(s *Session, t *terminal) {
	if b.cfg.ReconnectGrace > 0 {
		s.lost = lostTerminal{term: t.id, host: netsrc.Host(t.remote), at: b.clk.Now()}
	}
}

// reconnecting reports whether presenting s's token at t is its terminal
// coming back within the grace: s was shown at a connection of t's id
// from t's IP address, which ended less than the grace ago (lost) or has
// not been seen to end yet (old: a terminal that reconnects before its
// broker times the old connection out). Caller holds b.mu.
func (b *Broker) reconnecting(s *Session, t *terminal, old *terminal) bool {
	if b.cfg.ReconnectGrace <= 0 || s.locked {
		return false
	}
	host := netsrc.Host(t.remote)
	switch {
	case s.state == Active && old != nil && old != t:
		return old.id == t.id && netsrc.Host(old.remote) == host
	case s.state == Suspended && !s.lost.at.IsZero():
		return s.lost.term == t.id && s.lost.host == host && b.clk.Now().Sub(s.lost.at) < b.cfg.ReconnectGrace
	}
	return false
}
