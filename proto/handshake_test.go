package proto_test

import (
	"errors"
	"io"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/hotdesk/hotdesk/internal/clock"
	"github.com/hotdesk/hotdesk/proto"
	"github.com/hotdesk/hotdesk/proto/prototest"
)

type serverResult struct {
	hello   proto.Hello
	welcome proto.Welcome
	err     error
}

// startBroker runs ServerHandshake on every TLS connection, reports its
// result, then echoes every message back until the connection ends.
func startBroker(t *testing.T) (*server, <-chan serverResult) {
	t.Helper()
	results := make(chan serverResult, 16)
	s := startServer(t, proto.ServerTLSConfig(newCert(t)), func(c *proto.Conn) {
		h, w, err := proto.ServerHandshake(c, "broker-7", 15*time.Second)
		results <- serverResult{h, w, err}
		if err != nil {
			return
		}
		for {
			m, err := c.Recv()
			if err != nil {
				if e := proto.ErrorFor(err); e != nil {
					c.Send(e)
				}
				return
			}
			if err := c.Send(m.Body); err != nil {
				return
			}
		}
	})
	return s, results
}

func recvResult(t *testing.T, results <-chan serverResult) serverResult {
	t.Helper()
	select {
	case r := <-results:
		return r
	case <-time.After(10 * time.Second):
		t.Fatal("server handshake did not finish")
		return serverResult{}
	}
}

func TestHandshakeAndEveryMessageOverTLS(t *testing.T) {
	s, results := startBroker(t)
	c, err := dial(t, s.addr, prototest.PinnedTLS(t, s.pin))
	if err != nil {
		t.Fatal(err)
	}
	hello := proto.Hello{TerminalID: "term-42", Name: "Desk 42", Hops: 1, Fence: 9, Token: "soft.abc"}
	w, err := proto.ClientHandshake(c, hello)
	if err != nil {
		t.Fatal(err)
	}
	if w.Version != proto.Version || w.ServerID != "broker-7" || len(w.Nonce) != proto.NonceLen || w.PingInterval != 15000 {
		t.Fatalf("welcome = %+v; want version 1, broker-7, 32-byte nonce, 15000 ms", w)
	}
	r := recvResult(t, results)
	if r.err != nil {
		t.Fatal(r.err)
	}
	hello.Versions = []uint16{proto.Version} // ClientHandshake's default
	if got := (proto.Msg{Type: proto.TypeHello, Body: &r.hello}); !msgEqual(got, proto.Msg{Type: proto.TypeHello, Body: &hello}) {
		t.Fatalf("server got hello %+v; want %+v", r.hello, hello)
	}
	if string(r.welcome.Nonce) != string(w.Nonce) {
		t.Fatalf("server welcome nonce %x; client got %x", r.welcome.Nonce, w.Nonce)
	}

	for _, typ := range proto.Types() {
		body := samples()[typ]
		if err := c.Send(body); err != nil {
			t.Fatalf("%v: send: %v", typ, err)
		}
		got, err := c.Recv()
		if err != nil {
			t.Fatalf("%v: recv: %v", typ, err)
		}
		if want := (proto.Msg{Type: typ, Body: body}); !msgEqual(got, want) {
			t.Fatalf("%v: %s", typ, msgDiff(want, got))
		}
	}

	// A second connection gets a different nonce.
	c2, err := dial(t, s.addr, prototest.PinnedTLS(t, s.pin))
	if err != nil {
		t.Fatal(err)
	}
	w2, err := proto.ClientHandshake(c2, proto.Hello{TerminalID: "term-43"})
	if err != nil {
		t.Fatal(err)
	}
	if string(w2.Nonce) == string(w.Nonce) {
		t.Fatal("two connections got the same nonce")
	}
	recvResult(t, results)
}

// TestServerHandshakeRefuses sends bad first frames over real TLS and checks
// the Error the terminal gets and the error ServerHandshake returns.
func TestServerHandshakeRefuses(t *testing.T) {
	v1 := []uint16{proto.Version}
	long := strings.Repeat("x", 129)
	tests := []struct {
		name  string
		first any    // sent with Conn.Send
		raw   []byte // or written raw
		want  proto.ErrorCode
		cause error // what ServerHandshake's error wraps
	}{
		{"unknown version", &proto.Hello{Versions: []uint16{99}, TerminalID: "t"}, nil, proto.ErrBadVersion, proto.ErrBadVersion},
		{"no common version", &proto.Hello{Versions: []uint16{0, 2, 3}, TerminalID: "t"}, nil, proto.ErrBadVersion, proto.ErrBadVersion},
		{"no versions", &proto.Hello{TerminalID: "t"}, nil, proto.ErrBadVersion, proto.ErrBadVersion},
		{"too many versions", &proto.Hello{Versions: make([]uint16, 17), TerminalID: "t"}, nil, proto.ErrProtocol, proto.ErrProtocol},
		{"too many hops", &proto.Hello{Versions: v1, TerminalID: "t", Hops: 4}, nil, proto.ErrTooManyHops, proto.ErrTooManyHops},
		{"empty terminal id", &proto.Hello{Versions: v1}, nil, proto.ErrProtocol, proto.ErrProtocol},
		{"long terminal id", &proto.Hello{Versions: v1, TerminalID: long}, nil, proto.ErrProtocol, proto.ErrProtocol},
		{"control char in terminal id", &proto.Hello{Versions: v1, TerminalID: "t\x1b[2J"}, nil, proto.ErrProtocol, proto.ErrProtocol},
		{"long name", &proto.Hello{Versions: v1, TerminalID: "t", Name: long}, nil, proto.ErrProtocol, proto.ErrProtocol},
		{"newline in name", &proto.Hello{Versions: v1, TerminalID: "t", Name: "a\nb"}, nil, proto.ErrProtocol, proto.ErrProtocol},
		{"negative fence", &proto.Hello{Versions: v1, TerminalID: "t", Fence: -1}, nil, proto.ErrProtocol, proto.ErrProtocol},
		{"bad token", &proto.Hello{Versions: v1, TerminalID: "t", Token: "../etc"}, nil, proto.ErrProtocol, proto.ErrProtocol},
		// Hops is checked last (PROTOCOL.md §6): a malformed Hello is a
		// protocol error however many hops it has come.
		{"too many hops, negative fence", &proto.Hello{Versions: v1, TerminalID: "t", Hops: 4, Fence: -1}, nil, proto.ErrProtocol, proto.ErrProtocol},
		{"too many hops, bad token", &proto.Hello{Versions: v1, TerminalID: "t", Hops: 4, Token: "../etc"}, nil, proto.ErrProtocol, proto.ErrProtocol},
		{"too many hops, bad name", &proto.Hello{Versions: v1, TerminalID: "t", Hops: 4, Name: "a\nb"}, nil, proto.ErrProtocol, proto.ErrProtocol},
		{"not a hello", &proto.TokenInserted{Token: "uid.01"}, nil, proto.ErrProtocol, proto.ErrProtocol},
		{"garbage", nil, append(header(3), 0xff, 0xfe, 0xfd), proto.ErrBadFrame, proto.ErrMalformed},
		{"oversized", nil, header(proto.MaxFrame + 1), proto.ErrBadFrame, proto.ErrFrameTooLarge},
		{"unknown type", nil, append(header(7), unhex(t, "a2 01 19 03 e7 02 a0")...), proto.ErrProtocol, proto.ErrUnknownType},
		// A null version is not version 0 (no common version), nor skipped
		// beside a good one: the frame is malformed.
		{"null version", nil, append(header(11), unhex(t, "a2 01 01 02 a2 01 81 f6 02 61 74")...), proto.ErrBadFrame, proto.ErrMalformed},
		{"null beside a version", nil, append(header(12), unhex(t, "a2 01 01 02 a2 01 82 01 f6 02 61 74")...), proto.ErrBadFrame, proto.ErrMalformed},
	}
	s, results := startBroker(t)
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			c, err := dial(t, s.addr, prototest.PinnedTLS(t, s.pin))
			if err != nil {
				t.Fatal(err)
			}
			if tc.first != nil {
				err = c.Send(tc.first)
			} else {
				_, err = c.NetConn().Write(tc.raw)
			}
			if err != nil {
				t.Fatal(err)
			}
			m, err := c.Recv()
			if err != nil {
				t.Fatalf("recv: %v; want an Error message", err)
			}
			e, ok := m.Body.(*proto.Error)
			if !ok || e.Code != tc.want || e.Message == "" {
				t.Fatalf("got = %+v; want Error code %v with a message", m.Body, tc.want)
			}
			if strings.HasPrefix(tc.name, "null") && !strings.Contains(e.Message, "null") {
				t.Fatalf("message %q; want it to say a null is the matter", e.Message)
			}
			r := recvResult(t, results)
			if !errors.Is(r.err, tc.cause) {
				t.Fatalf("server err = %v; want %v", r.err, tc.cause)
			}
			if r.hello.TerminalID != "" || r.welcome.Nonce != nil {
				t.Fatalf("server returned %+v, %+v with an error; want zero values", r.hello, r.welcome)
			}
			// The server closes after the handshake fails.
			if _, err := c.Recv(); err == nil {
				t.Fatal("connection still open")
			}
		})
	}
}

// TestClientHandshakeUnknownVersion: the terminal sees the broker's refusal
// as a *ProtocolError with code ErrBadVersion.
func TestClientHandshakeUnknownVersion(t *testing.T) {
	s, results := startBroker(t)
	c, err := dial(t, s.addr, prototest.PinnedTLS(t, s.pin))
	if err != nil {
		t.Fatal(err)
	}
	_, err = proto.ClientHandshake(c, proto.Hello{Versions: []uint16{99}, TerminalID: "term-future"})
	var pe *proto.ProtocolError
	if !errors.As(err, &pe) || pe.Code != proto.ErrBadVersion || !errors.Is(err, proto.ErrBadVersion) {
		t.Fatalf("err = %v; want *ProtocolError bad_version", err)
	}
	if r := recvResult(t, results); !errors.Is(r.err, proto.ErrBadVersion) {
		t.Fatalf("server err = %v; want ErrBadVersion", r.err)
	}
}

// TestClientHandshakeChecksWelcome runs a scripted broker over a pipe.
func TestClientHandshakeChecksWelcome(t *testing.T) {
	good := proto.Welcome{Version: 1, ServerID: "b", Nonce: make([]byte, 32)}
	tests := []struct {
		name  string
		reply any
		want  error
	}{
		{"ok", &good, nil},
		{"version not offered", &proto.Welcome{Version: 2, ServerID: "b", Nonce: make([]byte, 32)}, proto.ErrProtocol},
		{"short nonce", &proto.Welcome{Version: 1, ServerID: "b", Nonce: make([]byte, 8)}, proto.ErrProtocol},
		{"no server id", &proto.Welcome{Version: 1, Nonce: make([]byte, 32)}, proto.ErrProtocol},
		{"error", &proto.Error{Code: proto.ErrUnavailable, Message: "draining"}, proto.ErrUnavailable},
		{"other message", &proto.Ping{Seq: 1}, proto.ErrProtocol},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			term, broker := pipe(t)
			go func() {
				if _, err := broker.Recv(); err == nil {
					broker.Send(tc.reply)
				}
			}()
			w, err := proto.ClientHandshake(term, proto.Hello{TerminalID: "t"})
			if !errors.Is(err, tc.want) {
				t.Fatalf("err = %v; want %v", err, tc.want)
			}
			if tc.want == nil && w.ServerID != good.ServerID {
				t.Fatalf("welcome = %+v; want %+v", w, good)
			}
		})
	}
	t.Run("peer closes", func(t *testing.T) {
		tc, bc := tcpPair(t)
		term, broker := proto.NewConn(tc), proto.NewConn(bc)
		go func() { broker.Recv(); broker.Close() }()
		if _, err := proto.ClientHandshake(term, proto.Hello{TerminalID: "t"}); !errors.Is(err, io.EOF) {
			t.Fatalf("err = %v; want io.EOF", err)
		}
	})
	t.Run("invalid hello is not sent", func(t *testing.T) {
		term, _ := pipe(t) // nobody reads: a Send would block
		if _, err := proto.ClientHandshake(term, proto.Hello{TerminalID: "t", Hops: 4}); !errors.Is(err, proto.ErrTooManyHops) {
			t.Fatalf("err = %v; want ErrTooManyHops", err)
		}
	})
}

// TestServerHandshakeTimeout: a terminal that sends nothing is dropped when
// the read deadline (from the injected clock) passes.
func TestServerHandshakeTimeout(t *testing.T) {
	past := clock.NewFake(time.Now().Add(-time.Hour))
	_, broker := pipe(t, proto.WithClock(past), proto.WithReadTimeout(time.Second), proto.WithWriteTimeout(time.Second))
	_, _, err := proto.ServerHandshake(broker, "b", time.Second)
	var ne net.Error
	if !errors.As(err, &ne) || !ne.Timeout() {
		t.Fatalf("err = %v; want a timeout", err)
	}
}
