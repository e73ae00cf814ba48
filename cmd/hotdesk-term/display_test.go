package main

import (
	"bytes"
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/hotdesk/hotdesk/internal/clock"
	"github.com/hotdesk/hotdesk/internal/testutil"
	"github.com/hotdesk/hotdesk/proto"
	"github.com/hotdesk/hotdesk/proto/prototest"
)

// displayClientEnv makes the test binary act as a display client (see
// runTestDisplayClient): the display tests run real processes.
const displayClientEnv = "HOTDESK_TEST_DISPLAY_CLIENT"

// runTestDisplayClient is a display client speaking first, as RDP does: it
// connects to the relay (os.Args[1]), writes "<pid> connected" to
// os.Args[2]/<pid>.up, sends "hello <pid>\n" and waits for "welcome\n";
// then it writes os.Args[2]/<pid>.shown and stays until killed or the
// stream ends.
func runTestDisplayClient() {
	dir := os.Args[2]
	pid := strconv.Itoa(os.Getpid())
	c, err := net.DialTimeout("tcp", os.Args[1], 10*time.Second)
	if err != nil {
		os.Exit(3)
	}
	_ = os.WriteFile(filepath.Join(dir, pid+".up"), []byte(pid), 0o600)
	if _, err := io.WriteString(c, "hello "+pid+"\n"); err != nil {
		os.Exit(4)
	}
	buf := make([]byte, len("welcome\n"))
	if _, err := io.ReadFull(c, buf); err != nil || string(buf) != "welcome\n" {
		os.Exit(5)
	}
	_ = os.WriteFile(filepath.Join(dir, pid+".shown"), []byte(pid), 0o600)
	_, _ = io.Copy(io.Discard, c)
	os.Exit(0)
}

// fakeGateway is an attach gateway on proto: TLS, Attach → AttachOK for
// the one ticket it knows (once), then it answers the client's first line
// with "welcome\n" and records it.
type fakeGateway struct {
	t      *testing.T
	addr   string
	tls    *tls.Config // the client side, pinned
	ticket []byte
	ln     *fakeListener

	mu       sync.Mutex
	cutFirst int      // connections still to close unanswered (an evicted handshake)
	attaches int      // Attach messages received
	lines    []string // first line of each spliced stream
}

func startGateway(t *testing.T) *fakeGateway {
	t.Helper()
	cert, fp := testCert(t)
	return startGatewayWith(t, cert, fp)
}

// startGatewayWith is startGateway with the certificate cert (a broker's:
// an agent reaches its broker's gateway with the broker's pin).
func startGatewayWith(t *testing.T, cert tls.Certificate, fp []byte) *fakeGateway {
	t.Helper()
	g := &fakeGateway{t: t, tls: prototest.PinnedTLS(t, fp), ticket: []byte("ticket-1")}
	scfg := proto.ServerTLSConfig(cert)
	var err error
	g.ln, err = listenFake(t, "", func(c net.Conn) { g.serve(tls.Server(c, scfg)) })
	if err != nil {
		t.Fatal(err)
	}
	g.addr = g.ln.addr()
	return g
}

func (g *fakeGateway) serve(tc *tls.Conn) {
	c := proto.NewConn(tc, proto.WithReadTimeout(waitBound))
	defer c.Close()
	g.mu.Lock()
	cut := g.cutFirst > 0
	if cut {
		g.cutFirst--
	}
	g.mu.Unlock()
	if cut {
		return
	}
	m, err := c.Recv()
	if err != nil {
		return
	}
	req, ok := m.Body.(*proto.Attach)
	if !ok {
		return
	}
	g.mu.Lock()
	g.attaches++
	valid := g.ticket != nil && bytes.Equal(req.Ticket, g.ticket) && req.TerminalID == "t-disp"
	if valid {
		g.ticket = nil // single use
	}
	g.mu.Unlock()
	if !valid {
		_ = c.Send(&proto.Error{Code: proto.ErrAuthFailed, Message: "ticket invalid"})
		return
	}
	if c.Send(&proto.AttachOK{SessionID: "s-1"}) != nil {
		return
	}
	nc := c.NetConn()
	_ = nc.SetDeadline(time.Time{})
	line, err := readLine(nc)
	if err != nil {
		return
	}
	g.mu.Lock()
	g.lines = append(g.lines, line)
	g.mu.Unlock()
	if _, err := io.WriteString(nc, "welcome\n"); err != nil {
		return
	}
	_, _ = io.Copy(io.Discard, nc)
}

func readLine(r io.Reader) (string, error) {
	var b []byte
	one := make([]byte, 1)
	for len(b) < 256 {
		if _, err := r.Read(one); err != nil {
			return "", err
		}
		if one[0] == '\n' {
			return string(b), nil
		}
		b = append(b, one[0])
	}
	return "", fmt.Errorf("line too long")
}

// allow makes ticket the one ticket the gateway takes (once).
func (g *fakeGateway) allow(ticket string) {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.ticket = []byte(ticket)
}

func (g *fakeGateway) counts() (attaches int, lines []string) {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.attaches, append([]string(nil), g.lines...)
}

// waitFile waits for a file matching pattern in dir other than those in
// seen and returns its base name without extension (the client's pid).
func waitFile(t *testing.T, dir, ext string, seen map[string]bool) string {
	t.Helper()
	deadline := time.Now().Add(waitBound)
	for time.Now().Before(deadline) {
		ms, _ := filepath.Glob(filepath.Join(dir, "*"+ext))
		for _, m := range ms {
			pid := filepath.Base(m)
			pid = pid[:len(pid)-len(ext)]
			if !seen[pid] {
				seen[pid] = true
				return pid
			}
		}
		time.Sleep(10 * time.Millisecond)
	}
	t.Fatalf("no new %s file in %s", ext, dir)
	return ""
}

func alive(pid string) bool {
	_, err := os.Stat("/proc/" + pid)
	return err == nil
}

func newTestDisplay(t *testing.T, dir string, events *output) *display {
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	// env(1) execs the client (same pid) with the variable set for it
	// alone: t.Setenv would keep the test from running in parallel.
	return newDisplay(displayConfig{
		Command: []string{"env", displayClientEnv + "=1", exe, "{addr}", dir}, Terminal: "t-disp", Timeout: waitBound,
		Logger: testLogger(t), Emit: (&emitter{w: events, json: true, now: time.Now}).emit,
	})
}

// startTestDisplay starts a display (newTestDisplay, its clients' files in
// dir) and a fake gateway that cuts its first cut connections unanswered;
// the test's cleanup closes the display.
func startTestDisplay(t *testing.T, cut int) (dir string, gw *fakeGateway, events *output, d *display) {
	t.Helper()
	dir = t.TempDir()
	gw = startGateway(t)
	gw.mu.Lock() // the gateway serves already
	gw.cutFirst = cut
	gw.mu.Unlock()
	events = newOutput(t)
	d = newTestDisplay(t, dir, events)
	ctx, cancel := context.WithCancel(context.Background())
	d.start(ctx)
	t.Cleanup(func() { d.close(); cancel() })
	return dir, gw, events, d
}

// TestDisplayHeldUntilTicket: the display client is started before any
// session and connects at once, but nothing leaves the terminal until a
// ticket comes; then its held connection (with what it already sent) is
// spliced through the gateway. After detach it is gone and a fresh client
// waits; a refused ticket shows nothing and leaves a fresh client waiting.
func TestDisplayHeldUntilTicket(t *testing.T) {
	t.Parallel()
	dir, gw, events, d := startTestDisplay(t, 0)

	up := map[string]bool{}
	shown := map[string]bool{}
	first := waitFile(t, dir, ".up", up) // connected to the relay, held
	time.Sleep(200 * time.Millisecond)   // room for a wrong relay to forward
	if conns := gw.ln.accepted(); conns != 0 {
		t.Fatalf("before any ticket the gateway got %d connections; want none", conns)
	}

	d.attach(gw.addr, gw.tls, []byte("ticket-1"), "s-1")
	if pid := waitFile(t, dir, ".shown", shown); pid != first {
		t.Fatalf("session shown by client %s; want the waiting client %s", pid, first)
	}
	ev := events.wait("stream")
	if ev["session"] != "s-1" {
		t.Errorf("stream event %v; want session s-1", ev)
	}
	if _, lines := gw.counts(); len(lines) != 1 || lines[0] != "hello "+first {
		t.Errorf("gateway got %q; want the held client's first bytes %q", lines, "hello "+first)
	}

	d.detach()
	if alive(first) {
		t.Errorf("client %s still runs after detach; want it gone", first)
	}
	second := waitFile(t, dir, ".up", up) // a fresh one waits
	if second == first {
		t.Fatalf("same client after detach")
	}

	// The ticket was single use: a second attach with it is refused, the
	// client never shows anything and is replaced by a fresh one.
	d.attach(gw.addr, gw.tls, []byte("ticket-1"), "s-1")
	third := waitFile(t, dir, ".up", up)
	if third == second {
		t.Fatalf("the refused client was not replaced")
	}
	if n, lines := gw.counts(); n != 2 || len(lines) != 1 {
		t.Errorf("gateway saw %d attaches and %d streams; want 2 and 1", n, len(lines))
	}
	if _, err := os.Stat(filepath.Join(dir, second+".shown")); err == nil {
		t.Errorf("client %s showed a session with a refused ticket", second)
	}

	d.close()
	if alive(third) {
		t.Errorf("client %s still runs after close", third)
	}
}

// startCounter returns a file a client script appends an "x" to at each
// start (echo x >> file) and the count of starts so far.
func startCounter(t *testing.T) (string, func() int) {
	file := filepath.Join(t.TempDir(), "starts")
	return file, func() int {
		b, _ := os.ReadFile(file)
		return bytes.Count(b, []byte("x"))
	}
}

// TestDisplayGatewayCutRetried: a gateway connection cut before any
// answer (the gateway evicted it under a flood of slow handshakes: the
// ticket unread, unspent) is tried once more, and the session shown; a
// refused ticket is not (TestDisplayHeldUntilTicket).
func TestDisplayGatewayCutRetried(t *testing.T) {
	t.Parallel()
	dir, gw, _, d := startTestDisplay(t, 1)
	first := waitFile(t, dir, ".up", map[string]bool{})
	d.attach(gw.addr, gw.tls, []byte("ticket-1"), "s-1")
	if pid := waitFile(t, dir, ".shown", map[string]bool{}); pid != first {
		t.Fatalf("session shown by client %s; want the waiting client %s", pid, first)
	}
	if n, lines := gw.counts(); gw.ln.accepted() != 2 || n != 1 || len(lines) != 1 {
		t.Errorf("gateway: %d connections, %d attaches, %d streams; want 2, 1 (the second), 1", gw.ln.accepted(), n, len(lines))
	}
}

// TestDisplayRestartBackoffOnClock: a display client that ends while
// waiting for a ticket is started again after a backoff on the agent's
// clock (1 s, then 2 s), not a millisecond before. The client is a shell
// counting its starts.
func TestDisplayRestartBackoffOnClock(t *testing.T) {
	t.Parallel()
	startsFile, starts := startCounter(t)
	clk := clock.NewFake(time.Unix(1_000_000, 0))
	d := newDisplay(displayConfig{Command: []string{"sh", "-c", "echo x >> " + startsFile}, Terminal: "t-disp",
		Timeout: waitBound, Clock: clk, Logger: testLogger(t)})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	d.start(ctx)
	defer d.close()

	for n, backoff := range []time.Duration{time.Second, 2 * time.Second} {
		testutil.WaitFor(t, waitBound, "the client started and ended, its restart due on the clock", func() bool {
			return starts() == n+1 && clk.Pending() == 1
		})
		clk.Advance(backoff - time.Millisecond)
		if p := clk.Pending(); p != 1 {
			t.Fatalf("start %d ended, %v later on the clock: %d timers pending; want the restart's still pending", n+1, backoff-time.Millisecond, p)
		}
		clk.Advance(time.Millisecond)
		testutil.WaitFor(t, waitBound, "the client started again", func() bool { return starts() == n+2 })
	}
}

// TestDisplayConnectWaitOnClock: a client handed a ticket that never
// connects to the relay is stopped once Timeout has passed on the agent's
// clock, not before, and a fresh client waits for the next ticket. The
// client is a shell counting its starts, then sleeping.
func TestDisplayConnectWaitOnClock(t *testing.T) {
	t.Parallel()
	startsFile, starts := startCounter(t)
	clk := clock.NewFake(time.Unix(1_000_000, 0))
	const timeout = time.Minute
	d := newDisplay(displayConfig{Command: []string{"sh", "-c", "echo x >> " + startsFile + "; exec sleep 300"}, Terminal: "t-disp",
		Timeout: timeout, Clock: clk, Logger: testLogger(t)})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	d.start(ctx)
	defer d.close()

	testutil.WaitFor(t, waitBound, "a client waiting for a ticket", func() bool { return starts() == 1 })
	d.attach("127.0.0.1:1", &tls.Config{}, []byte("ticket"), "s1")
	testutil.WaitFor(t, waitBound, "the wait for its connection set on the clock", func() bool { return clk.Pending() == 1 })
	clk.Advance(timeout - time.Millisecond)
	if n := clk.Pending(); n != 1 {
		t.Fatalf("a millisecond before Timeout: %d timers pending; want the wait's", n)
	}
	clk.Advance(time.Millisecond)
	testutil.WaitFor(t, waitBound, "the client stopped at Timeout and a fresh one started", func() bool { return starts() == 2 })
}
