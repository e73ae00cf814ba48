package broker

import (
	"bytes"
	"context"
	"testing"
	"time"

	"github.com/hotdesk/hotdesk/internal/testutil"
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

// TestGroupMembersRetryAfterFailure: a failed read of the group is tried
// again memberRetry later, not after a whole memberTTL (until then every
// Welcome would lack the group), and not on every handshake.
func TestGroupMembersRetryAfterFailure(t *testing.T) {
	t.Parallel()
	e := newEnv(t, "b1", nil)
	failed, cancel := context.WithCancel(e.ctx)
	cancel()
	if got := e.b.groupMembers(failed); len(got) != 0 {
		t.Fatalf("members read with a cancelled context = %+v; want none", got)
	}
	if got := e.b.groupMembers(e.ctx); len(got) != 0 {
		t.Fatalf("members at once after the failed read = %+v; want none (no read per handshake)", got)
	}
	e.clk.Advance(memberRetry)
	testutil.WaitFor(t, 10*time.Second, "the group read again memberRetry after the failure", func() bool {
		return len(e.b.groupMembers(e.ctx)) == 1
	})
}
