package wayray

import (
	"errors"
	"net"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/hotdesk/hotdesk/internal/testutil"
)

// unixPair returns the two ends of a unix socket connection, a real
// socket (not net.Pipe) so that data written waits in it: peer, the
// dialling end, and conn, the accepted one. Both close when the test ends.
func unixPair(t *testing.T) (peer, conn net.Conn) {
	t.Helper()
	ln, err := net.Listen("unix", filepath.Join(testutil.ShortTempDir(t, "hdwr"), "s"))
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	peer, err = net.Dial("unix", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { peer.Close() })
	conn, err = ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return peer, conn
}

// TestReadMsgAfterFreeze: an answer already waiting when the read's
// deadline has passed — as after the broker was stopped (SIGSTOP, a paused
// VM) while it waited — is read, not taken for a broken compositor; with
// nothing waiting the read still times out.
func TestReadMsgAfterFreeze(t *testing.T) {
	peer, c := unixPair(t)

	if err := WriteMsg(peer, 7, 42, nil); err != nil {
		t.Fatal(err)
	}
	// A deadline already in the past when the read starts: Go reports it
	// before looking at the socket, as after a freeze.
	f, err := ReadMsg(c, time.Nanosecond)
	if err != nil || f.Type != 7 || f.ID != 42 {
		t.Fatalf("ReadMsg with the answer waiting = %+v, %v; want type 7, id 42", f, err)
	}
	if _, err := ReadMsg(c, time.Nanosecond); !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("ReadMsg with nothing waiting = %v; want a deadline error", err)
	}
}

// lateConn reports the deadline of its read number at (1 for the first)
// late, as after the process was stopped while that read waited: it sleeps
// past the deadline first. The other reads pass through. At 2 that is a
// stop between a frame's header (the first read) and its body.
type lateConn struct {
	net.Conn
	late  time.Duration
	at    int
	reads int
}

func (c *lateConn) Read(p []byte) (int, error) {
	c.reads++
	if c.reads == c.at {
		time.Sleep(c.late)
		return 0, os.ErrDeadlineExceeded
	}
	return c.Conn.Read(p)
}

// TestReadMsgAfterLongFreeze: after a deadline reported late (the broker
// did not run), a compositor that answers later than freezeGrace — it was
// starved as well — is given a whole timeout again, not taken for broken.
func TestReadMsgAfterLongFreeze(t *testing.T) {
	a, b := net.Pipe()
	defer a.Close()
	defer b.Close()
	const timeout = time.Second
	const late = timeout + 2*freezeGrace // when the deadline is reported
	go func() {
		time.Sleep(late + freezeGrace + 200*time.Millisecond) // after freezeGrace more, within a whole timeout more
		_ = WriteMsg(b, 7, 43, nil)
	}()
	f, err := ReadMsg(&lateConn{Conn: a, late: late, at: 1}, timeout)
	if err != nil || f.Type != 7 || f.ID != 43 {
		t.Fatalf("ReadMsg after a late deadline = %+v, %v; want type 7, id 43", f, err)
	}
	// Not late: a deadline reported on time still gets only freezeGrace.
	c, d := net.Pipe()
	defer c.Close()
	defer d.Close()
	if _, err := ReadMsg(c, 50*time.Millisecond); !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("ReadMsg with nothing coming = %v; want a deadline error", err)
	}
}

// TestReadMsgFreezeMidFrame: a freeze between a frame's header and its body
// (the body already waiting in the socket) is not a broken compositor
// either: chaos (broker_sigstop) saw a desktop killed that way.
func TestReadMsgFreezeMidFrame(t *testing.T) {
	peer, c := unixPair(t)
	if err := WriteMsg(peer, 7, 44, Reply{OK: true}); err != nil {
		t.Fatal(err)
	}
	const timeout = 100 * time.Millisecond
	f, err := ReadMsg(&lateConn{Conn: c, late: timeout + 2*freezeGrace, at: 2}, timeout)
	if err != nil || f.Type != 7 || f.ID != 44 {
		t.Fatalf("ReadMsg with a late deadline mid-frame = %+v, %v; want type 7, id 44", f, err)
	}
}

// TestReadMsgStrict: the control protocol's CBOR rules are the terminal
// protocol's (proto/COMPOSITOR.md, Framing): a simple value other than
// false, true and null — undefined too — anywhere, even in an unknown body
// key, and an unknown envelope key make a frame malformed; unknown body keys
// (also text keys, and floats in their values) are ignored.
func TestReadMsgStrict(t *testing.T) {
	for _, tc := range []struct {
		name    string
		payload []byte
		ok      bool
	}{
		// {1: 100, 2: 1, 3: {1: true}}
		{"plain reply", []byte{0xa3, 0x01, 0x18, 0x64, 0x02, 0x01, 0x03, 0xa1, 0x01, 0xf5}, true},
		// body {1: true, 99: undefined}
		{"undefined in an unknown key", []byte{0xa3, 0x01, 0x18, 0x64, 0x02, 0x01, 0x03, 0xa2, 0x01, 0xf5, 0x18, 0x63, 0xf7}, false},
		// body {1: true, 99: simple(16)}
		{"simple value 16 in an unknown key", []byte{0xa3, 0x01, 0x18, 0x64, 0x02, 0x01, 0x03, 0xa2, 0x01, 0xf5, 0x18, 0x63, 0xf0}, false},
		// envelope {1: 100, 2: 1, 3: {1: true}, 4: 7}
		{"unknown envelope key", []byte{0xa4, 0x01, 0x18, 0x64, 0x02, 0x01, 0x03, 0xa1, 0x01, 0xf5, 0x04, 0x07}, false},
		// body {1: true, "x": 1}
		{"text body key", []byte{0xa3, 0x01, 0x18, 0x64, 0x02, 0x01, 0x03, 0xa2, 0x01, 0xf5, 0x61, 'x', 0x01}, true},
		// body {1: true, 99: 1.5}
		{"float in an unknown key", []byte{0xa3, 0x01, 0x18, 0x64, 0x02, 0x01, 0x03, 0xa2, 0x01, 0xf5, 0x18, 0x63, 0xf9, 0x3e, 0x00}, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			peer, c := unixPair(t)
			frame := append([]byte{0, 0, 0, byte(len(tc.payload))}, tc.payload...)
			if _, err := peer.Write(frame); err != nil {
				t.Fatal(err)
			}
			f, err := ReadMsg(c, 5*time.Second)
			if err == nil {
				var r Reply
				err = DecodeBody(f, &r)
				if err == nil && !r.OK {
					t.Fatalf("reply decoded as %+v; want OK", r)
				}
			}
			if tc.ok && err != nil {
				t.Fatalf("ReadMsg = %v; want the frame accepted", err)
			}
			if !tc.ok && !errors.Is(err, ErrProtocol) {
				t.Fatalf("ReadMsg = %v; want ErrProtocol", err)
			}
		})
	}
}

// TestDecodeBodyNullElement: a null element in an array (a Hello's
// capabilities) is malformed, not an empty capability; a null field is an
// absent one.
func TestDecodeBodyNullElement(t *testing.T) {
	// {1: 1, 2: "c", 4: "rdp://127.0.0.1:1", 5: ["status", null]}
	bad := []byte{0xa4, 0x01, 0x01, 0x02, 0x61, 'c', 0x04, 0x71}
	bad = append(bad, "rdp://127.0.0.1:1"...)
	good := append(append([]byte{}, bad...), 0x05, 0xf6)
	bad = append(bad, 0x05, 0x82, 0x66)
	bad = append(bad, "status"...)
	bad = append(bad, 0xf6)
	var h Hello
	if err := DecodeBody(Frame{Type: MsgHello, Body: bad}, &h); !errors.Is(err, ErrProtocol) {
		t.Fatalf("a null capability: %v, %+v; want ErrProtocol", err, h)
	}
	h = Hello{}
	if err := DecodeBody(Frame{Type: MsgHello, Body: good}, &h); err != nil || h.Capabilities != nil || h.Version != 1 {
		t.Fatalf("null capabilities: %v, %+v; want them absent", err, h)
	}
}
