package broker

import (
	"crypto/rand"
	"crypto/subtle"
	"time"

	"github.com/hotdesk/hotdesk/proto"
)

// Reconnects (Config.ReconnectGrace). A terminal whose link drops, or
// whose connection is cut, under a person who never left connects again
// and presents the token still in its reader: under a policy that asks a
// PIN or password at every hot-desk, the person would type it again for a
// blip of the network. Each Attached carries a fresh ResumeKey, a secret
// of the terminal's connection; a terminal that presents the token again
// on a new connection sends it back (TokenInserted.Resume). Within the
// grace, the same terminal id with the session's current key resumes the
// session with the token alone (its proof is still asked; the account is
// checked again), as a hot-desk does under reauth_on_hotdesk = false. It
// is no hot-desk: the token went nowhere, and the key proves the terminal
// is the one that showed the session (a terminal id and an address can be
// claimed by anyone; a copied card UID with them would otherwise pass
// where the PIN stops it). A session an administrator locked, or shown
// again anywhere since (a new key), asks as the policy says, and so does
// a password login without a token (its "token" proves nobody's presence:
// the next person at the terminal could name the user).

// lostTerminal is the terminal a session was shown at when that
// terminal's connection ended.
type lostTerminal struct {
	term string    // its id
	at   time.Time // when the connection ended
}

// newResumeKey returns a fresh Attached.ResumeKey.
func newResumeKey() []byte {
	k := make([]byte, proto.ResumeKeyLen)
	_, _ = rand.Read(k) // crypto/rand.Read does not fail (it crashes first)
	return k
}

// markLost records that s was shown at t when t's connection ended.
// Caller holds b.mu.
func (b *Broker) markLost(s *Session, t *terminal) {
	if b.cfg.ReconnectGrace > 0 {
		s.lost = lostTerminal{term: t.id, at: b.clk.Now()}
	}
}

// reconnecting reports whether presenting s's token at t with resume
// (TokenInserted.Resume) is the terminal that showed s coming back within
// the grace: resume is s's current key, and s was shown at a connection
// of t's id that ended less than the grace ago (lost) or has not been
// seen to end yet (old: a terminal that reconnects before its broker
// times the old connection out). Caller holds b.mu.
func (b *Broker) reconnecting(s *Session, t *terminal, old *terminal, resume []byte) bool {
	if b.cfg.ReconnectGrace <= 0 || s.locked || len(s.resumeKey) != proto.ResumeKeyLen ||
		subtle.ConstantTimeCompare(resume, s.resumeKey) != 1 {
		return false
	}
	switch {
	case s.state == Active && old != nil && old != t:
		return old.id == t.id
	case s.state == Suspended && !s.lost.at.IsZero():
		return s.lost.term == t.id && b.clk.Now().Sub(s.lost.at) < b.cfg.ReconnectGrace
	}
	return false
}
