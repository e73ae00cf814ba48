package broker

import (
	"testing"
	"time"

	"github.com/hotdesk/hotdesk/internal/clock"
)

// TestReconnecting: the same terminal is its id from the same IP address
// (any port), within the grace, for a session not locked; a session still
// shown at an older connection of that terminal is the same.
func TestReconnecting(t *testing.T) {
	t.Parallel()
	clk := clock.NewFake(time.Unix(1_000_000, 0))
	b := &Broker{cfg: Config{ReconnectGrace: 30 * time.Second}, clk: clk}
	lost := func() *Session {
		s := &Session{state: Suspended}
		b.markLost(s, &terminal{id: "desk-1", remote: "10.0.0.1:40000"})
		return s
	}
	at := func(id, remote string) *terminal { return &terminal{id: id, remote: remote} }
	if !b.reconnecting(lost(), at("desk-1", "10.0.0.1:40001"), nil) {
		t.Error("the same terminal from another port: not a reconnect")
	}
	for name, tm := range map[string]*terminal{
		"another id":      at("desk-2", "10.0.0.1:40001"),
		"another address": at("desk-1", "10.0.0.2:40001"),
	} {
		if b.reconnecting(lost(), tm, nil) {
			t.Errorf("%s: a reconnect", name)
		}
	}
	s := lost()
	s.locked = true
	if b.reconnecting(s, at("desk-1", "10.0.0.1:1"), nil) {
		t.Error("a locked session: a reconnect")
	}
	s = lost()
	clk.Advance(30 * time.Second)
	if b.reconnecting(s, at("desk-1", "10.0.0.1:1"), nil) {
		t.Error("after the grace: a reconnect")
	}
	old := at("desk-1", "[::ffff:10.0.0.1]:7")
	shown := &Session{state: Active, term: old}
	if !b.reconnecting(shown, at("desk-1", "10.0.0.1:8"), old) {
		t.Error("shown at an older connection of the terminal: not a reconnect")
	}
	if b.reconnecting(shown, at("desk-1", "10.0.0.3:8"), old) {
		t.Error("shown at desk-1, presented from another address: a reconnect")
	}
	b.cfg.ReconnectGrace = 0
	if b.reconnecting(lost(), at("desk-1", "10.0.0.1:1"), nil) {
		t.Error("no grace configured: a reconnect")
	}
}
