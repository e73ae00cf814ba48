package etcdtest

import (
	"errors"
	"net"
	"strings"
	"sync"
	"testing"
	"time"
)

// proxyBufSize bounds what one direction of one proxied connection holds.
const proxyBufSize = 32 << 10

// Proxy is a TCP proxy between etcd clients and one etcd member, for fault
// tests: Blackhole partitions the clients from the member without closing
// anything, Heal ends the partition, CloseConns resets every connection,
// SetDelay slows every byte down (a slow or loaded link).
// It is safe for concurrent use.
type Proxy struct {
	target string
	ln     net.Listener
	wg     sync.WaitGroup

	mu     sync.Mutex
	gate   chan struct{} // non-nil while blackholed; closed by Heal
	delay  time.Duration // added to every chunk, each direction (SetDelay)
	conns  map[*proxyConn]struct{}
	closed bool
}

type proxyConn struct {
	client, server net.Conn
	once           sync.Once
	done           chan struct{} // closed when the pair is closed
}

// close closes both sides; reset sends a TCP RST instead of a FIN.
func (c *proxyConn) close(reset bool) {
	c.once.Do(func() {
		if reset {
			for _, nc := range []net.Conn{c.client, c.server} {
				if tc, ok := nc.(*net.TCPConn); ok {
					tc.SetLinger(0)
				}
			}
		}
		c.client.Close()
		c.server.Close()
		close(c.done)
	})
}

// NewProxy listens on a free 127.0.0.1 port and forwards every connection to
// target ("host:port"; an "http://" prefix, as in an etcd endpoint, is
// accepted). It is closed, with every connection, by t.Cleanup.
func NewProxy(t testing.TB, target string) *Proxy {
	t.Helper()
	target = strings.TrimPrefix(target, "http://")
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("etcdtest: proxy: %v", err)
	}
	p := &Proxy{target: target, ln: ln, conns: map[*proxyConn]struct{}{}}
	p.wg.Add(1)
	go p.accept()
	t.Cleanup(p.close)
	return p
}

// URL returns "http://127.0.0.1:port", for clientv3.Config.Endpoints.
func (p *Proxy) URL() string { return "http://" + p.ln.Addr().String() }

// Blackhole stops forwarding in both directions. Connections stay open and
// new ones are still accepted; bytes are held (what the proxy has read waits
// in its buffer, the rest backs up in the kernel), so the peers see a
// partition — silence — not a reset.
func (p *Proxy) Blackhole() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.gate == nil {
		p.gate = make(chan struct{})
	}
}

// Heal resumes forwarding on every connection, new and existing: the held
// bytes are delivered, as after a healed partition.
func (p *Proxy) Heal() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.gate != nil {
		close(p.gate)
		p.gate = nil
	}
}

// CloseConns resets every proxied connection now (both sides get a RST).
// The proxy keeps accepting new connections.
func (p *Proxy) CloseConns() {
	p.mu.Lock()
	conns := make([]*proxyConn, 0, len(p.conns))
	for c := range p.conns {
		conns = append(conns, c)
	}
	p.mu.Unlock()
	for _, c := range conns {
		c.close(true)
	}
}

func (p *Proxy) close() {
	p.mu.Lock()
	p.closed = true
	p.mu.Unlock()
	p.ln.Close()
	p.CloseConns()
	p.wg.Wait()
}

func (p *Proxy) accept() {
	defer p.wg.Done()
	for {
		client, err := p.ln.Accept()
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			time.Sleep(10 * time.Millisecond) // e.g. EMFILE: do not spin
			continue
		}
		server, err := net.DialTimeout("tcp", p.target, 5*time.Second)
		if err != nil {
			client.Close() // the member is down: as if the connection was refused
			continue
		}
		c := &proxyConn{client: client, server: server, done: make(chan struct{})}
		p.mu.Lock()
		if p.closed {
			p.mu.Unlock()
			c.close(true)
			return
		}
		p.conns[c] = struct{}{}
		p.wg.Add(2)
		p.mu.Unlock()
		go p.pipe(c, c.server, c.client)
		go p.pipe(c, c.client, c.server)
	}
}

// pipe copies src to dst through the gate until either side fails or the
// pair is closed; then it closes the pair.
func (p *Proxy) pipe(c *proxyConn, dst, src net.Conn) {
	defer p.wg.Done()
	defer func() {
		c.close(false)
		p.mu.Lock()
		delete(p.conns, c)
		p.mu.Unlock()
	}()
	buf := make([]byte, proxyBufSize)
	for {
		n, err := src.Read(buf)
		if n > 0 {
			if !p.pass(c) {
				return
			}
			if _, werr := dst.Write(buf[:n]); werr != nil {
				return
			}
		}
		if err != nil { // EOF, a reset, or the pair closed: it ends either way
			return
		}
	}
}

// SetDelay holds every chunk read from either side for d before it is
// passed on: a round trip through the proxy takes at least 2d. Zero ends it.
func (p *Proxy) SetDelay(d time.Duration) {
	p.mu.Lock()
	p.delay = d
	p.mu.Unlock()
}

// pass waits while the proxy is blackholed, and for its delay; false if
// the pair was closed meanwhile.
func (p *Proxy) pass(c *proxyConn) bool {
	for {
		p.mu.Lock()
		g, d := p.gate, p.delay
		p.mu.Unlock()
		if g == nil && d > 0 {
			select {
			case <-time.After(d):
			case <-c.done:
				return false
			}
			d = 0
			p.mu.Lock()
			g = p.gate
			p.mu.Unlock()
		}
		if g == nil {
			return true
		}
		select {
		case <-g:
		case <-c.done:
			return false
		}
	}
}
