package main

import (
	"errors"
	"strings"
	"testing"

	"github.com/hotdesk/hotdesk/cmd/hotdesk-term/greeter"
	"github.com/hotdesk/hotdesk/proto"
	"github.com/hotdesk/hotdesk/tokens"
)

// send puts ev in front of the current watch.
func (f *fakeCards) send(t *testing.T, ev tokens.Event) {
	t.Helper()
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.out == nil {
		t.Fatal("fake cards: nobody watches")
	}
	f.out <- ev
}

// TestAgentCardReading: a card being read is a card_reading event at once;
// the Removed without a token that ends a Reading (the card left before it
// was identified) is a card event "removed" with an empty token. Neither
// goes to the broker: the first message it gets is the identified card's
// TokenInserted.
func TestAgentCardReading(t *testing.T) {
	t.Parallel()
	_, fc, ta, p := startCardAgent(t, nil)
	fc.send(t, tokens.Event{Kind: tokens.Reading, Reader: "r0"})
	if ev := ta.out.wait("card_reading"); ev["reader"] != "r0" {
		t.Fatalf("card_reading = %v; want reader r0", ev)
	}
	fc.send(t, tokens.Event{Kind: tokens.Removed, Reader: "r0"})
	if ev := ta.out.wait("card"); ev["kind"] != "removed" || ev["token"] != "" || ev["reader"] != "r0" {
		t.Fatalf("card event = %v; want removed, no token, at r0", ev)
	}
	fc.send(t, tokens.Event{Kind: tokens.Reading, Reader: "r0"})
	fc.insertCard(t, "uid.01020304", "r0")
	ta.out.wait("card_reading")
	if ev := ta.out.wait("card"); ev["kind"] != "inserted" || ev["token"] != "uid.01020304" {
		t.Fatalf("card event = %v; want uid.01020304 inserted", ev)
	}
	if ins := expect[proto.TokenInserted](p); ins.Token != "uid.01020304" || ins.Reader != "r0" {
		t.Fatalf("TokenInserted = %+v; want uid.01020304 at r0", ins)
	}
	p.ping(1)
}

// TestGreeterUIReading: the greeter says "Reading your card…" the moment a
// card is being read, keeps it through the insertion (no second frame),
// and goes back when the card is pulled before it was identified: to the
// idle screen, or during a session to what it showed.
func TestGreeterUIReading(t *testing.T) {
	t.Parallel()
	rec := &recordScreen{}
	ui := &greeterUI{scr: rec}
	reading := func() {
		t.Helper()
		ui.event(cardEventOf(tokens.Event{Kind: tokens.Reading, Reader: "r0"}))
		if s := rec.last(); s.Screen != greeter.Busy || s.Title != "Reading your card…" {
			t.Fatalf("after card_reading: shown %+v; want busy, reading your card", s)
		}
	}
	ui.event(connectedEvent("b1", "h:1"))
	reading()
	ui.event(cardEventOf(tokens.Event{Kind: tokens.Error, Reader: "r0"}))
	if s := rec.last(); s.Screen != greeter.Idle || !s.Error {
		t.Fatalf("card error after reading: shown %+v; want the idle screen with the error", s)
	}

	reading()
	ui.event(cardEventOf(tokens.Event{Kind: tokens.Removed, Reader: "r0"}))
	if s := rec.last(); s.Screen != greeter.Idle || s.Error || s.Message != "" {
		t.Fatalf("card pulled while read: shown %+v; want the plain idle screen", s)
	}

	reading()
	n := len(rec.shown)
	ui.event(cardEventOf(tokens.Event{Kind: tokens.Inserted, Token: "uid.01", Reader: "r0"}))
	if len(rec.shown) != n {
		t.Fatalf("inserted after reading showed %+v; want no new frame", rec.last())
	}

	// During a session: a card pulled while read restores the screen.
	ui.event(attachedEvent(&proto.Attached{SessionID: "s1", Token: "uid.01", User: "pat", ServerID: "b1"}))
	before := rec.last()
	reading()
	ui.event(cardEventOf(tokens.Event{Kind: tokens.Reading, Reader: "r1"})) // another reader
	ui.event(cardEventOf(tokens.Event{Kind: tokens.Removed, Reader: "r0"}))
	if s := rec.last(); s.Title != "Reading your card…" {
		t.Fatalf("one of two cards pulled while read: shown %+v; want reading still", s)
	}
	ui.event(cardEventOf(tokens.Event{Kind: tokens.Removed, Reader: "r1"}))
	if s := rec.last(); s != before {
		t.Fatalf("card pulled while read during a session: shown %+v; want %+v again", s, before)
	}
}

// TestGreeterUIReadingKeepsPrompt: a card pulled before it was identified
// reached no broker: a prompt it covered (a PIN asked for the card at
// another reader, a password login) comes back with its input field, and
// a prompt that arrived while the card was read stays. The greeter went to
// the idle screen and the broker waited for an answer nobody could type.
func TestGreeterUIReadingKeepsPrompt(t *testing.T) {
	t.Parallel()
	rec, ui, prompt := pinPromptAtR0(t)
	ui.event(cardEventOf(tokens.Event{Kind: tokens.Reading, Reader: "r1"}))
	ui.event(cardEventOf(tokens.Event{Kind: tokens.Removed, Reader: "r1"}))
	if s := rec.last(); s != prompt {
		t.Fatalf("a card read and pulled at r1 during the PIN prompt: shown %+v; want the prompt %+v again", s, prompt)
	}

	// The prompt arrives while another card is read: it stays.
	ui.event(cardEventOf(tokens.Event{Kind: tokens.Reading, Reader: "r1"}))
	ui.event(promptEvent(&proto.AuthPrompt{ID: 2, Style: proto.PromptEchoOff, Text: "PIN again:"}))
	prompt = rec.last()
	n := len(rec.shown)
	ui.event(cardEventOf(tokens.Event{Kind: tokens.Removed, Reader: "r1"}))
	if len(rec.shown) != n {
		t.Fatalf("a card pulled before it was identified replaced the prompt %+v with %+v", prompt, rec.last())
	}
}

// TestGreeterUICardErrorKeepsPrompt: a card that cannot be read at
// another reader while a prompt waits (a badge brushed at the NFC pad
// during the PIN entry) is said on the prompt, which stays: the idle
// screen took the PIN field away while the broker waited for the answer.
func TestGreeterUICardErrorKeepsPrompt(t *testing.T) {
	t.Parallel()
	for _, withReading := range []bool{true, false} {
		rec, ui, prompt := pinPromptAtR0(t)
		if withReading {
			ui.event(cardEventOf(tokens.Event{Kind: tokens.Reading, Reader: "r1"}))
		}
		ui.event(cardEventOf(tokens.Event{Kind: tokens.Error, Reader: "r1", Err: errTestUnreadable}))
		s := rec.last()
		if s.Screen != greeter.Prompt || s.PromptID != prompt.PromptID || s.Label != prompt.Label || !s.Error || !strings.Contains(s.Message, "could not be read") {
			t.Fatalf("card error at r1 during the PIN prompt (reading %v): shown %+v; want the prompt %+v with the card error", withReading, s, prompt)
		}
	}
}

// errTestUnreadable stands for a card error.
var errTestUnreadable = errors.New("card unreadable")

// pinPromptAtR0 returns a greeter showing the PIN prompt of card uid.01
// at reader r0, the screens it showed, and that prompt.
func pinPromptAtR0(t *testing.T) (*recordScreen, *greeterUI, greeter.State) {
	t.Helper()
	rec := &recordScreen{}
	ui := &greeterUI{scr: rec}
	ui.event(connectedEvent("b1", "h:1"))
	ui.event(cardEventOf(tokens.Event{Kind: tokens.Inserted, Token: "uid.01", Reader: "r0"}))
	ui.event(promptEvent(&proto.AuthPrompt{ID: 1, Style: proto.PromptEchoOff, Text: "PIN:"}))
	prompt := rec.last()
	if prompt.Screen != greeter.Prompt {
		t.Fatalf("after the prompt: shown %+v; want the prompt", prompt)
	}
	return rec, ui, prompt
}
