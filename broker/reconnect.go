package broker

import (
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/hex"
	"time"

	"github.com/hotdesk/hotdesk/proto"
	"github.com/hotdesk/hotdesk/registry"
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
//
// Across a restart of the broker (keep_on_stop, or a crash: the desktops
// are re-adopted) the grace holds too: the session's claim records the
// SHA-256 of its current key and the terminal it was given to
// (registry.Session.ResumeKeySHA256, ResumeTerminal), written with the
// record each attach writes anyway, and the next run takes them back
// from its own claim of the same session (adoptClaim). The old
// connection ended when the old process did: the grace counts from the
// suspension the record holds (a clean stop, or a connection lost before
// the restart) or, for a session the record still shows attached (a
// crash), from the adoption. The record says nothing of the key while the
// session is suspended for any other reason (its token removed, detached
// by an administrator), nor when it is locked, so none of those resumes
// without a login after a restart either. A record written before the
// hash existed has none: its session is adopted and asks as a hot-desk.

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

// setResumeKeyLocked makes key, given to terminal term, s's current
// resume key. Caller holds b.mu.
func (s *Session) setResumeKeyLocked(key []byte, term string) {
	s.resumeKey = key
	s.resumeHash = sha256.Sum256(key)
	s.resumeTerm = term
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
// the grace: resume is s's current key, given to t's id, and s was shown
// at a connection of t's id that ended less than the grace ago (lost) or
// has not been seen to end yet (old: a terminal that reconnects before its
// broker times the old connection out). The key is compared by its hash,
// in constant time: after a restart the hash is all there is. Caller holds
// b.mu.
func (b *Broker) reconnecting(s *Session, t *terminal, old *terminal, resume []byte) bool {
	if b.cfg.ReconnectGrace <= 0 || s.locked || s.resumeTerm == "" || s.resumeTerm != t.id ||
		len(resume) != proto.ResumeKeyLen {
		return false
	}
	if h := sha256.Sum256(resume); subtle.ConstantTimeCompare(h[:], s.resumeHash[:]) != 1 {
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

// resumeRecordLocked is what s's registry record says of its resume key
// (registry.Session.ResumeTerminal, ResumeKeySHA256): the terminal it was
// given to and its hash while that terminal may reconnect (s shown there,
// or suspended when its connection or this broker ended), none otherwise.
// Caller holds b.mu.
func (b *Broker) resumeRecordLocked(s *Session) (term, keySHA256 string) {
	if b.cfg.ReconnectGrace <= 0 || s.locked || s.resumeTerm == "" {
		return "", ""
	}
	switch {
	case s.state == Active:
	case s.state == Suspended && !s.lost.at.IsZero() && s.lost.term == s.resumeTerm:
	default:
		return "", ""
	}
	return s.resumeTerm, hex.EncodeToString(s.resumeHash[:])
}

// restoreResumeLocked takes back from rec, the previous run's record of
// adopted session s, the hash of s's resume key and the terminal it was
// given to, as if that terminal's connection had ended at s's suspension
// (the record's, or the adoption if the record shows s attached: the old
// connection ended with the old process). A record without them, or of a
// locked session, restores nothing. Caller holds b.mu; rec is s's own
// claim (same server, same session).
func (b *Broker) restoreResumeLocked(s *Session, rec registry.Session) {
	if b.cfg.ReconnectGrace <= 0 || rec.Locked || rec.ResumeTerminal == "" || s.resumeTerm != "" {
		return // none to restore, or s has a key of this run's already
	}
	if rec.State != Active.String() && rec.State != Suspended.String() {
		return
	}
	h, err := hex.DecodeString(rec.ResumeKeySHA256)
	if err != nil || len(h) != sha256.Size {
		b.log.Warn("adopted session's resume key hash unreadable: its terminal logs in again", "session", s.ID)
		return
	}
	s.resumeKey = nil
	copy(s.resumeHash[:], h)
	s.resumeTerm = rec.ResumeTerminal
	s.lost = lostTerminal{term: rec.ResumeTerminal, at: s.suspendedAt}
}
