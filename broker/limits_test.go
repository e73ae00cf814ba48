package broker

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"strings"
	"sync"
	"syscall"
	"testing"

	"github.com/hashicorp/go-hclog"

	"github.com/hotdesk/hotdesk/auth"
	"github.com/hotdesk/hotdesk/internal/burstlog"
	"github.com/hotdesk/hotdesk/internal/clock"
	"github.com/hotdesk/hotdesk/internal/testutil"
	"github.com/hotdesk/hotdesk/proto"
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
	a1, a2 := g.admit(addr("10.0.0.1")), g.admit(addr("10.0.0.1"))
	if a1 == nil || a2 == nil || g.admit(addr("10.0.0.1")) != nil {
		t.Fatal("per-source cap 2: want two admitted, the third refused")
	}
	b1 := g.admit(addr("10.0.0.2"))
	if b1 == nil || g.admit(addr("10.0.0.3")) != nil {
		t.Fatal("unauthenticated cap 3: want the fourth refused")
	}
	a1.authenticated()
	a2.authenticated()
	c1, c2 := g.admit(addr("10.0.0.3")), g.admit(addr("10.0.0.4"))
	if c1 == nil || c2 == nil || g.admit(addr("10.0.0.5")) != nil {
		t.Fatal("total cap 5: want two more admitted, then refusal")
	}
	for _, x := range []*admitted{a1, a2, b1, c1, c2} {
		x.done()
		x.done() // idempotent
	}
	if total, unauth := g.counts(); total != 0 || unauth != 0 {
		t.Fatalf("after release: total %d unauth %d; want 0 0", total, unauth)
	}
	if g.admit(addr("10.0.0.1")) == nil {
		t.Fatal("after release: refused; want admitted")
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
	b := &Broker{log: hclog.New(&hclog.LoggerOptions{Output: &out, Level: hclog.Info})}
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
	log := out.String()
	if !strings.Contains(log, "card error at terminal") {
		t.Fatalf("no card error logged:\n%.500s", log)
	}
	if len(log) > 1024 || strings.Contains(log, "\nFAKE") || !strings.Contains(log, "bytes)") {
		t.Fatalf("card error logged as %d bytes; want the peer's reader and message cut short:\n%.500s", len(log), log)
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
