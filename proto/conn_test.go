package proto_test

import (
	"errors"
	"fmt"
	"io"
	"net"
	"strings"
	"sync"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/hotdesk/hotdesk/internal/clock"
	"github.com/hotdesk/hotdesk/proto"
)

// acceptOne listens on loopback and accepts one connection, which it sends
// on accepted (nil if the accept fails); the listener is closed on cleanup.
func acceptOne(t *testing.T) (addr string, accepted <-chan net.Conn) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	ch := make(chan net.Conn, 1)
	go func() {
		c, _ := ln.Accept()
		ch <- c
	}()
	return ln.Addr().String(), ch
}

// tcpPair returns the two ends of a real TCP connection on loopback. Unlike
// net.Pipe, it lets a reader see a peer's close as io.EOF after the fact.
func tcpPair(t *testing.T) (a, b net.Conn) {
	t.Helper()
	addr, accepted := acceptOne(t)
	a, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	b = <-accepted
	if b == nil {
		a.Close()
		t.Fatal("accept failed")
	}
	t.Cleanup(func() { a.Close(); b.Close() })
	return a, b
}

// pipe returns the two ends of an in-memory connection as Conns.
func pipe(t *testing.T, opts ...proto.ConnOption) (a, b *proto.Conn) {
	t.Helper()
	ca, cb := net.Pipe()
	a, b = proto.NewConn(ca, opts...), proto.NewConn(cb, opts...)
	t.Cleanup(func() { a.Close(); b.Close() })
	return a, b
}

func TestConnRoundTripPipe(t *testing.T) {
	a, b := pipe(t)
	for typ, body := range samples() {
		errc := make(chan error, 1)
		go func() { errc <- a.Send(body) }()
		got, err := b.Recv()
		if err != nil {
			t.Fatalf("%v: recv: %v", typ, err)
		}
		if err := <-errc; err != nil {
			t.Fatalf("%v: send: %v", typ, err)
		}
		if want := (proto.Msg{Type: typ, Body: body}); !msgEqual(got, want) {
			t.Fatalf("%v: %s", typ, msgDiff(want, got))
		}
	}
	if a.RemoteAddr() == nil || a.NetConn() == nil {
		t.Fatalf("RemoteAddr/NetConn = nil")
	}
}

// TestConnConcurrentSend: frames from concurrent senders never interleave.
func TestConnConcurrentSend(t *testing.T) {
	a, b := pipe(t)
	const senders, each = 4, 50
	var wg sync.WaitGroup
	for s := range senders {
		wg.Go(func() {
			for i := range each {
				// Mixed sizes, so a torn frame would be noticed.
				body := any(&proto.Ping{Seq: uint64(s*each + i)})
				if i%2 == 1 {
					body = &proto.Error{Code: proto.ErrInternal, Message: strings.Repeat("x", 1000+s), Token: fmt.Sprint(s*each + i)}
				}
				if err := a.Send(body); err != nil {
					t.Errorf("send: %v", err)
					return
				}
			}
		})
	}
	seen := map[string]bool{}
	for range senders * each {
		m, err := b.Recv()
		if err != nil {
			t.Fatalf("recv: %v", err)
		}
		var key string
		switch body := m.Body.(type) {
		case *proto.Ping:
			key = fmt.Sprint(body.Seq)
		case *proto.Error:
			key = body.Token
		}
		if seen[key] {
			t.Fatalf("message %s received twice", key)
		}
		seen[key] = true
	}
	wg.Wait()
	if got, want := len(seen), senders*each; got != want {
		t.Fatalf("got = %d distinct messages; want %d", got, want)
	}
}

// TestConnRecvErrors writes raw bytes to one end and checks the error the
// other end's Recv gives, and what ErrorFor would tell the peer.
func TestConnRecvErrors(t *testing.T) {
	frame := func(hexPayload string) []byte {
		p := unhex(t, hexPayload)
		return append(header(uint32(len(p))), p...)
	}
	nested := "a2 01 0d 02 a1 01" + strings.Repeat(" 81", 100) + " 00"
	tests := []struct {
		name     string
		raw      []byte
		closeW   bool // close the writer after the bytes
		want     error
		wantCode proto.ErrorCode // 0: ErrorFor gives nil
	}{
		{"garbage", frame("ff fe fd"), false, proto.ErrMalformed, proto.ErrBadFrame},
		{"oversized header only", header(0x7fffffff), false, proto.ErrFrameTooLarge, proto.ErrBadFrame},
		{"truncated", append(header(50), 0xa2, 0x01), true, proto.ErrMalformed, proto.ErrBadFrame},
		{"duplicate keys", frame("a3 01 03 01 03 02 a1 01 61 78"), false, proto.ErrMalformed, proto.ErrBadFrame},
		{"deeply nested", frame(nested), false, proto.ErrMalformed, proto.ErrBadFrame},
		{"indefinite length", frame("a2 01 0d 02 bf 01 05 ff"), false, proto.ErrMalformed, proto.ErrBadFrame},
		{"tagged", frame("a2 01 0d 02 a1 01 c1 05"), false, proto.ErrMalformed, proto.ErrBadFrame},
		{"trailing bytes", frame("a2 01 0d 02 a1 01 05 00"), false, proto.ErrMalformed, proto.ErrBadFrame},
		{"unknown type", frame("a2 01 19 03 e7 02 a0"), false, proto.ErrUnknownType, proto.ErrProtocol},
		{"body type mismatch", frame("a2 01 0d 02 a1 01 61 78"), false, proto.ErrMalformed, proto.ErrBadFrame},
		{"empty frame", header(0), false, proto.ErrMalformed, proto.ErrBadFrame},
		{"clean close", nil, true, io.EOF, 0},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			raw, cb := tcpPair(t)
			c := proto.NewConn(cb)
			t.Cleanup(func() { raw.Close(); c.Close() })
			go func() {
				raw.Write(tc.raw)
				if tc.closeW {
					raw.Close()
				}
			}()
			m, err := c.Recv()
			if !errors.Is(err, tc.want) {
				t.Fatalf("err = %v; want %v", err, tc.want)
			}
			if m != (proto.Msg{}) {
				t.Fatalf("msg = %+v; want zero", m)
			}
			e := proto.ErrorFor(err)
			switch {
			case tc.wantCode == 0 && e != nil:
				t.Fatalf("ErrorFor = %+v; want nil", e)
			case tc.wantCode != 0 && (e == nil || e.Code != tc.wantCode || e.Message == ""):
				t.Fatalf("ErrorFor = %+v; want code %v with a message", e, tc.wantCode)
			}
		})
	}
}

// TestConnTimeouts uses a clock set in the past, so every deadline the Conn
// computes has already expired: Recv and Send fail at once with a timeout.
func TestConnTimeouts(t *testing.T) {
	past := clock.NewFake(time.Now().Add(-time.Hour))
	a, _ := pipe(t, proto.WithClock(past), proto.WithReadTimeout(time.Minute), proto.WithWriteTimeout(time.Minute))
	_, err := a.Recv()
	var ne net.Error
	if !errors.As(err, &ne) || !ne.Timeout() {
		t.Fatalf("recv err = %v; want a timeout", err)
	}
	if e := proto.ErrorFor(err); e == nil || e.Code != proto.ErrProtocol {
		t.Fatalf("ErrorFor(timeout) = %+v; want ErrProtocol", e)
	}
	if err := a.Send(&proto.Ping{Seq: 1}); !errors.As(err, &ne) || !ne.Timeout() {
		t.Fatalf("send err = %v; want a timeout", err)
	}
}

// TestConnDefaultsUseClock checks that the default timeouts apply and are
// computed from the injected clock.
func TestConnDefaultsUseClock(t *testing.T) {
	// Just over the default read timeout ago: expired.
	old := clock.NewFake(time.Now().Add(-proto.DefaultReadTimeout - time.Minute))
	a, _ := pipe(t, proto.WithClock(old))
	if _, err := a.Recv(); err == nil {
		t.Fatal("recv succeeded; want a timeout")
	}
	// No deadline at all: Recv waits until the peer closes.
	b, c := pipe(t, proto.WithClock(old), proto.WithReadTimeout(0))
	go c.Close()
	if _, err := b.Recv(); err != io.EOF {
		t.Fatalf("recv err = %v; want io.EOF", err)
	}
}

func TestConnClose(t *testing.T) {
	a, _ := pipe(t)
	done := make(chan error, 1)
	go func() { _, err := a.Recv(); done <- err }()
	a.Close()
	err := <-done
	if !errors.Is(err, io.ErrClosedPipe) && !errors.Is(err, net.ErrClosed) {
		t.Fatalf("recv after close = %v; want closed", err)
	}
	if e := proto.ErrorFor(fmt.Errorf("x: %w", net.ErrClosed)); e != nil {
		t.Fatalf("ErrorFor(closed) = %+v; want nil", e)
	}
	if err := a.Send(&proto.Ping{}); err == nil {
		t.Fatal("send after close succeeded")
	}
}

type timeoutErr struct{}

func (timeoutErr) Error() string   { return "i/o timeout" }
func (timeoutErr) Timeout() bool   { return true }
func (timeoutErr) Temporary() bool { return true }

func TestErrorFor(t *testing.T) {
	tests := []struct {
		name string
		err  error
		want proto.ErrorCode // 0: nil
	}{
		{"nil", nil, 0},
		{"eof", io.EOF, 0},
		{"wrapped eof", fmt.Errorf("proto: server handshake: %w", io.EOF), 0},
		{"closed", net.ErrClosed, 0},
		{"peer error", &proto.ProtocolError{Code: proto.ErrAuthFailed}, 0},
		{"transport", &net.OpError{Op: "read", Err: errors.New("connection reset")}, 0},
		{"malformed", fmt.Errorf("x: %w", proto.ErrMalformed), proto.ErrBadFrame},
		{"too large", proto.ErrFrameTooLarge, proto.ErrBadFrame},
		{"unknown type", proto.ErrUnknownType, proto.ErrProtocol},
		{"bad version", fmt.Errorf("proto: server handshake: %w: offered [9]", proto.ErrBadVersion), proto.ErrBadVersion},
		{"too many hops", fmt.Errorf("%w: 4 hops", proto.ErrTooManyHops), proto.ErrTooManyHops},
		{"protocol", fmt.Errorf("%w: got ping; want hello", proto.ErrProtocol), proto.ErrProtocol},
		{"timeout", fmt.Errorf("x: %w", timeoutErr{}), proto.ErrProtocol},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got := proto.ErrorFor(tc.err)
			switch {
			case tc.want == 0 && got != nil:
				t.Fatalf("got = %+v; want nil", got)
			case tc.want != 0 && (got == nil || got.Code != tc.want):
				t.Fatalf("got = %+v; want code %v", got, tc.want)
			}
		})
	}
	// The message is bounded, valid UTF-8, and encodable.
	long := fmt.Errorf("%w: %s", proto.ErrMalformed, strings.Repeat("é\xff", 500))
	e := proto.ErrorFor(long)
	if len(e.Message) > 200 || !utf8.ValidString(e.Message) {
		t.Fatalf("message = %d bytes, valid UTF-8 %v; want ≤ 200, valid", len(e.Message), utf8.ValidString(e.Message))
	}
	if _, err := proto.Encode(proto.TypeError, e); err != nil {
		t.Fatal(err)
	}
}

func TestProtocolError(t *testing.T) {
	err := fmt.Errorf("wrapped: %w", &proto.ProtocolError{Code: proto.ErrBadVersion, Message: "no"})
	if !errors.Is(err, proto.ErrBadVersion) || errors.Is(err, proto.ErrProtocol) {
		t.Fatalf("errors.Is on %v: want ErrBadVersion only", err)
	}
	var pe *proto.ProtocolError
	if !errors.As(err, &pe) || pe.Code != proto.ErrBadVersion {
		t.Fatalf("errors.As = %+v; want code bad_version", pe)
	}
	if got, want := pe.Error(), "proto: peer error bad_version: no"; got != want {
		t.Fatalf("got = %q; want %q", got, want)
	}
	if !proto.ErrBadFrame.Closes() || proto.ErrAuthFailed.Closes() {
		t.Fatalf("Closes: bad_frame %v, auth_failed %v; want true, false", proto.ErrBadFrame.Closes(), proto.ErrAuthFailed.Closes())
	}
}
