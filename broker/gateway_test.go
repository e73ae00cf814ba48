package broker

import (
	"context"
	"encoding/binary"
	"io"
	"net"
	"os"
	"strings"
	"testing"
	"time"

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
