package broker

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/binary"
	"io"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"

	"github.com/hotdesk/hotdesk/internal/burstlog"
	"github.com/hotdesk/hotdesk/proto"
	"github.com/hotdesk/hotdesk/proto/prototest"
)

// attach dials the gateway and redeems ticket for terminal; it returns the
// connection after AttachOK, or the Error the gateway answered.
func (e *env) attach(ticket []byte, terminal string) (*proto.Conn, *proto.Error) {
	e.t.Helper()
	cfg := prototest.PinnedTLS(e.t, e.pin)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, err := proto.Dial(ctx, e.attachAddr, cfg, proto.WithReadTimeout(10*time.Second))
	if err != nil {
		e.t.Fatal(err)
	}
	e.t.Cleanup(func() { c.Close() })
	if err := c.Send(&proto.Attach{Ticket: ticket, TerminalID: terminal}); err != nil {
		e.t.Fatal(err)
	}
	m, err := c.Recv()
	if err != nil {
		e.t.Fatalf("attach: %v", err)
	}
	switch b := m.Body.(type) {
	case *proto.AttachOK:
		return c, nil
	case *proto.Error:
		return nil, b
	}
	e.t.Fatalf("attach: unexpected %T", m.Body)
	return nil, nil
}

// waylandRegistry sends wl_display.get_registry over the stream and reads
// the first event: a wl_registry.global from the real compositor.
func waylandRegistry(t *testing.T, c *proto.Conn) {
	t.Helper()
	nc := c.NetConn()
	req := make([]byte, 12)
	binary.LittleEndian.PutUint32(req[0:], 1)        // wl_display
	binary.LittleEndian.PutUint32(req[4:], 12<<16|1) // size 12, opcode get_registry
	binary.LittleEndian.PutUint32(req[8:], 2)        // new wl_registry id
	if _, err := nc.Write(req); err != nil {
		t.Fatal(err)
	}
	nc.SetReadDeadline(time.Now().Add(10 * time.Second))
	hdr := make([]byte, 8)
	if _, err := io.ReadFull(nc, hdr); err != nil {
		t.Fatalf("reading the compositor's answer through the gateway: %v", err)
	}
	if obj, op := binary.LittleEndian.Uint32(hdr[0:]), binary.LittleEndian.Uint32(hdr[4:])&0xffff; obj != 2 || op != 0 {
		t.Fatalf("first event: object %d opcode %d; want wl_registry (2) global (0)", obj, op)
	}
}

// TestAttachGateway: the display stream goes through the broker with a
// single-use ticket bound to the terminal; reused, foreign and expired
// tickets are refused, and a suspend cuts the stream at once.
func TestAttachGateway(t *testing.T) {
	t.Parallel()
	e := newEnvWith(t, "b1", envOptions{gateway: true})
	tok, _, t1, att := e.login("gus", "term-1")
	if len(att.Ticket) != 32 || !strings.HasPrefix(att.Endpoint, "hotdesk-attach://") {
		t.Fatalf("attached = %+v; want a gateway endpoint and a ticket", att)
	}
	c, perr := e.attach(att.Ticket, "term-1")
	if perr != nil {
		t.Fatalf("attach with a fresh ticket: %+v", perr)
	}
	waylandRegistry(t, c) // the stream reaches the session's real weston

	if _, perr := e.attach(att.Ticket, "term-1"); perr == nil || perr.Code != proto.ErrAuthFailed {
		t.Fatalf("reused ticket: %+v; want refused", perr)
	}
	t1.insert(tok) // the same terminal again: a new ticket
	att2 := expectMsg[proto.Attached](t1)
	if _, perr := e.attach(att2.Ticket, "term-x"); perr == nil {
		t.Fatal("ticket redeemed by another terminal")
	}
	t1.insert(tok)
	att3 := expectMsg[proto.Attached](t1)
	e.clk.Advance(ticketTTL)
	if _, perr := e.attach(att3.Ticket, "term-1"); perr == nil {
		t.Fatal("expired ticket accepted")
	}

	// Suspend cuts the open stream.
	t1.remove(tok)
	expectMsg[proto.Detached](t1)
	nc := c.NetConn()
	nc.SetReadDeadline(time.Now().Add(10 * time.Second))
	buf := make([]byte, 4096)
	for {
		if _, err := nc.Read(buf); err != nil {
			if strings.Contains(err.Error(), "timeout") {
				t.Fatal("stream still open after the session was suspended")
			}
			break // closed by the gateway
		}
	}
}

// TestAttachReplacesStream: a session has one display stream; redeeming
// a new ticket (the display client reconnecting, or a user re-presenting
// their token again and again) replaces the stream before, so the
// gateway's buffers for one session stay bounded by one stream's.
func TestAttachReplacesStream(t *testing.T) {
	t.Parallel()
	e := newEnvWith(t, "b1", envOptions{gateway: true})
	tok, _, t1, att := e.login("rex", "term-1")
	first, perr := e.attach(att.Ticket, "term-1")
	if perr != nil {
		t.Fatalf("attach: %+v", perr)
	}
	t1.insert(tok)
	att2 := expectMsg[proto.Attached](t1)
	second, perr := e.attach(att2.Ticket, "term-1")
	if perr != nil {
		t.Fatalf("second attach: %+v", perr)
	}
	nc := first.NetConn()
	nc.SetReadDeadline(time.Now().Add(10 * time.Second))
	if _, err := io.ReadAll(nc); err != nil && strings.Contains(err.Error(), "timeout") {
		t.Fatal("first stream still open after a second one attached")
	}
	waylandRegistry(t, second) // the new stream works
}

// TestCheckListener: the gateway trusts an RDP or TCP port only while the
// session's compositor is the one listening on it (another local user may
// bind the port of a compositor that died).
func TestCheckListener(t *testing.T) {
	t.Parallel()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	ep := "rdp://" + ln.Addr().String()
	if err := checkListener(ep, os.Getpid()); err != nil {
		t.Fatalf("the compositor's own listener: %v", err)
	}
	if err := checkListener(ep, os.Getppid()); err == nil {
		t.Fatal("a listener of another process was trusted")
	}
	// A tcp:// endpoint (a control-protocol compositor, proto/COMPOSITOR.md)
	// is a TCP port like rdp://: it was trusted unchecked.
	if err := checkListener("tcp://"+ln.Addr().String(), os.Getpid()); err != nil {
		t.Fatalf("the compositor's own tcp:// listener: %v", err)
	}
	if err := checkListener("tcp://"+ln.Addr().String(), os.Getppid()); err == nil {
		t.Fatal("a tcp:// listener of another process was trusted")
	}
	if err := checkListener("wayland:/run/x/wayland-0", 0); err != nil {
		t.Fatalf("a unix socket endpoint: %v", err)
	}
}

// serveEvicted runs serve (serveConn or attachConn) for a connection that
// its gate evicted while its first message was in flight: serve gets it
// after the eviction, before the close lands (its evict func is nil). It
// returns the client's end (TLS over a pipe) and a channel closed when
// serve returns.
func serveEvicted(t *testing.T, e *env, serve func(context.Context, *tls.Conn, *admitted)) (*proto.Conn, <-chan struct{}) {
	t.Helper()
	// A gate at its unauthenticated cap, 10.0.0.1 holding both: a
	// newcomer from another source evicts 10.0.0.1's oldest, victim.
	g := newConnGate("test", Limits{MaxUnauthenticated: 2}.withDefaults(), burstlog.New(hclog.NewNullLogger(), logEvery, nil))
	addr := func(ip string) net.Addr { return &net.TCPAddr{IP: net.ParseIP(ip), Port: 1000} }
	victim, other := g.admit(addr("10.0.0.1"), nil), g.admit(addr("10.0.0.1"), nil)
	if victim == nil || other == nil || g.admit(addr("10.0.0.2"), nil) == nil {
		t.Fatal("want two admitted, then the newcomer admitted by evicting the first")
	}
	dir := t.TempDir()
	cert, err := proto.LoadOrCreateCert(filepath.Join(dir, "tls.crt"), filepath.Join(dir, "tls.key"), nil)
	if err != nil {
		t.Fatal(err)
	}
	leaf, err := x509.ParseCertificate(cert.Certificate[0])
	if err != nil {
		t.Fatal(err)
	}
	srv, cli := net.Pipe()
	served := make(chan struct{})
	go func() {
		defer close(served)
		serve(e.ctx, tls.Server(srv, proto.ServerTLSConfig(cert)), victim)
	}()
	c := proto.NewConn(tls.Client(cli, prototest.PinnedTLS(t, proto.Fingerprint(leaf.Raw))), proto.WithReadTimeout(10*time.Second))
	t.Cleanup(func() { c.Close(); <-served })
	return c, served
}

// TestAttachEvictedKeepsTicket: an attach connection the gateway's gate
// evicts (limits.go) between reading its Attach and redeeming it is
// dropped with its ticket unspent: it is being closed, and the terminal's
// next attempt with the same ticket attaches. Before, the evicted
// connection redeemed the ticket (and attached, until its close landed),
// and the retry was refused.
func TestAttachEvictedKeepsTicket(t *testing.T) {
	t.Parallel()
	e := newEnvWith(t, "b1", envOptions{gateway: true})
	_, _, _, att := e.login("ivy", "term-1")
	c, served := serveEvicted(t, e, e.b.attachConn)
	if err := c.Send(&proto.Attach{Ticket: att.Ticket, TerminalID: "term-1"}); err != nil {
		t.Fatal(err)
	}
	if m, err := c.Recv(); err == nil {
		t.Fatalf("evicted connection answered %T; want it closed", m.Body)
	}
	c.Close()
	<-served

	// The terminal retries with its ticket.
	if _, perr := e.attach(att.Ticket, "term-1"); perr != nil {
		t.Fatalf("attach after the eviction: %+v; want attached with the unspent ticket", perr)
	}
}

// TestTerminalEvictedAfterHello: a terminal connection the gate evicts
// between its Hello and its registration is dropped, not registered (it
// would connect, serve and disconnect on a connection being closed).
func TestTerminalEvictedAfterHello(t *testing.T) {
	t.Parallel()
	e := newEnv(t, "b1", nil)
	c, served := serveEvicted(t, e, e.b.serveConn)
	if _, err := proto.ClientHandshake(c, proto.Hello{Versions: []uint16{proto.Version}, TerminalID: "term-ev"}); err != nil {
		t.Fatalf("handshake: %v", err) // the Welcome went before the eviction was noticed
	}
	// A Ping: the pipe is synchronous, so the Send itself may find the
	// connection closed.
	if err := c.Send(&proto.Ping{Seq: 1}); err == nil {
		if m, err := c.Recv(); err == nil {
			t.Fatalf("evicted terminal connection answered %T; want it closed", m.Body)
		}
	}
	<-served
	e.b.mu.Lock()
	n := len(e.b.terms)
	e.b.mu.Unlock()
	if n != 0 {
		t.Fatalf("%d terminals registered; want none", n)
	}
}

// TestAttachRefusesForeignSocket: a desktop's wayland: endpoint is a
// socket in its run directory, which belongs to the desktop's user (its
// XDG_RUNTIME_DIR). That user may replace the socket with a link, or with
// a socket of their own: the gateway, dialling as root, must then connect
// nowhere else (the system bus, hotdeskd's admin socket, another user's
// desktop, where a root peer is trusted) and splice nothing.
func TestAttachRefusesForeignSocket(t *testing.T) {
	t.Parallel()
	e := newEnvWith(t, "b1", envOptions{gateway: true})
	tok, _, t1, att := e.login("ivy", "term-1")
	infos, err := e.comp.List(e.ctx)
	if err != nil || len(infos) != 1 || !strings.HasPrefix(infos[0].Endpoint, "wayland:") {
		t.Fatalf("sessions %+v, %v; want one with a wayland: endpoint", infos, err)
	}
	sock := strings.TrimPrefix(infos[0].Endpoint, "wayland:")

	// The decoy: a socket elsewhere, which counts the connections it gets.
	decoy := filepath.Join(t.TempDir(), "decoy.sock")
	dln, err := net.Listen("unix", decoy)
	if err != nil {
		t.Fatal(err)
	}
	defer dln.Close()
	accepted := make(chan net.Conn, 16)
	go func() {
		for {
			c, err := dln.Accept()
			if err != nil {
				return
			}
			accepted <- c
		}
	}()
	// connectedTo reports whether the gateway connected to the decoy: the
	// test's own connection, made now, is accepted after any earlier one.
	connectedTo := func() bool {
		t.Helper()
		own, err := net.Dial("unix", decoy)
		if err != nil {
			t.Fatal(err)
		}
		defer own.Close()
		first := <-accepted
		defer first.Close()
		return !sameConn(t, first, own)
	}

	if err := os.Remove(sock); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(decoy, sock); err != nil {
		t.Fatal(err)
	}
	if _, perr := e.attach(att.Ticket, "term-1"); perr == nil {
		t.Fatal("a link in the session's run directory: the gateway spliced the terminal to the socket it names")
	}
	if connectedTo() {
		t.Fatal("a link in the session's run directory: the gateway connected to the socket it names")
	}

	// A socket of another process at the endpoint's path.
	if err := os.Remove(sock); err != nil {
		t.Fatal(err)
	}
	other, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	defer other.Close()
	t1.insert(tok)
	att2 := expectMsg[proto.Attached](t1)
	if _, perr := e.attach(att2.Ticket, "term-1"); perr == nil || perr.Code != proto.ErrCompositor {
		t.Fatalf("a socket of another process at the endpoint: %+v; want refused as unreachable", perr)
	}
}

// sameConn reports whether the accepted unix connection a is the peer of
// the dialled connection d: a byte written on d arrives on a.
func sameConn(t *testing.T, a, d net.Conn) bool {
	t.Helper()
	if _, err := d.Write([]byte{42}); err != nil {
		t.Fatal(err)
	}
	a.SetReadDeadline(time.Now().Add(10 * time.Second))
	b := make([]byte, 1)
	n, err := a.Read(b)
	return err == nil && n == 1 && b[0] == 42
}
