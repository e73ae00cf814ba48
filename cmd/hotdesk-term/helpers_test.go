package main

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/json"
	"net"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"

	"github.com/hotdesk/hotdesk/internal/clock"
	"github.com/hotdesk/hotdesk/internal/testutil"
	"github.com/hotdesk/hotdesk/proto"
	"github.com/hotdesk/hotdesk/proto/prototest"
	"github.com/hotdesk/hotdesk/tokens/soft"
)

// waitBound is a safety bound on things that happen "soon"; tests never
// assert how fast anything is.
const waitBound = 20 * time.Second

// TestMain fails the package if the agent leaves goroutines behind. Its
// end-to-end tests mostly wait (for the binaries' build, daemons, pcscd's
// polls, screens): four run at once (testutil.RaiseParallel), not two.
func TestMain(m *testing.M) {
	if os.Getenv(displayClientEnv) == "1" {
		runTestDisplayClient() // the test binary as a display client
	}
	testutil.RaiseParallel(4)
	os.Exit(testutil.CheckLeaks(testutil.RunWithBuilds(m), 10*time.Second,
		"main.(*agent)", "main.readLines", "main.listenFake", "main.(*fakeBroker)", "main.(*display)"))
}

// testCert returns a new self-signed certificate, as a broker or a gateway
// has, and its fingerprint.
func testCert(t *testing.T) (tls.Certificate, []byte) {
	t.Helper()
	dir := t.TempDir()
	cert, err := proto.LoadOrCreateCert(filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem"), nil)
	if err != nil {
		t.Fatal(err)
	}
	return cert, proto.Fingerprint(cert.Leaf.Raw)
}

// fakeListener is the listening part of this package's fake servers: it
// hands every connection it accepts to a handler, in a goroutine of its
// own. close, which also runs when the test ends, stops the listener,
// closes every connection and waits for the handlers.
type fakeListener struct {
	ln net.Listener
	wg sync.WaitGroup

	mu     sync.Mutex // guards the fields below
	conns  []net.Conn
	closed bool
}

// listenFake listens on addr ("" for a free loopback port) and serves
// every connection with handle.
func listenFake(t *testing.T, addr string, handle func(net.Conn)) (*fakeListener, error) {
	t.Helper()
	if addr == "" {
		addr = "127.0.0.1:0"
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, err
	}
	l := &fakeListener{ln: ln}
	l.wg.Add(1)
	go func() {
		defer l.wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil || !l.track(c) {
				return
			}
			go func() {
				defer l.wg.Done()
				handle(c)
			}()
		}
	}()
	t.Cleanup(l.close)
	return l, nil
}

func (l *fakeListener) addr() string { return l.ln.Addr().String() }

// track records c, to be closed by close, and counts its handler in wg;
// once the listener is closed it closes c instead and returns false.
func (l *fakeListener) track(c net.Conn) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.closed {
		c.Close()
		return false
	}
	l.conns = append(l.conns, c)
	l.wg.Add(1)
	return true
}

// accepted returns how many connections the listener accepted.
func (l *fakeListener) accepted() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.conns)
}

func (l *fakeListener) close() {
	l.ln.Close()
	l.mu.Lock()
	l.closed = true
	for _, c := range l.conns {
		c.Close()
	}
	l.mu.Unlock()
	l.wg.Wait()
}

func testLogger(t testing.TB) hclog.Logger { return testutil.Logger(t, "hotdesk-term", hclog.Debug) }

// fakeBroker is a tiny broker peer on proto: a TLS listener with its own
// self-signed certificate that completes the server handshake and hands
// each connection to the test.
type fakeBroker struct {
	t     *testing.T
	id    string
	addr  string
	cert  tls.Certificate // its certificate (a gateway of it has the same)
	fp    []byte
	peers chan *peer
	// accepted counts completed handshakes; tlsFailures failed TLS handshakes.
	accepted    atomic.Int32
	tlsFailures atomic.Int32
	quit        chan struct{}
}

type peer struct {
	t       *testing.T
	c       *proto.Conn
	hello   proto.Hello
	welcome proto.Welcome
}

func startBroker(t *testing.T, id string, pingInterval time.Duration) *fakeBroker {
	t.Helper()
	cert, fp := testCert(t)
	b := &fakeBroker{t: t, id: id, cert: cert, fp: fp, peers: make(chan *peer, 16), quit: make(chan struct{})}
	tcfg := proto.ServerTLSConfig(cert)
	l, err := listenFake(t, "", func(raw net.Conn) { b.serve(raw, tcfg, pingInterval) })
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { close(b.quit) }) // before the listener's cleanup
	b.addr = l.addr()
	return b
}

// serve completes the TLS and the server handshake on raw and hands the
// connection to the test.
func (b *fakeBroker) serve(raw net.Conn, tcfg *tls.Config, pingInterval time.Duration) {
	tc := tls.Server(raw, tcfg)
	ctx, cancel := context.WithTimeout(context.Background(), waitBound)
	err := tc.HandshakeContext(ctx)
	cancel()
	if err != nil {
		b.tlsFailures.Add(1)
		raw.Close()
		return
	}
	c := proto.NewConn(tc, proto.WithReadTimeout(waitBound))
	h, w, err := proto.ServerHandshake(c, b.id, pingInterval)
	if err != nil {
		c.Close()
		return
	}
	b.accepted.Add(1)
	select {
	case b.peers <- &peer{t: b.t, c: c, hello: h, welcome: w}:
	case <-b.quit:
		c.Close()
	}
}

// accept returns the next connection that completed the handshake.
func (b *fakeBroker) accept() *peer {
	b.t.Helper()
	select {
	case p := <-b.peers:
		return p
	case <-time.After(waitBound):
		b.t.Fatalf("broker %s: no connection", b.id)
	}
	return nil
}

func (p *peer) send(m any) {
	p.t.Helper()
	if err := p.c.Send(m); err != nil {
		p.t.Fatalf("broker send %T: %v", m, err)
	}
}

// recv returns the next message, failing the test on error (the Conn's
// read timeout is waitBound).
func (p *peer) recv() any {
	p.t.Helper()
	m, err := p.c.Recv()
	if err != nil {
		p.t.Fatalf("broker recv: %v", err)
	}
	return m.Body
}

// expect receives the next message, which must be of type T.
func expect[T any](p *peer) *T {
	p.t.Helper()
	body := p.recv()
	m, ok := body.(*T)
	if !ok {
		var zero T
		p.t.Fatalf("broker got %T %+v; want %T", body, body, &zero)
	}
	return m
}

// redirect sends a Redirect of token, with fence, to broker to (with its
// fingerprint) and returns the connection the agent makes there.
func (p *peer) redirect(token string, to *fakeBroker, fence int64) *peer {
	p.t.Helper()
	p.send(&proto.Redirect{Token: token, ServerID: to.id, Addr: to.addr, Fingerprint: to.fp, Fence: fence})
	return to.accept()
}

// inserted receives the next message, which must present token.
func (p *peer) inserted(token string) {
	p.t.Helper()
	if ins := expect[proto.TokenInserted](p); ins.Token != token {
		p.t.Fatalf("TokenInserted = %+v; want %s", ins, token)
	}
}

// removed receives the next message, which must report token removed.
func (p *peer) removed(token string) {
	p.t.Helper()
	if rm := expect[proto.TokenRemoved](p); rm.Token != token {
		p.t.Fatalf("TokenRemoved = %+v; want %s", rm, token)
	}
}

// ping sends a Ping; the next message must be its Pong: the agent sent
// nothing else before it.
func (p *peer) ping(seq uint64) {
	p.t.Helper()
	p.send(&proto.Ping{Seq: seq})
	body := p.recv()
	if pong, ok := body.(*proto.Pong); !ok || pong.Seq != seq {
		p.t.Fatalf("broker got %T %+v; want only Pong %d", body, body, seq)
	}
}

// quiet lets several of the agent's backoffs (10 ms in these tests) pass,
// then pings: the agent sent nothing meanwhile.
func (p *peer) quiet(seq uint64) {
	p.t.Helper()
	time.Sleep(100 * time.Millisecond)
	p.ping(seq)
}

// output collects the agent's event lines.
type output struct {
	t     *testing.T
	mu    sync.Mutex
	buf   []byte
	all   []string
	lines chan string
}

func newOutput(t *testing.T) *output {
	return &output{t: t, lines: make(chan string, 1000)}
}

func (o *output) Write(p []byte) (int, error) {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.buf = append(o.buf, p...)
	for {
		i := bytes.IndexByte(o.buf, '\n')
		if i < 0 {
			break
		}
		line := string(o.buf[:i])
		o.buf = o.buf[i+1:]
		o.t.Logf("event: %s", line)
		o.all = append(o.all, line)
		select {
		case o.lines <- line:
		default:
			o.t.Errorf("output buffer full; dropped %s", line)
		}
	}
	return len(p), nil
}

func (o *output) text() string {
	o.mu.Lock()
	defer o.mu.Unlock()
	return strings.Join(o.all, "\n")
}

// wait returns the next JSON event named name, skipping others.
func (o *output) wait(name string) map[string]any {
	o.t.Helper()
	timeout := time.After(waitBound)
	for {
		select {
		case line := <-o.lines:
			var ev map[string]any
			if err := json.Unmarshal([]byte(line), &ev); err != nil {
				o.t.Fatalf("event line %q is not JSON: %v", line, err)
			}
			if ev["event"] == name {
				return ev
			}
		case <-timeout:
			o.t.Fatalf("no %q event", name)
		}
	}
}

// testAgent is an agent running in the background.
type testAgent struct {
	*agent
	ks    *soft.Keystore
	key   soft.Key
	out   *output
	lines chan string
	done  chan struct{} // closed when Run returned
	err   error         // Run's result, once done is closed
	// left are the stacks of the goroutines Run started that were still
	// running when it returned (startedBy), once done is closed.
	left []string
}

// goroutineID returns the calling goroutine's id, as stacks show it.
func goroutineID() string {
	buf := make([]byte, 64)
	buf = buf[:runtime.Stack(buf, false)] // "goroutine 123 [running]:..."
	return strings.Fields(string(buf))[1]
}

// leftGrace is how long a goroutine that has done its last observable
// step (closed its channel, counted itself done) may take to exit: on a
// loaded machine it may not have been scheduled again yet.
const leftGrace = time.Second

// startedBy returns the stacks of the goroutines that goroutine id started,
// directly or in the functions it called, still running after leftGrace,
// but for those a context's cancellation started for its AfterFunc (the
// context's, which the canceller cannot wait for).
func startedBy(id string) []string {
	var out []string
	for _, g := range testutil.Leaked(leftGrace, " in goroutine "+id+"\n") {
		if !strings.Contains(g, "\ncreated by context.") {
			out = append(out, g)
		}
	}
	return out
}

// mustKeystore returns a new, empty keystore in the test's temporary
// directory.
func mustKeystore(t *testing.T) *soft.Keystore {
	t.Helper()
	ks, err := soft.OpenKeystore(filepath.Join(t.TempDir(), "tokens.json"))
	if err != nil {
		t.Fatal(err)
	}
	return ks
}

// startAgent runs an agent against home with a keystore holding the key
// "default". edit may change the Config before the start.
func startAgent(t *testing.T, home *fakeBroker, edit func(*Config)) *testAgent {
	t.Helper()
	ks, key := newKeystore(t)
	tcfg := prototest.PinnedTLS(t, home.fp)
	out := newOutput(t)
	cfg := Config{
		Server: home.addr, TLS: tcfg, TerminalID: "term-1", Name: "Desk 1", Keystore: ks,
		Timeout: waitBound, MinBackoff: 10 * time.Millisecond, MaxBackoff: 50 * time.Millisecond,
		Clock: clock.Real{}, Logger: testLogger(t), Out: out, JSON: true,
	}
	if edit != nil {
		edit(&cfg)
	}
	a, err := newAgent(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ta := &testAgent{agent: a, ks: ks, key: key, out: out, lines: make(chan string), done: make(chan struct{})}
	ctx, cancel := context.WithCancel(context.Background())
	go func() {
		id := goroutineID()
		ta.err = a.Run(ctx, ta.lines)
		ta.left = startedBy(id)
		close(ta.done)
	}()
	t.Cleanup(func() {
		cancel()
		select {
		case <-ta.done:
			// Every test's agent: Run waits for what it started.
			if len(ta.left) > 0 {
				t.Errorf("Run returned with %d of its goroutines still running:\n\n%s", len(ta.left), strings.Join(ta.left, "\n\n"))
			}
		case <-time.After(waitBound):
			t.Errorf("agent did not stop after cancel")
		}
	})
	return ta
}

// startInserted starts an agent homed at home with the token "default"
// inserted, and returns it with its connection to home, on which the
// token was presented.
func startInserted(t *testing.T, home *fakeBroker) (*testAgent, *peer) {
	t.Helper()
	ta := startAgent(t, home, func(c *Config) { c.Insert = []string{"default"} })
	p := home.accept()
	p.inserted(ta.key.Token)
	return ta, p
}

// startPrompted starts an agent homed at b (edit as for startAgent),
// inserts the token "default" and has the broker ask for its PIN (prompt
// 1). It returns the agent, showing the prompt, and its connection to b.
func startPrompted(t *testing.T, b *fakeBroker, edit func(*Config)) (*testAgent, *peer) {
	t.Helper()
	ta := startAgent(t, b, edit)
	p := b.accept()
	ta.out.wait("connected")
	ta.promptPIN(t, p, 1)
	return ta, p
}

// promptPIN inserts the token "default", which p, the agent's connection,
// sees, and has the broker ask for its PIN with prompt id; it returns once
// the agent shows the prompt.
func (ta *testAgent) promptPIN(t *testing.T, p *peer, id uint32) {
	t.Helper()
	ta.command(t, "insert default")
	p.inserted(ta.key.Token)
	p.send(&proto.AuthPrompt{ID: id, Style: proto.PromptEchoOff, Text: "PIN: "})
	ta.out.wait("prompt")
}

// command sends one stdin line.
func (ta *testAgent) command(t *testing.T, line string) {
	t.Helper()
	select {
	case ta.lines <- line:
	case <-ta.done:
		t.Fatalf("agent stopped: %v", ta.err)
	case <-time.After(waitBound):
		t.Fatalf("agent does not read command %q", line)
	}
}
