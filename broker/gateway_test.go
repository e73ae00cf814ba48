package broker

import (
	"context"
	"encoding/binary"
	"errors"
	"io"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/hotdesk/hotdesk/proto"
)

// attach dials the gateway and redeems ticket for terminal; it returns the
// connection after AttachOK, or the Error the gateway answered.
func (e *env) attach(ticket []byte, terminal string) (*proto.Conn, *proto.Error) {
	e.t.Helper()
	cfg, err := proto.ClientTLSConfig("", e.pin, nil)
	if err != nil {
		e.t.Fatal(err)
	}
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
	e := newEnvWith(t, "b1", envOptions{gateway: true})
	tok, key := e.enroll("gus")
	t1 := e.dial("term-1")
	t1.hold(tok, key)
	t1.insert(tok)
	att := expectMsg[proto.Attached](t1)
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

// predialOf returns the compositor connection opened for ticket once its
// dial has ended (nil if the ticket has none or the dial failed).
func (e *env) predialOf(ticket []byte) net.Conn {
	e.t.Helper()
	e.b.mu.Lock()
	tk, ok := e.b.tickets[string(ticket)]
	e.b.mu.Unlock()
	if !ok || tk.pre == nil {
		e.t.Fatalf("ticket has no compositor connection opened ahead (known %v)", ok)
	}
	select {
	case <-tk.pre.done:
	case <-time.After(10 * time.Second):
		e.t.Fatal("predial still dialing after 10 s")
	}
	tk.pre.mu.Lock()
	defer tk.pre.mu.Unlock()
	return tk.pre.conn
}

// closedSoon reports whether c is closed on our side within 10 s (a read
// fails with net.ErrClosed).
func closedSoon(c net.Conn) bool {
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		_ = c.SetReadDeadline(time.Now().Add(50 * time.Millisecond))
		_, err := c.Read(make([]byte, 1))
		if errors.Is(err, net.ErrClosed) {
			return true
		}
	}
	return false
}

// x224Request is an RDP X.224 Connection Request with an RDP Negotiation
// Request for TLS, as FreeRDP sends it first.
var x224Request = []byte{
	0x03, 0x00, 0x00, 0x13, // TPKT, length 19
	0x0e, 0xe0, 0x00, 0x00, 0x00, 0x00, 0x00, // X.224 CR
	0x01, 0x00, 0x08, 0x00, 0x01, 0x00, 0x00, 0x00, // RDP_NEG_REQ: PROTOCOL_SSL
}

// TestAttachGatewayPredial: a ticket for a desktop on weston's RDP backend
// comes with a connection to weston opened when the ticket is issued;
// redeeming it splices that very connection (weston answers the RDP
// connection request through the gateway); tickets that expire or whose
// session is suspended before they are redeemed close theirs. Budget: a
// few seconds (one weston).
func TestAttachGatewayPredial(t *testing.T) {
	e := newEnvWith(t, "b1", envOptions{gateway: true, rdp: true})
	tok, key := e.enroll("gus")
	t1 := e.dial("term-1")
	t1.hold(tok, key)
	t1.insert(tok)
	att := expectMsg[proto.Attached](t1)
	pre := e.predialOf(att.Ticket)
	if pre == nil {
		t.Fatal("the predial to weston failed")
	}
	c, perr := e.attach(att.Ticket, "term-1")
	if perr != nil {
		t.Fatalf("attach: %+v", perr)
	}
	e.b.mu.Lock()
	s := e.b.byToken[tok]
	_, spliced := s.streams[pre]
	e.b.mu.Unlock()
	if !spliced {
		t.Fatal("the stream was not spliced to the connection opened ahead")
	}
	nc := c.NetConn()
	if _, err := nc.Write(x224Request); err != nil {
		t.Fatal(err)
	}
	_ = nc.SetReadDeadline(time.Now().Add(10 * time.Second))
	hdr := make([]byte, 4)
	if _, err := io.ReadFull(nc, hdr); err != nil {
		t.Fatalf("weston's answer to the RDP connection request: %v", err)
	}
	if hdr[0] != 3 || hdr[1] != 0 {
		t.Fatalf("weston answered % x; want a TPKT header (03 00)", hdr)
	}

	// A ticket never redeemed: its connection closes when it expires.
	t1.insert(tok)
	att2 := expectMsg[proto.Attached](t1)
	pre2 := e.predialOf(att2.Ticket)
	e.clk.Advance(ticketTTL)
	if pre2 == nil || !closedSoon(pre2) {
		t.Fatal("an expired ticket's compositor connection is still open")
	}
	if _, perr := e.attach(att2.Ticket, "term-1"); perr == nil {
		t.Fatal("expired ticket accepted")
	}

	// A ticket outstanding when the session is suspended: closed at once,
	// with the open stream.
	t1.insert(tok)
	att3 := expectMsg[proto.Attached](t1)
	pre3 := e.predialOf(att3.Ticket)
	t1.remove(tok)
	expectMsg[proto.Detached](t1)
	if pre3 == nil || !closedSoon(pre3) {
		t.Fatal("a suspended session's outstanding ticket kept its compositor connection")
	}
	if !closedSoon(pre) {
		t.Fatal("the spliced stream to weston is open after the session was suspended")
	}
}
