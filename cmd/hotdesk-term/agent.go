package main

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/go-hclog"

	"github.com/hotdesk/hotdesk/internal/clock"
	"github.com/hotdesk/hotdesk/internal/defaults"
	"github.com/hotdesk/hotdesk/proto"
	"github.com/hotdesk/hotdesk/tokens"
	"github.com/hotdesk/hotdesk/tokens/soft"
)

// Defaults of Config.
const (
	defaultTimeout    = 10 * time.Second
	defaultMinBackoff = 500 * time.Millisecond
	defaultMaxBackoff = 30 * time.Second
	// missedPongs unanswered Pings mean the connection is lost.
	missedPongs = 3
	// maxQueuedAnswers bounds answers typed ahead of their prompts.
	maxQueuedAnswers = 16
	// answerTypeAhead is how long an answer typed while no prompt is
	// pending waits for one: long enough for a script that answers before
	// the broker asks, short of the next person's login (an answer typed
	// for the last person's card must not go to the next one's prompt).
	// Scripted answers (Config.Answers) wait however long.
	answerTypeAhead = time.Minute
	// inboxSize bounds messages read but not yet handled.
	inboxSize = 16
	// tlsSessions bounds the TLS sessions kept for resumption: one per
	// broker of the group and one per attach gateway.
	tlsSessions = 2 * proto.MaxMembers
	// maxRedirectBackoff bounds the wait before a token whose redirect
	// target did not answer is presented again: about the time the group
	// registry needs to forget a dead broker (its lease TTL).
	maxRedirectBackoff = 2 * time.Second
)

// Config configures an agent.
type Config struct {
	// Server is the home broker, host:port; TLS verifies it (a pin or CA
	// roots, see proto.ClientTLSConfig).
	Server string
	TLS    *tls.Config
	// TerminalID and Name go into Hello.
	TerminalID string
	Name       string
	Keystore   *soft.Keystore
	// Answers answer the next EchoOn/EchoOff prompts in order.
	Answers []string
	// Insert names keys to insert right after the first connection.
	Insert []string
	// Timeout bounds each dial + handshake (default 10 s), and the wait for
	// the broker's answer to Pair.
	Timeout time.Duration
	// MinBackoff and MaxBackoff bound the reconnect delay (defaults 0.5 s,
	// 30 s); while every broker refuses the connection, refusedMaxBackoff
	// bounds it too.
	MinBackoff, MaxBackoff time.Duration
	Clock                  clock.Clock  // default clock.Real
	Logger                 hclog.Logger // default: none
	Out                    io.Writer    // events, one per line
	JSON                   bool         // events as JSON lines
	// Display, if set, is the display client started on every attach
	// (e.g. xfreerdp): "{addr}" in its arguments becomes a loopback address
	// where the agent relays the session's display stream through the
	// broker's attach gateway with the Attached ticket.
	Display []string
	// Cards, if set, is the terminal's card readers (tokens/pcsc): their
	// events are forwarded to the broker and phones (hce.* tokens) answer
	// challenges through it.
	Cards Cards
	// Group, if set, replaces Server and TLS: the agent connects to any
	// broker of the group it trusts and fails over between them
	// (group.go, PROTOCOL.md §11).
	Group *group
	// Keepalive, if set and shorter than the broker's ping interval, is
	// how often the agent pings its broker; missedPongs unanswered pings
	// mean the broker is gone.
	Keepalive time.Duration
	// Service makes Run a service (hotdesk-term agent): it never returns
	// on its own; the first connection is retried like any other, and the
	// end of lines is not quit.
	Service bool
	// UI, if set, sees every event the agent emits (the greeter).
	UI func(ev event)
}

// Cards is a hardware token provider that can also have a phone sign a
// challenge and read its public key (*pcsc.Provider).
type Cards interface {
	tokens.Provider
	Sign(ctx context.Context, token string, msg []byte) ([]byte, error)
	PublicKey(ctx context.Context, token string) ([]byte, error)
}

// agent is the terminal agent: it keeps a connection to a broker, reports
// token events, proves possession of software tokens, relays prompts, and
// follows redirects. Run's loop owns all connection state; commands from
// stdin reach it over channels.
type agent struct {
	cfg  Config
	clk  clock.Clock
	log  hclog.Logger
	out  *emitter
	prov *soft.Provider
	// wg counts the goroutines Run starts (goRun); Run returns after
	// they have ended.
	wg sync.WaitGroup

	// Channels into the loop.
	ctrl   chan command // answer, status, quit
	inbox  chan inMsg   // messages read from a link
	signed chan signed  // phones' signatures of challenges (challenge)
	ticks  chan *link   // ping timer fired
	dialed chan dialResult
	retry  chan struct{} // reconnect timer fired

	// Loop state.
	cards     map[string]string // card token → reader, while present
	disp      *display          // the display path, if cfg.Display is set
	conn      *link
	dialing   bool
	lastDial  time.Time // when the last dial started
	retrying  clock.Timer
	backoff   time.Duration
	answers   []queuedAnswer
	prompt    uint32 // id of the prompt waiting for an answer command, if hasPrompt
	hasPrompt bool
	// answered: the person answered a prompt since the last answer to an
	// insert (a wrong PIN then presents the card again: retry.go).
	answered bool
	session  string
	// sessionToken is the token of the last Attached (of session while
	// it is shown); displayLost carries the display's reports of a client
	// that ended while showing a session, displayLosses their times for
	// the session shown (display_lost.go).
	sessionToken  string
	displayLost   chan string
	displayLosses []time.Time
	// resume holds, per token, the ResumeKey of the last Attached for it
	// (and its session), while the token stays inserted and no Detached
	// came: presented again on a new connection, it carries the key, and
	// the broker resumes the session without a login within its grace
	// (PROTOCOL.md §10). A secret of the connection: never logged.
	resume   map[string]resumeKey
	lastAddr string // the broker whose connection was lost last
	// redirFails counts redirects in a row whose target did not answer.
	redirFails int
	// parked is the connection a Redirect arrived on, kept open (and
	// pinged) while the redirect's dial runs: if the target does not
	// answer, the token is presented again on it, without a new
	// connection (PROTOCOL.md §7.5). Nil otherwise.
	parked *link
	// missed are tokens inserted while no connection was up (a redirect's
	// or a reconnect's dial running): presented on the next connection,
	// whatever that dial was for. Removal takes a token off.
	missed []string
	// cardsWatched is set while Run watches cfg.Cards (from before its
	// Watch, which may take a while, on): a pairing
	// (PairPhone, the greeter's F2) then takes the phones from Run's loop
	// through phoneReq, as the readers allow one watch at a time.
	cardsWatched atomic.Bool
	phoneReq     chan chan tokens.Event
	// phoneWait, set by a pairing through phoneReq, receives the phones
	// inserted meanwhile instead of the broker; the other cards inserted
	// meanwhile go to neither (a not_phone event says so). diverted are
	// those cards, whose removal is not reported either.
	phoneWait chan tokens.Event
	diverted  map[string]bool
	// retries are tokens answered "unavailable" (retry.go); represent
	// carries their timers into the loop, stopped closes when it ends.
	retries   retryState
	represent chan representation
	stopped   chan struct{}
	// tlsCache keeps TLS 1.3 session tickets of the brokers this agent
	// connected to (keyed by address), so that a redirect, a failover or a
	// display attach to a broker seen before resumes instead of a full
	// handshake. A resumed session is still pinned: VerifyConnection runs
	// on resumption too, with the certificate of the original handshake,
	// and only the broker process that issued a ticket can resume it.
	tlsCache tls.ClientSessionCache
}

// target says where to connect and what to do once connected.
type target struct {
	addr  string
	tls   *tls.Config
	hops  uint8
	fence int64
	token string // Hello.Token, for a redirect
	// avoid is the broker to try last when addr is empty (any member of
	// the group).
	avoid string
	// present lists tokens to report (if still inserted) once connected;
	// all means every inserted token.
	present []string
	all     bool
}

type inMsg struct {
	l   *link
	m   proto.Msg
	err error
}

func newAgent(cfg Config) (*agent, error) {
	switch {
	case cfg.Server == "" && cfg.Group == nil:
		return nil, errors.New("agent: no server address")
	case cfg.TLS == nil && cfg.Group == nil:
		return nil, errors.New("agent: no tls configuration")
	case cfg.Keystore == nil:
		return nil, errors.New("agent: no keystore")
	case cfg.TerminalID == "":
		return nil, errors.New("agent: no terminal id")
	}
	defaults.Set(&cfg.Timeout, defaultTimeout)
	defaults.Set(&cfg.MinBackoff, defaultMinBackoff)
	if cfg.MaxBackoff < cfg.MinBackoff {
		cfg.MaxBackoff = max(defaultMaxBackoff, cfg.MinBackoff)
	}
	if cfg.Clock == nil {
		cfg.Clock = clock.Real{}
	}
	if cfg.Logger == nil {
		cfg.Logger = hclog.NewNullLogger()
	}
	if cfg.Out == nil {
		cfg.Out = io.Discard
	}
	if len(cfg.Answers) > maxQueuedAnswers {
		return nil, fmt.Errorf("agent: more than %d scripted answers", maxQueuedAnswers)
	}
	a := &agent{
		cfg:       cfg,
		clk:       cfg.Clock,
		log:       cfg.Logger,
		out:       &emitter{w: cfg.Out, json: cfg.JSON, now: cfg.Clock.Now, ui: cfg.UI},
		prov:      soft.NewProvider(cfg.Keystore, cfg.Clock),
		cards:     make(map[string]string),
		phoneReq:  make(chan chan tokens.Event),
		diverted:  make(map[string]bool),
		ctrl:      make(chan command),
		inbox:     make(chan inMsg, inboxSize),
		signed:    make(chan signed),
		ticks:     make(chan *link),
		dialed:    make(chan dialResult),
		retry:     make(chan struct{}, 1),
		represent: make(chan representation),
		// Buffered: the display reports without waiting on the loop.
		displayLost: make(chan string, 4),
		stopped:     make(chan struct{}),
		backoff:     cfg.MinBackoff,
		answers:     scriptedAnswers(cfg.Answers),
		tlsCache:    tls.NewLRUClientSessionCache(tlsSessions),
	}
	if len(cfg.Display) > 0 {
		a.disp = newDisplay(displayConfig{Command: cfg.Display, Terminal: cfg.TerminalID, Timeout: cfg.Timeout,
			Clock: cfg.Clock, Logger: cfg.Logger.Named("display"), Emit: a.out.emit, Lost: a.reportDisplayLost})
	}
	return a, nil
}

// home is where the agent connects when it has no redirect to follow:
// its configured server, or, with a Group, any member (the one lost last
// goes last).
func (a *agent) home() target {
	if a.cfg.Group != nil {
		return target{avoid: a.lastAddr}
	}
	return target{addr: a.cfg.Server, tls: a.cfg.TLS}
}

// Run connects to the home broker and runs the agent until ctx is
// cancelled (it returns ctx.Err()), a quit command, or the end of lines
// (both return nil). The first connection must succeed; later losses are
// reported and retried with backoff. lines are stdin commands (see
// parseCommand); Run does not close it. Run returns once everything it
// started has ended: its goroutines (goRun), the display client, and the
// token streams it watched (drained until closed, as tokens.Provider asks).
func (a *agent) Run(ctx context.Context, lines <-chan string) error {
	ctx, cancel := context.WithCancel(ctx)
	// The token streams watched. Deferred first, this runs last: after
	// the links are closed and a.stopped is.
	var streams []<-chan tokens.Event
	defer func() {
		cancel()
		for _, ch := range streams {
			for range ch {
			}
		}
		a.wg.Wait()
	}()
	events, err := a.prov.Watch(ctx)
	if err != nil {
		return err
	}
	streams = append(streams, events)
	l, err := a.dial(ctx, a.home())
	switch {
	case err == nil:
		a.up(ctx, l, target{})
	case a.cfg.Service:
		// A service waits for its brokers, however long it takes.
		a.out.emit(errorEvent(0, errConnect, err.Error()))
		a.scheduleRetryAfter(err)
	default:
		return fmt.Errorf("connect: %w", err)
	}
	if a.disp != nil {
		a.disp.start(ctx) // a client waits for the first ticket
		defer a.disp.close()
	}
	defer func() {
		close(a.stopped)
		a.stopRetries()
		if a.conn != nil {
			a.conn.close()
		}
		a.dropParked()
		if a.retrying != nil {
			a.retrying.Stop()
		}
	}()

	a.goRun(func() { a.readCommands(ctx, lines) })

	var cardEvents <-chan tokens.Event
	if a.cfg.Cards != nil {
		// Set before the watch: a pairing begun while it takes the
		// readers waits for this loop, not watching them a second time.
		a.cardsWatched.Store(true)
		defer a.cardsWatched.Store(false)
		if cardEvents, err = a.cfg.Cards.Watch(ctx); err != nil {
			return fmt.Errorf("card readers: %w", err)
		}
		streams = append(streams, cardEvents)
	}

	for {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case cmd := <-a.ctrl:
			if cmd.op == opQuit && a.cfg.Service && cmd.arg == "eof" {
				continue // a service outlives its input
			}
			if cmd.op == opQuit {
				return nil
			}
			a.command(cmd)
			if cmd.done != nil {
				close(cmd.done)
			}
		case ev, ok := <-events:
			if !ok {
				return ctx.Err()
			}
			a.tokenEvent(ev)
		case ev, ok := <-cardEvents:
			if !ok {
				cardEvents = nil
				continue
			}
			a.cardEvent(ev)
		case ch := <-a.phoneReq:
			a.waitPhones(ch)
		case m := <-a.inbox:
			a.message(ctx, m)
		case s := <-a.signed:
			a.proof(s)
		case l := <-a.ticks:
			a.ping(ctx, l)
		case r := <-a.dialed:
			a.dialDone(ctx, r)
		case due := <-a.represent:
			a.representDue(due)
		case session := <-a.displayLost:
			a.displayEnded(session)
		case <-a.retry:
			a.retrying = nil
			if a.conn == nil && !a.dialing {
				t := a.home()
				t.all = true
				a.startDial(ctx, t)
			}
		}
	}
}

// goRun runs f on a goroutine of Run's own, which Run waits for before
// it returns. Only Run's goroutine calls it. f must end once Run's context
// is cancelled, a.stopped is closed or its link is closed (Run's exit
// does all three).
func (a *agent) goRun(f func()) {
	a.wg.Add(1)
	go func() {
		defer a.wg.Done()
		f()
	}()
}

// readCommands parses lines. insert and remove act on the provider here,
// outside the loop, like a card reader would; the loop sees their events.
// The other commands go to the loop. End of lines is quit.
func (a *agent) readCommands(ctx context.Context, lines <-chan string) {
	toLoop := func(c command) bool {
		select {
		case a.ctrl <- c:
			return true
		case <-ctx.Done():
			return false
		}
	}
	do := func(c command) bool {
		var err error
		switch c.op {
		case opInsert:
			err = a.prov.Insert(c.arg)
		case opRemove:
			err = a.prov.Remove(c.arg)
		case opStatus:
			c.done = make(chan struct{})
			if !toLoop(c) {
				return false
			}
			select {
			case <-c.done:
				return true
			case <-ctx.Done():
				return false
			}
		default:
			return toLoop(c)
		}
		if err != nil {
			a.out.emit(errorEvent(0, errCommand, err.Error()))
		}
		return true
	}
	for _, name := range a.cfg.Insert {
		if !do(command{op: opInsert, arg: name}) {
			return
		}
	}
	for {
		select {
		case <-ctx.Done():
			return
		case line, ok := <-lines:
			if !ok {
				toLoop(command{op: opQuit, arg: "eof"})
				return
			}
			c, err := parseCommand(line)
			if err != nil {
				a.out.emit(errorEvent(0, errCommand, err.Error()))
				continue
			}
			if c.op == opNone {
				continue
			}
			if !do(c) || c.op == opQuit {
				return
			}
		}
	}
}

// queuedAnswer is an answer waiting for a prompt: scripted (at zero) or
// typed while none was pending.
type queuedAnswer struct {
	text string
	at   time.Time // when typed; zero: scripted, no expiry
}

func scriptedAnswers(texts []string) []queuedAnswer {
	out := make([]queuedAnswer, len(texts))
	for i, t := range texts {
		out[i] = queuedAnswer{text: t}
	}
	return out
}

// nextAnswer takes the first queued answer still waiting for a prompt,
// dropping those typed more than answerTypeAhead ago.
func (a *agent) nextAnswer() (string, bool) {
	now := a.clk.Now()
	for len(a.answers) > 0 {
		q := a.answers[0]
		a.answers = a.answers[1:]
		if q.at.IsZero() || now.Sub(q.at) <= answerTypeAhead {
			return q.text, true
		}
		a.log.Debug("an answer typed ahead of any prompt was not used in time; dropped")
	}
	return "", false
}

// resumeKey is an Attached's ResumeKey for the token of its session.
type resumeKey struct {
	session string
	key     []byte
}

// insertMsg is the TokenInserted presenting tok at reader, with the
// resume key of its session if the terminal holds one.
func (a *agent) insertMsg(tok, reader string) *proto.TokenInserted {
	m := &proto.TokenInserted{Token: tok, Reader: reader}
	if rk, ok := a.resume[tok]; ok {
		m.Resume = rk.key
	}
	return m
}

// presentInserted reports to the current connection the tokens still
// inserted among want (all: every inserted token), and clears missed.
func (a *agent) presentInserted(want []string, all bool) {
	a.missed = nil
	for _, tok := range a.prov.Inserted() {
		if all || slices.Contains(want, tok) {
			a.send(a.insertMsg(tok, soft.Reader))
		}
	}
	for tok, reader := range a.cards {
		if all || slices.Contains(want, tok) {
			a.send(a.insertMsg(tok, reader))
		}
	}
}

// send writes m to the current connection; a failure loses the connection.
func (a *agent) send(m any) {
	if a.conn == nil {
		return
	}
	if err := a.conn.c.Send(m); err != nil {
		a.lost(err)
	}
}

// cardEvent prints a card reader's event, remembers which cards are
// present (to report them again after a reconnect) and forwards it. A
// Reading, and the Removed without a token that ends one (the card left
// before it was identified), are for the person at the terminal: printed,
// not forwarded (the broker hears of a card once it is identified).
func (a *agent) cardEvent(ev tokens.Event) {
	if ev.Kind == tokens.Reading || ev.Kind == tokens.Removed && ev.Token == "" {
		a.out.emit(cardEventOf(ev))
		return
	}
	divert, notPhone := false, false
	switch ev.Kind {
	case tokens.Inserted:
		if a.phoneWait != nil {
			// A pairing waits: the card is not presented to the broker
			// (a phone is the pairing's; any other card is not logged
			// in but answered "not a phone" on the pairing's screen).
			// Not in cards either: a later connection would present it
			// (presentInserted), and its removal, diverted, would not
			// be reported: to log in with it, it is presented again.
			divert = true
			a.diverted[ev.Token] = true
			if !isPhone(ev.Token) {
				notPhone = true
				break
			}
			select {
			case a.phoneWait <- ev:
			default:
			}
			break
		}
		a.cards[ev.Token] = ev.Reader
	case tokens.Removed:
		delete(a.cards, ev.Token)
		divert = a.diverted[ev.Token]
		delete(a.diverted, ev.Token)
	}
	a.out.emit(cardEventOf(ev))
	if notPhone {
		a.out.emit(notPhoneEvent(ev))
	}
	if !divert {
		a.tokenEvent(ev)
	}
}

// isPhone reports whether tok is a phone (host card emulation).
func isPhone(tok string) bool { return strings.HasPrefix(tok, "hce.") }

// waitPhones hands the phones inserted from now on to ch (a pairing) —
// and those at the readers now — instead of the broker; nil ends that.
func (a *agent) waitPhones(ch chan tokens.Event) {
	a.phoneWait = ch
	if ch == nil {
		return
	}
	for tok, reader := range a.cards {
		if !isPhone(tok) {
			continue
		}
		select {
		case ch <- tokens.Event{Kind: tokens.Inserted, Token: tok, Reader: reader, At: a.clk.Now()}:
		default:
		}
	}
}

// tokenEvent reports a token event of the provider to the current broker.
// Without a connection nothing is sent: the inserted tokens are reported
// when the agent reconnects.
func (a *agent) tokenEvent(ev tokens.Event) {
	switch ev.Kind {
	case tokens.Inserted:
		a.insertDone(ev.Token) // a new insertion: new retries
		if a.conn == nil {
			a.missed = append(a.missed, ev.Token)
			a.reconnectNow()
		}
		a.send(a.insertMsg(ev.Token, ev.Reader))
	case tokens.Removed:
		a.insertDone(ev.Token)
		delete(a.resume, ev.Token) // gone from the reader: a new presentation logs in
		a.missed = slices.DeleteFunc(a.missed, func(s string) bool { return s == ev.Token })
		if a.conn == nil && a.parked != nil {
			// Whatever the parked connection shows for this token must
			// not stay attached if the redirect fails and it comes back.
			if a.parked.c.Send(&proto.TokenRemoved{Token: ev.Token, Reader: ev.Reader}) != nil {
				a.dropParked()
			}
			return
		}
		a.send(&proto.TokenRemoved{Token: ev.Token, Reader: ev.Reader})
	case tokens.Error:
		msg := "token device error"
		if ev.Err != nil {
			msg = ev.Err.Error()
		}
		a.send(&proto.CardError{Reader: ev.Reader, Message: msg})
	}
}

func (a *agent) command(c command) {
	switch c.op {
	case opLogin, opLogout:
		if a.conn == nil {
			a.out.emit(errorEvent(0, errCommand, "not connected"))
			return
		}
		if c.op == opLogin {
			a.send(&proto.TokenInserted{Token: "user." + c.arg, Reader: "login"})
		} else {
			a.send(&proto.TokenRemoved{Token: "user." + c.arg, Reader: "login"})
		}
	case opAnswer:
		if a.hasPrompt && a.conn != nil {
			a.hasPrompt, a.answered = false, true
			a.send(&proto.AuthAnswer{ID: a.prompt, Text: c.arg})
			return
		}
		if c.onScreen {
			a.log.Debug("an answer typed on the greeter after its prompt ended; dropped")
			return
		}
		if len(a.answers) >= maxQueuedAnswers {
			a.out.emit(errorEvent(0, errCommand, "too many answers waiting for prompts"))
			return
		}
		a.answers = append(a.answers, queuedAnswer{text: c.arg, at: a.clk.Now()})
	case opCancel:
		// The person declines the prompt on screen: the broker fails
		// that login (PROTOCOL.md §5 AuthPrompt).
		if a.hasPrompt && a.conn != nil {
			// A declined login is not a wrong PIN, whatever was typed
			// at its earlier prompts: not presented again (retry.go).
			a.hasPrompt, a.answered = false, false
			a.send(&proto.Cancel{ID: a.prompt})
			return
		}
		a.out.emit(errorEvent(0, errCommand, "no prompt to cancel"))
	case opStatus:
		s := status{Session: a.session, Inserted: a.prov.Inserted()}
		if a.conn != nil {
			s.Connected, s.Server, s.Addr, s.Hops = true, a.conn.welcome.ServerID, a.conn.addr, a.conn.hops
		}
		a.out.emit(statusEvent(s))
	}
}

// message handles one message (or read error) from a link.
func (a *agent) message(ctx context.Context, in inMsg) {
	l := in.l
	if l != nil && l == a.parked {
		a.parkedMessage(in)
		return
	}
	if l != a.conn {
		return // from a connection already closed
	}
	if in.err != nil {
		if errors.Is(in.err, io.EOF) {
			in.err = errors.New("broker closed the connection")
		}
		a.lost(in.err)
		return
	}
	switch m := in.m.Body.(type) {
	case *proto.Challenge:
		a.challenge(ctx, l, m)
	case *proto.AuthPrompt:
		a.out.emit(a.withPromptFor(promptEvent(m), m.Token))
		if m.Style != proto.PromptEchoOff && m.Style != proto.PromptEchoOn {
			return
		}
		if text, ok := a.nextAnswer(); ok {
			a.answered = true
			a.send(&proto.AuthAnswer{ID: m.ID, Text: text})
			return
		}
		a.prompt, a.hasPrompt = m.ID, true
	case *proto.Cancel:
		if a.hasPrompt && a.prompt == m.ID {
			a.hasPrompt = false
		}
	case *proto.Attached:
		a.redirFails, a.answered = 0, false
		a.insertDone(m.Token)
		if a.session != m.SessionID {
			a.displayLosses = nil
		}
		a.session, a.sessionToken = m.SessionID, m.Token
		if len(m.ResumeKey) == proto.ResumeKeyLen {
			if a.resume == nil {
				a.resume = map[string]resumeKey{}
			}
			a.resume[m.Token] = resumeKey{session: m.SessionID, key: m.ResumeKey}
		} else {
			delete(a.resume, m.Token)
		}
		a.out.emit(attachedEvent(m))
		a.startDisplay(l, m)
	case *proto.Detached:
		// Said on a live connection: no reconnect, unless the broker is
		// stopping: one that keeps its desktops across the restart lets
		// this terminal back in with the key as after a lost connection.
		if m.Reason != proto.DetachShutdown {
			for tok, rk := range a.resume {
				if rk.session == m.SessionID {
					delete(a.resume, tok)
				}
			}
		}
		if a.session == m.SessionID {
			a.session = ""
			a.stopDisplay()
		}
		a.out.emit(detachedEvent(m))
		defer a.homeIfIdle(ctx)
		if m.Reason == proto.DetachLocked {
			// The broker lost its lease (or the token was disabled, which
			// the next answer says): present the inserted tokens again.
			for tok := range a.cards {
				a.unavailable(&proto.Error{Code: proto.ErrUnavailable, Token: tok})
			}
			for _, tok := range a.prov.Inserted() {
				a.unavailable(&proto.Error{Code: proto.ErrUnavailable, Token: tok})
			}
		}
	case *proto.Error:
		a.out.emit(protoErrorEvent(m))
		a.unavailable(m)
		a.wrongAnswer(m)
	case *proto.Redirect:
		a.redirect(ctx, l, m)
	case *proto.Ping:
		a.send(&proto.Pong{Seq: m.Seq})
	case *proto.Pong:
		l.unanswered = 0
	default:
		a.log.Debug("ignoring message", "type", in.m.Type.String())
	}
}

// signed is a challenge's signature (or why there is none) for the link
// the challenge came on.
type signed struct {
	l     *link
	ch    *proto.Challenge
	sig   []byte
	err   error
	phone bool // signed by a phone at a reader (Cards), not the keystore
}

// challenge proves possession of a token key.
func (a *agent) challenge(ctx context.Context, l *link, ch *proto.Challenge) {
	a.out.emit(challengeEvent(ch.Token))
	msg, err := soft.ChallengeMessage(a.cfg.TerminalID, l.welcome.ServerID, l.welcome.Nonce, ch.Nonce, ch.Token)
	if err != nil {
		a.out.emit(errorEvent(0, errNoKey, err.Error()))
		return
	}
	if strings.HasPrefix(ch.Token, "hce.") && a.cfg.Cards != nil {
		// A phone signs over NFC while it is in the field: several APDUs,
		// and a phone that stops answering holds the exchange up to
		// Timeout. It runs outside the loop, which meanwhile answers the
		// broker's pings (a loop blocked in it lost the connection to the
		// broker's read timeout) and everything else.
		a.goRun(func() {
			sctx, cancel := context.WithTimeout(ctx, a.cfg.Timeout)
			sig, err := a.cfg.Cards.Sign(sctx, ch.Token, msg)
			cancel()
			select {
			case a.signed <- signed{l: l, ch: ch, sig: sig, err: err, phone: true}:
			case <-a.stopped:
			}
		})
		return
	}
	sig, err := a.cfg.Keystore.Sign(ch.Token, msg)
	a.proof(signed{l: l, ch: ch, sig: sig, err: err})
}

// proof answers a challenge with its signature, on the link it came on
// only: a proof is bound to its connection's Welcome nonce.
func (a *agent) proof(s signed) {
	switch {
	case s.err != nil && s.phone:
		// The phone is there but did not sign (it refused, answered
		// garbage or stopped answering): a card error, as one at
		// identification, not a missing key.
		a.log.Warn("phone did not sign the challenge", "token", s.ch.Token, "error", s.err)
		a.out.emit(cardEventOf(tokens.Event{Kind: tokens.Error, Token: s.ch.Token, Reader: a.cards[s.ch.Token],
			Err: fmt.Errorf("signing the challenge for %s: %w", s.ch.Token, s.err)}))
		return
	case s.err != nil:
		a.log.Warn("cannot answer challenge", "token", s.ch.Token, "error", s.err)
		a.out.emit(errorEvent(0, errNoKey, fmt.Sprintf("no key for token %s: %v", s.ch.Token, s.err)))
		return
	}
	if s.l != a.conn {
		a.log.Debug("challenge signed after its connection ended", "token", s.ch.Token)
		return
	}
	a.send(&proto.Proof{ID: s.ch.ID, Token: s.ch.Token, Signature: s.sig})
}

// redirect follows a Redirect: close this connection and connect to the
// named broker, pinning its fingerprint, with one more hop. Past
// proto.MaxHops, or without a fingerprint, the redirect is refused and the
// agent goes back to its home broker.
func (a *agent) redirect(ctx context.Context, l *link, r *proto.Redirect) {
	a.out.emit(redirectEvent(r))
	a.conn = nil
	// Hops count one lookup's chain: a redirect about another token than
	// the one that led to this broker starts a new chain.
	hops := 1
	if l.token != "" && l.token == r.Token {
		hops = int(l.hops) + 1
	}
	var tcfg *tls.Config
	var err error
	switch {
	case hops > proto.MaxHops:
		a.out.emit(errorEvent(int(proto.ErrTooManyHops), proto.ErrTooManyHops.String(),
			fmt.Sprintf("redirect to %s would be hop %d; limit %d", r.Addr, hops, proto.MaxHops)))
	case len(r.Fingerprint) == 0 || r.Addr == "":
		err = errors.New("redirect without address or fingerprint")
	default:
		tcfg, err = proto.ClientTLSConfig("", r.Fingerprint, nil)
	}
	if err != nil {
		a.out.emit(errorEvent(0, errRedirect, err.Error()))
	}
	if tcfg == nil {
		l.close()
		a.startDial(ctx, a.home())
		return
	}
	a.parked = l
	a.startDial(ctx, target{addr: r.Addr, tls: tcfg, hops: uint8(hops), fence: r.Fence, token: r.Token, present: []string{r.Token}})
}

// parkedMessage handles what arrives on the parked connection while the
// redirect's dial runs: its pings are answered and its pongs counted; a
// read error drops it; anything else is not for a terminal that is leaving
// (it is logged).
func (a *agent) parkedMessage(in inMsg) {
	l := in.l
	if in.err != nil {
		a.dropParked()
		return
	}
	switch m := in.m.Body.(type) {
	case *proto.Ping:
		if l.c.Send(&proto.Pong{Seq: m.Seq}) != nil {
			a.dropParked()
		}
	case *proto.Pong:
		l.unanswered = 0
	case *proto.Detached:
		// The session it showed left it (a removal sent while parked, a
		// takeover): not shown here any more, whatever the dial gives.
		if a.session == m.SessionID {
			a.session = ""
			a.stopDisplay()
		}
		a.out.emit(detachedEvent(m))
	default:
		a.log.Debug("ignoring message on the connection being left", "type", in.m.Type.String())
	}
}

// dropParked closes the parked connection, if any.
func (a *agent) dropParked() {
	if a.parked != nil {
		a.parked.close()
		a.parked = nil
	}
}
