package broker

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"

	"github.com/hotdesk/hotdesk/internal/clock"
	"github.com/hotdesk/hotdesk/registry"
)

// TestReconnecting: a reconnect is the terminal's id with the session's
// current resume key, within the grace, for a session not locked; a
// session still shown at an older connection of that terminal is the same.
func TestReconnecting(t *testing.T) {
	t.Parallel()
	clk := clock.NewFake(time.Unix(1_000_000, 0))
	b := &Broker{cfg: Config{ReconnectGrace: 30 * time.Second}, clk: clk}
	key := newResumeKey()
	if len(key) != 32 || bytes.Equal(key, newResumeKey()) {
		t.Fatalf("resume keys %x: want 32 random bytes each", key)
	}
	lost := func() *Session {
		s := &Session{state: Suspended}
		s.setResumeKeyLocked(key, "desk-1")
		b.markLost(s, &terminal{id: "desk-1"})
		return s
	}
	desk1 := &terminal{id: "desk-1"}
	if !b.reconnecting(lost(), desk1, nil, key) {
		t.Error("the same terminal with the key: not a reconnect")
	}
	for name, tc := range map[string]struct {
		tm     *terminal
		resume []byte
	}{
		"another id":    {&terminal{id: "desk-2"}, key},
		"no key":        {desk1, nil},
		"another key":   {desk1, newResumeKey()},
		"a key cut off": {desk1, key[:16]},
	} {
		if b.reconnecting(lost(), tc.tm, nil, tc.resume) {
			t.Errorf("%s: a reconnect", name)
		}
	}
	s := lost()
	s.locked = true
	if b.reconnecting(s, desk1, nil, key) {
		t.Error("a locked session: a reconnect")
	}
	s = lost()
	clk.Advance(30 * time.Second)
	if b.reconnecting(s, desk1, nil, key) {
		t.Error("after the grace: a reconnect")
	}
	old := &terminal{id: "desk-1"}
	shown := &Session{state: Active, term: old}
	shown.setResumeKeyLocked(key, "desk-1")
	if !b.reconnecting(shown, desk1, old, key) {
		t.Error("shown at an older connection of the terminal: not a reconnect")
	}
	if b.reconnecting(shown, &terminal{id: "desk-3"}, old, key) {
		t.Error("shown at desk-1, presented at desk-3: a reconnect")
	}
	b.cfg.ReconnectGrace = 0
	if b.reconnecting(lost(), desk1, nil, key) {
		t.Error("no grace configured: a reconnect")
	}
}

// TestResumeRecord: the session's record carries the hash of its resume
// key (never the key) and the terminal it was given to while that terminal
// may reconnect; a broker adopting the session from that record takes
// them back, the grace counting from the suspension it records (the
// adoption for a session recorded attached), and accepts the key, not
// another, from that terminal, not another; a record of before the hash,
// of a locked session or of one whose token was removed restores none.
func TestResumeRecord(t *testing.T) {
	t.Parallel()
	clk := clock.NewFake(time.Unix(1_000_000, 0))
	b := &Broker{cfg: Config{ReconnectGrace: 30 * time.Second}, clk: clk, log: hclog.NewNullLogger()}
	key := newResumeKey()
	s := &Session{ID: "s-1", Token: "soft.k", state: Active}
	s.setResumeKeyLocked(key, "desk-1")
	rec := b.recordLocked(s, &terminal{id: "desk-1"})
	sum := sha256.Sum256(key)
	if rec.ResumeTerminal != "desk-1" || rec.ResumeKeySHA256 != hex.EncodeToString(sum[:]) {
		t.Fatalf("record of a shown session: %+v; want desk-1 and the key's SHA-256", rec)
	}
	if v, _ := json.Marshal(rec); bytes.Contains(v, []byte(hex.EncodeToString(key))) || bytes.Contains(v, key) {
		t.Fatalf("record %s holds the key itself", v)
	}
	// A connection lost: still said; the token removed: no more.
	b.markLost(s, &terminal{id: "desk-1"})
	s.state = Suspended
	if r := b.recordLocked(s, nil); r.ResumeKeySHA256 != rec.ResumeKeySHA256 {
		t.Fatalf("record of a session whose terminal's connection was lost: %+v; want the hash", r)
	}
	removed := &Session{state: Suspended}
	removed.setResumeKeyLocked(key, "desk-1")
	if r := b.recordLocked(removed, nil); r.ResumeTerminal != "" || r.ResumeKeySHA256 != "" {
		t.Fatalf("record of a session whose token was removed: %+v; want no resume key", r)
	}
	s.locked = true
	if r := b.recordLocked(s, nil); r.ResumeKeySHA256 != "" {
		t.Fatalf("record of a locked session: %+v; want no resume key", r)
	}

	desk1 := &terminal{id: "desk-1"}
	adopt := func(rec registry.Session, suspendedAt time.Time) *Session {
		s := &Session{ID: "s-1", state: Suspended, suspendedAt: suspendedAt}
		b.restoreResumeLocked(s, rec)
		return s
	}
	restart := clk.Now()
	// Recorded attached (a crash): the grace counts from the adoption.
	a := adopt(rec, restart)
	if !b.reconnecting(a, desk1, nil, key) || a.resumeKey != nil {
		t.Fatal("after a restart, the same terminal with the key: not a reconnect")
	}
	for name, tc := range map[string]struct {
		tm     *terminal
		resume []byte
	}{
		"another terminal": {&terminal{id: "desk-2"}, key},
		"no key":           {desk1, nil},
		"another key":      {desk1, newResumeKey()},
	} {
		if b.reconnecting(a, tc.tm, nil, tc.resume) {
			t.Errorf("after a restart, %s: a reconnect", name)
		}
	}
	// Recorded suspended at a clean stop 20 s before the adoption.
	stopped := rec
	stopped.State, stopped.SuspendedUnixMs = "suspended", restart.Add(-20*time.Second).UnixMilli()
	early := adopt(stopped, time.UnixMilli(stopped.SuspendedUnixMs))
	clk.Advance(10 * time.Second)
	if b.reconnecting(early, desk1, nil, key) {
		t.Error("30 s after the stop: a reconnect")
	}
	if !b.reconnecting(a, desk1, nil, key) {
		t.Error("10 s after the adoption of a session recorded attached: not a reconnect")
	}
	clk.Advance(20 * time.Second)
	if b.reconnecting(a, desk1, nil, key) {
		t.Error("30 s after the adoption: a reconnect")
	}
	for name, r := range map[string]registry.Session{
		"a record of before the hash": {ID: "s-1", State: "active", Terminal: "desk-1"},
		"a locked session":            func() registry.Session { r := rec; r.Locked = true; return r }(),
		"an unreadable hash":          func() registry.Session { r := rec; r.ResumeKeySHA256 = "zz"; return r }(),
		"a short hash":                func() registry.Session { r := rec; r.ResumeKeySHA256 = r.ResumeKeySHA256[:32]; return r }(),
	} {
		if s := adopt(r, clk.Now()); b.reconnecting(s, desk1, nil, key) || s.resumeTerm != "" {
			t.Errorf("adopted from %s: a reconnect", name)
		}
	}
}
