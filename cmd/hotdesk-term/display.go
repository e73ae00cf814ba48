package main

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/hashicorp/go-hclog"

	"github.com/hotdesk/hotdesk/cmd/hotdesk-term/rdpwake"
	"github.com/hotdesk/hotdesk/cmd/internal/splice"
	"github.com/hotdesk/hotdesk/internal/clock"
	"github.com/hotdesk/hotdesk/proto"
)

// The terminal's display path. A display client (FreeRDP) never reaches a
// compositor: it connects to a loopback relay of the agent ("{addr}" in
// its command line), and the relay redeems the Attached ticket at the
// broker's attach gateway and splices the client to the session's display
// stream.
//
// The client is started ahead of need: when the agent starts, again after
// every session it showed, and again (with backoff) when it ends on its own
// while idle. The relay accepts its connection at once and holds it — no
// byte goes anywhere, nothing is shown — until a ticket arrives. Process
// start, library loading and the client's own set-up (for FreeRDP as long
// as the rest of the hot-desk) are so off the path from the card to the
// pixels. A client shows at most one session: on Detached it is killed
// (its window goes with it) and a fresh one is started to wait for the
// next ticket.
//
// The relay's loopback listener takes one connection, from a process of
// the agent's own user (the socket's owner, read from /proc/net/tcp): a
// connection from another local user is closed and the relay goes on
// waiting for its client, so nobody else can take the session's stream.
//
// A FreeRDP 2 client (xfreerdp, wlfreerdp) gets hotdesk-rdpwake preloaded
// when it is installed (package rdpwake): its connection sequence then
// waits on its socket instead of in 100 ms sleeps, half a second less from
// the card to the pixels.
//
// A client whose connection the relay holds is announced by a
// "display_ready" event: from then on a ticket is all it needs.
//
// The agent uses four calls, all from its loop: start (once), attach (on
// Attached with a gateway endpoint and a ticket), detach (on Detached of
// the shown session) and close (on exit).

// Bounds of the restart backoff of a client that ends while idle.
const (
	displayMinBackoff = time.Second
	displayMaxBackoff = 30 * time.Second
)

// freeRDPCommand is the built-in display client: "-display freerdp" runs
// it (hotdesk-bench's pixels scenario keeps a copy in step). Full screen;
// TLS security only (weston offers nothing else, and the terminal's trust
// is the pinned attach gateway and the ticket, not the per-session
// certificate behind it, hence /cert:ignore; no credentials: weston asks
// none); 24-bit colour (at 32 bits FreeRDP offers NSCodec, which weston
// then encodes every frame with); no bulk compression (on a LAN it costs
// both ends more CPU than it saves); no clipboard, sound or device
// channels (weston serves none, and each is a channel join and a client
// set-up on the way to the first frame).
var freeRDPCommand = []string{"xfreerdp", "/v:{addr}", "/cert:ignore", "/sec:tls", "/bpp:24", "-compression", "/audio-mode:2", "-clipboard", "/f"}

// displayCommand parses -display: "freerdp" is the built-in FreeRDP
// command; anything else is split on spaces.
func displayCommand(s string) []string {
	if strings.TrimSpace(s) == "freerdp" {
		return append([]string(nil), freeRDPCommand...)
	}
	return strings.Fields(s)
}

// displayConfig configures a display.
type displayConfig struct {
	Command  []string // "{addr}" becomes the relay's address
	Terminal string   // TerminalID, sent with the ticket
	// Timeout bounds the gateway dial + handshake (in real time) and the
	// wait for the client's connection to the relay (on Clock).
	Timeout time.Duration
	// Clock times the backoff before an idle client that ended is
	// started again, and the wait for a client handed a ticket to connect
	// to the relay (default clock.Real): the agent's.
	Clock  clock.Clock
	Logger hclog.Logger
	Emit   func(event)
	// Lost, if set, is called (from a goroutine of the display's) when
	// the client showing session ended by itself: no detach or newer
	// attach stopped it (FreeRDP failed, or the compositor dropped its
	// connection). The session is still shown at the terminal; only a new
	// ticket brings the picture back.
	Lost func(session string)
}

// displayPreload returns the LD_PRELOAD value for command's processes: the
// hotdesk-rdpwake library (next to the agent's executable, in
// /usr/lib/hotdesk, or $HOTDESK_RDPWAKE) for a FreeRDP 2 client, "" for
// any other command or when it is not installed.
func displayPreload(command []string, log hclog.Logger) string {
	if len(command) == 0 {
		return ""
	}
	switch filepath.Base(command[0]) {
	case "xfreerdp", "wlfreerdp":
	default:
		return ""
	}
	exe, _ := os.Executable()
	lib, err := rdpwake.Find(exe)
	if err != nil {
		log.Warn("display client: not preloading hotdesk-rdpwake", "error", err)
		return ""
	}
	if lib == "" {
		log.Debug("display client: hotdesk-rdpwake not installed; FreeRDP connects at its own pace")
		return ""
	}
	if cur := os.Getenv("LD_PRELOAD"); cur != "" {
		return lib + ":" + cur
	}
	return lib
}

// display runs the terminal's display client and its relay. Its methods
// are called from the agent's loop; its goroutines end by close.
type display struct {
	cfg     displayConfig
	preload string          // LD_PRELOAD of the client processes, if any
	ctx     context.Context // from start
	wg      sync.WaitGroup  // every client's goroutines

	mu      sync.Mutex
	cur     *client // the client started last, nil if none runs
	backoff time.Duration
	retry   clock.Timer // pending restart of an idle client
	closed  bool
	// end of fields guarded by mu
}

// client is one display client process and its relay listener.
type client struct {
	cmd    *exec.Cmd
	addr   string
	ctx    context.Context // cancelled to kill it
	cancel context.CancelFunc
	conn   chan net.Conn // its connection to the relay, once (held until taken)
	exited chan struct{} // closed when the process has ended
	shown  bool          // handed a ticket; guarded by display.mu
	// session is the session of the ticket it was handed (set with
	// shown).
	session string
}

func newDisplay(cfg displayConfig) *display {
	if cfg.Logger == nil {
		cfg.Logger = hclog.NewNullLogger()
	}
	if cfg.Emit == nil {
		cfg.Emit = func(event) {}
	}
	if cfg.Clock == nil {
		cfg.Clock = clock.Real{}
	}
	return &display{cfg: cfg, backoff: displayMinBackoff, preload: displayPreload(cfg.Command, cfg.Logger)}
}

// start launches the first client; it waits for a ticket from then on.
// ctx bounds every client and relay.
func (d *display) start(ctx context.Context) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.ctx = ctx
	d.warmLocked()
}

// warmLocked starts a client to wait for the next ticket unless one runs
// or a restart is pending.
func (d *display) warmLocked() {
	if d.closed || d.ctx == nil || d.cur != nil || d.retry != nil {
		return
	}
	c, err := d.launch()
	if err != nil {
		d.cfg.Emit(errorEvent(0, errDisplay, err.Error()))
		d.scheduleLocked()
		return
	}
	d.cur = c
	d.cfg.Logger.Debug("display client waiting for a session", "pid", c.cmd.Process.Pid)
}

// scheduleLocked restarts a client after the backoff.
func (d *display) scheduleLocked() {
	if d.closed || d.retry != nil {
		return
	}
	wait := d.backoff
	d.backoff = min(2*d.backoff, displayMaxBackoff)
	d.retry = d.cfg.Clock.AfterFunc(wait, func() {
		d.mu.Lock()
		defer d.mu.Unlock()
		d.retry = nil
		d.warmLocked()
	})
}

// launch starts a client process with its relay listener. Its goroutines
// (accept, wait) end when the process has ended.
func (d *display) launch() (*client, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, fmt.Errorf("display relay: %w", err)
	}
	ctx, cancel := context.WithCancel(d.ctx)
	c := &client{addr: ln.Addr().String(), ctx: ctx, cancel: cancel, conn: make(chan net.Conn, 1), exited: make(chan struct{})}
	args := make([]string, len(d.cfg.Command))
	for i, arg := range d.cfg.Command {
		args[i] = strings.ReplaceAll(arg, "{addr}", c.addr)
	}
	c.cmd = exec.CommandContext(ctx, args[0], args[1:]...)
	c.cmd.Stdout, c.cmd.Stderr = os.Stderr, os.Stderr
	if d.preload != "" {
		c.cmd.Env = append(os.Environ(), "LD_PRELOAD="+d.preload)
	}
	if err := c.cmd.Start(); err != nil {
		cancel()
		ln.Close()
		return nil, fmt.Errorf("starting %s: %w", args[0], err)
	}
	d.wg.Add(2)
	go func() { // accept its one connection and hold it
		defer d.wg.Done()
		stop := context.AfterFunc(ctx, func() { ln.Close() })
		defer stop()
		defer ln.Close() // one connection per client
		if conn, err := acceptOwn(ln, d.cfg.Logger); err == nil {
			c.conn <- conn
			d.cfg.Emit(event{name: "display_ready", fields: []field{{"pid", c.cmd.Process.Pid}},
				text: fmt.Sprintf("display client ready (pid %d)", c.cmd.Process.Pid)})
		}
	}()
	go func() {
		defer d.wg.Done()
		_ = c.cmd.Wait()
		cancel()
		close(c.exited)
		select { // a connection nobody took
		case conn := <-c.conn:
			conn.Close()
		default:
		}
		d.ended(c)
	}()
	return c, nil
}

// acceptOwn returns the first connection to ln from a process of this
// user; connections from other users are closed (and logged).
func acceptOwn(ln net.Listener, log hclog.Logger) (net.Conn, error) {
	for {
		conn, err := ln.Accept()
		if err != nil {
			return nil, err
		}
		if err := relayPeerOwn(conn); err != nil {
			log.Warn("display relay: connection refused", "remote", conn.RemoteAddr().String(), "error", err)
			conn.Close()
			continue
		}
		return conn, nil
	}
}

// ended: c's process is gone. A client that showed a session is replaced
// at once (and, if nothing stopped it, reported Lost); one that ended
// while waiting is restarted after the backoff.
func (d *display) ended(c *client) {
	d.mu.Lock()
	if d.cur != c {
		d.mu.Unlock()
		return
	}
	d.cur = nil
	if !c.shown {
		d.cfg.Logger.Warn("display client ended while waiting", "pid", c.cmd.Process.Pid, "state", c.cmd.ProcessState.String())
		d.scheduleLocked()
		d.mu.Unlock()
		return
	}
	d.cfg.Logger.Warn("display client ended while showing a session", "pid", c.cmd.Process.Pid,
		"session", c.session, "state", c.cmd.ProcessState.String())
	d.warmLocked()
	lost := d.cfg.Lost != nil && !d.closed
	d.mu.Unlock()
	if lost {
		d.cfg.Lost(c.session)
	}
}

// attach hands the ticket of session to the waiting client (or, if none
// waits, to a new one) and relays its stream through the gateway gw.
func (d *display) attach(gw string, tlsCfg *tls.Config, ticket []byte, session string) {
	at := time.Now()
	d.mu.Lock()
	if d.closed || d.ctx == nil {
		d.mu.Unlock()
		return
	}
	c := d.cur
	if c != nil && c.shown { // still showing an earlier session
		d.cur = nil
		d.mu.Unlock()
		c.stop()
		d.mu.Lock()
		c = d.cur // its replacement, if the exit handler started one
	}
	warm := c != nil
	if c == nil {
		if d.retry != nil {
			d.retry.Stop()
			d.retry = nil
		}
		var err error
		if c, err = d.launch(); err != nil {
			d.mu.Unlock()
			d.cfg.Emit(errorEvent(0, errDisplay, err.Error()))
			return
		}
		d.cur = c
	}
	c.shown, c.session = true, session
	d.mu.Unlock()
	d.cfg.Emit(event{name: "display", fields: []field{{"pid", c.cmd.Process.Pid}, {"addr", c.addr}, {"warm", warm}},
		text: fmt.Sprintf("display client %s (pid %d, started %s)", clean(c.cmd.Path), c.cmd.Process.Pid, map[bool]string{true: "ahead", false: "now"}[warm])})
	d.wg.Add(1)
	go func() {
		defer d.wg.Done()
		d.relay(c, gw, tlsCfg, ticket, session, at)
	}()
}

// startDisplay hands an Attached ticket to the display (agent glue).
func (a *agent) startDisplay(l *link, m *proto.Attached) {
	gw, ok := strings.CutPrefix(m.Endpoint, "hotdesk-attach://")
	if a.disp == nil || !ok || len(m.Ticket) == 0 {
		return
	}
	a.disp.attach(gw, l.tls, m.Ticket, m.SessionID)
}

// stopDisplay ends the display of the shown session (agent glue).
func (a *agent) stopDisplay() {
	if a.disp != nil {
		a.disp.detach()
	}
}

// detach ends the client showing a session (its window goes with it) and
// starts one to wait for the next ticket.
func (d *display) detach() {
	d.mu.Lock()
	c := d.cur
	if c == nil || !c.shown {
		d.mu.Unlock()
		return
	}
	d.cur = nil
	d.mu.Unlock()
	c.stop()
	d.mu.Lock()
	d.warmLocked()
	d.mu.Unlock()
}

// close ends every client and relay and waits for their goroutines.
func (d *display) close() {
	d.mu.Lock()
	d.closed = true
	if d.retry != nil {
		d.retry.Stop()
		d.retry = nil
	}
	c := d.cur
	d.cur = nil
	d.mu.Unlock()
	if c != nil {
		c.stop()
	}
	d.wg.Wait()
}

// stop kills the client and waits until its process has ended.
func (c *client) stop() {
	c.cancel()
	<-c.exited
}

// relay waits for c's held connection, redeems the ticket at the gateway
// and splices the two until either ends or c is stopped. Once spliced it
// emits a "stream" event: the time the client took to connect after
// attached (0 when it was waiting) and the gateway's (dial, TLS, ticket).
func (d *display) relay(c *client, gw string, tlsCfg *tls.Config, ticket []byte, session string, attached time.Time) {
	log := d.cfg.Logger
	var conn net.Conn
	expired := make(chan struct{})
	wait := d.cfg.Clock.AfterFunc(d.cfg.Timeout, func() { close(expired) })
	select {
	case conn = <-c.conn:
		wait.Stop()
	case <-c.ctx.Done():
		wait.Stop()
		return
	case <-expired:
		log.Warn("display client never connected to the relay", "pid", c.cmd.Process.Pid)
		c.cancel()
		return
	}
	defer conn.Close()
	accepted := time.Now()
	var gc *proto.Conn
	var err error
	// A gateway that answers nothing (its connection cut at accept or
	// before it read the ticket: evicted by a flood of slow handshakes, a
	// blip) has not spent the ticket: one more try. A ticket it refused,
	// or spent and then lost the connection, is refused again.
	for attempt := 1; ; attempt++ {
		dctx, cancel := context.WithTimeout(c.ctx, d.cfg.Timeout)
		gc, err = proto.Dial(dctx, gw, tlsCfg, proto.WithReadTimeout(d.cfg.Timeout))
		cancel()
		if err == nil {
			if err = redeem(gc, ticket, d.cfg.Terminal); err == nil {
				break
			}
			gc.Close()
		}
		var refused *redeemRefused
		if errors.As(err, &refused) || c.ctx.Err() != nil || attempt == 2 {
			log.Warn("attach gateway", "addr", gw, "error", err)
			c.cancel()
			return
		}
		log.Info("attach gateway gave no answer; trying once more", "addr", gw, "error", err)
	}
	defer gc.Close()
	gwConn := gc.NetConn()
	_ = gwConn.SetDeadline(time.Time{})
	d.mu.Lock()
	d.backoff = displayMinBackoff
	d.mu.Unlock()
	d.cfg.Emit(streamEvent(session, accepted.Sub(attached), time.Since(accepted)))
	stop := context.AfterFunc(c.ctx, func() { conn.Close(); gwConn.Close() })
	defer stop()
	splice.Conns(conn, gwConn)
	// The stream is over (cut by the gateway, or the client left): the
	// client must not go on showing its last frame.
	c.cancel()
}

// redeem sends the ticket and waits for AttachOK.
func redeem(c *proto.Conn, ticket []byte, terminal string) error {
	if err := c.Send(&proto.Attach{Ticket: ticket, TerminalID: terminal}); err != nil {
		return err
	}
	m, err := c.Recv()
	if err != nil {
		return err
	}
	switch b := m.Body.(type) {
	case *proto.AttachOK:
		return nil
	case *proto.Error:
		return &redeemRefused{fmt.Sprintf("refused: %s: %s", b.Code, b.Message)}
	}
	return &redeemRefused{"unexpected answer " + m.Type.String()}
}

// redeemRefused is a gateway's answer other than AttachOK: the ticket was
// read (and spent, or refused); trying it again is pointless.
type redeemRefused struct{ msg string }

func (e *redeemRefused) Error() string { return e.msg }
