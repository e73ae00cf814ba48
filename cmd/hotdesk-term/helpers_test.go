package main

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/json"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"

	"github.com/hotdesk/hotdesk/internal/clock"
	"github.com/hotdesk/hotdesk/internal/testutil"
	"github.com/hotdesk/hotdesk/proto"
	"github.com/hotdesk/hotdesk/tokens/soft"
)

// waitBound is a safety bound on things that happen "soon"; tests never
// assert how fast anything is.
const waitBound = 20 * time.Second

// TestMain fails the package if the agent leaves goroutines behind.
func TestMain(m *testing.M) {
	if os.Getenv(displayClientEnv) == "1" {
		runTestDisplayClient() // the test binary as a display client
	}
	os.Exit(testutil.CheckLeaks(testutil.RunWithBuilds(m), 10*time.Second,
		"main.(*agent)", "main.readLines", "main.(*fakeBroker)", "main.(*display)"))
}

type tWriter struct{ t testing.TB }

func (w tWriter) Write(p []byte) (int, error) {
	w.t.Logf("%s", bytes.TrimRight(p, "\n"))
	return len(p), nil
}

func testLogger(t testing.TB) hclog.Logger {
	return hclog.New(&hclog.LoggerOptions{Name: "hotdesk-term", Level: hclog.Debug, Output: tWriter{t}})
}

// fakeBroker is a tiny broker peer on proto: a TLS listener with its own
// self-signed certificate that completes the server handshake and hands
// each connection to the test.
type fakeBroker struct {
	t     *testing.T
	id    string
	addr  string
	fp    []byte
	ln    net.Listener
	peers chan *peer
	// accepted counts completed handshakes; tlsFailures failed TLS handshakes.
	accepted    atomic.Int32
	tlsFailures atomic.Int32
	wg          sync.WaitGroup
	quit        chan struct{}

	mu    sync.Mutex
	conns []*proto.Conn
}

type peer struct {
	t       *testing.T
	c       *proto.Conn
	hello   proto.Hello
	welcome proto.Welcome
}

func startBroker(t *testing.T, id string, pingInterval time.Duration) *fakeBroker {
	t.Helper()
	dir := t.TempDir()
	cert, err := proto.LoadOrCreateCert(filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem"), nil)
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	b := &fakeBroker{t: t, id: id, addr: ln.Addr().String(), fp: proto.Fingerprint(cert.Leaf.Raw), ln: ln, peers: make(chan *peer, 16), quit: make(chan struct{})}
	tcfg := proto.ServerTLSConfig(cert)
	b.wg.Add(1)
	go b.serve(tcfg, pingInterval)
	t.Cleanup(func() {
		close(b.quit)
		ln.Close()
		b.mu.Lock()
		for _, c := range b.conns {
			c.Close()
		}
		b.mu.Unlock()
		b.wg.Wait()
	})
	return b
}

func (b *fakeBroker) serve(tcfg *tls.Config, pingInterval time.Duration) {
	defer b.wg.Done()
	for {
		raw, err := b.ln.Accept()
		if err != nil {
			return
		}
		tc := tls.Server(raw, tcfg)
		ctx, cancel := context.WithTimeout(context.Background(), waitBound)
		err = tc.HandshakeContext(ctx)
		cancel()
		if err != nil {
			b.tlsFailures.Add(1)
			raw.Close()
			continue
		}
		c := proto.NewConn(tc, proto.WithReadTimeout(waitBound))
		b.mu.Lock()
		b.conns = append(b.conns, c)
		b.mu.Unlock()
		h, w, err := proto.ServerHandshake(c, b.id, pingInterval)
		if err != nil {
			c.Close()
			continue
		}
		b.accepted.Add(1)
		select {
		case b.peers <- &peer{t: b.t, c: c, hello: h, welcome: w}:
		case <-b.quit:
			return
		}
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
}

// startAgent runs an agent against home with a keystore holding the key
// "default". edit may change the Config before the start.
func startAgent(t *testing.T, home *fakeBroker, edit func(*Config)) *testAgent {
	t.Helper()
	ks, key := newKeystore(t)
	tcfg, err := proto.ClientTLSConfig("", home.fp, nil)
	if err != nil {
		t.Fatal(err)
	}
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
		ta.err = a.Run(ctx, ta.lines)
		close(ta.done)
	}()
	t.Cleanup(func() {
		cancel()
		select {
		case <-ta.done:
		case <-time.After(waitBound):
			t.Errorf("agent did not stop after cancel")
		}
	})
	return ta
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
