package wayray

import (
	"bytes"
	"errors"
	"io"
	"net"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/hotdesk/hotdesk/proto"
)

// streamConn is a net.Conn reading from a fixed stream: what a compositor
// wrote on its control socket.
type streamConn struct {
	net.Conn // nil: only the methods below are used
	r        *bytes.Reader
}

func (c *streamConn) Read(p []byte) (int, error)      { return c.r.Read(p) }
func (c *streamConn) SetReadDeadline(time.Time) error { return nil }

// FuzzReadMsg: whatever a compositor (run as the desktop's user, so
// hostile) writes on its control socket, ReadMsg yields frames of at most
// 16 KiB or an error wrapping ErrProtocol (or the end of the stream), and
// the bodies the broker reads from it (Hello, Reply) decode or fail with
// ErrProtocol: never a panic. A frame that decodes encodes and decodes
// again to the same frame.
func FuzzReadMsg(f *testing.F) {
	var seed bytes.Buffer
	for _, m := range []struct {
		t    uint16
		id   uint32
		body any
	}{
		{MsgHello, 0, Hello{Version: ProtocolVersion, Name: "wayray 0.1", PID: 42, Endpoint: "rdp://127.0.0.1:3390", Capabilities: []string{"status"}}},
		{MsgReply, 1, Reply{OK: true, Rendering: true, Clients: 1, UptimeMs: 99, State: "active"}},
		{MsgReply, 2, Reply{Code: CodeBadRequest, Error: "no"}},
		{MsgReply, 3, Reply{OK: true, Endpoint: "wayland:/run/x/wayland-0"}},
		{MsgDestroy, 4, Destroy{GraceMs: 5000}},
		{MsgResume, 5, Resume{}},
		{MsgPing, 6, nil},
	} {
		seed.Reset()
		if err := WriteMsg(&seed, m.t, m.id, m.body); err != nil {
			f.Fatal(err)
		}
		f.Add(bytes.Clone(seed.Bytes()))
	}
	frame := func(payload []byte) []byte {
		b, err := proto.AppendFrame(nil, payload)
		if err != nil {
			f.Fatal(err)
		}
		return b
	}
	f.Add(frame([]byte{0xa2, 0x01, 0x01, 0x09, 0x00}))             // unknown envelope key
	f.Add(frame([]byte{0xa2, 0x01, 0x01, 0x03, 0x42, 0xa1, 0x05})) // truncated body
	f.Add(frame([]byte{0xa2, 0x01, 0x01, 0x03, 0x45, 0xa1, 0x05, 0x81, 0xf6, 0x00}))
	f.Add([]byte{0x00, 0x01, 0x00, 0x00})
	f.Fuzz(func(t *testing.T, stream []byte) {
		c := &streamConn{r: bytes.NewReader(stream)}
		for {
			fr, err := ReadMsg(c, time.Second)
			if err != nil {
				if !errors.Is(err, ErrProtocol) && !errors.Is(err, io.EOF) && !errors.Is(err, io.ErrUnexpectedEOF) && !errors.Is(err, proto.ErrMalformed) {
					t.Fatalf("error %v wraps no sentinel", err)
				}
				return
			}
			if len(fr.Body) > maxControlFrame {
				t.Fatalf("body of %d bytes", len(fr.Body))
			}
			for _, v := range []any{&Hello{}, &Reply{}, &Destroy{}, &Resume{}} {
				if err := DecodeBody(fr, v); err != nil && !errors.Is(err, ErrProtocol) {
					t.Fatalf("body as %T: error %v is not ErrProtocol", v, err)
				}
			}
			var h Hello
			if DecodeBody(fr, &h) == nil && len(h.Capabilities) > maxArray {
				t.Fatalf("hello of %d capabilities", len(h.Capabilities))
			}
			// Round trip of the envelope.
			var b bytes.Buffer
			var body any
			if len(fr.Body) > 0 {
				body = fr.Body
			}
			if err := WriteMsg(&b, fr.Type, fr.ID, body); err != nil {
				t.Fatalf("re-encode %+v: %v", fr, err)
			}
			fr2, err := ReadMsg(&streamConn{r: bytes.NewReader(b.Bytes())}, 0)
			if err != nil {
				t.Fatalf("decode re-encoding: %v", err)
			}
			if fr2.Type != fr.Type || fr2.ID != fr.ID || !bytes.Equal(fr2.Body, fr.Body) {
				t.Fatalf("frame %+v re-decoded as %+v", fr, fr2)
			}
		}
	})
}

// FuzzValidEndpoint: an endpoint a compositor announces is accepted only
// in the forms the attach gateway can dial, and a wayland socket of a
// session only inside that session's directory.
func FuzzValidEndpoint(f *testing.F) {
	for _, s := range []string{
		"rdp://127.0.0.1:3390", "tcp://[::1]:1", "tcp://h:0", "rdp://:3390", "rdp://h:65536", "rdp://h:+1",
		"wayland:/srv/state/s1/wayland-0", "wayland:/srv/state/s1/../s2/w", "wayland:/run/hotdesk/admin.sock",
		"wayland:/srv/state/s1", "wayland:/srv/state/s10/w", "wayland:relative", "127.0.0.1:3390", "",
	} {
		f.Add(s)
	}
	s := &session{dir: "/srv/state/s1"}
	f.Fuzz(func(t *testing.T, ep string) {
		ok := ValidEndpoint(ep)
		if s.validEndpoint(ep) {
			if !ok {
				t.Fatalf("%q valid for a session, not in general", ep)
			}
			if path, isWayland := strings.CutPrefix(ep, "wayland:"); isWayland {
				rel, err := filepath.Rel(s.dir, path)
				if err != nil || rel == "." || rel == ".." || strings.HasPrefix(rel, "../") {
					t.Fatalf("%q is outside the session's directory", ep)
				}
			}
		}
		if !ok {
			return
		}
		if path, isWayland := strings.CutPrefix(ep, "wayland:"); isWayland {
			if !filepath.IsAbs(path) || filepath.Clean(path) != path {
				t.Fatalf("%q accepted", ep)
			}
			return
		}
		_, hostport, found := strings.Cut(ep, "://")
		host, port, err := net.SplitHostPort(hostport)
		if !found || err != nil || host == "" {
			t.Fatalf("%q accepted", ep)
		}
		if p, err := strconv.Atoi(port); err != nil || p < 1 || p > 65535 {
			t.Fatalf("%q accepted with port %q", ep, port)
		}
	})
}
