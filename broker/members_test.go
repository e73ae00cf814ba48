package broker

import (
	"bytes"
	"testing"
)

// TestGroupWelcomeMembers: every broker's Welcome lists the whole group,
// each member with the address and certificate fingerprint it registered
// (PROTOCOL.md §11), so a terminal can fail over to any of them.
func TestGroupWelcomeMembers(t *testing.T) {
	t.Parallel()
	g := newGroup(t)
	for _, e := range g.b {
		tm := e.dial("members-" + e.b.cfg.ServerID)
		if len(tm.welcome.Members) != len(g.b) {
			t.Fatalf("%s: Welcome.Members = %+v; want %d members", e.b.cfg.ServerID, tm.welcome.Members, len(g.b))
		}
		for _, want := range g.b {
			found := false
			for _, m := range tm.welcome.Members {
				if m.ServerID == want.b.cfg.ServerID {
					found = true
					if m.Addr != want.addr || !bytes.Equal(m.Fingerprint, want.pin) || m.Draining {
						t.Errorf("%s: member %+v; want addr %s, fingerprint %x, not draining", e.b.cfg.ServerID, m, want.addr, want.pin)
					}
				}
			}
			if !found {
				t.Errorf("%s: Welcome.Members lacks %s", e.b.cfg.ServerID, want.b.cfg.ServerID)
			}
		}
	}
}
