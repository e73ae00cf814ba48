package broker

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"
	"golang.org/x/time/rate"

	"github.com/hotdesk/hotdesk/auth"
	"github.com/hotdesk/hotdesk/internal/burstlog"
	"github.com/hotdesk/hotdesk/internal/clock"
	"github.com/hotdesk/hotdesk/internal/testutil"
	"github.com/hotdesk/hotdesk/proto"
	"github.com/hotdesk/hotdesk/registry"
)

// flakyListener fails Accept with errs, in order, then hands out conns.
type flakyListener struct {
	mu    sync.Mutex
	errs  []error
	conns []net.Conn
}

func (l *flakyListener) Accept() (net.Conn, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if len(l.errs) > 0 {
		err := l.errs[0]
		l.errs = l.errs[1:]
		return nil, err
	}
	if len(l.conns) > 0 {
		c := l.conns[0]
		l.conns = l.conns[1:]
		return c, nil
	}
	return nil, net.ErrClosed
}
func (l *flakyListener) Close() error   { return nil }
func (l *flakyListener) Addr() net.Addr { return &net.TCPAddr{} }

// TestAcceptLoopSurvivesEMFILE: descriptor exhaustion and aborted
// connections back off and go on, logged once per burst; a closed listener
// ends the loop; another error is returned.
func TestAcceptLoopSurvivesEMFILE(t *testing.T) {
	t.Parallel()
	var out bytes.Buffer
	blog := burstlog.New(hclog.New(&hclog.LoggerOptions{Output: &out, Level: hclog.Warn}), logEvery, nil)
	a, b := net.Pipe()
	defer a.Close()
	defer b.Close()
	emfile := &net.OpError{Op: "accept", Net: "tcp", Err: syscall.EMFILE}
	ln := &flakyListener{errs: []error{emfile, emfile, emfile, &net.OpError{Op: "accept", Err: syscall.ENFILE}, &net.OpError{Op: "accept", Err: syscall.ECONNABORTED}}, conns: []net.Conn{a}}
	handled := 0
	err := acceptLoop(ln, func() bool { return false }, blog, "terminal", func(net.Conn) { handled++ })
	if err == nil || !errors.Is(err, net.ErrClosed) {
		t.Fatalf("acceptLoop = %v; want the listener's closed error after the retries", err)
	}
	if handled != 1 {
		t.Fatalf("handled %d connections; want 1 (after 5 transient errors)", handled)
	}
	if n := strings.Count(out.String(), "accept failing"); n != 1 {
		t.Fatalf("logged %d lines for one burst; want 1:\n%s", n, out.String())
	}
	if err := acceptLoop(&flakyListener{errs: []error{errors.New("boom")}}, func() bool { return false }, blog, "x", func(net.Conn) {}); err == nil || !strings.Contains(err.Error(), "boom") {
		t.Fatalf("acceptLoop on a permanent error = %v; want it returned", err)
	}
}

// TestConnGate: total, per-source and unauthenticated caps, and release.
func TestConnGate(t *testing.T) {
	t.Parallel()
	g := newConnGate("terminal", Limits{MaxConnections: 5, MaxConnectionsPerSource: 2, MaxUnauthenticated: 3}.withDefaults(), burstlog.New(hclog.NewNullLogger(), logEvery, nil))
	addr := func(ip string) net.Addr { return &net.TCPAddr{IP: net.ParseIP(ip), Port: 1000} }
	a1, a2 := g.admit(addr("10.0.0.1"), nil), g.admit(addr("10.0.0.1"), nil)
	if a1 == nil || a2 == nil || g.admit(addr("10.0.0.1"), nil) != nil {
		t.Fatal("per-source cap 2: want two admitted, the third refused")
	}
	a1.authenticated()
	b1, b2 := g.admit(addr("10.0.0.2"), nil), g.admit(addr("10.0.0.3"), nil)
	if b1 == nil || b2 == nil {
		t.Fatal("unauthenticated 3 of 3: want admitted")
	}
	// At the unauthenticated cap with one connection per source, nothing
	// is evicted (TestConnGateEvicts): the newcomer is refused.
	if g.admit(addr("10.0.0.4"), nil) != nil {
		t.Fatal("unauthenticated cap 3, one each: want the fourth refused")
	}
	a2.authenticated()
	b1.authenticated()
	b2.authenticated()
	c1 := g.admit(addr("10.0.0.4"), nil)
	if c1 == nil || g.admit(addr("10.0.0.5"), nil) != nil {
		t.Fatal("total cap 5: want one more admitted, then refusal")
	}
	c1.authenticated()
	if g.admit(addr("10.0.0.5"), nil) != nil {
		t.Fatal("total cap 5, all authenticated: want refusal (authenticated connections are never evicted)")
	}
	for _, x := range []*admitted{a1, a2, b1, b2, c1} {
		x.done()
		x.done() // idempotent
	}
	if total, unauth := g.counts(); total != 0 || unauth != 0 {
		t.Fatalf("after release: total %d unauth %d; want 0 0", total, unauth)
	}
	if g.admit(addr("10.0.0.1"), nil) == nil {
		t.Fatal("after release: refused; want admitted")
	}
}

// TestConnGateEvicts: at a listener-wide cap, a newcomer from a source
// holding at least two fewer unauthenticated connections than another
// source evicts that source's oldest one instead of being refused, so that
// a few sources holding slow handshakes cannot shut everyone else out. The
// evicted connection is closed (its evict func) and counted by its limit;
// its later authenticated and done change nothing. Holdings within one of
// each other never evict (a reconnect storm, one connection per address,
// must not kill handshakes in progress), and authenticated connections are
// never evicted.
func TestConnGateEvicts(t *testing.T) {
	t.Parallel()
	var refused []Limit
	g := newConnGate("attach", Limits{MaxConnections: 6, MaxUnauthenticated: 4, MaxUnauthenticatedPerSource: 3,
		OnLimit: func(l Limit, _ string) { refused = append(refused, l) }}.withDefaults(),
		burstlog.New(hclog.NewNullLogger(), logEvery, nil))
	closed := map[string]int{}
	admit := func(ip, name string) *admitted {
		return g.admit(&net.TCPAddr{IP: net.ParseIP(ip), Port: 1000}, func() { closed[name]++ })
	}
	const a, b = "10.9.0.1", "10.9.0.2"
	// Slow handshakes: three from a, one from b; the unauthenticated cap.
	x1, x2, x3 := admit(a, "x1"), admit(a, "x2"), admit(a, "x3")
	y1 := admit(b, "y1")
	if x1 == nil || x2 == nil || x3 == nil || y1 == nil {
		t.Fatal("want the first four admitted")
	}
	good := admit("10.0.0.7", "good")
	if good == nil {
		t.Fatal("a newcomer from a fresh source at the unauthenticated cap: refused; want a's oldest evicted")
	}
	if closed["x1"] != 1 || len(closed) != 1 {
		t.Fatalf("evicted %v; want x1 (the oldest of the source holding the most), once", closed)
	}
	if len(refused) != 1 || refused[0] != LimitUnauthenticated {
		t.Fatalf("limits counted %v; want one max_unauthenticated", refused)
	}
	x1.authenticated() // too late: it was evicted
	x1.done()
	if total, unauth := g.counts(); total != 4 || unauth != 4 {
		t.Fatalf("after the eviction: total %d unauth %d; want 4 4", total, unauth)
	}
	// a holds 2, b and 10.0.0.7 one each. A newcomer from a is refused
	// (nobody holds more), and so is one from b (a holds only one more).
	if admit(a, "x4") != nil || admit(b, "y2") != nil || len(closed) != 1 {
		t.Fatalf("newcomers from a and b: admitted or evicted %v; want both refused", closed)
	}
	// A fresh source evicts a's oldest left, x2.
	d1 := admit("10.0.0.8", "d1")
	if d1 == nil || closed["x2"] != 1 || len(closed) != 2 {
		t.Fatalf("a newcomer from a fresh source: evicted %v; want x2 too", closed)
	}
	// One each now (x3, y1, good, d1): the shape of a reconnect storm.
	// Another fresh source is refused, nothing evicted.
	if admit("10.0.0.9", "e1") != nil || len(closed) != 2 {
		t.Fatalf("at the cap with one per source: admitted or evicted %v; want refused", closed)
	}
	// The total cap (6): authenticate good and d1, let a hold two again
	// (x3, x5) and fill the cap with z1, authenticated.
	good.authenticated()
	d1.authenticated()
	x5, z1 := admit(a, "x5"), admit("10.0.0.10", "z1")
	if x5 == nil || z1 == nil {
		t.Fatal("room below the caps: refused")
	}
	z1.authenticated()
	if total, unauth := g.counts(); total != 6 || unauth != 3 {
		t.Fatalf("total %d unauth %d; want 6 (the cap) and 3", total, unauth)
	}
	// At the total cap a fresh source evicts a's oldest (x3), never an
	// authenticated connection.
	w := admit("10.0.0.11", "w")
	if w == nil || closed["x3"] != 1 || len(closed) != 3 {
		t.Fatalf("at the total cap: evicted %v; want x3 too", closed)
	}
	if l := refused[len(refused)-1]; l != LimitConnections {
		t.Fatalf("last limit counted %v; want max_connections", l)
	}
	// One each again (x5, y1, w): refused. All authenticated: refused.
	if admit("10.0.0.12", "v") != nil || len(closed) != 3 {
		t.Fatalf("at the total cap, one per source: admitted or evicted %v; want refused", closed)
	}
	for _, c := range []*admitted{x5, y1, w} {
		c.authenticated()
	}
	if admit("10.0.0.13", "u") != nil || len(closed) != 3 {
		t.Fatalf("at the total cap, all authenticated: admitted or evicted %v; want refused", closed)
	}
	for _, c := range []*admitted{x1, x2, x3, y1, good, d1, x5, z1, w} {
		c.done()
	}
	if total, unauth := g.counts(); total != 0 || unauth != 0 {
		t.Fatalf("after release: total %d unauth %d; want 0 0", total, unauth)
	}
}

// TestConnGateUnauthenticatedPerSource: one source holds at most
// MaxUnauthenticatedPerSource connections before their first message, so
// that a few addresses cannot fill MaxUnauthenticated for everyone; an
// authenticated connection frees its slot. An IPv6 /64 is one source.
func TestConnGateUnauthenticatedPerSource(t *testing.T) {
	t.Parallel()
	var refused []Limit
	g := newConnGate("terminal", Limits{MaxUnauthenticated: 100, MaxUnauthenticatedPerSource: 2,
		OnLimit: func(l Limit, _ string) { refused = append(refused, l) }}.withDefaults(),
		burstlog.New(hclog.NewNullLogger(), logEvery, nil))
	addr := func(ip string) net.Addr { return &net.TCPAddr{IP: net.ParseIP(ip), Port: 1000} }
	a1, a2 := g.admit(addr("10.0.0.1"), nil), g.admit(addr("10.0.0.1"), nil)
	if a1 == nil || a2 == nil || g.admit(addr("10.0.0.1"), nil) != nil {
		t.Fatal("unauthenticated per source 2: want two admitted, the third refused")
	}
	if len(refused) != 1 || refused[0] != LimitUnauthenticatedPerSource {
		t.Fatalf("refusals %v; want one by %s", refused, LimitUnauthenticatedPerSource)
	}
	if g.admit(addr("10.0.0.2"), nil) == nil {
		t.Fatal("another address refused; want admitted")
	}
	a1.authenticated()
	a3 := g.admit(addr("10.0.0.1"), nil)
	if a3 == nil {
		t.Fatal("after one authenticated: refused; want admitted")
	}
	a3.done()
	if g.admit(addr("10.0.0.1"), nil) == nil {
		t.Fatal("after one closed before authenticating: refused; want admitted")
	}
	v1, v2 := g.admit(addr("2001:db8::1"), nil), g.admit(addr("2001:db8::ffff:2"), nil)
	if v1 == nil || v2 == nil || g.admit(addr("2001:db8::3"), nil) != nil {
		t.Fatal("one IPv6 /64: want two admitted, the third refused")
	}
	if g.admit(addr("2001:db8:0:1::1"), nil) == nil {
		t.Fatal("another /64 refused; want admitted")
	}
}

// TestConnGateIPv6LAN: MaxConnectionsPerSource counts per address, IPv6
// too: the terminals of one office network share its /64, and each holds
// its connection for as long as it runs; more than MaxConnectionsPerSource
// of them must all be admitted once past their first message. A single
// address is still capped.
func TestConnGateIPv6LAN(t *testing.T) {
	t.Parallel()
	g := newConnGate("terminal", Limits{}.withDefaults(), burstlog.New(hclog.NewNullLogger(), logEvery, nil))
	n := g.lim.MaxConnectionsPerSource + 1
	for i := range n {
		a := g.admit(&net.TCPAddr{IP: net.ParseIP(fmt.Sprintf("2001:db8:1:2::%x", i+1)), Port: 1000}, nil)
		if a == nil {
			t.Fatalf("terminal %d of %d on one IPv6 /64 refused; want each address counted on its own", i+1, n)
		}
		a.authenticated()
	}
	one := &net.TCPAddr{IP: net.ParseIP("2001:db8:1:3::1"), Port: 1000}
	for i := range g.lim.MaxConnectionsPerSource {
		a := g.admit(one, nil)
		if a == nil {
			t.Fatalf("connection %d from one address refused; want %d admitted", i+1, g.lim.MaxConnectionsPerSource)
		}
		a.authenticated()
	}
	if g.admit(one, nil) != nil {
		t.Fatalf("connection %d from one address admitted; want refused", g.lim.MaxConnectionsPerSource+1)
	}
}

// TestSourceOf: IPv4 (also IPv4-mapped) by address, IPv6 by /64.
func TestSourceOf(t *testing.T) {
	t.Parallel()
	for in, want := range map[string]string{
		"10.1.2.3":            "10.1.2.3",
		"::ffff:10.1.2.3":     "10.1.2.3",
		"2001:db8:1:2:3::4":   "2001:db8:1:2::/64",
		"2001:db8:1:2:ffff::": "2001:db8:1:2::/64",
	} {
		if got := sourceOf(&net.TCPAddr{IP: net.ParseIP(in), Port: 9}); got != want {
			t.Errorf("sourceOf(%s) = %q; want %q", in, got, want)
		}
	}
}

// TestLogValue bounds and sanitizes attacker-supplied text.
func TestLogValue(t *testing.T) {
	t.Parallel()
	long := strings.Repeat("é", 100)
	got := logValue(long)
	if len(got) > 100 || !strings.Contains(got, "(200 bytes)") {
		t.Fatalf("logValue(200 bytes) = %q; want at most ~80 bytes kept and the size", got)
	}
	if got := logValue("user.\n\x1b[31mroot\xff"); strings.ContainsAny(got, "\n\x1b") {
		t.Fatalf("logValue kept control characters: %q", got)
	}
}

// TestCardErrorLogBounded: a terminal's CardError (reader and message are
// peer text, up to a frame each) is logged cut short and on one line, like
// every other attacker-supplied string.
func TestCardErrorLogBounded(t *testing.T) {
	t.Parallel()
	var out testutil.LockedBuffer
	log := hclog.New(&hclog.LoggerOptions{Output: &out, Level: hclog.Info})
	b := &Broker{log: log, blog: burstlog.New(log, logEvery, nil)}
	peer, mine := net.Pipe()
	defer peer.Close()
	term := &terminal{b: b, id: "t-1", conn: proto.NewConn(mine)}
	defer term.conn.Close()
	hostile := strings.Repeat("r\nFAKE [ERROR] line ", 1500) // ~30 KB
	done := make(chan error, 1)
	go func() { done <- term.read(context.Background()) }()
	if err := proto.NewConn(peer).Send(&proto.CardError{Reader: hostile, Message: hostile}); err != nil {
		t.Fatal(err)
	}
	peer.Close()
	<-done
	logged := out.String()
	if !strings.Contains(logged, "card error at terminal") {
		t.Fatalf("no card error logged:\n%.500s", logged)
	}
	if len(logged) > 1024 || strings.Contains(logged, "\nFAKE") || !strings.Contains(logged, "bytes)") {
		t.Fatalf("card error logged as %d bytes; want the peer's reader and message cut short:\n%.500s", len(logged), logged)
	}
}

// TestCardErrorFlood: CardError frames are not answered and cost the broker
// a log line each: a terminal sending them as fast as it can costs one
// line per burst (before, 500 frames were 500 info lines), and beyond the
// token event rate (a bucket of twice the rate) they are dropped and
// counted as refusals of token_events_per_second. The connection stays
// open.
func TestCardErrorFlood(t *testing.T) {
	t.Parallel()
	var out testutil.LockedBuffer
	log := hclog.New(&hclog.LoggerOptions{Output: &out, Level: hclog.Info})
	clk := clock.NewFake(time.Unix(1000, 0))
	var refused atomic.Int64
	lim := Limits{TokenEventsPerSecond: 20, OnLimit: func(l Limit, _ string) {
		if l == LimitTokenEvents {
			refused.Add(1)
		}
	}}.withDefaults()
	b := &Broker{clk: clk, log: log, lim: lim, blog: burstlog.New(log, logEvery, clk.Now)}
	peer, mine := net.Pipe()
	defer peer.Close()
	term := &terminal{b: b, id: "t-1", conn: proto.NewConn(mine), cardErrRate: lim.eventRate()}
	defer term.conn.Close()
	done := make(chan error, 1)
	go func() { done <- term.read(context.Background()) }()
	pc := proto.NewConn(peer)
	const n = 500
	for range n {
		if err := pc.Send(&proto.CardError{Reader: "r", Message: "unreadable"}); err != nil {
			t.Fatal(err)
		}
	}
	// The Pong says the reader handled every frame before the Ping.
	if err := pc.Send(&proto.Ping{Seq: 1}); err != nil {
		t.Fatal(err)
	}
	if m, err := pc.Recv(); err != nil {
		t.Fatalf("connection closed by a flood of card errors: %v", err)
	} else if p, ok := m.Body.(*proto.Pong); !ok || p.Seq != 1 {
		t.Fatalf("got %T %+v; want Pong{1}", m.Body, m.Body)
	}
	peer.Close()
	<-done
	lines := strings.Split(strings.TrimSpace(out.String()), "\n")
	if got := strings.Count(out.String(), "card error at terminal"); got != 1 || len(lines) != 2 {
		t.Errorf("%d card errors logged in %d lines (%d of them card errors); want 2 lines: one card error, one over the rate:\n%.2000s",
			n, len(lines), got, out.String())
	}
	if got, want := refused.Load(), int64(n-2*20); got != want {
		t.Errorf("%d card errors refused by token_events_per_second; want %d (beyond a burst of 40)", got, want)
	}
}

// TestTicketsPerSession: re-presenting a token churns its session's own
// tickets and never fills the table every user shares.
func TestTicketsPerSession(t *testing.T) {
	t.Parallel()
	b := &Broker{cfg: Config{AttachAddr: "127.0.0.1:1"}, clk: clock.Real{}, tickets: map[string]ticket{},
		lim: Limits{MaxTicketsPerSession: 4}.withDefaults(), blog: burstlog.New(hclog.NewNullLogger(), logEvery, nil)}
	greedy, other := &Session{ID: "s-greedy"}, &Session{ID: "s-other"}
	term := &terminal{id: "t-1"}
	var last []byte
	for range maxTickets + 100 {
		if last = b.issueTicket(greedy, term); last == nil {
			t.Fatal("greedy session got no ticket")
		}
	}
	if len(b.tickets) != 4 {
		t.Fatalf("tickets held = %d; want 4 (the session's cap)", len(b.tickets))
	}
	if _, ok := b.tickets[string(last)]; !ok {
		t.Fatal("the newest ticket was revoked; want the oldest")
	}
	if b.issueTicket(other, &terminal{id: "t-2"}) == nil {
		t.Fatal("another session got no ticket")
	}
}

// TestUserLimitConcurrentLogins: one user's cards presented at six
// terminals at once never get more sessions than the per-user limit.
func TestUserLimitConcurrentLogins(t *testing.T) {
	t.Parallel()
	e := pamEnv(t, &auth.Policies{Default: auth.Policy{Kind: auth.KindCard, MaxSessions: 2}}, auth.LimiterConfig{})
	const n = 6
	terms := make([]*term, n)
	for i := range n {
		e.register(fmt.Sprintf("uid.0a0b0c%02x", i), "carol")
		terms[i] = e.dial(fmt.Sprintf("term-%d", i))
	}
	var wg sync.WaitGroup
	for i := range n {
		wg.Add(1)
		go func() { defer wg.Done(); terms[i].insert(fmt.Sprintf("uid.0a0b0c%02x", i)) }()
	}
	wg.Wait()
	attached, limited := 0, 0
	for _, tm := range terms {
		switch m := tm.next().(type) {
		case *proto.Attached:
			attached++
		case *proto.Error:
			if m.Code != proto.ErrSessionLimited {
				t.Fatalf("error %+v; want session limited", m)
			}
			limited++
		default:
			t.Fatalf("got %#v; want attached or session limited", m)
		}
	}
	if attached != 2 || limited != n-2 {
		t.Fatalf("attached %d, limited %d; want 2 and %d", attached, limited, n-2)
	}
}

// TestTokenEventRate: a terminal connection may send its token events in
// bursts of twice Limits.TokenEventsPerSecond; one more is answered
// rate_limited at once and not handled, and the bucket refills with time
// (the injected clock). A removal of a token neither being handled nor
// shown at the terminal is dropped without being queued; one of a token
// being handled is queued. The connection stays open throughout.
func TestTokenEventRate(t *testing.T) {
	t.Parallel()
	clk := clock.NewFake(time.Unix(1000, 0))
	b := &Broker{clk: clk, log: hclog.NewNullLogger(), lim: Limits{TokenEventsPerSecond: 20}.withDefaults(),
		blog: burstlog.New(hclog.NewNullLogger(), logEvery, nil)}
	// A TCP pair, not net.Pipe: the two sides write at once (an answer
	// while the next insert is sent), which needs the kernel's buffers.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	peer, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	mine, err := ln.Accept()
	ln.Close()
	if err != nil {
		t.Fatal(err)
	}
	defer peer.Close()
	// Its queue holds every event the test sends: the limit under test is
	// the rate, not the queue.
	term := &terminal{b: b, id: "t-1", conn: proto.NewConn(mine), events: make(chan tokenEvent, 128),
		pending: map[uint32]chan any{}, inflight: map[string][]inflight{}, eventRate: rate.NewLimiter(20, 40)}
	defer term.conn.Close()
	var mu sync.Mutex
	var handled []string // what reached the worker's queue
	drained := make(chan struct{})
	go func() {
		defer close(drained)
		for ev := range term.events {
			mu.Lock()
			handled = append(handled, fmt.Sprintf("%T %s", ev.msg, ev.token))
			mu.Unlock()
			ev.done() // the insert stays in inflight: "being handled"
		}
	}()
	done := make(chan error, 1)
	go func() { done <- term.read(context.Background()) }()
	pc := proto.NewConn(peer)
	send := func(m any) {
		t.Helper()
		if err := pc.Send(m); err != nil {
			t.Fatal(err)
		}
	}
	// answers returns what the broker answered to everything sent so far
	// (a Ping's Pong follows every earlier answer).
	seq := uint64(0)
	answers := func() []any {
		t.Helper()
		seq++
		send(&proto.Ping{Seq: seq})
		var got []any
		for {
			m, err := pc.Recv()
			if err != nil {
				t.Fatal(err)
			}
			if p, ok := m.Body.(*proto.Pong); ok && p.Seq == seq {
				return got
			}
			got = append(got, m.Body)
		}
	}
	tok := func(i int) string { return fmt.Sprintf("soft.%032d", i) }
	for i := range 40 {
		send(&proto.TokenInserted{Token: tok(i)})
	}
	if got := answers(); len(got) != 0 {
		t.Fatalf("a burst of 40 inserts was answered %#v; want all queued", got)
	}
	send(&proto.TokenInserted{Token: tok(40)})
	got := answers()
	if len(got) != 1 {
		t.Fatalf("the 41st insert was answered %#v; want one rate_limited error", got)
	}
	if e, ok := got[0].(*proto.Error); !ok || e.Code != proto.ErrRateLimited || e.Token != tok(40) {
		t.Fatalf("the 41st insert was answered %#v; want Error{rate_limited, %s}", got[0], tok(40))
	}
	clk.Advance(time.Second) // 20 more
	for i := 41; i < 61; i++ {
		send(&proto.TokenInserted{Token: tok(i)})
	}
	if got := answers(); len(got) != 0 {
		t.Fatalf("20 inserts a second later were answered %#v; want all queued", got)
	}
	send(&proto.TokenRemoved{Token: tok(999)}) // never presented here
	send(&proto.TokenRemoved{Token: tok(0)})   // being handled
	if got := answers(); len(got) != 0 {
		t.Fatalf("removals were answered %#v; want nothing", got)
	}
	peer.Close()
	<-done
	// read has returned: nothing sends on events any more. The worker may
	// still be behind (under -race it was, by 58 events).
	close(term.events)
	<-drained
	mu.Lock()
	defer mu.Unlock()
	want := 40 + 20 + 1
	if len(handled) != want || handled[len(handled)-1] != "*proto.TokenRemoved "+tok(0) {
		t.Fatalf("queued %d events, the last %q; want %d, the last the removal of %s", len(handled), handled[len(handled)-1], want, tok(0))
	}
	for _, h := range handled {
		if strings.Contains(h, tok(40)) || strings.Contains(h, tok(999)) {
			t.Fatalf("queued %q; the refused insert and the stray removal must not be", h)
		}
	}
}

// serversOnly is a Registry that answers Servers only (place's one call).
type serversOnly struct {
	Registry
	servers []registry.ServerRecord
}

func (r serversOnly) Servers(context.Context) ([]registry.ServerRecord, error) { return r.servers, nil }

// TestPlaceByWeight: a new session goes to the member with the fewest
// sessions per unit of weight (session.weight); this broker's own count
// is its exact one; ties stay here; draining and full members take none.
func TestPlaceByWeight(t *testing.T) {
	t.Parallel()
	b := &Broker{cfg: Config{ServerID: "b1"}, byID: map[string]*Session{"s-1": {}, "s-2": {}}}
	place := func(servers ...registry.ServerRecord) string {
		t.Helper()
		b.reg = serversOnly{servers: servers}
		srv, err := b.place(context.Background(), 0)
		if err != nil {
			return err.Error()
		}
		return srv.ID
	}
	// b1 runs 2 (its record's 0 is stale): 2/1; b2 2/3; b3 1/1.
	if got := place(registry.ServerRecord{ID: "b1", Weight: 1}, registry.ServerRecord{ID: "b2", Sessions: 2, Weight: 3},
		registry.ServerRecord{ID: "b3", Sessions: 1, Weight: 1}); got != "b2" {
		t.Errorf("placed on %s; want b2 (2 sessions of weight 3)", got)
	}
	// The same without weights: b3 has the fewest.
	if got := place(registry.ServerRecord{ID: "b1"}, registry.ServerRecord{ID: "b2", Sessions: 2},
		registry.ServerRecord{ID: "b3", Sessions: 1}); got != "b3" {
		t.Errorf("placed on %s; want b3 (fewest sessions, equal weights)", got)
	}
	// A tie stays here: b1 2/2 = b2 1/1.
	if got := place(registry.ServerRecord{ID: "b1", Weight: 2}, registry.ServerRecord{ID: "b2", Sessions: 1, Weight: 1}); got != "b1" {
		t.Errorf("placed on %s; want b1 (a tie stays local)", got)
	}
	// Draining and full members take none.
	if got := place(registry.ServerRecord{ID: "b1", Weight: 1}, registry.ServerRecord{ID: "b2", Weight: 100, Draining: true},
		registry.ServerRecord{ID: "b3", Weight: 100, Sessions: 5, Capacity: 5}); got != "b1" {
		t.Errorf("placed on %s; want b1 (the others drain or are full)", got)
	}
}

// TestTokenEventRateBound: zero takes the default bucket (50 a second in
// bursts of 100); a negative rate means no bound at all, as documented, and
// is not mistaken for "unset" (the bench's simulated terminals hot-desk
// hundreds of times a second on one connection).
func TestTokenEventRateBound(t *testing.T) {
	t.Parallel()
	def := Limits{}.withDefaults().eventRate()
	if def == nil || def.Limit() != 50 || def.Burst() != 100 {
		t.Fatalf("default bucket = %+v, want 50/s in bursts of 100", def)
	}
	if r := (Limits{TokenEventsPerSecond: 7}).withDefaults().eventRate(); r == nil || r.Limit() != 7 || r.Burst() != 14 {
		t.Fatalf("bucket for 7/s = %+v, want 7/s in bursts of 14", r)
	}
	if r := (Limits{TokenEventsPerSecond: -1}).withDefaults().eventRate(); r != nil {
		t.Fatalf("a negative rate gave a bucket of %v/s, want no bound", r.Limit())
	}
}

// TestConnGateEvictedNotAuthenticated: authenticated reports an evicted
// connection (false), however late it comes, so that its caller drops it
// instead of acting on its first message; a connection not evicted is
// authenticated (true, again and again).
func TestConnGateEvictedNotAuthenticated(t *testing.T) {
	t.Parallel()
	g := newConnGate("terminal", Limits{MaxUnauthenticated: 2}.withDefaults(), burstlog.New(hclog.NewNullLogger(), logEvery, nil))
	addr := func(ip string) net.Addr { return &net.TCPAddr{IP: net.ParseIP(ip), Port: 1000} }
	x1, x2 := g.admit(addr("10.0.0.1"), nil), g.admit(addr("10.0.0.1"), nil)
	y := g.admit(addr("10.0.0.2"), nil) // evicts x1
	if x1 == nil || x2 == nil || y == nil {
		t.Fatal("want three admitted, the third by evicting the first")
	}
	if x1.authenticated() {
		t.Fatal("evicted connection: authenticated() = true; want false")
	}
	if !x2.authenticated() || !y.authenticated() {
		t.Fatal("connections not evicted: authenticated() = false; want true")
	}
	for _, a := range []*admitted{x1, x2, y} {
		a.done()
	}
	if total, unauth := g.counts(); total != 0 || unauth != 0 {
		t.Fatalf("after release: total %d unauth %d; want 0 0", total, unauth)
	}
}
