package main

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"syscall"
	"time"

	"github.com/hotdesk/hotdesk/internal/clock"
	"github.com/hotdesk/hotdesk/proto"
)

// link is one connection to a broker.
type link struct {
	c       *proto.Conn
	addr    string
	tls     *tls.Config // also pins the broker's attach gateway
	welcome proto.Welcome
	hops    uint8
	token   string        // the token whose redirect chain led here ("" at home)
	done    chan struct{} // closed by close

	pingSeq    uint64
	unanswered int
	timer      clock.Timer
}

func (l *link) close() {
	select {
	case <-l.done:
		return
	default:
	}
	close(l.done)
	if l.timer != nil {
		l.timer.Stop()
	}
	l.c.Close()
}

type dialResult struct {
	t   target
	l   *link
	err error
}

// dial connects to t (any member of the group if t.addr is empty) and
// completes the handshake within cfg.Timeout.
func (a *agent) dial(ctx context.Context, t target) (*link, error) {
	if t.addr == "" && a.cfg.Group != nil {
		g := a.cfg.Group
		return g.dialAny(ctx, g.candidates(ctx, t.avoid), dialStagger, func(ctx context.Context, addr string, cfg *tls.Config) (*link, error) {
			t := t
			t.addr, t.tls = addr, cfg
			return a.dialOne(ctx, t)
		})
	}
	return a.dialOne(ctx, t)
}

// dialOne connects to t.addr and completes the handshake within cfg.Timeout.
func (a *agent) dialOne(ctx context.Context, t target) (*link, error) {
	dctx, cancel := context.WithTimeout(ctx, a.cfg.Timeout)
	defer cancel()
	if t.tls.ClientSessionCache == nil {
		t.tls = t.tls.Clone()
		t.tls.ClientSessionCache = a.tlsCache
	}
	// No read deadline: liveness is checked with Pings on the agent's clock.
	c, err := proto.Dial(dctx, t.addr, t.tls, proto.WithReadTimeout(0))
	if err != nil {
		return nil, err
	}
	stop := context.AfterFunc(dctx, func() { c.Close() })
	w, err := proto.ClientHandshake(c, proto.Hello{
		TerminalID: a.cfg.TerminalID, Name: a.cfg.Name, Hops: t.hops, Fence: t.fence, Token: t.token,
	})
	if !stop() {
		// The deadline closed the connection, whatever the handshake says.
		c.Close()
		return nil, fmt.Errorf("handshake with %s: %w", t.addr, dctx.Err())
	}
	if err != nil {
		c.Close()
		return nil, err
	}
	tok := t.token
	if t.hops == 0 {
		tok = ""
	}
	return &link{c: c, addr: t.addr, tls: t.tls, welcome: w, hops: t.hops, token: tok, done: make(chan struct{})}, nil
}

// up makes l the current connection: starts its reader and pinger, and
// reports the tokens t asks for.
func (a *agent) up(ctx context.Context, l *link, t target) {
	a.conn = l
	a.backoff = a.cfg.MinBackoff
	a.hasPrompt, a.answered = false, false // a login lost with its connection
	a.session = ""
	a.out.emit(connectedEvent(l.welcome.ServerID, l.addr))
	if a.cfg.Group != nil && a.cfg.Group.learn(l.welcome.Members) {
		a.out.emit(groupEvent(a.cfg.Group.Members()))
		if err := a.cfg.Group.save(); err != nil {
			a.log.Warn("keeping the learned members", "error", err)
		}
	}
	a.log.Info("connected", "server", l.welcome.ServerID, "addr", l.addr, "hops", l.hops)
	a.goRun(func() {
		for {
			m, err := l.c.Recv()
			select {
			case a.inbox <- inMsg{l: l, m: m, err: err}:
			case <-l.done:
				return
			}
			if err != nil {
				return
			}
		}
	})
	a.schedulePing(l)
	a.presentInserted(slices.Concat(t.present, a.missed), t.all)
}

func (a *agent) pingInterval(l *link) time.Duration {
	d := l.welcome.PingEvery()
	if a.cfg.Keepalive > 0 && a.cfg.Keepalive < d {
		d = a.cfg.Keepalive
	}
	return d
}

func (a *agent) schedulePing(l *link) {
	l.timer = a.clk.AfterFunc(a.pingInterval(l), func() {
		select {
		case a.ticks <- l:
		case <-l.done:
		}
	})
}

// ping runs when l's ping timer fires.
func (a *agent) ping(ctx context.Context, l *link) {
	if l == a.parked {
		// Kept alive while the redirect's dial runs; dropped if silent.
		l.pingSeq++
		l.unanswered++
		if l.unanswered > missedPongs || l.c.Send(&proto.Ping{Seq: l.pingSeq}) != nil {
			a.dropParked()
			return
		}
		a.schedulePing(l)
		return
	}
	if l != a.conn {
		return
	}
	if l.unanswered >= missedPongs {
		a.lost(fmt.Errorf("%d pings unanswered", l.unanswered))
		return
	}
	if a.homeIfIdle(ctx) {
		return
	}
	l.pingSeq++
	l.unanswered++
	a.send(&proto.Ping{Seq: l.pingSeq})
	if a.conn == l {
		a.schedulePing(l)
	}
}

// lost reports the loss of the current connection and schedules a
// reconnect to the home broker.
func (a *agent) lost(err error) {
	if a.conn == nil {
		return
	}
	a.log.Warn("connection lost", "addr", a.conn.addr, "error", err)
	a.lastAddr = a.conn.addr
	a.conn.close()
	a.conn = nil
	// Without a live broker the session must not stay on screen: its
	// broker may have lost its lease and another may attach it elsewhere.
	a.stopDisplay()
	a.session = ""
	a.out.emit(disconnectedEvent(err))
	a.scheduleRetry()
}

func (a *agent) scheduleRetry() {
	d := a.backoff
	a.backoff = min(2*a.backoff, a.cfg.MaxBackoff)
	a.scheduleRetryIn(d)
}

// refusedMaxBackoff bounds the reconnect delay while every broker tried
// refused the connection: their hosts are up and nothing listens (hotdeskd
// restarting, an upgrade of a one-server site, or waiting for etcd before
// it listens after a site's power cut). A refusal costs a broker's host a
// reset, not a handshake, and someone may be waiting at the terminal, so
// it tries again about every second and is back within about a second of
// its broker, not up to MaxBackoff later (with 4 s, a restart of 1.6 s
// was found at 3.5 s: 0.5 + 1 + 2); an unanswered dial (a host down, a
// link cut) still backs off to MaxBackoff. When the listener opens, the
// terminals' ±20% jitter spreads their handshakes over 0.4 s, and the
// broker's limits on unauthenticated connections bound the rest.
const refusedMaxBackoff = time.Second

// scheduleRetryAfter schedules the reconnect after the dial that failed
// with err: bounded by refusedMaxBackoff if every broker refused it.
func (a *agent) scheduleRetryAfter(err error) {
	if allRefused(err) {
		a.backoff = min(a.backoff, refusedMaxBackoff)
		d := a.backoff
		a.backoff = min(2*a.backoff, a.cfg.MaxBackoff, refusedMaxBackoff)
		a.scheduleRetryIn(d)
		return
	}
	a.scheduleRetry()
}

// allRefused reports whether err (errors.Join'd by a group's dial, one
// error per broker tried) is a refused connection, every one of them.
func allRefused(err error) bool {
	if j, ok := err.(interface{ Unwrap() []error }); ok {
		errs := j.Unwrap()
		if len(errs) == 0 {
			return false
		}
		for _, e := range errs {
			if !allRefused(e) {
				return false
			}
		}
		return true
	}
	return errors.Is(err, syscall.ECONNREFUSED)
}

// reconnectNow starts the reconnect that is waiting for its backoff now:
// a token was inserted, so someone is at the terminal and the broker may be
// back. A failed attempt backs off as before.
func (a *agent) reconnectNow() {
	// At most one early attempt per MinBackoff: a reader that flaps (or a
	// person who pulls and pushes a card) while the broker is away must
	// not turn into a dial per event.
	if a.retrying == nil || a.dialing || a.clk.Now().Sub(a.lastDial) < a.cfg.MinBackoff {
		return
	}
	a.retrying.Stop()
	a.retrying = nil
	select {
	case a.retry <- struct{}{}:
	default:
	}
}

// scheduleRetryIn reconnects after about d (±20% jitter keeps a room full
// of terminals from reconnecting in step), never later than MaxBackoff.
func (a *agent) scheduleRetryIn(d time.Duration) {
	if a.retrying != nil {
		return
	}
	d = jitter(d, a.cfg.MaxBackoff)
	a.retrying = a.clk.AfterFunc(d, func() {
		select {
		case a.retry <- struct{}{}:
		default:
		}
	})
	// Said once it is scheduled: whoever reads it (a test on a fake
	// clock) may count on the timer.
	a.log.Debug("reconnecting", "in", d)
	a.out.emit(reconnectingEvent(d))
}

// jitter returns d ±20% at random, at most ceiling (0: no ceiling).
func jitter(d, ceiling time.Duration) time.Duration {
	d += time.Duration((rand.Float64()*0.4 - 0.2) * float64(d))
	if ceiling > 0 {
		d = min(d, ceiling)
	}
	return d
}

// startDial connects to t in the background; the result reaches the loop.
func (a *agent) startDial(ctx context.Context, t target) {
	a.dialing = true
	a.lastDial = a.clk.Now()
	a.goRun(func() {
		l, err := a.dial(ctx, t)
		select {
		case a.dialed <- dialResult{t: t, l: l, err: err}:
		case <-ctx.Done():
			if l != nil {
				l.close()
			}
		}
	})
}

func (a *agent) dialDone(ctx context.Context, r dialResult) {
	a.dialing = false
	if r.err == nil {
		a.dropParked() // the redirect was followed
		a.up(ctx, r.l, r.t)
		return
	}
	if r.t.hops == 0 {
		a.log.Warn("reconnect failed", "addr", r.t.addr, "error", r.err)
		a.scheduleRetryAfter(r.err)
		return
	}
	// A target that answered and refused (or is not who the group says)
	// is not retried: presenting the token again would only loop.
	refused := errors.As(r.err, new(*proto.ProtocolError)) ||
		(a.cfg.Group == nil && (errors.Is(r.err, proto.ErrPinMismatch) || errors.Is(r.err, proto.ErrALPN)))
	if !refused {
		// The owner did not answer: it may have died or be restarting,
		// and the group registry names it until its lease ends. Say so,
		// and present the token again soon (PROTOCOL.md §7.5); it is not
		// lost.
		a.out.emit(errorEvent(0, errRedirect, fmt.Sprintf("redirect to %s: %v; retrying", r.t.addr, r.err)))
		a.redirFails++
		d := a.ownerRetryDelay()
		if p := a.parked; p != nil {
			// Back on the connection the redirect came on: present the
			// token there again soon, until the group answers otherwise
			// (the owner back, or its lease expired and the token free).
			a.parked, a.conn = nil, p
			a.ownerUnreachable(r.t.token, d)
			// The redirected token is presented again by that timer.
			a.missed = slices.DeleteFunc(a.missed, func(s string) bool { return s == r.t.token })
			if len(a.missed) > 0 {
				a.presentInserted(a.missed, false)
			}
			return
		}
		a.lastAddr = r.t.addr
		a.scheduleRetryIn(d)
		return
	}
	a.dropParked()
	// A redirect could not be followed: say why, go home, and do not
	// present the token again (it would be redirected again).
	var perr *proto.ProtocolError
	if errors.As(r.err, &perr) {
		a.out.emit(errorEvent(int(perr.Code), perr.Code.String(), fmt.Sprintf("redirect to %s refused: %s", r.t.addr, perr.Message)))
	} else {
		a.out.emit(errorEvent(0, errRedirect, fmt.Sprintf("redirect to %s: %v", r.t.addr, r.err)))
	}
	a.startDial(ctx, a.home())
}

// homeIfIdle takes the terminal back to its home broker (any member of
// the group, configured ones first) when the connection a redirect led it
// to no longer shows a session, no token is inserted, and nothing is
// pending there: no prompt, no retry, no dial (PROTOCOL.md §7.5). The next
// insert then starts at home, as on a fresh boot. It reports whether it
// left.
func (a *agent) homeIfIdle(ctx context.Context) bool {
	l := a.conn
	if l == nil || l.hops == 0 || a.session != "" || a.hasPrompt || a.dialing || a.retrying != nil ||
		len(a.retries.timers) > 0 || len(a.cards) > 0 || len(a.prov.Inserted()) > 0 {
		return false
	}
	a.log.Info("idle on a broker a redirect led to; going back home", "server", l.welcome.ServerID, "addr", l.addr)
	l.close()
	a.conn = nil
	t := a.home()
	t.all = true // whatever is inserted while the dial runs
	a.startDial(ctx, t)
	return true
}
