package main

import (
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"strings"
	"sync"
	"time"

	"github.com/hotdesk/hotdesk/proto"
)

// displayClient is a running display client and the loopback relay it
// connects to: the relay redeems the ticket at the broker's attach gateway
// and splices the client to the session's display stream.
type displayClient struct {
	cmd    *exec.Cmd
	ln     net.Listener
	cancel context.CancelFunc
	wg     sync.WaitGroup
}

// startDisplay launches the configured display client for an Attached
// message that carries a gateway endpoint and a ticket.
func (a *agent) startDisplay(ctx context.Context, l *link, m *proto.Attached) {
	a.stopDisplay()
	gw, ok := strings.CutPrefix(m.Endpoint, "hotdesk-attach://")
	if len(a.cfg.Display) == 0 || !ok || len(m.Ticket) == 0 {
		return
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		a.out.emit(errorEvent(0, errDisplay, err.Error()))
		return
	}
	dctx, cancel := context.WithCancel(ctx)
	d := &displayClient{ln: ln, cancel: cancel}
	ticket, tlsCfg, terminal := m.Ticket, l.tls, a.cfg.TerminalID
	attached, session := time.Now(), m.SessionID
	d.wg.Add(1)
	go func() {
		defer d.wg.Done()
		d.relay(dctx, gw, tlsCfg, ticket, terminal, session, attached, a)
	}()
	args := make([]string, len(a.cfg.Display))
	for i, arg := range a.cfg.Display {
		args[i] = strings.ReplaceAll(arg, "{addr}", ln.Addr().String())
	}
	d.cmd = exec.CommandContext(dctx, args[0], args[1:]...)
	d.cmd.Stdout, d.cmd.Stderr = os.Stderr, os.Stderr
	if err := d.cmd.Start(); err != nil {
		cancel()
		ln.Close()
		d.wg.Wait()
		a.out.emit(errorEvent(0, errDisplay, fmt.Sprintf("starting %s: %v", args[0], err)))
		return
	}
	d.wg.Add(1)
	go func() { defer d.wg.Done(); _ = d.cmd.Wait() }()
	a.disp = d
	a.out.emit(event{name: "display", fields: []field{{"pid", d.cmd.Process.Pid}, {"addr", ln.Addr().String()}},
		text: fmt.Sprintf("display client %s started (pid %d)", clean(args[0]), d.cmd.Process.Pid)})
}

// stopDisplay ends the display client and its relay.
func (a *agent) stopDisplay() {
	if a.disp == nil {
		return
	}
	a.disp.cancel()
	a.disp.ln.Close()
	a.disp.wg.Wait()
	a.disp = nil
}

// relay accepts the display client's one connection, redeems the ticket at
// the gateway and splices the two until either ends or ctx is cancelled.
// Once spliced it emits a "stream" event with the time the client took to
// connect after attached and the time the gateway took to accept the
// ticket.
func (d *displayClient) relay(ctx context.Context, gw string, tlsCfg *tls.Config, ticket []byte, terminal, session string, attached time.Time, a *agent) {
	client, err := d.ln.Accept()
	d.ln.Close() // one stream per ticket
	if err != nil {
		return
	}
	defer client.Close()
	accepted := time.Now()
	dctx, cancel := context.WithTimeout(ctx, a.cfg.Timeout)
	c, err := proto.Dial(dctx, gw, tlsCfg, proto.WithReadTimeout(a.cfg.Timeout))
	cancel()
	if err != nil {
		a.log.Warn("attach gateway unreachable", "addr", gw, "error", err)
		return
	}
	defer c.Close()
	if err := c.Send(&proto.Attach{Ticket: ticket, TerminalID: terminal}); err != nil {
		return
	}
	m, err := c.Recv()
	if err != nil {
		a.log.Warn("attach gateway", "error", err)
		return
	}
	if e, ok := m.Body.(*proto.Error); ok {
		a.log.Warn("attach refused", "code", e.Code.String(), "message", e.Message)
		return
	}
	if _, ok := m.Body.(*proto.AttachOK); !ok {
		return
	}
	gwConn := c.NetConn()
	_ = gwConn.SetDeadline(time.Time{})
	a.out.emit(streamEvent(session, accepted.Sub(attached), time.Since(accepted)))
	stop := context.AfterFunc(ctx, func() { client.Close(); gwConn.Close() })
	defer stop()
	done := make(chan struct{}, 2)
	go func() { _, _ = io.Copy(gwConn, client); done <- struct{}{} }()
	go func() { _, _ = io.Copy(client, gwConn); done <- struct{}{} }()
	<-done
}
