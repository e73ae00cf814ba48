package pcsc

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"time"

	"github.com/ebfe/scard"

	"github.com/hotdesk/hotdesk/internal/clock"
	"github.com/hotdesk/hotdesk/tokens"
)

// Messages to the machine.
type (
	// snapshot is the state of every watched reader after one
	// GetStatusChange; readers not in it are gone.
	snapshot struct {
		at      time.Time
		readers []readerState
	}
	readerState struct {
		name  string
		flags scard.StateFlag
	}
	// readersLeft: pcscd no longer lists these readers.
	readersLeft struct{ names []string }
	// unavailable: the PC/SC context died or could not be established.
	unavailable struct{ err error }
	// identified is the result of identification op.
	identified struct {
		reader     string
		op         uint64
		token      string
		err        error
		detected   time.Time
		identified time.Time
	}
	// timerFired: the timer op of reader ran out.
	timerFired struct {
		reader string
		op     uint64
		grace  bool // grace timer; else identification timeout
	}
)

// reader is the machine's view of one reader.
type reader struct {
	name    string
	counter uint16 // event counter of the last snapshot
	present bool   // a card is in the reader

	identOp    uint64 // op of the running identification; 0 if none
	detected   time.Time
	identTimer clock.Timer
	// reading: a Reading was reported for the card being identified and
	// not yet ended (by Inserted, Error or Removed without a token). Only
	// while identOp != 0, or until the event that ends it is emitted.
	reading bool

	// token is the token last reported Inserted here and not yet Removed.
	// confirmed says the card in the reader is known to be it; when the
	// card leaves, confirmed is false while the grace runs (graceOp).
	token     string
	confirmed bool
	graceOp   uint64
	grace     clock.Timer
}

// machine turns reader snapshots and identification results into events.
// It runs on one goroutine (run); nothing else touches its fields.
type machine struct {
	ctx context.Context
	p   *Provider
	in  chan any
	out chan<- tokens.Event
	// identify identifies the card in a reader; p.identifyReader, replaced
	// in tests.
	identify func(reader string) (string, error)

	readers map[string]*reader
	down    bool // unavailability reported, no snapshot since
	ops     uint64
}

func newMachine(ctx context.Context, p *Provider, out chan<- tokens.Event) *machine {
	return &machine{
		ctx: ctx, p: p, in: make(chan any, 8), out: out,
		identify: p.identifyReader,
		readers:  map[string]*reader{},
	}
}

// run handles messages until ctx ends, then stops its timers.
func (m *machine) run() {
	defer func() {
		for _, r := range m.readers {
			m.stopTimers(r)
		}
	}()
	for {
		select {
		case <-m.ctx.Done():
			return
		case msg := <-m.in:
			switch msg := msg.(type) {
			case snapshot:
				m.snapshot(msg)
			case readersLeft:
				for _, name := range msg.names {
					if r := m.readers[name]; r != nil {
						m.readerGone(r, fmt.Errorf("%w: %s removed", ErrUnavailable, name))
					}
				}
			case unavailable:
				m.unavailable(msg.err)
			case identified:
				m.identified(msg)
			case timerFired:
				m.timerFired(msg)
			case func(): // run on the machine's goroutine (tests: a barrier)
				msg()
			}
		}
	}
}

// post hands msg to the machine unless ctx has ended.
func (m *machine) post(msg any) {
	select {
	case m.in <- msg:
	case <-m.ctx.Done():
	}
}

func (m *machine) emit(ev tokens.Event) {
	ev.At = m.p.clk.Now()
	switch ev.Kind {
	case tokens.Inserted:
		m.p.setPresent(ev.Token, ev.Reader)
	case tokens.Removed:
		if ev.Token != "" {
			m.p.setPresent(ev.Token, "")
		}
	}
	m.p.log.Debug("token event", "kind", ev.Kind.String(), "reader", ev.Reader, "token", ev.Token, "error", ev.Err)
	select {
	case m.out <- ev:
	case <-m.ctx.Done():
	}
}

func (m *machine) nextOp() uint64 {
	m.ops++
	return m.ops
}

func (m *machine) snapshot(s snapshot) {
	m.down = false
	seen := make(map[string]bool, len(s.readers))
	for _, rs := range s.readers {
		seen[rs.name] = true
		gone := rs.flags&(scard.StateUnknown|scard.StateUnavailable|scard.StateIgnore) != 0
		r := m.readers[rs.name]
		if gone {
			if r != nil {
				m.readerGone(r, fmt.Errorf("%w: %s (state %#x)", ErrUnavailable, rs.name, uint32(rs.flags)))
			}
			continue
		}
		present := rs.flags&scard.StatePresent != 0
		counter := uint16(rs.flags >> 16)
		if r == nil {
			r = &reader{name: rs.name, counter: counter}
			m.readers[rs.name] = r
			m.p.log.Debug("reader found", "reader", rs.name)
		} else if counter == r.counter && present == r.present {
			continue // e.g. in use by another context: no card movement
		}
		left := r.present // the old card left, or was swapped (counter moved)
		r.counter, r.present = counter, present
		if left {
			m.cardLeft(r)
		}
		if present {
			m.cardArrived(r, s.at)
		}
	}
	var names []string
	for name := range m.readers {
		if !seen[name] {
			names = append(names, name)
		}
	}
	sort.Strings(names)
	for _, name := range names {
		m.readerGone(m.readers[name], fmt.Errorf("%w: %s removed", ErrUnavailable, name))
	}
}

// cardLeft: the card in r left. Its identification is abandoned (a Reading
// of it ends with a Removed without a token); its token is removed now or
// after the grace.
func (m *machine) cardLeft(r *reader) {
	m.stopIdentify(r)
	m.readingAbandoned(r)
	if r.token == "" || r.grace != nil {
		return // never identified, or already in grace
	}
	r.confirmed = false
	if m.p.cfg.RemoveGrace <= 0 {
		m.removeToken(r)
		return
	}
	m.p.setPresent(r.token, "") // a phone out of the field cannot sign
	op := m.nextOp()
	r.graceOp = op
	name := r.name
	r.grace = m.p.clk.AfterFunc(m.p.cfg.RemoveGrace, func() { m.post(timerFired{reader: name, op: op, grace: true}) })
}

// cardArrived: a new card is in r; identify it, and report Reading unless
// r holds a token (its grace runs, or the card was swapped for another
// between two waits with a grace): the card may be that token back, which
// reports nothing. A grace running for r's token is paused until the
// result says whether it is the same token.
func (m *machine) cardArrived(r *reader, at time.Time) {
	m.stopGrace(r)
	op := m.nextOp()
	r.identOp, r.detected = op, at
	name := r.name
	r.identTimer = m.p.clk.AfterFunc(m.p.cfg.IdentifyTimeout, func() { m.post(timerFired{reader: name, op: op}) })
	identify := m.identify
	go func() {
		token, err := identify(name)
		m.post(identified{reader: name, op: op, token: token, err: err, detected: at, identified: m.p.clk.Now()})
	}()
	if r.token == "" {
		r.reading = true
		m.emit(tokens.Event{Kind: tokens.Reading, Reader: name})
	}
}

// readingAbandoned ends a Reading at r whose card left before it was
// identified.
func (m *machine) readingAbandoned(r *reader) {
	if !r.reading {
		return
	}
	r.reading = false
	m.emit(tokens.Event{Kind: tokens.Removed, Reader: r.name})
}

func (m *machine) identified(res identified) {
	r := m.readers[res.reader]
	if r == nil || r.identOp != res.op {
		return // abandoned: the card left, or timed out
	}
	m.stopIdentify(r)
	if errors.Is(res.err, errCardGone) {
		// pcscd reports the removal too; the Reading ends now all the
		// same (should pcscd say nothing, it would never end).
		m.p.log.Debug("card left during identification", "reader", r.name)
		m.readingAbandoned(r)
		return
	}
	if obs := m.p.cfg.Observe; obs != nil {
		obs(Detection{Reader: r.name, Token: res.token, Err: res.err, Detected: res.detected, Identified: res.identified})
	}
	m.settle(r, res.token, res.err)
}

// settle reports the outcome of identifying the card now in r: the
// Inserted or Error it reports ends r's Reading, if any (there is none
// when r holds a token: see cardArrived).
func (m *machine) settle(r *reader, token string, err error) {
	r.reading = false
	if err == nil && token == r.token && r.token != "" {
		r.confirmed = true // the same card came back within the grace
		m.p.setPresent(token, r.name)
		m.p.log.Debug("token back within grace", "reader", r.name, "token", token)
		return
	}
	if r.token != "" {
		m.removeToken(r)
	}
	if err != nil {
		m.p.log.Info("card unreadable", "reader", r.name, "error", err)
		m.emit(tokens.Event{Kind: tokens.Error, Reader: r.name, Err: err})
		return
	}
	m.moved(token, r)
	r.token, r.confirmed = token, true
	m.emit(tokens.Event{Kind: tokens.Inserted, Token: token, Reader: r.name})
}

// moved: token, identified at r, is r's now. Another reader that holds it
// (in its removal grace: the token was moved from there to r) gives it up
// without a Removed, which would report the token gone while it is at r.
func (m *machine) moved(token string, r *reader) {
	for _, o := range m.readers {
		if o == r || o.token != token {
			continue
		}
		m.stopGrace(o)
		o.token, o.confirmed = "", false
		m.p.log.Debug("token moved to another reader", "token", token, "from", o.name, "to", r.name)
	}
}

func (m *machine) timerFired(t timerFired) {
	r := m.readers[t.reader]
	if r == nil {
		return
	}
	switch {
	case t.grace && r.graceOp == t.op:
		r.grace, r.graceOp = nil, 0
		m.removeToken(r)
	case !t.grace && r.identOp == t.op:
		r.identTimer = nil
		m.stopIdentify(r)
		m.settle(r, "", fmt.Errorf("%w: no answer within %v", ErrCardUnreadable, m.p.cfg.IdentifyTimeout))
	}
}

// removeToken reports r's token removed.
func (m *machine) removeToken(r *reader) {
	m.stopGrace(r)
	token := r.token
	r.token, r.confirmed = "", false
	m.emit(tokens.Event{Kind: tokens.Removed, Token: token, Reader: r.name})
}

// readerGone: r was unplugged or became unavailable. Its token is removed
// at once (its card state is unknown) and the reader reported unavailable.
//
// The Error ends r's Reading, if any: a reader with a Reading holds no
// token, so no Removed comes before it.
func (m *machine) readerGone(r *reader, err error) {
	m.stopTimers(r)
	r.identOp = 0
	r.reading = false
	delete(m.readers, r.name)
	if r.token != "" {
		m.removeToken(r)
	}
	m.p.log.Warn("reader unavailable", "reader", r.name, "error", err)
	m.emit(tokens.Event{Kind: tokens.Error, Reader: r.name, Err: err})
}

// unavailable: pcscd is gone. Every reader is gone; once per outage.
func (m *machine) unavailable(err error) {
	if m.down {
		return
	}
	m.down = true
	names := make([]string, 0, len(m.readers))
	for name := range m.readers {
		names = append(names, name)
	}
	sort.Strings(names)
	for _, name := range names {
		m.readerGone(m.readers[name], fmt.Errorf("%w: %s: %w", ErrUnavailable, name, err))
	}
	if len(names) == 0 {
		m.p.log.Warn("pcscd unavailable", "error", err)
		m.emit(tokens.Event{Kind: tokens.Error, Err: fmt.Errorf("%w: %w", ErrUnavailable, err)})
	}
}

func (m *machine) stopIdentify(r *reader) {
	if r.identTimer != nil {
		r.identTimer.Stop()
		r.identTimer = nil
	}
	r.identOp = 0
}

func (m *machine) stopGrace(r *reader) {
	if r.grace != nil {
		r.grace.Stop()
		r.grace = nil
	}
	r.graceOp = 0
}

func (m *machine) stopTimers(r *reader) {
	m.stopIdentify(r)
	m.stopGrace(r)
}
