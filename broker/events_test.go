package broker

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"

	"github.com/hotdesk/hotdesk/internal/event"
	"github.com/hotdesk/hotdesk/internal/testutil"
	"github.com/hotdesk/hotdesk/proto"
)

// newEventsEnv returns an env (broker b1) that emits its events on a bus,
// and a subscription to that bus.
func newEventsEnv(t *testing.T) (*env, *Subscription) {
	t.Helper()
	bus := NewBus(hclog.NewNullLogger())
	sub := bus.Subscribe("test", 256)
	return newEnvWith(t, "b1", envOptions{events: bus}), sub
}

// TestEventsOfLifecycle: every step of the lifecycle and every admin action
// emits its event, with the session, user, token and terminal on it.
func TestEventsOfLifecycle(t *testing.T) {
	t.Parallel()
	e, sub := newEventsEnv(t)
	tok, key := e.enroll("alice")
	t1, t2 := e.dial("term-1"), e.dial("term-2")
	t1.hold(tok, key)
	t2.hold(tok, key)

	var got []event.Event
	// want reads events until one of kind k arrives and returns it.
	want := func(k event.Kind) event.Event {
		t.Helper()
		timeout := time.After(30 * time.Second)
		for {
			select {
			case ev := <-sub.C:
				got = append(got, ev)
				if ev.Kind == k {
					if ev.Server != "b1" || ev.Time.IsZero() {
						t.Errorf("%s event without server or time: %+v", k, ev)
					}
					return ev
				}
			case <-timeout:
				t.Fatalf("no %s event; got %+v", k, got)
			}
		}
	}
	want(event.TerminalConnected)
	t1.insert(tok)
	if ev := want(event.TokenInserted); ev.Terminal != "term-1" || ev.Token != tok {
		t.Errorf("token_inserted = %+v", ev)
	}
	want(event.LoginGranted)
	att := want(event.SessionAttached)
	sid := expectMsg[proto.Attached](t1).SessionID
	if att.Session != sid || att.User != "kiosk" || att.Terminal != "term-1" || att.Token != tok {
		t.Errorf("attached = %+v; want session %s of kiosk at term-1", att, sid)
	}
	t1.remove(tok)
	want(event.TokenRemoved)
	if ev := want(event.SessionSuspended); ev.Session != sid || ev.User != "kiosk" || ev.Token != tok || ev.Terminal != "term-1" {
		t.Errorf("suspended = %+v; want session %s of kiosk, suspended at term-1", ev, sid)
	}
	expectMsg[proto.Detached](t1)
	t2.insert(tok)
	if ev := want(event.SessionResumed); ev.Terminal != "term-2" {
		t.Errorf("resumed = %+v; want at term-2", ev)
	}
	expectMsg[proto.Attached](t2)
	t1.insert(tok)
	if ev := want(event.SessionTakeover); ev.Terminal != "term-1" || ev.Target != "term-2" {
		t.Errorf("takeover = %+v; want at term-1, taken from term-2", ev)
	}
	expectMsg[proto.Attached](t1)
	expectMsg[proto.Detached](t2)

	ctx := context.Background()
	if err := e.b.Lock(ctx, sid); err != nil {
		t.Fatal(err)
	}
	if ev := want(event.SessionSuspended); ev.Reason != "session locked by an administrator" || ev.Terminal != "term-1" {
		t.Errorf("lock: %+v; want suspended at term-1, where it was shown", ev)
	}
	if det := expectMsg[proto.Detached](t1); det.Reason != proto.DetachAdmin || det.Message != "session locked by an administrator" {
		t.Errorf("lock detached with %v; want admin, with the message", det.Reason)
	}
	// Disconnecting a suspended session leaves it as it is.
	if err := e.b.Disconnect(ctx, sid); err != nil {
		t.Fatal(err)
	}
	// Locking a suspended one is told: its next resume asks a login.
	if err := e.b.Lock(ctx, sid); err != nil {
		t.Fatal(err)
	}
	if ev := want(event.SessionLocked); ev.Session != sid || ev.Reason != "session locked by an administrator" || ev.Terminal != "" {
		t.Errorf("lock of a suspended session: %+v; want locked, with the reason, at no terminal", ev)
	}
	if err := e.b.Kill(ctx, sid); err != nil {
		t.Fatal(err)
	}
	if ev := want(event.SessionDestroyed); ev.Session != sid {
		t.Errorf("destroyed = %+v", ev)
	}
	for _, ev := range got {
		if ev.Kind == event.SessionSuspended && ev.Reason == "disconnected by an administrator" {
			t.Errorf("disconnect of a suspended session suspended it again: %+v", ev)
		}
	}
	for _, f := range []func(context.Context, string) error{e.b.Lock, e.b.Disconnect, e.b.Kill} {
		if err := f(ctx, sid); err == nil {
			t.Error("admin action on a destroyed session succeeded")
		}
	}
	// A session killed while shown names the terminal that showed it.
	t2.insert(tok)
	att = want(event.SessionAttached)
	expectMsg[proto.Attached](t2)
	if err := e.b.Kill(ctx, att.Session); err != nil {
		t.Fatal(err)
	}
	if ev := want(event.SessionDestroyed); ev.Session != att.Session || ev.Terminal != "term-2" {
		t.Errorf("destroyed = %+v; want session %s, shown at term-2 until then", ev, att.Session)
	}
}

// TestBusDropsForSlowSubscribers: a full subscriber loses events (counted)
// while the others get them; Close ends every subscription.
func TestBusDropsForSlowSubscribers(t *testing.T) {
	t.Parallel()
	var logs strings.Builder
	bus := NewBus(hclog.New(&hclog.LoggerOptions{Output: &logs}))
	slow, fast := bus.Subscribe("slow", 1), bus.Subscribe("fast", 10)
	for i := 0; i < 5; i++ {
		bus.Emit(event.Event{Kind: event.TokenInserted})
	}
	if len(fast.C) != 5 || len(slow.C) != 1 || bus.Dropped() != 4 {
		t.Fatalf("fast %d, slow %d, dropped %d; want 5, 1, 4", len(fast.C), len(slow.C), bus.Dropped())
	}
	// Whose they were is told: counted by name, logged once for the burst.
	if by := bus.DroppedBy(); len(by) != 2 || by["slow"] != 4 || by["fast"] != 0 {
		t.Errorf("dropped by subscriber: %v; want slow 4, fast 0", by)
	}
	if n := strings.Count(logs.String(), "event subscriber fell behind"); n != 1 || !strings.Contains(logs.String(), "subscriber=slow") {
		t.Errorf("%d lines about the drops, want 1 naming slow:\n%s", n, logs.String())
	}
	slow.Close()
	slow.Close() // idempotent
	bus.Emit(event.Event{Kind: event.TokenRemoved})
	bus.Close()
	n := 0
	for range fast.C {
		n++
	}
	if n != 6 {
		t.Errorf("fast got %d events; want 6", n)
	}
	if by := bus.DroppedBy(); by["slow"] != 4 {
		t.Errorf("a closed subscriber's drops were forgotten: %v", by)
	}
	if _, ok := <-bus.Subscribe("test", 1).C; ok {
		t.Error("a subscription after Close is open")
	}
}

// TestSubscriptionEach: Each hands over every event in order and returns
// when the subscription closes, or at once when its context ends.
func TestSubscriptionEach(t *testing.T) {
	t.Parallel()
	bus := NewBus(nil)
	sub := bus.Subscribe("test", 8)
	for _, k := range []event.Kind{event.SessionAttached, event.SessionSuspended, event.SessionResumed} {
		bus.Emit(event.Event{Kind: k})
	}
	sub.Close()
	var got []event.Kind
	sub.Each(context.Background(), func(e event.Event) { got = append(got, e.Kind) })
	if want := []event.Kind{event.SessionAttached, event.SessionSuspended, event.SessionResumed}; !slices.Equal(got, want) {
		t.Fatalf("Each saw %v; want %v", got, want)
	}

	open := bus.Subscribe("test", 1)
	defer open.Close()
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	open.Each(ctx, func(event.Event) { t.Error("an event from an empty subscription") })
}

// TestTerminalConns: a terminal connection is listed by TerminalConns, by
// its Hello's id and its address, from its TerminalConnected on, and no
// longer once it ended (presence drops what it missed by this list).
func TestTerminalConns(t *testing.T) {
	t.Parallel()
	e := newEnv(t, "b1", nil)
	tm := e.dial("term-conns")
	want := TerminalConn{ID: "term-conns", Remote: tm.conn.NetConn().LocalAddr().String()}
	testutil.WaitFor(t, 10*time.Second, "the connection listed", func() bool {
		return slices.Contains(e.b.TerminalConns(), want)
	})
	tm.conn.Close()
	testutil.WaitFor(t, 10*time.Second, "the connection gone from the list", func() bool {
		return !slices.Contains(e.b.TerminalConns(), want)
	})
}

// TestTokenRemovedOfRefused: a token whose insert emitted token_inserted
// emits token_removed when the terminal reports it removed, even if it was
// refused (before, nothing was emitted, and presence listed the refused
// card at the terminal for ever). A connection that reports more than
// maxReportedTokens without their removals has the oldest forgotten, its
// token_removed emitted first; the removal of a token never reported
// emits nothing.
func TestTokenRemovedOfRefused(t *testing.T) {
	t.Parallel()
	e, sub := newEventsEnv(t)
	tm := e.dial("term-1")
	tok := func(i int) string { return fmt.Sprintf("uid.0a0b0c%02d", i) }
	refused := func(i int) {
		t.Helper()
		tm.insert(tok(i))
		if er := expectMsg[proto.Error](tm); er.Code != proto.ErrUnknownToken || er.Token != tok(i) {
			t.Fatalf("insert of %s answered %+v; want unknown_token", tok(i), er)
		}
	}
	refused(0)
	// The worker is done with tok(0) once tok(1) is answered: its removal
	// is not one of a token being handled.
	refused(1)
	tm.remove(tok(0))
	tm.remove(tok(99)) // never reported
	want := []string{"+" + tok(0), "+" + tok(1), "-" + tok(0)}
	for i := 2; i <= maxReportedTokens+1; i++ {
		refused(i)
		want = append(want, "+"+tok(i))
	}
	// The last insert forgets the first still held, before its own event.
	want = slices.Insert(want, len(want)-1, "-"+tok(1))
	var got []string
	timeout := time.After(30 * time.Second)
	for len(got) < len(want) {
		select {
		case ev := <-sub.C:
			switch ev.Kind {
			case event.TokenInserted:
				got = append(got, "+"+ev.Token)
			case event.TokenRemoved:
				got = append(got, "-"+ev.Token)
			case event.TokenRefused:
				if ev.Token == tok(maxReportedTokens+1) && len(got) < len(want) {
					t.Fatalf("token events %q; want %q", got, want)
				}
			}
		case <-timeout:
			t.Fatalf("token events %q; want %q", got, want)
		}
	}
	if !slices.Equal(got, want) {
		t.Fatalf("token events %q; want %q", got, want)
	}
}

// TestMalformedTokenNotEmitted: a token id that is not well formed (the
// peer's text: escape sequences, control characters, kilobytes) is
// answered unknown_token with the token as sent, as before, and recorded
// as a token_refused event without it: no event carries it (before,
// token_inserted carried it raw to the event log, the hook and presence),
// and its removal records nothing.
func TestMalformedTokenNotEmitted(t *testing.T) {
	t.Parallel()
	e, sub := newEventsEnv(t)
	tm := e.dial("term-1")
	for _, bad := range []string{
		"\x1b]52;c;aGVsbG8=\x07\x1b[2J" + strings.Repeat("A", 6000),
		"uid.0a\x1b[31m0b",
		"uid.0a0b 0c",
	} {
		tm.insert(bad)
		if er := expectMsg[proto.Error](tm); er.Code != proto.ErrUnknownToken || er.Token != bad {
			t.Fatalf("malformed insert answered %+v; want unknown_token with its token", er)
		}
		tm.remove(bad)
	}
	const barrier = "uid.0a0b0c0d" // well formed, not enrolled
	tm.insert(barrier)
	expectMsg[proto.Error](tm)
	var refused int
	timeout := time.After(30 * time.Second)
	for {
		var ev event.Event
		select {
		case ev = <-sub.C:
		case <-timeout:
			t.Fatalf("no token_refused of %s", barrier)
		}
		if ev.Kind == event.TokenRefused && ev.Token == barrier {
			break
		}
		switch {
		case ev.Kind == event.TokenRefused && ev.Token == "" && ev.Reason == "malformed token id":
			refused++
		case ev.Token != "" && ev.Token != barrier:
			t.Errorf("%s event carries token %.40q; want no malformed token in any event", ev.Kind, ev.Token)
		case ev.Kind == event.TokenRemoved:
			t.Errorf("token_removed %+v; want none (nothing was reported)", ev)
		}
	}
	if refused != 3 {
		t.Errorf("%d token_refused events without a token; want 3, one per malformed insert", refused)
	}
}

// TestTokenRemovedAtDisconnect: the tokens a connection still held when it
// ends are token_removed (reason "terminal disconnected") before its
// terminal_disconnected: when another connection of the same terminal id
// is open (the terminal reconnected before its old connection was seen
// dead), presence keeps the terminal's record, and a token held only by
// the old connection was listed there for as long as the new one lasted.
func TestTokenRemovedAtDisconnect(t *testing.T) {
	t.Parallel()
	e, sub := newEventsEnv(t)
	old := e.dial("term-1")
	const tok = "uid.0a0b0c01"
	old.insert(tok)
	if er := expectMsg[proto.Error](old); er.Code != proto.ErrUnknownToken {
		t.Fatalf("insert answered %+v; want unknown_token", er)
	}
	e.dial("term-1") // the new connection, held open
	old.conn.Close()
	if got, want := removedBeforeDisconnect(t, sub), []string{"-" + tok + " terminal disconnected"}; !slices.Equal(got, want) {
		t.Fatalf("token_removed events before terminal_disconnected: %q; want %q", got, want)
	}
}

// TestTokenHeldElsewhereNotRemovedAtDisconnect: a terminal that
// reconnects before its old connection is seen dead reports the cards in
// its readers again on the new connection; when the old one ends, a card
// the new connection holds is not token_removed (presence, which keeps
// one record per terminal id, would list the terminal without the card
// still in its reader), while one only the old connection held is.
func TestTokenHeldElsewhereNotRemovedAtDisconnect(t *testing.T) {
	t.Parallel()
	e, sub := newEventsEnv(t)
	old := e.dial("term-1")
	const kept, pulled = "uid.0a0b0c01", "uid.0a0b0c02"
	for _, tok := range []string{kept, pulled} {
		old.insert(tok)
		if er := expectMsg[proto.Error](old); er.Code != proto.ErrUnknownToken {
			t.Fatalf("insert %s answered %+v; want unknown_token", tok, er)
		}
	}
	nw := e.dial("term-1") // the reconnection: the card still in is presented again
	nw.insert(kept)
	if er := expectMsg[proto.Error](nw); er.Code != proto.ErrUnknownToken {
		t.Fatalf("insert on the new connection answered %+v; want unknown_token", er)
	}
	old.conn.Close()
	if got, want := removedBeforeDisconnect(t, sub), []string{"-" + pulled + " terminal disconnected"}; !slices.Equal(got, want) {
		t.Fatalf("token_removed events before terminal_disconnected: %q; want %q", got, want)
	}
}

// removedBeforeDisconnect returns the token_removed events sub sees
// ("-token reason") until the next terminal_disconnected.
func removedBeforeDisconnect(t *testing.T, sub *Subscription) []string {
	t.Helper()
	var got []string
	timeout := time.After(30 * time.Second)
	for {
		select {
		case ev := <-sub.C:
			switch ev.Kind {
			case event.TokenRemoved:
				got = append(got, "-"+ev.Token+" "+ev.Reason)
			case event.TerminalDisconnected:
				return got
			}
		case <-timeout:
			t.Fatalf("events %q; no terminal_disconnected", got)
		}
	}
}
