package main

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hotdesk/hotdesk/cmd/hotdesk-term/greeter"
	"github.com/hotdesk/hotdesk/internal/clock"
	"github.com/hotdesk/hotdesk/proto"
	"github.com/hotdesk/hotdesk/tokens"
)

// recordScreen records what the agent asked the greeter to show.
type recordScreen struct{ shown []greeter.State }

func (r *recordScreen) Show(s greeter.State) { r.shown = append(r.shown, s) }
func (r *recordScreen) Close()               {}

// last is what was shown last (the zero State if nothing was).
func (r *recordScreen) last() greeter.State {
	if len(r.shown) == 0 {
		return greeter.State{}
	}
	return r.shown[len(r.shown)-1]
}

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
		{"PIN not entered", protoErrorEvent(&proto.Error{Code: proto.ErrAuthFailed, Message: "authentication failed: no answer in time", Token: "uid.01", Detail: proto.DetailNoAnswer}), greeter.Idle, "entered in time", false},
		{"wrong PIN", protoErrorEvent(&proto.Error{Code: proto.ErrAuthFailed, Message: "authentication failed", Token: "uid.01"}), greeter.Idle, "Wrong PIN", false},
		{"locked out", protoErrorEvent(&proto.Error{Code: proto.ErrRateLimited, Message: "too many failed logins", Token: "uid.01", Detail: proto.DetailLockedOut}), greeter.Idle, "Locked out", false},
		{"lockout started", protoErrorEvent(&proto.Error{Code: proto.ErrAuthFailed, Message: "authentication failed; too many failed logins: try again in 30 s", Token: "uid.01", Detail: proto.DetailLockoutStarted, RetryAfterMs: 29500}), greeter.Idle, "Too many failed attempts: try again in 30 s.", false},
		{"locked for", protoErrorEvent(&proto.Error{Code: proto.ErrRateLimited, Message: "too many failed logins; try again in 27 s", Token: "uid.01", Detail: proto.DetailLockedOut, RetryAfterMs: 26001}), greeter.Idle, "Locked out: too many failed attempts. Try again in 27 s.", false},
		{"too fast", protoErrorEvent(&proto.Error{Code: proto.ErrRateLimited, Message: "too many token events; present the token again shortly", Token: "uid.01"}), greeter.Idle, "Try again in a moment", false},
		{"bad code", protoErrorEvent(&proto.Error{Code: proto.ErrPairing, Message: "pairing code invalid, expired or used"}), greeter.Idle, "wrong, used or expired", false},
		{"key refused", protoErrorEvent(&proto.Error{Code: proto.ErrPairing, Message: "token kind, public key or label refused", Detail: proto.DetailKeyRefused}), greeter.Idle, "key was refused", false},
		{"key enrolled", protoErrorEvent(&proto.Error{Code: proto.ErrPairing, Message: "this key is already enrolled; the pairing code is still valid", Detail: proto.DetailKeyEnrolled}), greeter.Idle, "already paired", false},
		{"proof refused", protoErrorEvent(&proto.Error{Code: proto.ErrPairing, Message: "proof of possession of the key failed", Detail: proto.DetailProofRefused}), greeter.Idle, "code is still valid", false},
		{"user name", promptEvent(&proto.AuthPrompt{ID: 3, Style: proto.PromptEchoOn, Text: "Login:"}), greeter.Prompt, "Login:", false},
		{"attached", attachedEvent(&proto.Attached{SessionID: "s1", Token: "uid.01", User: "pat", ServerID: "b1"}), greeter.Busy, "Welcome, pat", false},
		{"display lost", displayLostEvent("s1", 1, time.Second), greeter.Busy, "Reconnecting your desktop", false},
		{"shown again", attachedEvent(&proto.Attached{SessionID: "s1", Token: "uid.01", User: "pat", ServerID: "b1", Resumed: true}), greeter.Busy, "Welcome, pat", false},
		{"display failed", errorEvent(0, errDisplay, "the display client of session s1 ended 4 times within 1m0s"), greeter.Idle, "could not be shown", false},
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
			in := &greeterInput{ctx: context.Background(), a: a, pairWait: time.Millisecond}
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
	in := &greeterInput{ctx: context.Background(), a: a, ui: ui}
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

// TestGreeterReopenBacksOff: a display that ends each new window at once
// (DISPLAY set, the X server not up yet: greeter.New succeeds and the
// window ends right after) is tried ever less often, up to
// greeterRetryMax; the wait started again at greeterRetryMin after every
// window, so a terminal without its X server opened one and logged a
// warning twice a second for as long as it ran. A window that ran for a
// while is reopened quickly again.
func TestGreeterReopenBacksOff(t *testing.T) {
	t.Parallel()
	clk := &recordingClock{Fake: clock.NewFake(time.Now()), waits: make(chan time.Duration, 1)}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	ui := &greeterUI{scr: nopScreen{}, cur: greeter.State{Screen: greeter.Idle, Title: textInsert}}
	want := []time.Duration{500 * time.Millisecond, time.Second, 2 * time.Second, 4 * time.Second, 8 * time.Second, 10 * time.Second, 10 * time.Second}
	live := newEndedWindow(false) // the X server is up at last
	opens := 0
	open := func() (greeterWindow, error) {
		opens++
		if opens < len(want) {
			return newEndedWindow(true), nil
		}
		return live, nil
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		superviseGreeter(ctx, clk, testLogger(t), ui, newEndedWindow(true), open)
	}()
	for i, w := range want {
		if got := <-clk.waits; got != w {
			t.Fatalf("wait %d before reopening = %v; want %v (waits %v)", i, got, w, want)
		}
		clk.Advance(w)
	}
	<-live.shown // on screen
	clk.Advance(greeterRetryMax)
	close(live.ended) // the X server restarted
	if got := <-clk.waits; got != greeterRetryMin {
		t.Fatalf("wait after a window that ran = %v; want %v", got, greeterRetryMin)
	}
	cancel()
	<-done
	if opens != len(want) {
		t.Fatalf("windows opened = %d; want %d", opens, len(want))
	}
}

// recordingClock is a fake clock that reports each AfterFunc's delay once
// the timer is set.
type recordingClock struct {
	*clock.Fake
	waits chan time.Duration
}

func (c *recordingClock) AfterFunc(d time.Duration, f func()) clock.Timer {
	t := c.Fake.AfterFunc(d, f)
	c.waits <- d
	return t
}

// endedWindow is a greeter window the display ends at once (or when the
// test closes ended); shown receives its first Show.
type endedWindow struct {
	ended chan struct{}
	shown chan struct{}
	once  sync.Once
}

func newEndedWindow(ended bool) *endedWindow {
	w := &endedWindow{ended: make(chan struct{}), shown: make(chan struct{})}
	if ended {
		close(w.ended)
	}
	return w
}

func (w *endedWindow) Show(greeter.State)     { w.once.Do(func() { close(w.shown) }) }
func (*endedWindow) Close()                   {}
func (w *endedWindow) Ended() <-chan struct{} { return w.ended }
func (*endedWindow) Err() error               { return errors.New("X server not up") }

// TestGreeterLateAnswerNotKept: a PIN typed on the greeter just after its
// prompt ended (the broker gave up waiting) answers nothing: it is not
// kept for the next prompt, which may be the next person's. It was queued
// as a typed-ahead answer and sent, unseen, to the next login's PIN
// prompt.
func TestGreeterLateAnswerNotKept(t *testing.T) {
	t.Parallel()
	b := startBroker(t, "broker-a", time.Minute)
	ta, p := startPrompted(t, b, nil)
	p.send(&proto.Cancel{ID: 1})
	p.ping(1) // the agent has the Cancel
	in := &greeterInput{ctx: context.Background(), a: ta.agent}
	in.submit(greeter.Answer, "1234") // too late
	p.send(&proto.Error{Code: proto.ErrAuthFailed, Message: "authentication failed: no answer in time", Token: ta.key.Token})
	ta.out.wait("error")

	// The next login's prompt waits for its own answer.
	p.send(&proto.AuthPrompt{ID: 2, Style: proto.PromptEchoOff, Text: "PIN: "})
	ta.out.wait("prompt")
	p.ping(2)
}

// TestGreeterErrorClears: an error on the idle screen (a card that could
// not be read) goes after errorShown, so the next person at the desk does
// not find it; one replaced meanwhile is not cleared.
func TestGreeterErrorClears(t *testing.T) {
	t.Parallel()
	clk := clock.NewFake(time.Unix(1000, 0))
	rec := &recordScreen{}
	ui := &greeterUI{scr: rec, clk: clk}
	ui.event(connectedEvent("b1", "h:1"))
	ui.event(cardEventOf(tokens.Event{Kind: tokens.Error, Reader: "r0"}))
	if s := rec.last(); !s.Error {
		t.Fatalf("shown %+v; want the card error", s)
	}
	clk.Advance(errorShown - time.Second)
	if s := rec.last(); !s.Error {
		t.Fatalf("shown %+v before errorShown; want the card error still", s)
	}
	clk.Advance(time.Second)
	if s := rec.last(); s.Screen != greeter.Idle || s.Title != textInsert || s.Error || s.Message != "" {
		t.Fatalf("after errorShown: %+v; want the plain idle screen", s)
	}
	// An error replaced before its time is not cleared by its timer.
	ui.event(cardEventOf(tokens.Event{Kind: tokens.Error, Reader: "r0"}))
	ui.event(promptEvent(&proto.AuthPrompt{ID: 1, Style: proto.PromptEchoOff, Text: "PIN:"}))
	clk.Advance(errorShown)
	if s := rec.last(); s.Screen != greeter.Prompt {
		t.Fatalf("the old error's timer replaced %+v", s)
	}
}

// TestGreeterUIPairing: a pairing started on the greeter is armed while
// its screen is shown. Its code's Enter shows "Hold the phone…" at once
// (the idle screen flashed between them); cards at the readers are said
// on it — one being read, one that is not a phone, one that cannot be
// read — and leave it armed; anything else the greeter shows instead (a
// PIN prompt, a prompt's message, the broker lost) cancels it, and so does
// Esc, saying the code is still valid. Once the pairing has the phone,
// Esc does nothing. It stayed armed under a PIN prompt and the idle
// screen, and a phone tapped there was paired.
func TestGreeterUIPairing(t *testing.T) {
	t.Parallel()
	rec := &recordScreen{}
	ui := &greeterUI{scr: rec}
	ui.event(connectedEvent("b1", "h:1"))
	cancelled := 0
	start := func() *pairRun {
		t.Helper()
		cancelled = 0
		r := ui.startPairing(func() { cancelled++ })
		if r == nil {
			t.Fatal("startPairing at the idle screen armed nothing")
		}
		if s := rec.last(); s.Screen != greeter.PairWait || s.Title != textPairWait {
			t.Fatalf("after the code: shown %+v; want PairWait at once", s)
		}
		return r
	}
	armed := func(step string, screen greeter.Screen, text string, isErr bool) {
		t.Helper()
		s := rec.last()
		if s.Screen != screen || !strings.Contains(s.Title+" | "+s.Message, text) || s.Error != isErr {
			t.Errorf("%s: shown %+v; want %s with %q, error %v", step, s, screen, text, isErr)
		}
		if cancelled != 0 || ui.pair == nil {
			t.Errorf("%s: the pairing was cancelled (%d) or disarmed; want it armed", step, cancelled)
		}
	}
	ended := func(step string, screen greeter.Screen, text string) {
		t.Helper()
		s := rec.last()
		if s.Screen != screen || !strings.Contains(s.Title+" | "+s.Message+" | "+s.Label, text) {
			t.Errorf("%s: shown %+v; want %s with %q", step, s, screen, text)
		}
		if cancelled != 1 || ui.pair != nil {
			t.Errorf("%s: pairing cancelled %d times, armed %v; want cancelled once", step, cancelled, ui.pair != nil)
		}
	}

	start()
	ui.event(event{name: "waiting"})
	armed("waiting", greeter.PairWait, textPairWait, false)
	ui.event(cardEventOf(tokens.Event{Kind: tokens.Reading, Reader: "r0"}))
	armed("card read", greeter.PairWait, "Reading", false)
	ui.event(cardEventOf(tokens.Event{Kind: tokens.Inserted, Token: "uid.01", Reader: "r0"}))
	ui.event(notPhoneEvent(tokens.Event{Kind: tokens.Inserted, Token: "uid.01", Reader: "r0"}))
	armed("a badge", greeter.PairWait, "not a phone: hold the phone you want to pair, or press Esc", true)
	ui.event(cardEventOf(tokens.Event{Kind: tokens.Removed, Token: "uid.01", Reader: "r0"}))
	armed("the badge pulled", greeter.PairWait, textPairWait, false)
	ui.event(cardEventOf(tokens.Event{Kind: tokens.Error, Reader: "r0", Err: errors.New("mute")}))
	armed("a card error", greeter.PairWait, "could not be read", true)
	ui.event(errorEvent(0, errCommand, "not connected"))
	armed("a command's error", greeter.PairWait, "could not be read", true)
	ui.event(promptEvent(&proto.AuthPrompt{ID: 1, Style: proto.PromptEchoOff, Text: "PIN:"}))
	ended("a PIN prompt", greeter.Prompt, "PIN:")
	if ui.startPairing(func() { t.Error("a pairing started on the prompt was cancelled") }) != nil {
		t.Error("startPairing on a prompt armed a pairing; want the code dropped")
	}
	ui.event(event{name: "waiting"}) // a pairing's, being cancelled
	if s := rec.last(); s.Screen != greeter.Prompt {
		t.Errorf("waiting without a pairing armed: shown %+v; want the prompt kept", s)
	}

	ui.event(protoErrorEvent(&proto.Error{Code: proto.ErrCancelled, Token: "uid.01"}))
	start()
	ui.escape()
	ended("Esc", greeter.Idle, "Pairing cancelled. The code is still valid")

	start()
	ui.event(promptEvent(&proto.AuthPrompt{ID: 2, Style: proto.PromptInfo, Text: "card locked"}))
	ended("a prompt's message", greeter.Idle, "card locked")

	start()
	ui.event(disconnectedEvent(errors.New("EOF")))
	ended("broker lost", greeter.Unavailable, "reconnecting")
	ui.event(connectedEvent("b1", "h:1"))

	start()
	ui.event(pairPhoneEvent(tokens.Event{Kind: tokens.Inserted, Token: "hce.01", Reader: "r0"}))
	armed("the phone", greeter.Busy, "Pairing the phone", false)
	ui.escape()
	armed("Esc while the phone is paired", greeter.Busy, "Pairing the phone", false)
	ui.event(cardEventOf(tokens.Event{Kind: tokens.Inserted, Token: "uid.01", Reader: "r1"}))
	ui.event(notPhoneEvent(tokens.Event{Kind: tokens.Inserted, Token: "uid.01", Reader: "r1"}))
	armed("a badge while the phone is paired", greeter.Busy, "Pairing the phone", false)
	ui.event(pairAgainEvent("pairing unavailable (registry out of reach); try again", time.Second))
	armed("the pairing sent again", greeter.Busy, "Pairing the phone… | The server could not answer yet; trying again", false)
	ui.event(pairedEvent(&proto.Paired{Token: "hce.01", User: "alice"}))
	ended("paired", greeter.Idle, "Paired.")

	// Not judged after the Pair was sent again: the pairing ends, saying
	// so (not "Finding your desktop…", a login's words).
	start()
	ui.event(pairPhoneEvent(tokens.Event{Kind: tokens.Inserted, Token: "hce.01", Reader: "r0"}))
	ui.event(protoErrorEvent(&proto.Error{Code: proto.ErrUnavailable, Message: "pairing unavailable (registry out of reach); try again"}))
	ended("a pairing not judged", greeter.Idle, "The server could not answer the pairing. Press F2 to try again with the same code.")

	// A pairing that ends with its screen still shown leaves it.
	r := start()
	ui.pairingDone(r)
	ended("ended", greeter.Idle, textInsert)
}

// TestPairFailure: a phone pairing that ended without the broker's answer
// says why in the person's words: a pairing sent and never answered is
// the server's doing, not a phone that "could not be read".
func TestPairFailure(t *testing.T) {
	t.Parallel()
	for _, tt := range []struct {
		err  error
		want string
	}{
		{fmt.Errorf("pair: waiting for the broker: %w: %w", errUnanswered, io.EOF), "The server did not answer the pairing. Press F2 to try again with the same code."},
		{errors.New("pair: no phone presented within 1m0s"), "No phone was read."},
		{errors.New("pair: connect: dial tcp: connection refused"), "The server cannot be reached."},
		{errors.New("pair: signing the pairing request: the pairing was declined on the phone"), "The phone did not confirm the pairing."},
		{errors.New("pair: reading the phone's key: card removed"), "The phone could not be read."},
	} {
		if got := pairFailure(tt.err); !strings.HasPrefix(got, tt.want) {
			t.Errorf("pairFailure(%v) = %q; want %q…", tt.err, got, tt.want)
		}
	}
}
