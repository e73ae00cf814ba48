package proto

import (
	"fmt"
	"net"
	"sync"
	"time"

	"github.com/hotdesk/hotdesk/internal/clock"
)

// Default Conn timeouts.
const (
	DefaultReadTimeout  = 60 * time.Second
	DefaultWriteTimeout = 10 * time.Second
)

// Conn sends and receives messages over a net.Conn, normally a *tls.Conn.
// Send is safe for concurrent use; Recv must be called from one goroutine at
// a time. Close may be called at any time, from any goroutine, and makes
// pending Send and Recv calls return.
type Conn struct {
	c            net.Conn
	clk          clock.Clock
	readTimeout  time.Duration
	writeTimeout time.Duration

	wmu sync.Mutex // serialises frames written by Send
}

// ConnOption configures a Conn.
type ConnOption func(*Conn)

// WithReadTimeout bounds the reading of one whole frame, counted from the
// moment Recv starts waiting for it (so it also bounds the silence between
// frames). d ≤ 0 means no deadline. Default DefaultReadTimeout.
func WithReadTimeout(d time.Duration) ConnOption { return func(c *Conn) { c.readTimeout = d } }

// WithWriteTimeout bounds the writing of one frame. d ≤ 0 means no
// deadline. Default DefaultWriteTimeout.
func WithWriteTimeout(d time.Duration) ConnOption { return func(c *Conn) { c.writeTimeout = d } }

// WithClock sets the clock from which read and write deadlines are
// computed (default clock.Real). Deadlines are absolute times handed to the
// net.Conn, so a fake clock should stay close to wall time; tests use it to
// produce deadlines that have already passed.
func WithClock(clk clock.Clock) ConnOption { return func(c *Conn) { c.clk = clk } }

// NewConn wraps c. The Conn owns c from now on: Close closes it.
func NewConn(c net.Conn, opts ...ConnOption) *Conn {
	pc := &Conn{c: c, clk: clock.Real{}, readTimeout: DefaultReadTimeout, writeTimeout: DefaultWriteTimeout}
	for _, o := range opts {
		o(pc)
	}
	return pc
}

// Send encodes body (a message struct or a pointer to one; its type is
// inferred with TypeOf) and writes it as one frame within the write timeout.
// After a write error (including a timeout) the connection is unusable.
func (c *Conn) Send(body any) error {
	t, err := TypeOf(body)
	if err != nil {
		return err
	}
	payload, err := Encode(t, body)
	if err != nil {
		return err
	}
	buf, err := AppendFrame(make([]byte, 0, headerLen+len(payload)), payload)
	if err != nil {
		return err
	}
	c.wmu.Lock()
	defer c.wmu.Unlock()
	if c.writeTimeout > 0 {
		if err := c.c.SetWriteDeadline(c.clk.Now().Add(c.writeTimeout)); err != nil {
			return fmt.Errorf("proto: send %v: %w", t, err)
		}
	}
	if _, err := c.c.Write(buf); err != nil {
		return fmt.Errorf("proto: send %v: %w", t, err)
	}
	return nil
}

// Recv reads and decodes the next frame within the read timeout. It returns
// io.EOF (unwrapped) if the peer closed the connection cleanly between
// frames; errors wrapping ErrFrameTooLarge, ErrMalformed or ErrUnknownType
// for bad frames (see ReadFrame and Decode); and wrapped network errors,
// including timeouts (net.Error with Timeout() true). Every error ends the
// conversation: send the peer ErrorFor(err) if it is not nil, then Close.
func (c *Conn) Recv() (Msg, error) {
	if c.readTimeout > 0 {
		if err := c.c.SetReadDeadline(c.clk.Now().Add(c.readTimeout)); err != nil {
			return Msg{}, fmt.Errorf("proto: recv: %w", err)
		}
	}
	payload, err := ReadFrame(c.c)
	if err != nil {
		return Msg{}, err
	}
	return Decode(payload)
}

// Close closes the underlying connection.
func (c *Conn) Close() error { return c.c.Close() }

// RemoteAddr returns the peer's network address.
func (c *Conn) RemoteAddr() net.Addr { return c.c.RemoteAddr() }

// NetConn returns the wrapped connection (e.g. to read the TLS state).
// Reading from or writing to it directly interleaves with Recv and Send.
func (c *Conn) NetConn() net.Conn { return c.c }
