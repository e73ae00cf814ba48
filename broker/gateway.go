package broker

import (
	"context"
	"crypto/rand"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"strings"
	"sync"
	"time"

	"github.com/hotdesk/hotdesk/internal/clock"
	"github.com/hotdesk/hotdesk/proto"
)

// The attach gateway: terminals never reach a compositor directly. Attached
// carries a single-use ticket; the terminal connects to the broker's attach
// listener (TLS, same certificate), sends Attach{Ticket, TerminalID}, gets
// AttachOK, and from then on the connection is spliced to the session's
// compositor endpoint. A suspend, takeover or destroy of the session closes
// its streams at once, so a terminal that lost the session stops seeing it.
//
// A ticket for a TCP endpoint (weston's RDP backend) comes with a
// connection to the compositor opened when the ticket is issued (a
// predial): the compositor's per-connection set-up — for weston a FreeRDP
// peer with its codec contexts — is done while the Attached travels to the
// terminal and the terminal dials the gateway, not after. Nothing is sent
// on it until the ticket is redeemed; it belongs to the ticket: redeeming
// takes it, and a ticket revoked, expired or cut closes it.
const (
	ticketTTL  = 30 * time.Second
	maxTickets = 4096
	// maxPredials bounds the compositor connections held for tickets not
	// yet redeemed (each is a descriptor here and a peer in a compositor);
	// a ticket issued beyond it is dialed when redeemed.
	maxPredials = 64
	// dialTimeout bounds a dial to a compositor.
	dialTimeout = 5 * time.Second
)

type ticket struct {
	session  *Session
	terminal string
	expires  time.Time
	seq      uint64   // issue order, to revoke a session's oldest
	pre      *predial // the compositor connection opened ahead, or nil
}

// predial is a connection to a compositor endpoint opened ahead of need.
// Its dial goroutine is tracked by the broker's WaitGroup and ends within
// dialTimeout or at shutdown.
type predial struct {
	endpoint string
	cancel   context.CancelFunc
	done     chan struct{} // closed when the dial has ended
	expiry   clock.Timer   // drops the ticket and closes the connection at its expiry

	mu        sync.Mutex
	conn      net.Conn // after done: the connection, nil if the dial failed or it was taken
	discarded bool     // taken or dropped: a late dial closes its connection
	// end of fields guarded by mu
}

// startPredialLocked dials endpoint for ticket key unless it is not a TCP
// endpoint. Caller holds b.mu.
func (b *Broker) startPredialLocked(key, endpoint string) *predial {
	if !strings.HasPrefix(endpoint, "rdp://") && !strings.HasPrefix(endpoint, "tcp://") {
		return nil
	}
	ctx, cancel := context.WithCancel(context.Background())
	p := &predial{endpoint: endpoint, cancel: cancel, done: make(chan struct{})}
	stop := b.stop
	b.wg.Add(1)
	go func() {
		defer b.wg.Done()
		defer close(p.done)
		watched := make(chan struct{})
		go func() { // shutdown cancels the dial; ends with the dial
			defer close(watched)
			select {
			case <-stop:
				cancel()
			case <-ctx.Done():
			}
		}()
		defer func() { <-watched }()
		c, err := dialEndpoint(ctx, endpoint)
		cancel() // ends the watcher
		if err != nil {
			b.log.Debug("attach: compositor predial failed", "endpoint", endpoint, "error", err)
			return
		}
		p.mu.Lock()
		defer p.mu.Unlock()
		if p.discarded {
			c.Close()
			return
		}
		p.conn = c
	}()
	p.expiry = b.clk.AfterFunc(ticketTTL, func() {
		b.mu.Lock()
		if tk, ok := b.tickets[key]; ok && tk.pre == p {
			delete(b.tickets, key)
		}
		b.mu.Unlock()
		p.discard()
	})
	return p
}

// discard closes the connection (now or when its dial ends). Safe on nil
// and more than once.
func (p *predial) discard() {
	if p == nil {
		return
	}
	p.cancel()
	p.expiry.Stop()
	p.mu.Lock()
	p.discarded = true
	c := p.conn
	p.conn = nil
	p.mu.Unlock()
	if c != nil {
		c.Close()
	}
}

// take waits for the dial and returns its connection if it is to
// endpoint, or nil (then the caller dials itself).
func (p *predial) take(ctx context.Context, endpoint string) net.Conn {
	if p == nil {
		return nil
	}
	p.expiry.Stop()
	if p.endpoint != endpoint {
		p.discard()
		return nil
	}
	select {
	case <-p.done:
	case <-ctx.Done():
		p.discard()
		return nil
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	p.discarded = true
	c := p.conn
	p.conn = nil
	return c
}

// issueTicket returns a new single-use ticket for s at terminal t, or nil if
// the broker has no attach gateway or too many tickets are outstanding.
func (b *Broker) issueTicket(s *Session, t *terminal) []byte {
	if b.cfg.AttachAddr == "" {
		return nil
	}
	tk := make([]byte, 32)
	if _, err := rand.Read(tk); err != nil {
		panic(err)
	}
	now := b.clk.Now()
	b.mu.Lock()
	defer b.mu.Unlock()
	// A session holds at most MaxTicketsPerSession: re-presenting a token
	// churns its own tickets (the oldest is revoked) and never fills the
	// table shared by every user.
	var oldest string
	var oldestSeq uint64
	n, predials := 0, 0
	for k, v := range b.tickets {
		if v.pre != nil {
			predials++
		}
		if v.session != s {
			continue
		}
		n++
		if oldest == "" || v.seq < oldestSeq {
			oldest, oldestSeq = k, v.seq
		}
	}
	if n >= b.lim.MaxTicketsPerSession {
		b.tickets[oldest].pre.discard()
		delete(b.tickets, oldest)
		b.blog.Warn("max_tickets_per_session", "attach ticket revoked: session has too many outstanding", "session", s.ID, "terminal", logValue(t.id))
	}
	if len(b.tickets) >= maxTickets {
		for k, v := range b.tickets {
			if !now.Before(v.expires) {
				v.pre.discard()
				delete(b.tickets, k)
			}
		}
		if len(b.tickets) >= maxTickets {
			return nil
		}
	}
	b.ticketSeq++
	var pre *predial
	if predials < maxPredials && !b.closed {
		pre = b.startPredialLocked(string(tk), s.info.Endpoint)
	}
	b.tickets[string(tk)] = ticket{session: s, terminal: t.id, expires: now.Add(ticketTTL), seq: b.ticketSeq, pre: pre}
	return tk
}

// cutStreams revokes s's tickets and closes its display streams. Caller
// holds the token lock.
func (b *Broker) cutStreams(s *Session) {
	b.mu.Lock()
	for k, v := range b.tickets {
		if v.session == s {
			v.pre.discard()
			delete(b.tickets, k)
		}
	}
	streams := s.streams
	s.streams = nil
	b.mu.Unlock()
	for c := range streams {
		c.Close()
	}
}

// errTicket is what every refused ticket gets: reused, expired, foreign or
// for a session no longer shown at that terminal look the same to the peer.
var errTicket = errors.New("broker: attach: ticket invalid, expired, used or not for this terminal")

// redeem consumes a ticket and returns the session it attaches and the
// ticket's compositor connection opened ahead, if any (the caller's now).
func (b *Broker) redeem(req *proto.Attach) (*Session, *predial, error) {
	now := b.clk.Now()
	b.mu.Lock()
	defer b.mu.Unlock()
	tk, ok := b.tickets[string(req.Ticket)]
	delete(b.tickets, string(req.Ticket)) // single use, valid or not
	if !ok || !now.Before(tk.expires) || tk.terminal != req.TerminalID {
		tk.pre.discard()
		return nil, nil, errTicket
	}
	s := tk.session
	if b.byID[s.ID] != s || s.state != Active || s.term == nil || s.term.id != tk.terminal {
		tk.pre.discard()
		return nil, nil, errTicket
	}
	return s, tk.pre, nil
}

// ServeAttach runs the attach gateway on ln until ctx is cancelled, with
// the same accept back-off and connection limits as Serve.
func (b *Broker) ServeAttach(ctx context.Context, ln net.Listener, tlsCfg *tls.Config) error {
	stop := context.AfterFunc(ctx, func() { ln.Close() })
	defer stop()
	gate := newConnGate("attach", b.lim, b.blog)
	b.mu.Lock()
	b.attachGate = gate
	b.mu.Unlock()
	return acceptLoop(ln, func() bool { return ctx.Err() != nil }, b.blog, "attach", func(c net.Conn) {
		adm := gate.admit(c.RemoteAddr())
		if adm == nil {
			c.Close()
			return
		}
		b.wg.Add(1)
		go func() {
			defer b.wg.Done()
			defer adm.done()
			b.attachConn(ctx, tls.Server(c, tlsCfg), adm)
		}()
	})
}

func (b *Broker) attachConn(ctx context.Context, tc *tls.Conn, adm *admitted) {
	log := b.log.With("remote", tc.RemoteAddr().String())
	// The TLS handshake and the Attach together get HandshakeTimeout.
	expired := time.AfterFunc(b.lim.HandshakeTimeout, func() { tc.Close() })
	defer expired.Stop()
	hctx, cancel := context.WithTimeout(ctx, b.lim.HandshakeTimeout)
	err := tc.HandshakeContext(hctx)
	cancel()
	if err != nil {
		tc.Close()
		return
	}
	conn := proto.NewConn(tc, proto.WithReadTimeout(b.lim.HandshakeTimeout))
	m, err := conn.Recv()
	if err == nil && !expired.Stop() {
		err = errors.New("broker: attach: first message timed out")
	}
	if err != nil {
		if perr := proto.ErrorFor(err); perr != nil {
			_ = conn.Send(perr)
		}
		conn.Close()
		return
	}
	req, ok := m.Body.(*proto.Attach)
	if !ok {
		_ = conn.Send(&proto.Error{Code: proto.ErrProtocol, Message: "expected attach"})
		conn.Close()
		return
	}
	adm.authenticated()
	s, pre, err := b.redeem(req)
	if err != nil {
		b.blog.Warn("attach_refused", "attach refused", "remote", tc.RemoteAddr().String(), "terminal", logValue(req.TerminalID), "error", err)
		_ = conn.Send(&proto.Error{Code: proto.ErrAuthFailed, Message: "ticket invalid, expired, used or not for this terminal"})
		conn.Close()
		return
	}
	b.mu.Lock()
	endpoint := s.info.Endpoint
	b.mu.Unlock()
	display := pre.take(ctx, endpoint)
	if display == nil {
		display, err = dialEndpoint(ctx, endpoint)
	}
	if err != nil {
		log.Warn("attach: compositor unreachable", "session", s.ID, "error", err)
		_ = conn.Send(&proto.Error{Code: proto.ErrCompositor, Message: "session display unreachable"})
		conn.Close()
		return
	}
	// Register the stream unless the session was cut meanwhile.
	b.mu.Lock()
	live := b.byID[s.ID] == s && s.state == Active && s.term != nil && s.term.id == req.TerminalID
	if live {
		if s.streams == nil {
			s.streams = make(map[io.Closer]struct{})
		}
		s.streams[tc] = struct{}{}
		s.streams[display] = struct{}{}
	}
	b.mu.Unlock()
	if !live {
		display.Close()
		_ = conn.Send(&proto.Error{Code: proto.ErrAuthFailed, Message: "session no longer attached here"})
		conn.Close()
		return
	}
	if err := conn.Send(&proto.AttachOK{SessionID: s.ID}); err != nil {
		b.cutStream(s, tc, display)
		return
	}
	_ = tc.SetDeadline(time.Time{})
	log.Debug("display stream attached", "session", s.ID, "terminal", req.TerminalID)
	splice(tc, display)
	b.cutStream(s, tc, display)
}

// cutStream closes one stream of s and forgets it.
func (b *Broker) cutStream(s *Session, cs ...io.Closer) {
	b.mu.Lock()
	for _, c := range cs {
		delete(s.streams, c)
	}
	b.mu.Unlock()
	for _, c := range cs {
		c.Close()
	}
}

// dialEndpoint connects to a compositor endpoint: "wayland:/path/socket"
// (a unix socket) or "rdp://host:port" / "tcp://host:port".
func dialEndpoint(ctx context.Context, endpoint string) (net.Conn, error) {
	var d net.Dialer
	dctx, cancel := context.WithTimeout(ctx, dialTimeout)
	defer cancel()
	switch {
	case strings.HasPrefix(endpoint, "wayland:"):
		return d.DialContext(dctx, "unix", strings.TrimPrefix(endpoint, "wayland:"))
	case strings.HasPrefix(endpoint, "rdp://"), strings.HasPrefix(endpoint, "tcp://"):
		_, hostport, _ := strings.Cut(endpoint, "://")
		return d.DialContext(dctx, "tcp", hostport)
	}
	return nil, fmt.Errorf("broker: unsupported compositor endpoint %q", endpoint)
}

// maxDownBuffer bounds what the gateway holds of a compositor's output
// that the terminal has not taken yet.
const maxDownBuffer = 32 << 20

// splice copies both ways until either side ends: term → comp directly,
// comp → term through a buffer of up to maxDownBuffer, so that a terminal
// that is slow to read (a display client busy creating its window while
// the first frame arrives) does not push back on the compositor. Weston
// 10's RDP backend cannot take that: its non-blocking TLS write, retried
// with another length after a short write, fails ("SSL routines::bad
// length"), it drops the peer, and a client binding the peer's seat at
// that moment dies — the desktop shell among them, which ends weston.
func splice(term, comp net.Conn) {
	var wg sync.WaitGroup
	closeBoth := func() {
		term.Close()
		comp.Close()
	}
	wg.Add(2)
	go func() {
		defer wg.Done()
		_, _ = io.Copy(comp, term)
		closeBoth()
	}()
	go func() {
		defer wg.Done()
		bufferedCopy(term, comp, maxDownBuffer)
		closeBoth()
	}()
	wg.Wait()
}

// bufferedCopy copies src to dst, reading src as fast as it delivers and
// holding up to max bytes dst has not taken; it returns when src ends
// (after dst took the rest) or dst fails (then it closes src, so that a
// read in progress ends).
func bufferedCopy(dst io.Writer, src io.ReadCloser, max int) {
	var (
		mu      sync.Mutex
		cond    = sync.NewCond(&mu)
		queue   [][]byte
		held    int
		srcDone bool
		dstDead bool
	)
	done := make(chan struct{})
	go func() { // writer
		defer close(done)
		for {
			mu.Lock()
			for len(queue) == 0 && !srcDone {
				cond.Wait()
			}
			if len(queue) == 0 {
				mu.Unlock()
				return
			}
			b := queue[0]
			queue = queue[1:]
			mu.Unlock()
			_, err := dst.Write(b)
			mu.Lock()
			held -= len(b)
			if err != nil {
				dstDead = true
			}
			cond.Broadcast()
			mu.Unlock()
			if err != nil {
				src.Close()
				return
			}
		}
	}()
	buf := make([]byte, 32<<10)
	for {
		n, err := src.Read(buf)
		mu.Lock()
		if n > 0 {
			queue = append(queue, append([]byte(nil), buf[:n]...))
			held += n
			cond.Broadcast()
		}
		for held >= max && !dstDead {
			cond.Wait()
		}
		stop := err != nil || dstDead
		if stop {
			srcDone = true
			cond.Broadcast()
		}
		mu.Unlock()
		if stop {
			break
		}
	}
	<-done
}
