package broker

import (
	"context"
	"crypto/rand"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"strconv"
	"strings"
	"sync"
	"time"

	"golang.org/x/sys/unix"

	"github.com/hotdesk/hotdesk/internal/procnet"
	"github.com/hotdesk/hotdesk/proto"
)

// The attach gateway: terminals never reach a compositor directly. Attached
// carries a single-use ticket; the terminal connects to the broker's attach
// listener (TLS, same certificate), sends Attach{Ticket, TerminalID}, gets
// AttachOK, and from then on the connection is spliced to the session's
// compositor endpoint. A suspend, takeover or destroy of the session closes
// its streams at once, so a terminal that lost the session stops seeing it.
const (
	ticketTTL  = 30 * time.Second
	maxTickets = 4096
	// dialTimeout bounds a dial to a compositor.
	dialTimeout = 5 * time.Second
)

type ticket struct {
	session  *Session
	terminal string
	expires  time.Time
	seq      uint64 // issue order, to revoke a session's oldest
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
	n := 0
	for k, v := range b.tickets {
		if v.session != s {
			continue
		}
		n++
		if oldest == "" || v.seq < oldestSeq {
			oldest, oldestSeq = k, v.seq
		}
	}
	if n >= b.lim.MaxTicketsPerSession {
		delete(b.tickets, oldest)
		b.limitHit(LimitTicketsPerSession, "")
		b.blog.Warn("max_tickets_per_session", "attach ticket revoked: session has too many outstanding", "session", s.ID, "terminal", logValue(t.id))
	}
	if len(b.tickets) >= maxTickets {
		for k, v := range b.tickets {
			if !now.Before(v.expires) {
				delete(b.tickets, k)
			}
		}
		if len(b.tickets) >= maxTickets {
			return nil
		}
	}
	b.ticketSeq++
	b.tickets[string(tk)] = ticket{session: s, terminal: t.id, expires: now.Add(ticketTTL), seq: b.ticketSeq}
	return tk
}

// cutStreams revokes s's tickets and closes its display streams. Caller
// holds the token lock.
func (b *Broker) cutStreams(s *Session) {
	b.mu.Lock()
	for k, v := range b.tickets {
		if v.session == s {
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

// redeem consumes a ticket and returns the session it attaches.
func (b *Broker) redeem(req *proto.Attach) (*Session, error) {
	now := b.clk.Now()
	b.mu.Lock()
	defer b.mu.Unlock()
	tk, ok := b.tickets[string(req.Ticket)]
	delete(b.tickets, string(req.Ticket)) // single use, valid or not
	if !ok || !now.Before(tk.expires) || tk.terminal != req.TerminalID {
		return nil, errTicket
	}
	s := tk.session
	if b.byID[s.ID] != s || s.state != Active || s.term == nil || s.term.id != tk.terminal {
		return nil, errTicket
	}
	return s, nil
}

// ServeAttach runs the attach gateway on ln until ctx is cancelled, with
// the same accept back-off and connection limits as Serve.
func (b *Broker) ServeAttach(ctx context.Context, ln net.Listener, tlsCfg *tls.Config) error {
	return b.serveTLS(ctx, ln, tlsCfg, "attach", &b.attachGate, b.attachConn)
}

func (b *Broker) attachConn(ctx context.Context, tc *tls.Conn, adm *admitted) {
	log := b.log.With("remote", tc.RemoteAddr().String())
	conn, req := b.readAttach(ctx, tc)
	if req == nil {
		return
	}
	if !adm.authenticated() {
		// Evicted after its Attach was read: the ticket stays unspent for
		// the terminal's next attempt.
		log.Debug("attach: connection evicted before its ticket was redeemed", "terminal", logValue(req.TerminalID))
		conn.Close()
		return
	}
	s, err := b.redeem(req)
	if err != nil {
		b.blog.Warn("attach_refused", "attach refused", "remote", tc.RemoteAddr().String(), "terminal", logValue(req.TerminalID), "error", err)
		_ = conn.Send(&proto.Error{Code: proto.ErrAuthFailed, Message: "ticket invalid, expired, used or not for this terminal"})
		conn.Close()
		return
	}
	display, err := b.dialDisplay(ctx, s)
	if err != nil {
		log.Warn("attach: compositor unreachable", "session", s.ID, "error", err)
		_ = conn.Send(&proto.Error{Code: proto.ErrCompositor, Message: "session display unreachable"})
		conn.Close()
		return
	}
	// Register the stream unless the session was cut meanwhile. A session
	// has one display stream: a new one (its terminal's display client
	// reconnecting) replaces the one before, so that each holds at most
	// maxDownBuffer of the session's output, not one per ticket redeemed.
	b.mu.Lock()
	live := b.byID[s.ID] == s && s.state == Active && s.term != nil && s.term.id == req.TerminalID
	var replaced map[io.Closer]struct{}
	if live {
		replaced = s.streams
		s.streams = map[io.Closer]struct{}{tc: {}, display: {}}
	}
	b.mu.Unlock()
	for c := range replaced {
		c.Close()
	}
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

// readAttach completes tc's TLS handshake and reads its Attach, the two
// within HandshakeTimeout. On failure it has answered (a protocol error;
// nothing when the time ran out) and closed tc, and req is nil.
func (b *Broker) readAttach(ctx context.Context, tc *tls.Conn) (conn *proto.Conn, req *proto.Attach) {
	expired := time.AfterFunc(b.lim.HandshakeTimeout, func() { tc.Close() })
	defer expired.Stop()
	hctx, cancel := context.WithTimeout(ctx, b.lim.HandshakeTimeout)
	err := tc.HandshakeContext(hctx)
	cancel()
	if err != nil {
		tc.Close()
		return nil, nil
	}
	// One bound for the whole: expired closes tc, and a silent peer is
	// closed without an Error (PROTOCOL.md §7.6). A read timeout of the
	// conn's own, started later, could fire first on a loaded machine
	// (expired's goroutine not run yet) and answer protocol_error.
	conn = proto.NewConn(tc, proto.WithReadTimeout(0))
	m, err := conn.Recv()
	if err == nil && !expired.Stop() {
		err = errors.New("broker: attach: first message timed out")
	}
	if err != nil {
		if perr := proto.ErrorFor(err); perr != nil {
			_ = conn.Send(perr)
		}
		conn.Close()
		return nil, nil
	}
	req, ok := m.Body.(*proto.Attach)
	if !ok {
		_ = conn.Send(&proto.Error{Code: proto.ErrProtocol, Message: "expected attach"})
		conn.Close()
		return nil, nil
	}
	return conn, req
}

// dialDisplay connects to s's display endpoint and checks that the
// compositor of s (its pid) listens there and is the peer; an RDP
// connection is wrapped to settle its first output (newSettleConn).
func (b *Broker) dialDisplay(ctx context.Context, s *Session) (net.Conn, error) {
	b.mu.Lock()
	endpoint, pid := s.info.Endpoint, s.info.PID
	b.mu.Unlock()
	display, err := dialEndpoint(ctx, endpoint)
	if err != nil {
		return nil, err
	}
	if err := checkListener(endpoint, pid); err != nil {
		display.Close()
		return nil, err
	}
	if err := checkPeer(display, pid); err != nil {
		display.Close()
		return nil, err
	}
	if strings.HasPrefix(endpoint, "rdp://") {
		display = newSettleConn(display, rdpSettle, b.goAttach, b.stop)
	}
	return display, nil
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

// checkListener makes sure, after the gateway connected to a TCP endpoint
// (rdp:// or tcp://), that the port's listener is the session's compositor
// (pid): any local user may bind a loopback port, and one that took the
// port of a compositor that died would otherwise get the terminal's display
// stream, keystrokes and all. For a unix socket endpoint (display, the
// connection dialEndpoint made) the peer must be pid, see dialUnix.
func checkListener(endpoint string, pid int) error {
	hostport, ok := strings.CutPrefix(endpoint, "rdp://")
	if !ok {
		hostport, ok = strings.CutPrefix(endpoint, "tcp://")
	}
	if !ok {
		return nil
	}
	_, p, err := net.SplitHostPort(hostport)
	port, perr := strconv.Atoi(p)
	if err != nil || perr != nil {
		return fmt.Errorf("broker: endpoint %q: no port", endpoint)
	}
	if !procnet.ListenerOf("/proc", pid, port) {
		return fmt.Errorf("broker: %s is not served by the session's compositor (pid %d)", hostport, pid)
	}
	return nil
}

// dialEndpoint connects to a compositor endpoint: "wayland:/path/socket"
// (a unix socket) or "rdp://host:port" / "tcp://host:port".
func dialEndpoint(ctx context.Context, endpoint string) (net.Conn, error) {
	var d net.Dialer
	dctx, cancel := context.WithTimeout(ctx, dialTimeout)
	defer cancel()
	switch {
	case strings.HasPrefix(endpoint, "wayland:"):
		return dialUnix(dctx, &d, strings.TrimPrefix(endpoint, "wayland:"))
	case strings.HasPrefix(endpoint, "rdp://"), strings.HasPrefix(endpoint, "tcp://"):
		_, hostport, _ := strings.Cut(endpoint, "://")
		return d.DialContext(dctx, "tcp", hostport)
	}
	return nil, fmt.Errorf("broker: unsupported compositor endpoint %q", endpoint)
}

// dialUnix connects to the unix socket at path without following a link
// there. A desktop's socket is in its run directory (its XDG_RUNTIME_DIR),
// which belongs to the desktop's user: they may replace the socket with a
// link to any socket of the host, and the gateway, root, would connect to
// it and splice the terminal to it: the system bus or hotdeskd's own admin
// socket, where a root peer may do anything, or another user's desktop.
// So the path is opened without following a link (O_PATH|O_NOFOLLOW),
// must be a socket, and is connected to through that descriptor.
func dialUnix(ctx context.Context, d *net.Dialer, path string) (net.Conn, error) {
	fd, err := unix.Open(path, unix.O_PATH|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("broker: open %s: %w", path, err)
	}
	defer unix.Close(fd)
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		return nil, fmt.Errorf("broker: stat %s: %w", path, err)
	}
	if st.Mode&unix.S_IFMT != unix.S_IFSOCK {
		return nil, fmt.Errorf("broker: %s is not a socket (mode %#o)", path, st.Mode)
	}
	return d.DialContext(ctx, "unix", "/proc/self/fd/"+strconv.Itoa(fd))
}

// checkPeer makes sure that the unix socket display is connected to was
// made by the session's compositor (pid; SO_PEERCRED): the desktop's user
// may also remove the compositor's socket and listen there themselves, or
// a compositor that died may have left its path to anyone. A connection of
// another kind passes.
func checkPeer(display net.Conn, pid int) error {
	uc, ok := display.(*net.UnixConn)
	if !ok {
		return nil
	}
	raw, err := uc.SyscallConn()
	if err != nil {
		return err
	}
	var cred *unix.Ucred
	var cerr error
	if err := raw.Control(func(fd uintptr) {
		cred, cerr = unix.GetsockoptUcred(int(fd), unix.SOL_SOCKET, unix.SO_PEERCRED)
	}); err != nil {
		return err
	}
	if cerr != nil {
		return fmt.Errorf("broker: peer of the display socket: %w", cerr)
	}
	if pid <= 0 || int(cred.Pid) != pid {
		return fmt.Errorf("broker: the display socket is served by pid %d, not the session's compositor (pid %d)", cred.Pid, pid)
	}
	return nil
}

// maxDownBuffer bounds what the gateway holds of a compositor's output
// that the terminal has not taken yet.
const maxDownBuffer = 32 << 20

// splice copies both ways until either side ends: term → comp directly,
// comp → term through a buffer of up to maxDownBuffer, so that a terminal
// that is slow to read (a display client busy creating its window while
// the first frames arrive, 3 MB each) does not push back on the
// compositor: weston's RDP backend writes from its one event loop, and a
// write it has to wait on stalls every application of the session.
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
