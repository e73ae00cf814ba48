package wayray

import (
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/fxamacker/cbor/v2"

	"github.com/hotdesk/hotdesk/proto"
)

// Message types of the control protocol (proto/COMPOSITOR.md).
const (
	MsgHello   = 1   // compositor → broker, first frame on every connection
	MsgSuspend = 2   // broker → compositor
	MsgResume  = 3   // broker → compositor
	MsgDestroy = 4   // broker → compositor
	MsgStatus  = 5   // broker → compositor
	MsgPing    = 6   // broker → compositor
	MsgReply   = 100 // compositor → broker, answers the request with the same ID
)

// ProtocolVersion is the control protocol version this package speaks.
const ProtocolVersion = 1

// Frame is one control message: {1: type, 2: id, 3: body}.
type Frame struct {
	Type uint16          `cbor:"1,keyasint"`
	ID   uint32          `cbor:"2,keyasint,omitempty"`
	Body cbor.RawMessage `cbor:"3,keyasint,omitempty"`
}

// Hello is the compositor's first frame.
type Hello struct {
	Version  uint16 `cbor:"1,keyasint"`
	Name     string `cbor:"2,keyasint"` // compositor name and version
	PID      int    `cbor:"3,keyasint"`
	Endpoint string `cbor:"4,keyasint"` // where a display client connects (rdp://127.0.0.1:P, ...)
	// Capabilities are optional features ("status", "resume-endpoint", ...);
	// at most 16.
	Capabilities []string `cbor:"5,keyasint,omitempty"`
}

// Resume asks the compositor to render again for a new client. Its body is
// an empty map (as it always was on the wire). Key 1 is reserved: the
// protocol once defined an optional Client (a terminal id for the
// compositor's logs) that no broker ever sent; it must not get another
// meaning, and a compositor ignores it as any unknown key.
type Resume struct{}

// Destroy asks the compositor to close every application and exit within
// GraceMs milliseconds.
type Destroy struct {
	GraceMs uint32 `cbor:"1,keyasint"`
}

// Reply answers a request.
type Reply struct {
	OK        bool   `cbor:"1,keyasint"`
	Error     string `cbor:"2,keyasint,omitempty"`
	Rendering bool   `cbor:"3,keyasint,omitempty"` // status: rendering a client now
	Clients   int    `cbor:"4,keyasint,omitempty"` // status: display clients connected
	Endpoint  string `cbor:"5,keyasint,omitempty"` // resume: where the client connects
	UptimeMs  uint64 `cbor:"6,keyasint,omitempty"` // status
	Code      uint16 `cbor:"7,keyasint,omitempty"` // with !OK: one of the Code* values
	State     string `cbor:"8,keyasint,omitempty"` // status: "active" or "suspended"
}

// Error codes of a refused request (Reply.Code).
const (
	CodeUnknownRequest = 1 // the compositor does not know the request type
	CodeBadRequest     = 2 // a body it cannot use
	CodeState          = 3 // not possible in the current state
	CodeInternal       = 4 // the compositor failed
)

// maxControlFrame bounds a control frame (far below proto.MaxFrame).
const maxControlFrame = 16 << 10

// Decoding limits of the control protocol (proto/COMPOSITOR.md): nesting
// (the envelope is level 1, the body level 2), elements of one array and
// pairs of one map.
const (
	maxNested   = 4
	maxArray    = 16
	maxMapPairs = 16
)

// decMode decodes bodies: strict in the same way as proto's decoder
// (proto.StrictDecOptions, and only the simple values false, true and null,
// anywhere), with the control protocol's smaller bounds; unknown body keys
// are ignored. frameMode decodes the envelope, where an unknown key is an
// error as in the terminal protocol.
var decMode, frameMode = func() (cbor.DecMode, cbor.DecMode) {
	opts := proto.StrictDecOptions(maxNested, maxArray, maxMapPairs)
	body, err := opts.DecMode()
	if err != nil {
		panic("wayray: cbor dec mode: " + err.Error())
	}
	opts.ExtraReturnErrors = cbor.ExtraDecErrorUnknownField
	frame, err := opts.DecMode()
	if err != nil {
		panic("wayray: cbor dec mode: " + err.Error())
	}
	return body, frame
}()

var encMode, _ = cbor.CoreDetEncOptions().EncMode()

// ErrProtocol reports a malformed or unexpected control frame.
var ErrProtocol = errors.New("wayray: control protocol error")

// WriteMsg writes one frame of type t with body (nil: none).
func WriteMsg(w io.Writer, t uint16, id uint32, body any) error {
	f := Frame{Type: t, ID: id}
	if body != nil {
		b, err := encMode.Marshal(body)
		if err != nil {
			return fmt.Errorf("wayray: encode body: %w", err)
		}
		f.Body = b
	}
	payload, err := encMode.Marshal(f)
	if err != nil {
		return fmt.Errorf("wayray: encode frame: %w", err)
	}
	if len(payload) > maxControlFrame {
		return fmt.Errorf("%w: frame of %d bytes", ErrProtocol, len(payload))
	}
	if err := proto.WriteFrame(w, payload); err != nil {
		return fmt.Errorf("wayray: write: %w", err)
	}
	return nil
}

// freezeGrace is how long ReadMsg looks once more after its deadline
// passed; after a deadline that fired late (this process did not run), it
// looks for a whole timeout again.
const freezeGrace = 250 * time.Millisecond

// ReadMsg reads one frame, waiting at most timeout (0: no limit). Frames
// above 16 KiB, bad framing and bad CBOR are ErrProtocol; the body stays raw
// (see DecodeBody). When the deadline passes, it looks once more, wherever
// in the frame it was: the deadline may have passed while this process was
// stopped (SIGSTOP, a paused VM) or starved, with the compositor's answer
// (or the rest of it: a frame's header and body are separate reads)
// waiting in the socket or on its way — not a broken compositor, which
// would be killed. It looks for freezeGrace, or for a whole timeout again
// when the deadline was reported more than freezeGrace late (this process
// did not run: the compositor, woken with it, may answer only now).
func ReadMsg(c net.Conn, timeout time.Duration) (Frame, error) {
	start := time.Now()
	if timeout > 0 {
		_ = c.SetReadDeadline(start.Add(timeout))
		defer c.SetReadDeadline(time.Time{})
	}
	payload, err := proto.ReadFrame(&freezeReader{c: c, start: start, timeout: timeout})
	if err != nil {
		if errors.Is(err, proto.ErrMalformed) || errors.Is(err, proto.ErrFrameTooLarge) {
			return Frame{}, fmt.Errorf("%w: %w", ErrProtocol, err)
		}
		return Frame{}, fmt.Errorf("wayray: read: %w", err)
	}
	if len(payload) > maxControlFrame {
		return Frame{}, fmt.Errorf("%w: frame of %d bytes", ErrProtocol, len(payload))
	}
	var f Frame
	if err := frameMode.Unmarshal(payload, &f); err != nil {
		return Frame{}, fmt.Errorf("%w: %v", ErrProtocol, err)
	}
	return f, nil
}

// freezeReader reads from c and, the first time a read fails on its
// deadline (nothing read by that call), sets a new deadline and reads again
// (ReadMsg): at most once per frame, so a compositor that stalls mid-frame
// is still cut off.
type freezeReader struct {
	c       net.Conn
	start   time.Time
	timeout time.Duration
	looked  bool
}

func (r *freezeReader) Read(p []byte) (int, error) {
	n, err := r.c.Read(p)
	if n == 0 && err != nil && r.timeout > 0 && !r.looked && errors.Is(err, os.ErrDeadlineExceeded) {
		r.looked = true
		again := freezeGrace
		if time.Since(r.start) > r.timeout+freezeGrace {
			again = r.timeout
		}
		_ = r.c.SetReadDeadline(time.Now().Add(again))
		n, err = r.c.Read(p)
	}
	return n, err
}

// ValidEndpoint reports whether endpoint is one the broker's attach gateway
// can connect to (proto/COMPOSITOR.md, Endpoints): "rdp://HOST:PORT" or
// "tcp://HOST:PORT" (a TCP port, 1-65535) or "wayland:/absolute/path" (a
// unix socket).
func ValidEndpoint(endpoint string) bool {
	if path, ok := strings.CutPrefix(endpoint, "wayland:"); ok {
		return filepath.IsAbs(path) && filepath.Clean(path) == path
	}
	for _, scheme := range []string{"rdp://", "tcp://"} {
		hostport, ok := strings.CutPrefix(endpoint, scheme)
		if !ok {
			continue
		}
		host, p, err := net.SplitHostPort(hostport)
		if err != nil || host == "" {
			return false
		}
		port, err := strconv.Atoi(p)
		return err == nil && port >= 1 && port <= 65535
	}
	return false
}

// DecodeBody decodes f's body into v.
func DecodeBody(f Frame, v any) error {
	if len(f.Body) == 0 {
		return nil
	}
	if err := decMode.Unmarshal(f.Body, v); err != nil {
		return fmt.Errorf("%w: body of type %d: %v", ErrProtocol, f.Type, err)
	}
	if err := proto.CheckNullElements(f.Body, v); err != nil {
		return fmt.Errorf("%w: body of type %d: %v", ErrProtocol, f.Type, err)
	}
	return nil
}
