package main

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/hashicorp/go-hclog"

	"github.com/hotdesk/hotdesk/cmd/hotdesk-term/greeter"
	"github.com/hotdesk/hotdesk/internal/clock"
	"github.com/hotdesk/hotdesk/proto"
)

// Texts of the greeter's screens.
const (
	textInsert      = "Insert your card or tap your badge"
	textUnavailable = "Server unavailable — reconnecting…"
)

// stateReading: a card is in a reader, being identified (card_reading) or
// just identified (card inserted), until the broker answers.
var stateReading = greeter.State{Screen: greeter.Busy, Title: "Reading your card…"}

// idleState is the idle screen with msg (an error if isErr).
func idleState(msg string, isErr bool) greeter.State {
	return greeter.State{Screen: greeter.Idle, Title: textInsert, Message: msg, Error: isErr}
}

// Screens of a phone pairing started on the greeter (F2): the wait for
// the phone (Esc cancels it: the window's hint says so), then, once the
// pairing has the phone, its enrolment.
const textPairWait = "Hold the phone to the reader"

var statePairingPhone = greeter.State{Screen: greeter.Busy, Title: "Pairing the phone…",
	Message: "Keep it at the reader, and confirm on the phone if it asks."}

// statePairingAgain: the broker could not judge the pairing yet; the agent
// sends it again without the phone (enroll).
var statePairingAgain = greeter.State{Screen: greeter.Busy, Title: "Pairing the phone…",
	Message: "The server could not answer yet; trying again…"}

func pairWaitState(msg string, isErr bool) greeter.State {
	return greeter.State{Screen: greeter.PairWait, Title: textPairWait, Message: msg, Error: isErr}
}

// isPairScreen reports whether s is one of a pairing's screens.
func isPairScreen(s greeter.State) bool {
	return s.Screen == greeter.PairWait || s == statePairingPhone || s == statePairingAgain
}

// pairRun is a phone pairing started on the greeter, armed while its
// screen is shown: leaving that screen cancels it (greeterUI.pair).
type pairRun struct {
	cancel context.CancelFunc
	// phone: the pairing has its phone (pair_phone) and enrols it; Esc
	// no longer cancels it.
	phone bool
}

// screen is what the agent needs of a greeter (*greeter.Window).
type screen interface {
	Show(greeter.State)
	Close()
}

// greeterUI turns the agent's events into greeter states. Its event
// method is the agent's Config.UI: it runs on whichever goroutine emits.
type greeterUI struct {
	scr screen

	mu        sync.Mutex
	connected bool
	session   string
	cur       greeter.State
	promptSeq uint32
	// beforeReading is the state a card_reading (or an inserted card
	// without one) replaced: shown again when the card leaves before it
	// is identified (and no other reader reads one), and a prompt in it
	// keeps its field on another card's error; reading holds the readers
	// whose card is being read.
	beforeReading greeter.State
	reading       map[string]bool
	clk           clock.Clock // for errorShown; nil: the real clock
	// pair is the phone pairing armed, if any: its screen is shown.
	// Anything else the greeter shows instead (a login, a prompt, an
	// error, the broker lost) cancels it: a phone presented later, at a
	// screen saying nothing of a pairing, must not be paired.
	pair *pairRun
}

func fieldOf(ev event, key string) any {
	for _, f := range ev.fields {
		if f.key == key {
			return f.val
		}
	}
	return nil
}

func strField(ev event, key string) string {
	s, _ := fieldOf(ev, key).(string)
	return s
}

// event updates the screen for one agent event.
func (u *greeterUI) event(ev event) {
	u.mu.Lock()
	defer u.mu.Unlock()
	if u.pair != nil {
		if next, ok := u.pairingEvent(ev); ok {
			u.show(next)
			return
		}
	}
	idle := idleState
	next := u.cur
	switch ev.name {
	case "connected":
		u.connected = true
		if u.session == "" && (u.cur.Screen == greeter.Unavailable || u.cur.Screen == "") {
			next = idle("", false)
		}
	case "disconnected", "reconnecting":
		u.connected = false
		u.session = ""
		next = greeter.State{Screen: greeter.Unavailable, Title: textUnavailable,
			Message: "Your desktop keeps running on the server."}
	case "card_reading":
		// At once, before the card is identified: a slow or mute card
		// takes seconds to become an inserted token or a card error.
		if u.cur != stateReading {
			u.beforeReading = u.cur
		}
		u.markReading(ev)
		next = stateReading
	case "card":
		delete(u.reading, strField(ev, "reader")) // its reading, if any, ended
		switch strField(ev, "kind") {
		case "inserted":
			if u.cur != stateReading { // no card_reading before it
				u.beforeReading = u.cur
			}
			next = stateReading
		case "removed":
			switch {
			case strField(ev, "token") == "":
				// Pulled before it was identified: no broker heard of
				// it, so what it covered (a prompt for another card, a
				// session's screen) comes back, unless another card is
				// still being read or something replaced "reading".
				if len(u.reading) == 0 && u.cur == stateReading {
					next = u.afterReading(idle)
				}
			case u.session == "":
				next = idle("", false)
			}
		case "error":
			const msg = "This card could not be read. Try again, or try another card."
			next = idle(msg, true)
			covered := u.cur
			if covered == stateReading {
				covered = u.beforeReading
			}
			if covered.Screen == greeter.Prompt {
				// A card at another reader: the prompt still waits
				// for its answer, and says so on it.
				covered.Message, covered.Error = msg, true
				next = covered
			}
		}
	case "challenge":
		next = greeter.State{Screen: greeter.Busy, Title: "Checking your card…"}
	case "redirect":
		next = greeter.State{Screen: greeter.Busy, Title: "Finding your desktop…"}
	case "prompt":
		text := strField(ev, "text")
		switch strField(ev, "style") {
		case "echo_off", "echo_on":
			u.promptSeq++
			next = greeter.State{Screen: greeter.Prompt, Title: "Welcome", Label: text,
				Secret: strField(ev, "style") == "echo_off", PromptID: u.promptSeq,
				Message: u.cur.Message, Error: u.cur.Error}
			if f := strField(ev, "for"); f != "" {
				// Several tokens at this terminal: say whose login asks.
				next.Title = "Welcome — for " + f
			}
		case "error":
			next.Message, next.Error = text, true
		default:
			next.Message, next.Error = text, false
		}
	case "attached":
		u.session = strField(ev, "session")
		user := strField(ev, "user")
		title := "Starting your desktop…"
		if user != "" {
			title = fmt.Sprintf("Welcome, %s — starting your desktop…", user)
		}
		next = greeter.State{Screen: greeter.Busy, Title: title}
	case "display_lost":
		// The display client ended under the session (display_lost.go):
		// the token is presented again for a new one.
		next = greeter.State{Screen: greeter.Busy, Title: "Reconnecting your desktop…"}
	case "detached":
		if strField(ev, "session") != u.session && u.session != "" {
			return // an older session's detach
		}
		u.session = ""
		switch strField(ev, "reason") {
		case "takeover":
			msg := "Your session moved to another terminal."
			if by := strField(ev, "by"); by != "" {
				msg = fmt.Sprintf("Your session moved to terminal %s.", by)
			}
			next = idle(msg, false)
		case "locked":
			next = idle("Your card is locked. Ask your administrator.", true)
		case "shutdown":
			next = idle("The server is restarting. Insert your card again.", false)
		case "destroyed":
			next = idle("Your session has ended.", false)
		case "admin":
			next = idle("An administrator detached your session.", false)
		default:
			next = idle("", false)
		}
	case "error":
		next = u.errorState(ev, idle)
	case "paired":
		next = idle("Paired. You can now log in with it.", false)
	case "waiting":
		// A pairing's, shown since its code was entered (startPairing);
		// without one armed, its screen was left: it is being cancelled.
		return
	default:
		return
	}
	if next != u.cur {
		if u.pair != nil {
			// Something else takes the pairing's screen: the pairing
			// ends with it.
			u.endPairingLocked()
			if isPairScreen(next) { // its message changed (a prompt's text)
				next = idle(next.Message, next.Error)
			}
		}
		u.show(next)
	}
}

// markReading notes that ev's reader reads a card (card_reading). Caller
// holds u.mu.
func (u *greeterUI) markReading(ev event) {
	if u.reading == nil {
		u.reading = map[string]bool{}
	}
	u.reading[strField(ev, "reader")] = true
}

// show makes s the screen. Caller holds u.mu.
func (u *greeterUI) show(s greeter.State) {
	if s == u.cur {
		return
	}
	u.cur = s
	u.scr.Show(s)
	u.clearErrorLater(s)
}

// pairingEvent is the screen for ev while a pairing is armed, if ev
// keeps the pairing's screen: the pairing's own progress, and the cards
// at the readers — a card being read, a card that is not a phone (the
// agent does not present it to the broker: not_phone), one that could
// not be read — are said on it. Caller holds u.mu.
func (u *greeterUI) pairingEvent(ev event) (greeter.State, bool) {
	const (
		msgReading  = "Reading… keep it at the reader."
		msgNotPhone = "This is not a phone: hold the phone you want to pair, or press Esc."
		msgCardErr  = "This card could not be read: hold the phone to the reader again, or press Esc."
	)
	switch ev.name {
	case "waiting":
		if u.pair.phone && strField(ev, "reason") != "" {
			return statePairingAgain, true // pairAgainEvent
		}
		return u.cur, true
	case "pair_phone":
		u.pair.phone = true
		return statePairingPhone, true
	case "card_reading":
		u.markReading(ev)
		if u.pair.phone {
			return u.cur, true
		}
		return pairWaitState(msgReading, false), true
	case "card":
		delete(u.reading, strField(ev, "reader"))
		switch {
		case u.pair.phone:
			return u.cur, true
		case strField(ev, "kind") == "error":
			return pairWaitState(msgCardErr, true), true
		}
		return pairWaitState("", false), true
	case "not_phone":
		if u.pair.phone {
			return u.cur, true
		}
		return pairWaitState(msgNotPhone, true), true
	}
	return greeter.State{}, false
}

// startPairing arms a pairing (cancel ends it) and shows its screen at
// once: the window draws it next, not the idle screen its code entry
// leaves. It returns nil, arming nothing, if the screen is no longer idle
// (something replaced it, and the code entry with it, as the code was
// entered).
func (u *greeterUI) startPairing(cancel context.CancelFunc) *pairRun {
	u.mu.Lock()
	defer u.mu.Unlock()
	if u.cur.Screen != greeter.Idle {
		return nil
	}
	u.endPairingLocked()
	u.pair = &pairRun{cancel: cancel}
	u.show(pairWaitState("", false))
	return u.pair
}

// escape is Esc on the pairing's wait for the phone: the pairing is
// cancelled, before anything was sent, so the code is still valid. Once
// the pairing has the phone, Esc does nothing.
func (u *greeterUI) escape() {
	u.mu.Lock()
	defer u.mu.Unlock()
	if u.pair == nil || u.pair.phone || u.cur.Screen != greeter.PairWait {
		return
	}
	u.endPairingLocked()
	u.show(idleState("Pairing cancelled. The code is still valid: press F2 to use it.", false))
}

// pairingDone is r ended (PairPhone returned, its outcome shown): if its
// screen is still shown, the idle screen replaces it.
func (u *greeterUI) pairingDone(r *pairRun) {
	u.mu.Lock()
	defer u.mu.Unlock()
	if r == nil || u.pair != r {
		return
	}
	u.endPairingLocked()
	if isPairScreen(u.cur) {
		u.show(idleState("", false))
	}
}

// endPairingLocked cancels the pairing armed, if any. Caller holds u.mu.
func (u *greeterUI) endPairingLocked() {
	if u.pair != nil {
		u.pair.cancel()
		u.pair = nil
	}
}

// afterReading is the screen to go back to when the last card being read
// left before it was identified: what the reading replaced, but the plain
// idle screen for an idle one (an old error is not shown again) or for
// "unavailable" once connected again. Caller holds u.mu.
func (u *greeterUI) afterReading(idle func(string, bool) greeter.State) greeter.State {
	s := u.beforeReading
	switch {
	case s.Screen == greeter.Unavailable && !u.connected:
		return s
	case s.Screen == greeter.Idle || s.Screen == greeter.Unavailable || s.Screen == "":
		if u.session == "" {
			return idle("", false)
		}
	}
	return s
}

// errorShown is how long an error on the idle screen stays there (a card
// that could not be read, a lockout): the next person at the desk does not
// find the last one's error.
const errorShown = 15 * time.Second

// clearErrorLater takes an idle error state back to the plain idle screen
// after errorShown unless something replaced it. Caller holds u.mu.
func (u *greeterUI) clearErrorLater(s greeter.State) {
	if s.Screen != greeter.Idle || !s.Error {
		return
	}
	clk := u.clk
	if clk == nil {
		clk = clock.Real{}
	}
	clk.AfterFunc(errorShown, func() {
		u.mu.Lock()
		defer u.mu.Unlock()
		if u.cur == s {
			u.cur = greeter.State{Screen: greeter.Idle, Title: s.Title}
			u.scr.Show(u.cur)
		}
	})
}

// answered shows that the prompt's answer is being checked: no input
// field until the broker answers (a PIN typed again meanwhile would go
// nowhere).
func (u *greeterUI) answered() {
	u.mu.Lock()
	defer u.mu.Unlock()
	if u.cur.Screen != greeter.Prompt {
		return
	}
	u.cur = greeter.State{Screen: greeter.Busy, Title: "Checking…"}
	u.scr.Show(u.cur)
}

// errorState is the screen for an error event.
func (u *greeterUI) errorState(ev event, idle func(string, bool) greeter.State) greeter.State {
	switch strField(ev, "name") {
	case errConnect:
		return greeter.State{Screen: greeter.Unavailable, Title: textUnavailable}
	case "auth_failed":
		switch strField(ev, "detail") {
		case proto.DetailNoAnswer:
			return idle("No PIN or password was entered in time. Insert your card again.", true)
		case proto.DetailLockoutStarted:
			// This wrong answer locked the card out: say for how long.
			return idle("Wrong PIN or password. Too many failed attempts: "+retryHint(ev, false), true)
		}
		return idle("Wrong PIN or password. Try again.", true)
	case "cancelled":
		// The card was pulled mid-login: the person's own doing, no error.
		return idle("", false)
	case "rate_limited":
		// One code for a lockout after failed logins and for attempts
		// that come too fast (logins or pairings in progress, token
		// events): the detail tells them apart.
		if strField(ev, "detail") == proto.DetailLockedOut {
			return idle("Locked out: too many failed attempts. "+retryHint(ev, true), true)
		}
		return idle("Too many attempts right now. Try again in a moment.", true)
	case "token_disabled":
		return idle("This card is locked. Ask your administrator.", true)
	case "unknown_token":
		return idle("This card is not registered: ask your administrator to register it, or press F2 to pair a phone.", true)
	case "unavailable", "too_many_hops", errRedirect:
		if strField(ev, "name") == "unavailable" && u.pair != nil {
			// A pairing's, sent again and still not judged (enroll):
			// the same code pairs the same phone (PROTOCOL.md §7.4).
			return idle("The server could not answer the pairing. Press F2 to try again with the same code.", true)
		}
		return greeter.State{Screen: greeter.Busy, Title: "Finding your desktop…", Message: "The server is busy; trying again."}
	case "pairing":
		// The broker refuses a code, or (the code still valid) the key,
		// kind or label offered with it.
		switch strField(ev, "detail") {
		case proto.DetailKeyRefused:
			return idle("This phone cannot be paired: its key was refused. Ask your administrator.", true)
		case proto.DetailProofRefused:
			return idle("The phone could not prove its key; the code is still valid. Press F2 to try again.", true)
		case proto.DetailKeyEnrolled:
			return idle("This phone is already paired: just present it. The code is still valid.", true)
		}
		return idle("The pairing code is wrong, used or expired.", true)
	case errPair:
		return idle(strField(ev, "message"), true)
	case errDisplay:
		return idle("Your desktop could not be shown. Remove your card and insert it again.", true)
	case errCommand, errNoKey:
		return u.cur
	}
	msg := strField(ev, "message")
	if msg == "" {
		msg = "Something went wrong."
	}
	return idle(msg, true)
}

// retryHint says when a lockout ends, from the error's retry_after_ms:
// "try again in 27 s." ("Try …" when capital), or "try again later.".
func retryHint(ev event, capital bool) string {
	hint := "try again later."
	if ms, _ := fieldOf(ev, "retry_after_ms").(int); ms > 0 {
		hint = fmt.Sprintf("try again in %d s.", (ms+999)/1000)
	}
	if capital {
		hint = "T" + hint[1:]
	}
	return hint
}

// greeterInput hands what the person typed on the greeter to the agent:
// answers to its prompt loop, pairing codes to a pairing run (one at a
// time, ended with ctx, Esc, or ui leaving its screen; wg waits for it).
type greeterInput struct {
	ctx context.Context
	a   *agent
	ui  *greeterUI
	// pairWait bounds the wait for a phone at the readers (default 1 min).
	pairWait time.Duration
	wg       sync.WaitGroup
	busy     sync.Mutex
}

func (in *greeterInput) submit(kind greeter.InputKind, text string) {
	switch kind {
	case greeter.Answer:
		// Before the agent sends it: the broker's next word (a prompt, an
		// error, the desktop) replaces "checking".
		if in.ui != nil {
			in.ui.answered()
		}
		select {
		case in.a.ctrl <- command{op: opAnswer, arg: text, onScreen: true}:
		case <-in.ctx.Done():
		}
	case greeter.PairCode:
		if in.a.cfg.Cards == nil {
			in.a.out.emit(errorEvent(0, errPair, "This terminal has no card reader to pair a phone with."))
			return
		}
		// The pairing is armed while its screen is shown: the UI cancels
		// it when anything else replaces that screen, or on Esc.
		pctx, cancel := context.WithCancel(in.ctx)
		var run *pairRun
		if in.ui != nil {
			if run = in.ui.startPairing(cancel); run == nil {
				cancel()
				in.a.log.Debug("a pairing code entered as the greeter's screen changed; dropped")
				return
			}
		}
		in.wg.Add(1)
		go func() {
			defer in.wg.Done()
			defer cancel()
			// One pairing at a time: an earlier one ends soon, cancelled
			// when its screen was left.
			in.busy.Lock()
			defer in.busy.Unlock()
			wait := in.pairWait
			if wait <= 0 {
				wait = time.Minute
			}
			// No label of ours: the phone is not this terminal, and the
			// broker then keeps the one the administrator gave the code.
			_, err := in.a.PairPhone(pctx, text, "", wait)
			var refused *proto.ProtocolError
			switch {
			case err == nil:
			case pctx.Err() != nil:
				// Cancelled: Esc (the screen says so), another screen
				// that replaced the pairing's, or the greeter stopping.
				in.a.log.Info("pairing cancelled", "error", err)
			case errors.As(err, &refused):
				// The broker's Error is on the screen already.
				in.a.log.Warn("pairing failed", "error", err)
			default:
				in.a.log.Warn("pairing failed", "error", err)
				in.a.out.emit(errorEvent(0, errPair, pairFailure(err)))
			}
			if in.ui != nil {
				in.ui.pairingDone(run)
			}
		}()
	case greeter.Cancel:
		if in.ui != nil {
			in.ui.escape()
		}
	}
}

// pairFailure tells the person why a pairing ended without the broker's
// answer.
func pairFailure(err error) string {
	switch msg := err.Error(); {
	case errors.Is(err, errUnanswered):
		// Sent, and the connection ended before the answer: the broker
		// may have paired the phone; the same code pairs it again.
		return "The server did not answer the pairing. Press F2 to try again with the same code."
	case strings.Contains(msg, "no phone presented"):
		return "No phone was read. Press F2 and try again, holding the phone to the reader."
	case strings.Contains(msg, "pair: connect"):
		return "The server cannot be reached. Press F2 to try again later."
	case strings.Contains(msg, "does not sign pairing transcripts"):
		return "This phone's hotdesk app is too old to pair. Update it, then press F2 to try again."
	case strings.Contains(msg, "pair: signing"):
		return "The phone did not confirm the pairing. Press F2 and try again, holding the phone to the reader."
	default:
		return "The phone could not be read. Press F2 to try again."
	}
}

// frameEvent reports what the greeter drew (the widget state; the input
// as drawn, i.e. masked).
func frameEvent(f greeter.Frame) event {
	return event{name: "greeter",
		fields: []field{{"screen", string(f.Screen)}, {"title", f.Title}, {"message", f.Message},
			{"label", f.Label}, {"input", f.Input}, {"hint", f.Hint}, {"width", f.Width}, {"height", f.Height}},
		text: fmt.Sprintf("greeter: %s: %s", f.Screen, clean(f.Title))}
}

// Greeter window supervision: a window the display ended (an X server not
// up yet when the terminal's service started, or one restarted) is opened
// again, after greeterRetryMin doubling to greeterRetryMax, showing what
// the agent shows now: a terminal never sits with a blank screen while its
// agent runs.
const (
	greeterRetryMin = 500 * time.Millisecond
	greeterRetryMax = 10 * time.Second
)

// startGreeter opens the greeter window and connects it to a: ui (already
// a's Config.UI) drives it, typed input goes to a. A window the display
// ends is opened again (see greeterRetryMin). The returned stop closes the
// window and waits for pairing runs; call it after a.Run.
func startGreeter(ctx context.Context, a *agent, ui *greeterUI) (stop func(), err error) {
	ctx, cancel := context.WithCancel(ctx)
	in := &greeterInput{ctx: ctx, a: a, ui: ui}
	var fmu sync.Mutex
	var last greeter.Frame
	open := func() (*greeter.Window, error) {
		fmu.Lock()
		last = greeter.Frame{} // a new window's first frame is news
		fmu.Unlock()
		return greeter.New(greeter.Options{
			Submit: in.submit,
			OnFrame: func(f greeter.Frame) {
				fmu.Lock()
				changed := f != last
				last = f
				fmu.Unlock()
				if changed {
					a.out.emit(frameEvent(f))
				}
			},
		})
	}
	w, err := open()
	if err != nil {
		cancel()
		return nil, err
	}
	ui.setScreen(w)
	supervised := make(chan struct{})
	go func() {
		defer close(supervised)
		superviseGreeter(ctx, a.clk, a.log, ui, w, func() (greeterWindow, error) {
			nw, err := open()
			if err != nil {
				return nil, err
			}
			return nw, nil
		})
	}()
	return func() {
		cancel() // unblocks a Submit waiting for the agent; ends the supervisor
		<-supervised
		in.wg.Wait()
	}, nil
}

// greeterWindow is a greeter window as superviseGreeter sees it
// (*greeter.Window).
type greeterWindow interface {
	screen
	Ended() <-chan struct{}
	Err() error
}

// superviseGreeter opens a window again each time the display ends one
// (w, then those open returns), until ctx ends, when it closes the one
// open. The wait before each attempt doubles from greeterRetryMin to
// greeterRetryMax across windows that end as soon as they open (New
// succeeds while the X server is not up: the display ends the window
// right after), and starts again from greeterRetryMin after a window
// that ran for greeterRetryMax.
func superviseGreeter(ctx context.Context, clk clock.Clock, log hclog.Logger, ui *greeterUI, w greeterWindow, open func() (greeterWindow, error)) {
	wait := greeterRetryMin
	opened := clk.Now()
	for {
		select {
		case <-ctx.Done():
			ui.setScreen(nopScreen{})
			w.Close()
			return
		case <-w.Ended():
		}
		ui.setScreen(nopScreen{})
		if clk.Now().Sub(opened) >= greeterRetryMax {
			wait = greeterRetryMin // it ran: the display went away only now
		}
		why := w.Err()
		for {
			log.Warn("greeter window closed by the display; opening it again", "error", why, "in", wait)
			if !clock.Sleep(ctx, clk, wait) {
				return
			}
			wait = min(2*wait, greeterRetryMax)
			nw, err := open()
			if err == nil {
				w = nw
				break
			}
			why = err
		}
		opened = clk.Now()
		ui.setScreen(w)
	}
}

// setScreen makes scr the screen u draws on and shows it the current
// state (under u's lock, as event shows every later one: none overtakes it).
func (u *greeterUI) setScreen(scr screen) {
	u.mu.Lock()
	defer u.mu.Unlock()
	u.scr = scr
	if u.cur.Screen != "" { // else the window's own "Connecting…" stays
		scr.Show(u.cur)
	}
}

// nopScreen shows nothing (before the window exists, or after it closed).
type nopScreen struct{}

func (nopScreen) Show(greeter.State) {}
func (nopScreen) Close()             {}
