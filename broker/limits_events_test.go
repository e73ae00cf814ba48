package broker

import (
	"strings"
	"testing"

	"github.com/hashicorp/go-hclog"

	"github.com/hotdesk/hotdesk/internal/event"
	"github.com/hotdesk/hotdesk/internal/testutil"
)

// newLoggedBus returns a bus that logs at info to out, and a subscription
// to it (1000 deep) closed when the test ends.
func newLoggedBus(t *testing.T) (bus *Bus, sub *Subscription, out *testutil.LockedBuffer) {
	out = &testutil.LockedBuffer{}
	bus = NewBus(hclog.New(&hclog.LoggerOptions{Output: out, Level: hclog.Info}))
	sub = bus.Subscribe("test", 1000)
	t.Cleanup(sub.Close)
	return bus, sub, out
}

// TestBusFloodOfRefusals: a flood of refused tokens (hostile ids: huge,
// with newlines) costs the event log one line, bounded in size, while
// subscribers still get every event and ordinary events are each logged.
func TestBusFloodOfRefusals(t *testing.T) {
	t.Parallel()
	bus, sub, out := newLoggedBus(t)
	hostile := strings.Repeat("uid.41\nFAKE [ERROR] line ", 4000) // ~90 KB
	const n = 500
	for range n {
		bus.Emit(event.Event{Kind: event.TokenRefused, Token: hostile, Terminal: "t\n1", Reason: "unknown token"})
	}
	bus.Emit(event.Event{Kind: event.SessionAttached, Session: "s-1", Terminal: "t-2"})
	bus.Emit(event.Event{Kind: event.SessionSuspended, Session: "s-1"})
	if got := len(sub.C); got != n+2 {
		t.Fatalf("subscriber got %d events; want %d", got, n+2)
	}
	log := out.String()
	lines := strings.Split(strings.TrimSpace(log), "\n")
	if len(lines) != 3 {
		t.Fatalf("%d log lines for %d refusals and 2 other events; want 3:\n%.2000s", len(lines), n, log)
	}
	if !strings.Contains(lines[0], "kind=token_refused") || !strings.Contains(lines[0], "burst=token_refused") {
		t.Errorf("first line %.300q; want the refusal with its burst kind", lines[0])
	}
	if len(lines[0]) > 1024 {
		t.Errorf("refusal line is %d bytes; want the peer's token cut short", len(lines[0]))
	}
	if strings.Contains(log, "\nFAKE") || !strings.Contains(lines[0], "bytes)") {
		t.Errorf("the hostile token reached the log verbatim:\n%.2000s", log)
	}
}

// TestBusFloodOfTokenEvents: a terminal can present and remove tokens at
// the token event rate, each a token_inserted and a token_removed event:
// the log has one line per kind per burst (before, a line per event),
// while subscribers (the event log, the hook, presence) get every one.
func TestBusFloodOfTokenEvents(t *testing.T) {
	t.Parallel()
	bus, sub, out := newLoggedBus(t)
	const n = 300
	for range n {
		bus.Emit(event.Event{Kind: event.TokenInserted, Token: "uid.0a0b0c0d", Terminal: "t-1"})
		bus.Emit(event.Event{Kind: event.TokenRemoved, Token: "uid.0a0b0c0d", Terminal: "t-1"})
	}
	if got := len(sub.C); got != 2*n {
		t.Fatalf("subscriber got %d events; want %d", got, 2*n)
	}
	lines := strings.Split(strings.TrimSpace(out.String()), "\n")
	if len(lines) != 2 || !strings.Contains(lines[0], "burst=token_inserted") || !strings.Contains(lines[1], "burst=token_removed") {
		t.Fatalf("%d log lines for %d inserts and removals; want 2, one per kind:\n%.2000s", len(lines), 2*n, out.String())
	}
}
