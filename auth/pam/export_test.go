package pam

import "github.com/hotdesk/hotdesk/auth"

// Abandon lets go of s's helper as a daemon that exits does: its ends of
// the pipes close, and the session is not closed.
func Abandon(s auth.Session) {
	p := s.(*session).p
	p.toH.Close()
	p.fromH.Close()
}
