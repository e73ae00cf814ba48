package broker

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/hotdesk/hotdesk/auth"
	"github.com/hotdesk/hotdesk/compositor"
	"github.com/hotdesk/hotdesk/compositor/weston"
	"github.com/hotdesk/hotdesk/internal/clock"
	"github.com/hotdesk/hotdesk/internal/testutil"
	"github.com/hotdesk/hotdesk/proto"
	"github.com/hotdesk/hotdesk/proto/prototest"
	"github.com/hotdesk/hotdesk/registry"
	"github.com/hotdesk/hotdesk/registry/etcdtest"
	"github.com/hotdesk/hotdesk/registry/pairing"
	"github.com/hotdesk/hotdesk/tokens/soft"
)

// env is one real broker for a test: embedded etcd, real weston, a TLS
// listener on loopback and a fake clock.
type env struct {
	t     *testing.T
	b     *Broker
	reg   *registry.Registry
	clk   *clock.Fake
	addr  string
	pin   []byte
	comp  *weston.Backend
	ctx   context.Context
	trans chan transition
	// etcdEndpoints lets a second broker join the same group.
	etcdEndpoints []string
	cli           *clientv3.Client
	attachAddr    string
	rec           registry.ServerRecord
	ttl           time.Duration
	stateDir      string // the weston backend's state directory
	logger        hclog.Logger
	cert          tls.Certificate // the terminal listener's
}

type transition struct {
	id       string
	from, to State
}

func requireWeston(t testing.TB) {
	t.Helper()
	testutil.NeedTools(t, "weston")
}

// newEnv starts a broker with server id id on etcd endpoints eps (a new
// embedded member if eps is nil).
func newEnv(t *testing.T, id string, eps []string) *env {
	t.Helper()
	return newEnvWith(t, id, envOptions{eps: eps})
}

// defaultTestTTL is the lease of a broker that is not meant to lose it.
// The tests run in parallel on a loaded 2-core machine: a lease as short
// as the daemon's default (5 s, fenced after 3.3 s without a renewal) can
// go overdue there, making the broker refuse logins mid-test. Tests about
// lease loss set a short TTL on the broker that loses it.
const defaultTestTTL = 15 * time.Second

// westonStartTimeout bounds a test desktop's start: several westons start
// at once when the tests run in parallel on a loaded machine.
const westonStartTimeout = 30 * time.Second

type envOptions struct {
	eps       []string      // the group's etcd (a new member if nil)
	clientEps []string      // what this broker's client dials (default eps)
	ttl       time.Duration // lease TTL (default defaultTestTTL)
	max       int           // MaxSessions
	authn     auth.Authenticator
	policies  auth.PolicySource
	gateway   bool // run the attach gateway
	// rdp runs the desktops with weston's RDP backend (unguarded: the
	// tests' own loopback) instead of headless.
	rdp bool
	// wrap, if set, wraps the registry the broker uses (fault injection
	// behind the broker's own Registry interface).
	wrap func(Registry) Registry
	// wrapComp, if set, wraps the real weston backend the broker uses.
	wrapComp func(compositor.Backend) compositor.Backend
	events   EventSink
	// noClaimWatch runs the broker without Config.Claims: every hot-desk
	// to a local session confirms its claim with a read.
	noClaimWatch bool
	// pairing gives the broker a Pairer (pairing codes) on its registry.
	pairing bool
	// reconnectGrace is Config.ReconnectGrace.
	reconnectGrace time.Duration
	// pairKV, if set, gives the Pairer a registry Store of its own, on a
	// client whose KV it wraps (fault injection for pairing alone).
	pairKV func(clientv3.KV) clientv3.KV
}

func newEnvWith(t *testing.T, id string, o envOptions) *env {
	t.Helper()
	requireWeston(t)
	eps := o.eps
	if eps == nil {
		eps = etcdtest.Start(t)
	}
	if o.clientEps == nil {
		o.clientEps = eps
	}
	if o.ttl == 0 {
		o.ttl = defaultTestTTL
	}
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	dir := t.TempDir()
	cert, err := proto.LoadOrCreateCert(filepath.Join(dir, "tls.crt"), filepath.Join(dir, "tls.key"), nil)
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	leaf, _ := x509.ParseCertificate(cert.Certificate[0])
	pin := proto.Fingerprint(leaf.Raw)
	cli := etcdtest.Client(t, o.clientEps)
	rec := registry.ServerRecord{ID: id, Addr: ln.Addr().String(), Fingerprint: pin, Weight: 1, Capacity: o.max}
	reg, err := registry.New(ctx, cli, rec, registry.WithLeaseTTL(o.ttl))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { reg.Close(context.Background()) })
	logger := testutil.Logger(t, id, testLogLevel())
	wcfg := weston.Config{StateDir: filepath.Join(dir, "sessions"), Logger: logger.Named("weston"), StartTimeout: westonStartTimeout,
		AllowRoot: true /* the broker tests run as root; desktops as users are compositor/weston tests */}
	if o.rdp {
		wcfg.Backend, wcfg.InsecureUnguardedRDP = "rdp", true
	}
	comp, err := weston.New(wcfg)
	if err != nil {
		t.Fatal(err)
	}
	clk := clock.NewFake(time.Date(2026, 11, 22, 9, 0, 0, 0, time.UTC))
	var authn auth.Authenticator = auth.Kiosk{User: "kiosk"}
	if o.authn != nil {
		authn = o.authn
	}
	var attachLn net.Listener
	attachAddr := ""
	if o.gateway {
		if attachLn, err = net.Listen("tcp", "127.0.0.1:0"); err != nil {
			t.Fatal(err)
		}
		attachAddr = attachLn.Addr().String()
	}
	var breg Registry = reg
	if o.wrap != nil {
		breg = o.wrap(reg)
	}
	var bcomp compositor.Backend = comp
	if o.wrapComp != nil {
		bcomp = o.wrapComp(comp)
	}
	var claims ClaimWatcher = reg
	if o.noClaimWatch {
		claims = nil
	}
	var pairer Pairer
	if o.pairing {
		// The registry runs on the real clock, so do its codes.
		var store pairing.Store = reg
		if o.pairKV != nil {
			pcli := etcdtest.Client(t, o.clientEps)
			pcli.KV = o.pairKV(pcli.KV)
			if store, err = registry.NewStore(pcli, id); err != nil {
				t.Fatal(err)
			}
		}
		pairer = pairing.New(store, pairing.WithLogger(logger.Named("pairing")))
	}
	b, err := New(Config{
		ServerID: id, Registry: breg, Compositor: bcomp, Auth: authn, Policies: o.policies, AttachAddr: attachAddr,
		Clock: clk, Logger: logger, SuspendTimeout: 24 * time.Hour, PingInterval: 5 * time.Second, ReconnectGrace: o.reconnectGrace,
		MaxSessions: o.max, Events: o.events, Claims: claims, Pairer: pairer,
	})
	if err != nil {
		t.Fatal(err)
	}
	e := &env{t: t, b: b, reg: reg, clk: clk, addr: ln.Addr().String(), pin: pin, comp: comp, ctx: ctx,
		trans: make(chan transition, 4096), etcdEndpoints: eps, cli: cli, rec: rec, ttl: o.ttl,
		stateDir: filepath.Join(dir, "sessions"), logger: logger, cert: cert}
	b.SetHooks(Hooks{OnTransition: func(id string, from, to State) {
		select {
		case e.trans <- transition{id, from, to}:
		default: // nobody is watching this many transitions
		}
	}})
	served := make(chan struct{})
	go func() { defer close(served); b.Serve(ctx, ln, proto.ServerTLSConfig(cert)) }()
	if attachLn != nil {
		go b.ServeAttach(ctx, attachLn, proto.ServerTLSConfig(cert))
		e.attachAddr = attachAddr
	}
	t.Cleanup(func() {
		sctx, scancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer scancel()
		b.Shutdown(sctx)
		cancel()
		<-served
		comp.Close()
	})
	return e
}

// reopenRegistry opens a new registry for e's server, with lease TTL ttl,
// that takes over the claims of lease prev (registry.WithPreviousLease),
// as a restarted broker or one whose lease was lost does. It is closed at
// t's cleanup.
func (e *env) reopenRegistry(t *testing.T, ttl time.Duration, prev clientv3.LeaseID) *registry.Registry {
	t.Helper()
	reg, err := registry.New(e.ctx, e.cli, e.rec, registry.WithLeaseTTL(ttl), registry.WithPreviousLease(prev))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { reg.Close(context.Background()) })
	return reg
}

// serve serves the terminals of nb (e's broker restarted) on a new
// loopback listener with e's certificate until t ends, and returns a
// dialer of terminals to it.
func (e *env) serve(t *testing.T, nb *Broker) (dial func(id string) *term) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(e.ctx)
	served := make(chan struct{})
	go func() { defer close(served); nb.Serve(ctx, ln, proto.ServerTLSConfig(e.cert)) }()
	t.Cleanup(func() { cancel(); <-served })
	return func(id string) *term {
		t.Helper()
		return dialTerm(t, ln.Addr().String(), e.pin, proto.Hello{Versions: []uint16{proto.Version}, TerminalID: id})
	}
}

// claim returns e's registry's claim of key, failing t if it cannot be read.
func (e *env) claim(t *testing.T, key string) registry.Claim {
	t.Helper()
	c, err := e.reg.Lookup(e.ctx, key)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// enroll registers a new software token for user and returns its key.
func (e *env) enroll(user string) (string, ed25519.PrivateKey) {
	e.t.Helper()
	return enrollAs(e.t, e, user)
}

// enrollAs is e.enroll failing t (a subtest of e's test) instead.
func enrollAs(t *testing.T, e *env, user string) (string, ed25519.PrivateKey) {
	t.Helper()
	pub, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	id := soft.TokenID(pub)
	if err := e.reg.EnrollToken(e.ctx, registry.TokenRecord{ID: id, Kind: "soft", PublicKey: pub, User: user}); err != nil {
		t.Fatal(err)
	}
	return id, priv
}

// login enrolls a new token for user and presents it at a new terminal
// termID, which holds its key; it returns the token, its key, the terminal
// and the Attached that answered.
func (e *env) login(user, termID string) (string, ed25519.PrivateKey, *term, *proto.Attached) {
	e.t.Helper()
	tok, key := e.enroll(user)
	tm := e.dial(termID)
	tm.present(tok, key)
	return tok, key, tm, expectMsg[proto.Attached](tm)
}

// waitTransition waits for session id (any if "") to reach state to.
func (e *env) waitTransition(id string, to State) string {
	e.t.Helper()
	timeout := time.After(20 * time.Second)
	for {
		select {
		case tr := <-e.trans:
			if (id == "" || tr.id == id) && tr.to == to {
				return tr.id
			}
		case <-timeout:
			e.t.Fatalf("session %q never reached %v", id, to)
		}
	}
}

// term is a test terminal speaking the real protocol. It answers
// challenges with its keys and queues every other message.
type term struct {
	t            *testing.T
	id           string
	conn         *proto.Conn
	welcome      proto.Welcome
	mu           sync.Mutex
	keys         map[string]ed25519.PrivateKey
	msgs         chan any
	answers      []string // answers to the next prompts, in order
	prompts      []string // texts of the prompts answered
	promptTokens []string // the Token of each answered prompt
}

// answer queues answers for the next secret or visible prompts.
func (tm *term) answer(a ...string) {
	tm.mu.Lock()
	tm.answers = append(tm.answers, a...)
	tm.mu.Unlock()
}

func (e *env) dial(id string) *term {
	e.t.Helper()
	return dialTerm(e.t, e.addr, e.pin, proto.Hello{Versions: []uint16{proto.Version}, TerminalID: id})
}

func dialTerm(t *testing.T, addr string, pin []byte, hello proto.Hello) *term {
	t.Helper()
	cfg := prototest.PinnedTLS(t, pin)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, err := proto.Dial(ctx, addr, cfg)
	if err != nil {
		t.Fatal(err)
	}
	w, err := proto.ClientHandshake(c, hello)
	if err != nil {
		t.Fatal(err)
	}
	tm := &term{t: t, id: hello.TerminalID, conn: c, welcome: w, keys: map[string]ed25519.PrivateKey{}, msgs: make(chan any, 64)}
	go tm.read()
	t.Cleanup(func() { c.Close() })
	return tm
}

func (tm *term) read() {
	defer close(tm.msgs)
	for {
		m, err := tm.conn.Recv()
		if err != nil {
			return
		}
		if ch, ok := m.Body.(*proto.Challenge); ok {
			tm.mu.Lock()
			key := tm.keys[ch.Token]
			tm.mu.Unlock()
			if key != nil {
				msg, err := soft.ChallengeMessage(tm.id, ch.ServerID, tm.welcome.Nonce, ch.Nonce, ch.Token)
				if err == nil {
					_ = tm.conn.Send(&proto.Proof{ID: ch.ID, Token: ch.Token, Signature: ed25519.Sign(key, msg)})
					continue
				}
			}
		}
		if p, ok := m.Body.(*proto.AuthPrompt); ok && (p.Style == proto.PromptEchoOff || p.Style == proto.PromptEchoOn) {
			tm.mu.Lock()
			var a string
			have := len(tm.answers) > 0
			if have {
				a, tm.answers = tm.answers[0], tm.answers[1:]
				tm.prompts = append(tm.prompts, p.Text)
				tm.promptTokens = append(tm.promptTokens, p.Token)
			}
			tm.mu.Unlock()
			if have {
				_ = tm.conn.Send(&proto.AuthAnswer{ID: p.ID, Text: a})
				continue
			}
		}
		tm.msgs <- m.Body
	}
}

// promptCount is how many prompts the terminal answered.
func (tm *term) promptCount() int {
	tm.mu.Lock()
	defer tm.mu.Unlock()
	return len(tm.prompts)
}

func (tm *term) hold(token string, key ed25519.PrivateKey) {
	tm.mu.Lock()
	tm.keys[token] = key
	tm.mu.Unlock()
}

// present inserts token at the terminal, which holds its key to answer the
// broker's proof challenge.
func (tm *term) present(token string, key ed25519.PrivateKey) {
	tm.t.Helper()
	tm.hold(token, key)
	tm.insert(token)
}

// insertAnswering inserts token at the terminal, which answers the login's
// prompts with answers (see answer).
func (tm *term) insertAnswering(token string, answers ...string) {
	tm.t.Helper()
	tm.answer(answers...)
	tm.insert(token)
}

func (tm *term) insert(token string) {
	tm.t.Helper()
	if err := tm.conn.Send(&proto.TokenInserted{Token: token, Reader: "soft"}); err != nil {
		tm.t.Fatal(err)
	}
}

func (tm *term) remove(token string) {
	tm.t.Helper()
	if err := tm.conn.Send(&proto.TokenRemoved{Token: token, Reader: "soft"}); err != nil {
		tm.t.Fatal(err)
	}
}

// next returns the next message that is not a Ping/Pong.
func (tm *term) next() any {
	tm.t.Helper()
	for {
		select {
		case m, ok := <-tm.msgs:
			if !ok {
				tm.t.Fatalf("terminal %s: connection closed", tm.id)
			}
			switch m.(type) {
			case *proto.Ping, *proto.Pong:
				continue
			}
			return m
		case <-time.After(20 * time.Second):
			tm.t.Fatalf("terminal %s: no message in 20s", tm.id)
		}
	}
}

func expectMsg[T any](tm *term) *T {
	tm.t.Helper()
	m := tm.next()
	v, ok := m.(*T)
	if !ok {
		tm.t.Fatalf("terminal %s: got %T %+v; want %T", tm.id, m, m, new(T))
	}
	return v
}

// closed reports whether the broker closed the connection (after draining
// any queued messages, which are returned).
func (tm *term) closedAfter() ([]any, bool) {
	var got []any
	timeout := time.After(10 * time.Second)
	for {
		select {
		case m, ok := <-tm.msgs:
			if !ok {
				return got, true
			}
			got = append(got, m)
		case <-timeout:
			return got, false
		}
	}
}

func pidAlive(pid int) bool {
	if pid <= 0 {
		return false
	}
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return false
	}
	// A zombie ("Z") is dead for our purposes.
	for i := len(b) - 1; i > 0; i-- {
		if b[i] == ')' && i+2 < len(b) {
			return b[i+2] != 'Z'
		}
	}
	return true
}

// testLogLevel is warn, or HOTDESK_TEST_LOG (e.g. debug) when set.
func testLogLevel() hclog.Level {
	if l := os.Getenv("HOTDESK_TEST_LOG"); l != "" {
		return hclog.LevelFromString(l)
	}
	return hclog.Warn
}
