package main

import (
	"context"
	"crypto/tls"
	"strings"
	"testing"
	"time"

	"github.com/hotdesk/hotdesk/cmd/hotdesk-term/greeter"
	"github.com/hotdesk/hotdesk/proto"
	"github.com/hotdesk/hotdesk/tokens"
)

// recordScreen records what the agent asked the greeter to show.
type recordScreen struct{ shown []greeter.State }

func (r *recordScreen) Show(s greeter.State) { r.shown = append(r.shown, s) }
func (r *recordScreen) Close()               {}

// TestGreeterUI: the agent's events, as the broker's messages produce
// them, give the greeter the screens a person should see.
func TestGreeterUI(t *testing.T) {
	t.Parallel()
	steps := []struct {
		name   string
		ev     event
		screen greeter.Screen
		text   string // in the title, message or label
		secret bool
	}{
		{"no broker", errorEvent(0, errConnect, "connection refused"), greeter.Unavailable, "reconnecting", false},
		{"connected", connectedEvent("b1", "h:1"), greeter.Idle, "Insert your card", false},
		{"card read", cardEventOf(tokenEvent("inserted")), greeter.Busy, "Reading your card", false},
		{"PIN", promptEvent(&proto.AuthPrompt{ID: 1, Style: proto.PromptEchoOff, Text: "PIN:"}), greeter.Prompt, "PIN:", true},
		{"PAM error text", promptEvent(&proto.AuthPrompt{ID: 2, Style: proto.PromptError, Text: "card locked, try again in 27 s"}), greeter.Prompt, "try again in 27 s", true},
		{"PIN not entered", protoErrorEvent(&proto.Error{Code: proto.ErrAuthFailed, Message: "authentication failed: no answer in time", Token: "uid.01"}), greeter.Idle, "entered in time", false},
		{"wrong PIN", protoErrorEvent(&proto.Error{Code: proto.ErrAuthFailed, Message: "authentication failed", Token: "uid.01"}), greeter.Idle, "Wrong PIN", false},
		{"locked out", protoErrorEvent(&proto.Error{Code: proto.ErrRateLimited, Message: "too many failed logins", Token: "uid.01"}), greeter.Idle, "Locked out", false},
		{"too fast", protoErrorEvent(&proto.Error{Code: proto.ErrRateLimited, Message: "too many token events; present the token again shortly", Token: "uid.01"}), greeter.Idle, "Try again in a moment", false},
		{"bad code", protoErrorEvent(&proto.Error{Code: proto.ErrPairing, Message: "pairing code invalid, expired or used"}), greeter.Idle, "wrong, used or expired", false},
		{"key refused", protoErrorEvent(&proto.Error{Code: proto.ErrPairing, Message: "token kind, public key or label refused"}), greeter.Idle, "key was refused", false},
		{"user name", promptEvent(&proto.AuthPrompt{ID: 3, Style: proto.PromptEchoOn, Text: "Login:"}), greeter.Prompt, "Login:", false},
		{"attached", attachedEvent(&proto.Attached{SessionID: "s1", Token: "uid.01", User: "pat", ServerID: "b1"}), greeter.Busy, "Welcome, pat", false},
		{"taken over", detachedEvent(&proto.Detached{SessionID: "s1", Reason: proto.DetachTakeover, Terminal: "desk-4"}), greeter.Idle, "moved to terminal desk-4", false},
		{"broker gone", disconnectedEvent(nil), greeter.Unavailable, "Server unavailable — reconnecting", false},
		{"back", connectedEvent("b2", "h:2"), greeter.Idle, "Insert your card", false},
		{"unknown card", protoErrorEvent(&proto.Error{Code: proto.ErrUnknownToken, Token: "uid.02"}), greeter.Idle, "not registered", false},
	}
	rec := &recordScreen{}
	ui := &greeterUI{scr: rec}
	for _, s := range steps {
		ui.event(s.ev)
		if len(rec.shown) == 0 {
			t.Fatalf("%s: nothing shown", s.name)
		}
		got := rec.shown[len(rec.shown)-1]
		all := got.Title + " | " + got.Message + " | " + got.Label
		if got.Screen != s.screen || !strings.Contains(all, s.text) || got.Secret != s.secret {
			t.Errorf("%s: shown %+v; want screen %s with %q, secret %v", s.name, got, s.screen, s.text, s.secret)
		}
	}
	// A detach of an older session does not clear the new one's screen.
	ui.event(attachedEvent(&proto.Attached{SessionID: "s2", Token: "uid.01", ServerID: "b2"}))
	n := len(rec.shown)
	ui.event(detachedEvent(&proto.Detached{SessionID: "s1", Reason: proto.DetachTokenRemoved}))
	if len(rec.shown) != n {
		t.Errorf("a stale detach changed the screen to %+v", rec.shown[len(rec.shown)-1])
	}
}

func tokenEvent(kind string) tokens.Event {
	ev := tokens.Event{Token: "uid.01", Reader: "r0"}
	if kind == "inserted" {
		ev.Kind = tokens.Inserted
	}
	return ev
}

// TestGreeterUICardPulled: a card pulled while its PIN is asked is the
// person's own doing: the greeter goes back to "insert your card" without
// an error, not to the broker's words for it ("login abandoned: token
// removed" in red).
func TestGreeterUICardPulled(t *testing.T) {
	t.Parallel()
	for _, msg := range []string{"login abandoned: token removed", "token removed before its proof"} {
		rec := &recordScreen{}
		ui := &greeterUI{scr: rec}
		ui.event(connectedEvent("b1", "h:1"))
		ui.event(cardEventOf(tokens.Event{Kind: tokens.Inserted, Token: "uid.01", Reader: "r0"}))
		ui.event(promptEvent(&proto.AuthPrompt{ID: 1, Style: proto.PromptEchoOff, Text: "PIN:"}))
		ui.event(cardEventOf(tokens.Event{Kind: tokens.Removed, Token: "uid.01", Reader: "r0"}))
		ui.event(protoErrorEvent(&proto.Error{Code: proto.ErrCancelled, Message: msg, Token: "uid.01"}))
		got := rec.shown[len(rec.shown)-1]
		if got.Screen != greeter.Idle || got.Message != "" || got.Error {
			t.Errorf("after %q: shown %+v; want the idle screen without a message", msg, got)
		}
	}
}

// TestGreeterPairingFailsVisibly: a pairing code typed on the greeter (F2)
// that ends without the broker's answer — no phone held to the reader in
// time, or no card reader at all — tells the person so; it left "Hold the
// phone to the reader" on the screen, or showed nothing.
func TestGreeterPairingFailsVisibly(t *testing.T) {
	t.Parallel()
	for _, tt := range []struct {
		name  string
		cards Cards
		want  string
	}{
		{"no phone", newFakeCards(), "No phone was read"},
		{"no reader", nil, "no card reader"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			rec := &recordScreen{}
			ui := &greeterUI{scr: rec}
			a, err := newAgent(Config{Server: "127.0.0.1:1", TLS: &tls.Config{}, TerminalID: "t", Keystore: mustKeystore(t),
				Cards: tt.cards, UI: ui.event, Logger: testLogger(t)})
			if err != nil {
				t.Fatal(err)
			}
			in := &greeterInput{ctx: context.Background(), a: a, name: "desk", pairWait: time.Millisecond}
			in.submit(greeter.PairCode, "abcd-efgh-jkmn")
			in.wg.Wait()
			if len(rec.shown) == 0 {
				t.Fatal("nothing shown")
			}
			got := rec.shown[len(rec.shown)-1]
			if got.Screen != greeter.Idle || !got.Error || !strings.Contains(got.Message, tt.want) {
				t.Errorf("shown %+v; want the idle screen with an error saying %q", got, tt.want)
			}
		})
	}
}

// TestGreeterAnswerShowsChecking: once the PIN is typed and Enter pressed,
// the greeter says it is being checked and takes no more input until the
// broker answers (PAM's fail delay keeps a wrong PIN 2 s); it kept the
// empty prompt, and a PIN typed again meanwhile was silently lost.
func TestGreeterAnswerShowsChecking(t *testing.T) {
	t.Parallel()
	rec := &recordScreen{}
	ui := &greeterUI{scr: rec}
	a, err := newAgent(Config{Server: "127.0.0.1:1", TLS: &tls.Config{}, TerminalID: "t", Keystore: mustKeystore(t),
		UI: ui.event, Logger: testLogger(t)})
	if err != nil {
		t.Fatal(err)
	}
	ui.event(promptEvent(&proto.AuthPrompt{ID: 1, Style: proto.PromptEchoOff, Text: "PIN: "}))
	got := make(chan command, 1)
	go func() { got <- <-a.ctrl }()
	in := &greeterInput{ctx: context.Background(), a: a, ui: ui, name: "desk"}
	in.submit(greeter.Answer, "2468")
	if c := <-got; c.op != opAnswer || c.arg != "2468" {
		t.Fatalf("agent got %+v; want the answer", c)
	}
	if s := rec.shown[len(rec.shown)-1]; s.Screen != greeter.Busy || !strings.Contains(s.Title, "Checking") {
		t.Errorf("shown %+v after the answer; want a busy screen saying it is checking", s)
	}
	// The broker's verdict replaces it.
	ui.event(protoErrorEvent(&proto.Error{Code: proto.ErrAuthFailed, Message: "authentication failed", Token: "uid.01"}))
	if s := rec.shown[len(rec.shown)-1]; s.Screen != greeter.Idle || !strings.Contains(s.Message, "Wrong PIN") {
		t.Errorf("shown %+v after the refusal; want wrong PIN", s)
	}
}
