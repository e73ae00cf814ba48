package broker

import (
	"bytes"
	"testing"
	"time"

	"github.com/hotdesk/hotdesk/internal/clock"
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
		s := &Session{state: Suspended, resumeKey: key}
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
	shown := &Session{state: Active, term: old, resumeKey: key}
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
