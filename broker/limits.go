package broker

import (
	"container/list"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/hotdesk/hotdesk/proto"

	"github.com/hotdesk/hotdesk/internal/burstlog"
	"github.com/hotdesk/hotdesk/internal/defaults"
	"github.com/hotdesk/hotdesk/internal/netsrc"
	"golang.org/x/time/rate"
)

// Limits bound what clients may hold of a broker's listeners. Zero fields
// take the defaults below; each limit logs when it bites (at most once per
// logEvery and kind, with the number refused meanwhile).
type Limits struct {
	// MaxConnections per listener (terminal listener, attach gateway);
	// default 1024.
	MaxConnections int
	// MaxConnectionsPerSource per IP address and listener; default 64.
	MaxConnectionsPerSource int
	// MaxUnauthenticated bounds connections still in the TLS handshake or
	// before their first message (Hello, Attach); default 128.
	MaxUnauthenticated int
	// MaxUnauthenticatedPerSource bounds them per source (listener and
	// address; an IPv6 /64 is one source), so that a few addresses cannot
	// hold every unauthenticated slot; default 16.
	MaxUnauthenticatedPerSource int
	// HandshakeTimeout bounds the TLS handshake plus the first message;
	// default 10s.
	HandshakeTimeout time.Duration
	// MaxTicketsPerSession bounds outstanding attach tickets per session: a
	// new one revokes the session's oldest; default 4.
	MaxTicketsPerSession int
	// TokenEventsPerSecond bounds the TokenInserted and Pair messages one
	// terminal connection may send, in bursts of twice as many; more are
	// answered Error{rate_limited}. Its CardError messages are bounded
	// alike, in a bucket of their own; more are dropped. Default 50; negative: no bound (tests
	// and benchmarks that hot-desk one connection as fast as it goes).
	TokenEventsPerSecond int
	// OnLimit, if set, is called once for every refusal a limit causes
	// (metrics), and once for every connection evicted at
	// LimitConnections or LimitUnauthenticated to admit a newcomer (one
	// connection lost to the limit either way): limit is one of the Limit
	// constants, listener "terminal"
	// or "attach" for the connection limits, else "". It runs on the
	// refusing goroutine, sometimes under a session's token lock: it must
	// not block or call back into the broker.
	OnLimit func(limit Limit, listener string)
}

// Limit names a limit that refused something, as its config key (a fixed
// set: fit for a metric label).
type Limit string

// The limits the broker enforces.
const (
	LimitConnections              Limit = "max_connections"                // per listener
	LimitConnectionsPerSource     Limit = "max_connections_per_source"     // per listener and address
	LimitUnauthenticated          Limit = "max_unauthenticated"            // per listener
	LimitUnauthenticatedPerSource Limit = "max_unauthenticated_per_source" // per listener and address
	LimitSessions                 Limit = "max_sessions"                   // desktops on this server
	LimitSessionsPerUser          Limit = "max_sessions_per_user"          // a user's sessions in the group
	LimitTicketsPerSession        Limit = "max_tickets_per_session"        // an old attach ticket revoked
	LimitPairing                  Limit = "pairing_rate"                   // pairing attempts from an address
	LimitTokenEvents              Limit = "token_events_per_second"        // token events of one connection
)

// limitHit reports one refusal by limit to Limits.OnLimit.
func (b *Broker) limitHit(limit Limit, listener string) {
	if f := b.lim.OnLimit; f != nil {
		f(limit, listener)
	}
}

func (l Limits) withDefaults() Limits {
	defaults.Set(&l.MaxConnections, 1024)
	defaults.Set(&l.MaxConnectionsPerSource, 64)
	defaults.Set(&l.MaxUnauthenticated, 128)
	defaults.Set(&l.MaxUnauthenticatedPerSource, 16)
	defaults.Set(&l.HandshakeTimeout, handshakeTimeout)
	defaults.Set(&l.MaxTicketsPerSession, 4)
	if l.TokenEventsPerSecond == 0 { // negative: no bound, not "unset"
		l.TokenEventsPerSecond = 50
	}
	return l
}

// eventRate is the token event bucket of one terminal connection, nil
// when the limits set no bound.
func (l Limits) eventRate() *rate.Limiter {
	if r := l.TokenEventsPerSecond; r > 0 {
		return rate.NewLimiter(rate.Limit(r), 2*r)
	}
	return nil
}

// logEvery is how often a limit that keeps biting is logged.
const logEvery = 10 * time.Second

// connGate admits connections of one listener within Limits.
//
// The per-source caps refuse a newcomer whose own source holds its share.
// At a listener-wide cap (MaxConnections, MaxUnauthenticated) a newcomer
// is not simply refused: that would let a few sources holding slow
// handshakes shut every terminal out. If some source holds at least two
// more unauthenticated connections than the newcomer's, the oldest
// unauthenticated connection of the source holding the most is closed
// instead (an eviction) and the newcomer admitted. A well-behaved client
// finishes its handshake in milliseconds, so it is almost never the
// oldest; authenticated connections are never evicted. Holdings within one
// of each other never evict: in a reconnect storm (every terminal of a
// site at once after a restart, one connection per address) newcomers are
// refused and retry, rather than each killing a handshake in progress.
type connGate struct {
	lim  Limits
	what string
	log  *burstlog.Logger

	mu             sync.Mutex
	total          int
	bySource       map[string]int // admitted connections by address
	unauthBySource map[string]int // of those, the unauthenticated, by sourceOf
	unauthList     list.List      // the unauthenticated *admitted, oldest first; its Len is the count
}

func newConnGate(what string, lim Limits, log *burstlog.Logger) *connGate {
	return &connGate{lim: lim, what: what, log: log, bySource: map[string]int{}, unauthBySource: map[string]int{}}
}

// hostOf names the address a connection from addr counts against for
// MaxConnectionsPerSource: its IP address (an IPv4-mapped one as IPv4).
// Not its /64: the terminals of one office network share it, and each
// holds its connection for as long as it runs.
func hostOf(addr net.Addr) string { return netsrc.Host(addr.String()) }

// sourceOf names the source a connection from addr counts against for
// MaxUnauthenticatedPerSource (netsrc.Source: its IP address, or for IPv6
// its /64; a connection is unauthenticated for a handshake only, so a
// network of terminals passes through its share quickly). Pending logins
// and pairing attempts count against the same source.
func sourceOf(addr net.Addr) string { return netsrc.Source(addr.String()) }

// decr decrements m[k], deleting it at zero.
func decr(m map[string]int, k string) {
	if m[k] <= 1 {
		delete(m, k)
	} else {
		m[k]--
	}
}

// admitted is one admitted connection; done releases it (idempotent), and
// authenticated moves it out of the unauthenticated count (idempotent;
// false once the connection was evicted).
type admitted struct {
	g     *connGate
	host  string // bySource's key
	src   string // unauthBySource's key
	evict func() // closes the connection (an eviction); may be nil

	// Guarded by g.mu.
	unauth   *list.Element // in g.unauthList while unauthenticated
	released bool          // done, or evicted
}

// admit decides on a new connection from addr; nil means refused (the
// caller closes it at once). evict, if not nil, closes the connection: the
// gate calls it (once, not under its lock) if it evicts this connection to
// admit a later one; the connection's done still follows, as always.
func (g *connGate) admit(addr net.Addr, evict func()) *admitted {
	host, src := hostOf(addr), sourceOf(addr)
	g.mu.Lock()
	var why Limit
	var victim *admitted
	switch {
	case g.bySource[host] >= g.lim.MaxConnectionsPerSource:
		why = LimitConnectionsPerSource
	case g.unauthBySource[src] >= g.lim.MaxUnauthenticatedPerSource:
		why = LimitUnauthenticatedPerSource
	case g.total >= g.lim.MaxConnections:
		why = LimitConnections
	case g.unauthList.Len() >= g.lim.MaxUnauthenticated:
		why = LimitUnauthenticated
	}
	if why == LimitConnections || why == LimitUnauthenticated {
		victim = g.victimLocked(src)
		if victim != nil {
			g.releaseLocked(victim)
		}
	}
	if why != "" && victim == nil {
		g.mu.Unlock()
		if f := g.lim.OnLimit; f != nil {
			f(why, g.what)
		}
		g.log.Warn(string(why), "connection refused: limit reached", "listener", g.what, "address", host, "source", src)
		return nil
	}
	a := &admitted{g: g, host: host, src: src, evict: evict}
	g.total++
	g.bySource[host]++
	g.unauthBySource[src]++
	a.unauth = g.unauthList.PushBack(a)
	g.mu.Unlock()
	if victim != nil {
		if f := g.lim.OnLimit; f != nil {
			f(why, g.what)
		}
		g.log.Warn(string(why)+"_evicted", "connection evicted: limit reached; the oldest unauthenticated connection of the source holding the most was closed",
			"listener", g.what, "evicted", victim.host, "for", host)
		if victim.evict != nil {
			victim.evict()
		}
	}
	return a
}

// victimLocked picks the connection to evict for a newcomer from src: the
// oldest unauthenticated connection of the source holding the most of them,
// if that is at least two more than src holds (so that the eviction leaves
// the victim's source holding no fewer than src); else nil.
func (g *connGate) victimLocked(src string) *admitted {
	most := 0
	for _, n := range g.unauthBySource {
		most = max(most, n)
	}
	if most < g.unauthBySource[src]+2 {
		return nil
	}
	for e := g.unauthList.Front(); e != nil; e = e.Next() {
		if a := e.Value.(*admitted); g.unauthBySource[a.src] == most {
			return a
		}
	}
	return nil
}

// authLocked takes a out of the unauthenticated count (idempotent).
func (g *connGate) authLocked(a *admitted) {
	if a.unauth != nil {
		g.unauthList.Remove(a.unauth)
		a.unauth = nil
		decr(g.unauthBySource, a.src)
	}
}

// releaseLocked gives back what a holds (idempotent).
func (g *connGate) releaseLocked(a *admitted) {
	if a.released {
		return
	}
	a.released = true
	g.authLocked(a)
	g.total--
	decr(g.bySource, a.host)
}

// authenticated reports false if a was evicted: its connection is being
// closed, and the caller must drop it rather than act on what it sent (an
// attach ticket redeemed on it would be spent for nothing, a terminal
// registered with it would connect and disconnect at once).
func (a *admitted) authenticated() bool {
	a.g.mu.Lock()
	defer a.g.mu.Unlock()
	a.g.authLocked(a)
	return !a.released
}

func (a *admitted) done() {
	a.g.mu.Lock()
	a.g.releaseLocked(a)
	a.g.mu.Unlock()
}

// counts returns the connections admitted and not yet done, and how many
// of them are unauthenticated.
func (g *connGate) counts() (total, unauth int) {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.total, g.unauthList.Len()
}

// acceptBackoff decides what an accept loop does with err: fatal (return
// it), or wait (EMFILE, ENFILE, ENOBUFS, ENOMEM, a timeout, an aborted
// connection: the listener itself is fine) with a growing delay.
func acceptRetryable(err error) bool {
	if errors.Is(err, net.ErrClosed) {
		return false
	}
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		return true
	}
	for _, e := range []syscall.Errno{syscall.EMFILE, syscall.ENFILE, syscall.ENOBUFS, syscall.ENOMEM,
		syscall.ECONNABORTED, syscall.ECONNRESET, syscall.EPROTO, syscall.EPERM, syscall.EINTR} {
		if errors.Is(err, e) {
			return true
		}
	}
	return false
}

// serveTLS runs one of the broker's TLS listeners (what is "terminal" or
// "attach") until ctx is cancelled, as Serve documents. It publishes the
// listener's connection gate in *gate (under b.mu; see ConnCounts), closes
// the connections the gate refuses and runs serve for each admitted one on
// a goroutine of the broker (goAttach); after Shutdown, it closes them all.
func (b *Broker) serveTLS(ctx context.Context, ln net.Listener, tlsCfg *tls.Config, what string, gate **connGate,
	serve func(context.Context, *tls.Conn, *admitted)) error {
	stop := context.AfterFunc(ctx, func() { ln.Close() })
	defer stop()
	g := newConnGate(what, b.lim, b.blog)
	b.mu.Lock()
	*gate = g
	b.mu.Unlock()
	return acceptLoop(ln, func() bool { return ctx.Err() != nil }, b.blog, what, func(c net.Conn) {
		adm := g.admit(c.RemoteAddr(), func() { c.Close() })
		if adm == nil {
			c.Close()
			return
		}
		// A terminal's link back after an outage is used within a
		// second, not after TCP's doubled timeouts (proto.BoundRetransmits).
		proto.BoundRetransmits(c)
		if !b.goAttach(func() {
			defer adm.done()
			serve(ctx, tls.Server(c, tlsCfg), adm)
		}) {
			adm.done() // shut down
			c.Close()
		}
	})
}

// acceptLoop runs accept on ln until it fails for good: retryable errors
// back off (5 ms doubling to 1 s, logged once per burst), anything else is
// returned. handle gets every connection.
func acceptLoop(ln net.Listener, stopped func() bool, log *burstlog.Logger, what string, handle func(net.Conn)) error {
	var delay time.Duration
	for {
		c, err := ln.Accept()
		if err != nil {
			if stopped() {
				return nil
			}
			if !acceptRetryable(err) {
				return fmt.Errorf("broker: %s accept: %w", what, err)
			}
			delay = min(max(2*delay, 5*time.Millisecond), time.Second)
			log.Warn("accept_"+what, "accept failing; backing off", "listener", what, "error", err, "retry_in", delay)
			time.Sleep(delay)
			continue
		}
		delay = 0
		handle(c)
	}
}

// logValue makes attacker-supplied text (token ids, names) fit for a log
// line: control characters replaced, at most 80 bytes kept.
func logValue(s string) string {
	const max = 80
	if len(s) > max {
		cut := max
		for cut > 0 && s[cut]&0xc0 == 0x80 { // do not split a UTF-8 sequence
			cut--
		}
		s = s[:cut] + fmt.Sprintf("…(%d bytes)", len(s))
	}
	return sanitize(strings.ToValidUTF8(s, "?"))
}
