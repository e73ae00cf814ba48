package httpserve

import (
	"net"
	"sync"

	"golang.org/x/net/netutil"
)

// Limit bounds the connections ln hands out: at most total at once (more
// wait in the kernel's accept queue, costing no descriptor), and at most
// perSource from one IP address (more are closed as soon as accepted), so
// that one client holding connections open cannot keep every other one
// waiting.
func Limit(ln net.Listener, total, perSource int) net.Listener {
	return &sourceLimit{Listener: netutil.LimitListener(ln, total), max: perSource, open: map[string]int{}}
}

type sourceLimit struct {
	net.Listener
	max int

	mu   sync.Mutex
	open map[string]int // connections per source IP; guarded by mu
}

func (l *sourceLimit) Accept() (net.Conn, error) {
	for {
		c, err := l.Listener.Accept()
		if err != nil {
			return nil, err
		}
		host, _, err := net.SplitHostPort(c.RemoteAddr().String())
		if err != nil {
			host = c.RemoteAddr().String()
		}
		l.mu.Lock()
		full := l.open[host] >= l.max
		if !full {
			l.open[host]++
		}
		l.mu.Unlock()
		if full {
			c.Close()
			continue
		}
		return &sourceConn{Conn: c, release: func() { l.release(host) }}, nil
	}
}

func (l *sourceLimit) release(host string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.open[host]--; l.open[host] <= 0 {
		delete(l.open, host)
	}
}

// sourceConn gives its source's slot back once, at its first Close.
type sourceConn struct {
	net.Conn
	once    sync.Once
	release func()
}

func (c *sourceConn) Close() error {
	err := c.Conn.Close()
	c.once.Do(c.release)
	return err
}
