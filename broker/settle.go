package broker

import (
	"io"
	"net"
	"sync"
	"time"
)

// rdpSettle is how long after the gateway opened an RDP stream it keeps
// the compositor's side of it open, however soon the terminal's side ends.
//
// Weston 10 gives every RDP peer a wl_seat when it activates the
// connection (a few hundred milliseconds after it opened, seconds under
// load) and destroys the global at once when the peer disconnects. Its
// helper clients bind every seat they are told of; one still binding it
// when the global is gone (tens of milliseconds after the announcement
// here at load 9, more under heavier load) is killed with "invalid global
// wl_seat". The desktop shell killed within 30 s of weston's start makes
// weston quit ("weston-desktop-shell apparently cannot run at all"): the
// session, and everything of its user's in it, is lost; later, the shell
// is respawned, at most five times in 30 s, and then the desktop goes
// without it. A stream ended right after it began — a card pulled just
// after it went in, a display client killed, a hot-desk on a loaded
// server — did exactly that. Later weston versions remove the global
// first (wl_global_remove) and destroy it later; until then the gateway
// ends no RDP connection before its seat's clients have had the time.
//
// Only the compositor's side lingers: the terminal's is closed at once,
// so the display stops where the token left as before. Meanwhile what
// weston sends is read and dropped (a write it had to wait on would stall
// the whole desktop), and nothing is sent to it.
const rdpSettle = 5 * time.Second

// settleConn is the compositor's side of an RDP stream; Close ends it no
// sooner than until. Its times are the wall clock's: they are network
// deadlines.
type settleConn struct {
	net.Conn
	until time.Time
	// spawn runs the drain on a goroutine its owner waits for (the
	// broker's goAttach), or reports false (the owner is stopping: the
	// connection is closed at once); stop, closed when the owner stops,
	// ends a drain under way.
	spawn func(func()) bool
	stop  <-chan struct{}

	mu      sync.Mutex
	closed  bool
	readers sync.WaitGroup // Reads in progress; none starts once closed
}

func newSettleConn(c net.Conn, settle time.Duration, spawn func(func()) bool, stop <-chan struct{}) *settleConn {
	return &settleConn{Conn: c, until: time.Now().Add(settle), spawn: spawn, stop: stop}
}

func (c *settleConn) Read(p []byte) (int, error) {
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		return 0, net.ErrClosed
	}
	c.readers.Add(1)
	c.mu.Unlock()
	defer c.readers.Done()
	return c.Conn.Read(p)
}

func (c *settleConn) Write(p []byte) (int, error) {
	c.mu.Lock()
	closed := c.closed
	c.mu.Unlock()
	if closed {
		return 0, net.ErrClosed
	}
	return c.Conn.Write(p)
}

// Close returns at once. To its callers the connection is closed: a Read
// in progress ends, later Reads and Writes fail. Before until, the
// connection itself is drained in the background and closed at until,
// when the compositor closes it, or when the owner stops (a daemon
// stopping does not wait for its streams: a stop longer than the lease
// costs every desktop its claim).
func (c *settleConn) Close() error {
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		return nil
	}
	c.closed = true
	c.mu.Unlock()
	if !time.Now().Before(c.until) {
		return c.Conn.Close()
	}
	_ = c.Conn.SetReadDeadline(time.Now()) // ends the splice's Read
	if !c.spawn(c.drain) {
		return c.Conn.Close()
	}
	return nil
}

// drain reads and drops what the compositor sends until c.until, the
// compositor's close or the owner's stop, then closes the connection.
func (c *settleConn) drain() {
	c.readers.Wait()
	_ = c.Conn.SetReadDeadline(c.until)
	drained := make(chan struct{})
	go func() { // bounded by drained: ends with the drain
		select {
		case <-c.stop:
			_ = c.Conn.SetReadDeadline(time.Now())
		case <-drained:
		}
	}()
	_, _ = io.Copy(io.Discard, c.Conn)
	close(drained)
	c.Conn.Close()
}
