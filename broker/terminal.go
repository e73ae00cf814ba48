package broker

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"slices"
	"sync"
	"time"

	"github.com/hotdesk/hotdesk/auth"
	"github.com/hotdesk/hotdesk/internal/event"
	"github.com/hotdesk/hotdesk/internal/netsrc"
	"github.com/hotdesk/hotdesk/proto"
	"github.com/hotdesk/hotdesk/registry/pairing"
	"github.com/hotdesk/hotdesk/tokens"
	"golang.org/x/time/rate"
)

// Limits on what one terminal connection may have outstanding.
const (
	maxQueuedEvents   = 32 // token events waiting to be handled
	handshakeTimeout  = 10 * time.Second
	maxPendingAnswers = 4
	// maxReportedTokens bounds the tokens a connection is remembered to
	// hold (terminal.reported): a person presents one or two at a time.
	maxReportedTokens = 8
)

// terminal is one connected terminal. Token events from it are handled
// strictly in order by one worker goroutine; answers to challenges and
// prompts are routed to the waiting transition by the reader goroutine.
type terminal struct {
	b      *Broker
	conn   *proto.Conn
	id     string
	name   string
	remote string
	nonce  []byte // Welcome nonce, bound into challenges
	// hops, fence and fenceToken come from the Hello: the Redirect chain
	// that sent the terminal here. They bound and fence one lookup only,
	// the first TokenInserted of fenceToken (of any token if the Hello
	// named none); every later insert starts a new chain at hop 0.
	hops       uint8
	fence      int64
	fenceToken string

	events chan tokenEvent
	// eventRate bounds the TokenInserted and Pair messages the terminal
	// may send, cardErrRate its CardError messages, at the same rate (nil:
	// unbounded); used by the reader only.
	eventRate, cardErrRate *rate.Limiter

	mu      sync.Mutex
	session *Session // the session shown here, if any
	pending map[uint32]chan any
	nextID  uint32
	// inflight are each token's queued or running inserts, oldest first
	// (a badge tapped again before its first insert is answered): a
	// removal cancels them all. At most maxQueuedEvents+1 in all.
	inflight map[string][]inflight
	// reported are the tokens whose TokenInserted event was emitted and
	// whose TokenRemoved event was not yet, oldest first, at most
	// maxReportedTokens: the tokens the terminal holds, for whatever
	// follows the events (presence). Those left when the connection ends
	// are TokenRemoved then, unless another connection of the terminal
	// id reported them too.
	reported []string
	gen      uint64
	closed   bool
	// chainUsed: the Hello's redirect chain was consumed by its insert.
	chainUsed bool
}

// chain returns the redirect hops and fence that apply to an insert of
// token: the Hello's for the first insert of the token it named, zero for
// every other lookup.
func (t *terminal) chain(token string) (hops uint8, fence int64) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.chainUsed || (t.fenceToken != "" && t.fenceToken != token) {
		return 0, 0
	}
	return t.hops, t.fence
}

// chainDone marks the Hello's chain consumed once an insert of token is answered.
func (t *terminal) chainDone(token string) {
	t.mu.Lock()
	if t.fenceToken == "" || t.fenceToken == token {
		t.chainUsed = true
	}
	t.mu.Unlock()
}

// tokenEvent is a token message queued for the terminal's worker.
type tokenEvent struct {
	ctx   context.Context
	done  func()
	msg   any
	token string
	gen   uint64
}

type inflight struct {
	gen    uint64
	cancel context.CancelFunc
}

var _ auth.Conversation = loginConversation{}

// ErrPromptCancelled means the terminal answered a prompt with Cancel.
var ErrPromptCancelled = errors.New("broker: prompt cancelled at the terminal")

// Serve accepts terminal connections on ln (a TCP listener; Serve wraps it
// in TLS with tlsCfg) until ctx is cancelled. It returns nil after ctx is
// cancelled, or the listener's error. Accept errors that leave the listener
// usable (EMFILE, ENFILE, ...) back off and are logged once per burst.
// Connections beyond Config.Limits are closed at once.
func (b *Broker) Serve(ctx context.Context, ln net.Listener, tlsCfg *tls.Config) error {
	return b.serveTLS(ctx, ln, tlsCfg, "terminal", &b.termGate, b.serveConn)
}

// ConnCounts returns the connections the terminal listener and the attach
// gateway hold now (for tests and metrics).
func (b *Broker) ConnCounts() (terminal, attach int) {
	b.mu.Lock()
	tg, ag := b.termGate, b.attachGate
	b.mu.Unlock()
	if tg != nil {
		terminal, _ = tg.counts()
	}
	if ag != nil {
		attach, _ = ag.counts()
	}
	return terminal, attach
}

// TerminalConn is one terminal connection the broker holds: its Hello's
// terminal id (the peer's word) and its remote address.
type TerminalConn struct{ ID, Remote string }

// TerminalConns returns the terminal connections the broker holds now:
// those whose TerminalConnected event was emitted and whose
// TerminalDisconnected was not yet (a connection leaves this list before
// its TerminalDisconnected is emitted). A subscriber that may have lost
// events (Bus) rebuilds what it keeps per connection from it.
func (b *Broker) TerminalConns() []TerminalConn {
	b.mu.Lock()
	defer b.mu.Unlock()
	out := make([]TerminalConn, 0, len(b.terms))
	for t := range b.terms {
		out = append(out, TerminalConn{ID: t.id, Remote: t.remote})
	}
	return out
}

// SilentIntervals is how many Ping intervals a terminal may stay silent
// (no frame arrives) before the broker drops it. A terminal pings every
// interval and gives the broker 3 to 4 intervals from the Ping that went
// unanswered; the broker gives it as long, counted from the last frame it
// heard: 4. With 3, a Ping lost at the start of a 1.5 s radio outage, sent
// again by TCP after 0.25, 0.75 and 1.75 s (its backoff), arrived 2.6 s
// after the frame before it and the broker cut a terminal that had not
// given up on it (TestOutageKeeps). The terminal's side, not this one,
// bounds how long a session may stay on screen without its broker (2/3
// of the lease TTL, PROTOCOL.md §10).
const SilentIntervals = 4

// serveConn runs one terminal connection to its end.
func (b *Broker) serveConn(ctx context.Context, c *tls.Conn, adm *admitted) {
	remote := c.RemoteAddr().String()
	log := b.log.With("remote", remote)
	// The TLS handshake and the Hello together get HandshakeTimeout: a
	// slow or silent client loses its connection, whatever it sends.
	expired := time.AfterFunc(b.lim.HandshakeTimeout, func() { c.Close() })
	hctx, cancel := context.WithTimeout(ctx, b.lim.HandshakeTimeout)
	err := c.HandshakeContext(hctx)
	cancel()
	if err != nil {
		expired.Stop()
		log.Debug("tls handshake failed", "error", err)
		c.Close()
		return
	}
	if tc, ok := c.NetConn().(*net.TCPConn); ok {
		_ = tc.SetNoDelay(true) // small request/answer frames: never wait for Nagle
	}
	conn := proto.NewConn(c, proto.WithReadTimeout(SilentIntervals*b.cfg.PingInterval))
	hello, welcome, err := proto.ServerHandshake(conn, b.cfg.ServerID, b.cfg.PingInterval,
		func() []proto.Member { return b.groupMembers(ctx) })
	if !expired.Stop() && err == nil {
		err = errors.New("broker: handshake timed out")
	}
	if err != nil {
		b.blog.Warn("handshake_failed", "terminal handshake failed", "remote", remote, "error", err)
		conn.Close()
		return
	}
	if !adm.authenticated() {
		// Evicted just after its Hello: it is being closed, and the
		// terminal reconnects.
		log.Debug("terminal connection evicted during its handshake", "terminal", logValue(hello.TerminalID))
		conn.Close()
		return
	}
	t := &terminal{
		b: b, conn: conn, id: hello.TerminalID, name: hello.Name, remote: remote,
		nonce: welcome.Nonce, hops: hello.Hops, fence: hello.Fence, fenceToken: hello.Token,
		events:      make(chan tokenEvent, maxQueuedEvents),
		pending:     make(map[uint32]chan any),
		inflight:    make(map[string][]inflight),
		eventRate:   b.lim.eventRate(),
		cardErrRate: b.lim.eventRate(),
	}
	b.mu.Lock()
	if b.closed {
		b.mu.Unlock()
		conn.Close()
		return
	}
	b.terms[t] = struct{}{}
	b.mu.Unlock()
	log.Info("terminal connected", "terminal", logValue(t.id), "hops", hello.Hops)
	b.emit(terminalEvent(event.TerminalConnected, t, "", ""))

	tctx, tcancel := context.WithCancel(ctx)
	workerDone := make(chan struct{})
	go func() { defer close(workerDone); t.work(tctx) }()

	err = t.read(tctx)
	tcancel()
	t.close()
	<-workerDone
	// Whatever the terminal showed is suspended: the person walked away
	// or the link dropped; the desktop keeps running.
	t.detachAll(proto.DetachTokenRemoved, "terminal disconnected")
	b.mu.Lock()
	delete(b.terms, t)
	b.mu.Unlock()
	// The tokens it held are held no more: their token_removed comes
	// first, for whatever follows the events (presence keeps a
	// terminal's record while another connection of its id is open).
	// Not those another connection of its id holds: a terminal that
	// reconnected before this one was seen dead presented the cards
	// still in its readers again there.
	t.mu.Lock()
	held := t.reported
	t.reported = nil
	t.mu.Unlock()
	elsewhere := b.reportedElsewhere(t)
	for _, tok := range held {
		if !elsewhere[tok] {
			b.emit(event.Event{Kind: event.TokenRemoved, Terminal: t.id, Token: tok, Reason: "terminal disconnected"})
		}
	}
	b.emit(terminalEvent(event.TerminalDisconnected, t, "", ""))
	if !errors.Is(err, io.EOF) && ctx.Err() == nil { // read returns only on an error
		log.Info("terminal connection closed", "terminal", logValue(t.id), "error", err)
	} else {
		log.Debug("terminal disconnected", "terminal", logValue(t.id))
	}
}

// reportedElsewhere returns the tokens reported (report) on the other
// connections of t's terminal id.
func (b *Broker) reportedElsewhere(t *terminal) map[string]bool {
	var others []*terminal
	b.mu.Lock()
	for o := range b.terms {
		if o != t && o.id == t.id {
			others = append(others, o)
		}
	}
	b.mu.Unlock()
	out := map[string]bool{}
	for _, o := range others {
		o.mu.Lock()
		for _, tok := range o.reported {
			out[tok] = true
		}
		o.mu.Unlock()
	}
	return out
}

// read is the connection's reader loop. It returns when the connection
// fails or sends something invalid (after telling the terminal why).
func (t *terminal) read(ctx context.Context) error {
	for {
		m, err := t.conn.Recv()
		if err != nil {
			if perr := proto.ErrorFor(err); perr != nil && ctx.Err() == nil {
				_ = t.conn.Send(perr)
			}
			return err
		}
		switch body := m.Body.(type) {
		case *proto.TokenInserted:
			if !t.allowEvent(body.Token) {
				continue
			}
			if err := t.enqueue(ctx, body, body.Token); err != nil {
				return err
			}
		case *proto.TokenRemoved:
			// A removal cancels an insert of the same token still being
			// handled (card pulled during the challenge or the prompt).
			// One of a token that is neither being handled, nor shown,
			// nor reported here changes nothing: it is dropped without a
			// word (no event, no log line), so that removals cost an
			// attacker's terminal as much as they cost the broker. One of
			// a token only reported (refused, or its login failed) is
			// handled for its TokenRemoved event alone.
			t.mu.Lock()
			ins := t.inflight[body.Token]
			handling := len(ins) > 0
			for _, in := range ins {
				in.cancel()
			}
			shown := t.session != nil && t.session.Token == body.Token
			reported := slices.Contains(t.reported, body.Token)
			t.mu.Unlock()
			if !handling && !shown && !reported {
				continue
			}
			if err := t.enqueue(ctx, body, body.Token); err != nil {
				return err
			}
		case *proto.Pair:
			if !t.allowEvent("") {
				continue
			}
			if err := t.enqueue(ctx, body, ""); err != nil {
				return err
			}
		case *proto.Proof:
			t.answer(body.ID, body)
		case *proto.AuthAnswer:
			t.answer(body.ID, body)
		case *proto.Cancel:
			// The person cancelled a prompt (or declined a challenge) at
			// the terminal: the login it belongs to fails.
			t.answer(body.ID, body)
		case *proto.Ping:
			if err := t.conn.Send(&proto.Pong{Seq: body.Seq}); err != nil {
				return err
			}
		case *proto.Pong:
		case *proto.CardError:
			t.cardError(body)
		default:
			_ = t.conn.Send(&proto.Error{Code: proto.ErrProtocol, Message: fmt.Sprintf("unexpected message type %d", m.Type)})
			return fmt.Errorf("broker: unexpected message type %d from terminal", m.Type)
		}
	}
}

// allowEvent reports whether a TokenInserted of token (a Pair: "") is
// within the terminal's token event rate (Limits.TokenEventsPerSecond);
// if not, it is answered Error{rate_limited} at once, without an event,
// a registry read or a log line of its own, and the connection stays open.
// A person presents a few tokens a second at most; a terminal sending
// more is broken or hostile, and each insert costs the group an etcd read
// and an event stored in etcd.
func (t *terminal) allowEvent(token string) bool {
	if t.eventRate == nil || t.eventRate.AllowN(t.b.clk.Now(), 1) {
		return true
	}
	t.b.limitHit(LimitTokenEvents, "")
	t.b.blog.Warn(string(LimitTokenEvents), "token event refused: terminal over its rate",
		"terminal", logValue(t.id), "remote", t.remote, "max_per_second", t.b.lim.TokenEventsPerSecond)
	_ = t.send(&proto.Error{Code: proto.ErrRateLimited, Message: "too many token events; present the token again shortly", Token: token})
	return false
}

// cardError logs a CardError (not answered, §5.17), one line per burst:
// a terminal may send them as fast as it can. Beyond the token event rate
// (Limits.TokenEventsPerSecond, a bucket of its own: a reader in trouble
// does not hold up the cards) one is dropped, counted as a refusal of
// that limit.
func (t *terminal) cardError(m *proto.CardError) {
	b := t.b
	if t.cardErrRate != nil && !t.cardErrRate.AllowN(b.clk.Now(), 1) {
		b.limitHit(LimitTokenEvents, "")
		b.blog.Warn(string(LimitTokenEvents), "card error dropped: terminal over its rate",
			"terminal", logValue(t.id), "remote", t.remote, "max_per_second", b.lim.TokenEventsPerSecond)
		return
	}
	b.blog.Info("card_error", "card error at terminal", "terminal", logValue(t.id), "remote", t.remote,
		"reader", logValue(m.Reader), "message", logValue(m.Message))
}

// enqueue queues a token event for the worker. When maxQueuedEvents are
// outstanding, an insert (or a pairing) is answered at once with
// Error{rate_limited} carrying its token and the connection stays open;
// a removal cannot be dropped without leaving its session shown, so it
// closes the connection instead, which suspends what the terminal showed.
func (t *terminal) enqueue(ctx context.Context, msg any, token string) error {
	ectx, cancel := context.WithCancel(ctx)
	t.mu.Lock()
	t.gen++
	gen := t.gen
	_, isInsert := msg.(*proto.TokenInserted)
	if isInsert {
		t.inflight[token] = append(t.inflight[token], inflight{gen: gen, cancel: cancel})
	}
	t.mu.Unlock()
	select {
	case t.events <- tokenEvent{ctx: ectx, done: cancel, msg: msg, token: token, gen: gen}:
		return nil
	default:
	}
	cancel()
	if isInsert {
		t.dropInflight(token, gen)
	}
	switch msg.(type) {
	case *proto.TokenRemoved:
		_ = t.conn.Send(&proto.Error{Code: proto.ErrRateLimited, Message: "too many outstanding token events", Token: token})
		return errors.New("broker: terminal event queue full at a token removal")
	default:
		return t.send(&proto.Error{Code: proto.ErrRateLimited, Message: "too many outstanding token events; present the token again", Token: token})
	}
}

// work handles the terminal's token events one at a time, in order.
func (t *terminal) work(ctx context.Context) {
	for {
		select {
		case <-ctx.Done():
			return
		case ev := <-t.events:
			t.handle(ev)
			ev.done()
			if _, ok := ev.msg.(*proto.TokenInserted); ok {
				t.dropInflight(ev.token, ev.gen)
			}
		}
	}
}

// dropInflight forgets the insert of token numbered gen (answered, or
// never queued); the token's other inserts stay.
func (t *terminal) dropInflight(token string, gen uint64) {
	t.mu.Lock()
	defer t.mu.Unlock()
	ins := slices.DeleteFunc(t.inflight[token], func(in inflight) bool { return in.gen == gen })
	if len(ins) == 0 {
		delete(t.inflight, token)
	} else {
		t.inflight[token] = ins
	}
}

func (t *terminal) handle(ev tokenEvent) {
	b := t.b
	switch m := ev.msg.(type) {
	case *proto.TokenInserted:
		start := b.clk.Now()
		// The token id is the peer's word, up to a frame of any text: one
		// that is not well formed is refused before it reaches an event,
		// a presence record or the hook (the log has it sanitized).
		var err error
		_, _, perr := tokens.ParseID(m.Token)
		if perr != nil {
			err = fail(proto.ErrUnknownToken, "malformed token id", perr)
		} else {
			if old := t.report(m.Token); old != "" {
				b.emit(event.Event{Kind: event.TokenRemoved, Terminal: t.id, Token: old,
					Reason: fmt.Sprintf("forgotten: more than %d tokens reported at the terminal", maxReportedTokens)})
			}
			b.emit(event.Event{Kind: event.TokenInserted, Time: start, Terminal: t.id, Token: m.Token, Hops: int(t.hops)})
			if ev.ctx.Err() != nil {
				// Removed while it waited in the queue (§7.2).
				err = fail(proto.ErrCancelled, "token removed before its insert was handled", ev.ctx.Err())
			} else {
				err = b.insert(ev.ctx, t, m.Token, m.Resume)
			}
		}
		t.chainDone(m.Token)
		if err != nil {
			var ie *insertError
			if !errors.As(err, &ie) {
				ie = fail(proto.ErrInternal, "internal error", err)
			}
			// Attacker-controlled: bounded, sanitized, and one line per
			// burst for refusals of tokens that are not even well formed.
			if ie.code == proto.ErrUnknownToken {
				b.blog.Warn("token_refused", "token refused", "token", logValue(m.Token), "terminal", logValue(t.id), "remote", t.remote, "code", ie.code, "error", ie)
			} else {
				b.log.Info("token refused", "token", logValue(m.Token), "terminal", logValue(t.id), "code", ie.code, "error", ie)
			}
			tok := m.Token
			if perr != nil {
				tok = "" // the refusal is recorded, the malformed id is not
			}
			b.emit(terminalEvent(event.TokenRefused, t, tok, ie.msg))
			_ = t.send(ie.proto(m.Token))
			return
		}
		b.log.Debug("token handled", "token", logValue(m.Token), "terminal", logValue(t.id), "elapsed", b.clk.Now().Sub(start))
	case *proto.TokenRemoved:
		if t.unreport(m.Token) {
			b.emit(event.Event{Kind: event.TokenRemoved, Terminal: t.id, Token: m.Token})
		}
		b.remove(ev.ctx, t, m.Token)
	case *proto.Pair:
		t.pair(ev.ctx, m)
	}
}

// report records that the TokenInserted event of token is emitted: its
// removal will emit TokenRemoved, whatever became of the insert. When the
// connection holds maxReportedTokens already, the oldest (never the shown
// session's) is forgotten and returned, for its TokenRemoved event to be
// emitted first: what follows the events never keeps more than this.
func (t *terminal) report(token string) (forgotten string) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.reported = slices.DeleteFunc(t.reported, func(s string) bool { return s == token })
	if len(t.reported) >= maxReportedTokens {
		shown := ""
		if t.session != nil {
			shown = t.session.Token
		}
		i := slices.IndexFunc(t.reported, func(s string) bool { return s != shown })
		forgotten = t.reported[i]
		t.reported = slices.Delete(t.reported, i, i+1)
	}
	t.reported = append(t.reported, token)
	return forgotten
}

// unreport forgets token and reports whether it was reported (report).
func (t *terminal) unreport(token string) bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	n := len(t.reported)
	t.reported = slices.DeleteFunc(t.reported, func(s string) bool { return s == token })
	return len(t.reported) < n
}

func (t *terminal) pair(ctx context.Context, m *proto.Pair) {
	b := t.b
	if b.cfg.Pairer == nil {
		_ = t.send(&proto.Error{Code: proto.ErrPairing, Message: "pairing disabled"})
		return
	}
	// Rate-limit by source (a terminal id is chosen by the peer), the one
	// every per-source limit uses: an IPv6 /64 is one source, or a host
	// holding one would get a failure budget per address. The proof of
	// possession is verified against this connection's Hello and Welcome
	// (PROTOCOL.md §8.4), before the code is looked at.
	rec, err := b.cfg.Pairer.Redeem(ctx, netsrc.Source(t.remote), pairing.Request{
		Code: m.Code, Kind: m.Kind, PublicKey: m.PublicKey, Label: m.Label,
		Signature: m.Signature, TerminalID: t.id, ServerID: b.cfg.ServerID, Nonce: t.nonce,
	})
	switch {
	case err == nil:
		// A Pair sent again after its answer was lost is answered Paired
		// again; its event says so (reason "pairing code, again"): the
		// first was emitted if the broker that committed it saw the
		// commit, which it may not have (its outcome unknown).
		reason := "pairing code"
		if rec.Again {
			reason = "pairing code, again"
		}
		b.log.Info("token paired", "token", rec.ID, "user", rec.User, "terminal", t.id, "again", rec.Again)
		b.emit(event.Event{Kind: event.TokenRegistered, Token: rec.ID, User: rec.User, Terminal: t.id, Reason: reason})
		_ = t.send(&proto.Paired{Token: rec.ID, User: rec.User})
	case errors.Is(err, pairing.ErrRateLimited):
		b.limitHit(LimitPairing, "")
		b.blog.Warn(string(LimitPairing), "pairing rate limited", "terminal", logValue(t.id), "remote", t.remote)
		// A lockout says so, and for how long (PROTOCOL.md §7.5: not a
		// transient refusal to present again after a back-off).
		var lo *pairing.LockoutError
		if errors.As(err, &lo) {
			ie := &insertError{code: proto.ErrRateLimited, msg: "too many pairing attempts; " + retryIn(lo.Remaining),
				detail: proto.DetailLockedOut, retryAfter: lo.Remaining, err: err}
			_ = t.send(ie.proto(""))
			return
		}
		_ = t.send(&proto.Error{Code: proto.ErrRateLimited, Message: "too many pairing attempts; try later"})
	case errors.Is(err, pairing.ErrBadKey):
		// The code is untouched: the key, kind or label is what to fix.
		// Not counted against the source (no lockout ends a flood of
		// them): logged once per burst.
		b.blog.Info("pairing_key_refused", "pairing refused", "terminal", logValue(t.id), "remote", t.remote, "error", err)
		_ = t.send(&proto.Error{Code: proto.ErrPairing, Message: "token kind, public key or label refused", Detail: proto.DetailKeyRefused})
	case errors.Is(err, pairing.ErrKeyEnrolled):
		// Proven, but the key is a token already: the code stays valid.
		// Not counted (not a guess): logged once per burst.
		b.blog.Info("pairing_key_enrolled", "pairing refused", "terminal", logValue(t.id), "remote", t.remote, "error", err)
		_ = t.send(&proto.Error{Code: proto.ErrPairing, Message: "this key is already enrolled; the pairing code is still valid", Detail: proto.DetailKeyEnrolled})
	case errors.Is(err, pairing.ErrNoProof):
		// A terminal of before proofs of possession: the code is untouched.
		// Not counted either: logged once per burst.
		b.blog.Info("pairing_no_proof", "pairing refused", "terminal", logValue(t.id), "remote", t.remote, "error", err)
		_ = t.send(&proto.Error{Code: proto.ErrPairing, Message: "pairing needs a signature proving the key (update the terminal)", Detail: proto.DetailProofRefused})
	case errors.Is(err, pairing.ErrBadProof):
		// The key is not the sender's (or the signature is not for this
		// connection and code): nothing enrolled, the code untouched.
		b.log.Info("pairing refused", "terminal", logValue(t.id), "remote", t.remote, "error", err)
		_ = t.send(&proto.Error{Code: proto.ErrPairing, Message: "proof of possession of the key failed", Detail: proto.DetailProofRefused})
	case errors.Is(err, pairing.ErrBusy):
		// Every secret check slot stayed taken (a flood of attempts from
		// many sources): not judged, the code untouched.
		b.blog.Warn("pairing_busy", "pairing refused: secret checks busy", "terminal", logValue(t.id), "remote", t.remote)
		_ = t.send(&proto.Error{Code: proto.ErrUnavailable, Message: "pairing busy; try again shortly"})
	case errors.Is(err, pairing.ErrInvalidCode):
		b.log.Info("pairing refused", "terminal", logValue(t.id), "remote", t.remote, "error", err)
		_ = t.send(&proto.Error{Code: proto.ErrPairing, Message: "pairing code invalid, expired or used"})
	case ctx.Err() != nil:
		// The connection ended (or the broker stops): nobody to answer.
	default:
		// The registry failed, not the code: telling the person it is
		// invalid would send them for a new one. Not judged. The code is
		// untouched, unless the redemption's outcome stayed unknown (the
		// Pairer could not read it back): then it may be consumed and
		// the key enrolled, and the same Pair sent again (same code and
		// key) is answered Paired, not refused (PROTOCOL.md §7.4).
		b.blog.Warn("pairing_unavailable", "pairing failed", "terminal", logValue(t.id), "remote", t.remote, "error", err)
		_ = t.send(&proto.Error{Code: proto.ErrUnavailable, Message: "pairing unavailable (registry out of reach); try again"})
	}
}

// send writes one message to the terminal.
func (t *terminal) send(m any) error {
	if err := t.conn.Send(m); err != nil {
		return fmt.Errorf("broker: send to terminal %s: %w", t.id, err)
	}
	return nil
}

// expect registers a waiter for the answer with a new id.
func (t *terminal) expect() (uint32, <-chan any) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.nextID++
	ch := make(chan any, 1)
	if len(t.pending) < maxPendingAnswers {
		t.pending[t.nextID] = ch
	}
	return t.nextID, ch
}

func (t *terminal) forget(id uint32) {
	t.mu.Lock()
	delete(t.pending, id)
	t.mu.Unlock()
}

// answer routes an answer to its waiter; unsolicited answers are dropped.
func (t *terminal) answer(id uint32, m any) {
	t.mu.Lock()
	ch := t.pending[id]
	delete(t.pending, id)
	t.mu.Unlock()
	if ch != nil {
		ch <- m
	}
}

// loginConversation is auth.Conversation over the terminal protocol for
// one login at a terminal: its prompts name the token whose login asks
// (AuthPrompt.Token).
type loginConversation struct {
	t     *terminal
	token string
}

func (c loginConversation) Prompt(ctx context.Context, style proto.PromptStyle, text string) (string, error) {
	t := c.t
	id, ch := t.expect()
	defer t.forget(id)
	if err := t.send(&proto.AuthPrompt{ID: id, Style: style, Text: text, Token: c.token}); err != nil {
		return "", err
	}
	if style == proto.PromptInfo || style == proto.PromptError {
		return "", nil
	}
	select {
	case m := <-ch:
		if _, ok := m.(*proto.Cancel); ok {
			return "", ErrPromptCancelled
		}
		a, ok := m.(*proto.AuthAnswer)
		if !ok {
			return "", errors.New("broker: unexpected answer")
		}
		return a.Text, nil
	case <-ctx.Done():
		_ = t.send(&proto.Cancel{ID: id})
		return "", fmt.Errorf("broker: prompt: %w", ctx.Err())
	}
}

func (t *terminal) attached() *Session {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.session
}

func (t *terminal) setAttached(s *Session) {
	t.mu.Lock()
	t.session = s
	t.mu.Unlock()
}

func (t *terminal) clearAttached(s *Session) {
	t.mu.Lock()
	if t.session == s {
		t.session = nil
	}
	t.mu.Unlock()
}

// detachAll suspends the session shown at t, if any.
func (t *terminal) detachAll(reason proto.DetachReason, msg string) {
	s := t.attached()
	if s == nil {
		return
	}
	b := t.b
	unlock := b.keys.Lock(s.Token)
	defer unlock()
	b.mu.Lock()
	here := s.term == t
	b.mu.Unlock()
	if here && b.current(s) != nil {
		// The connection ended, or the server stops keeping the desktop
		// for its next run: t may come back without logging in again
		// within the grace (reconnect.go). Marked before the suspension,
		// so that the record it writes says so (what outlives a restart).
		if reason == proto.DetachTokenRemoved || (reason == proto.DetachShutdown && b.cfg.KeepSessionsOnShutdown) {
			b.mu.Lock()
			b.markLost(s, t)
			b.mu.Unlock()
		}
		b.suspendTokenLocked(b.life, s, reason, msg)
	}
}

func (t *terminal) close() {
	t.mu.Lock()
	if t.closed {
		t.mu.Unlock()
		return
	}
	t.closed = true
	t.mu.Unlock()
	t.conn.Close()
}
