package broker

import (
	"bytes"
	"context"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"github.com/hotdesk/hotdesk/internal/testutil"
	"github.com/hotdesk/hotdesk/proto"
)

// TestRDPPeerLeavesEarly: a display client that goes away right after
// weston activated its RDP connection (a card pulled just after it went
// in; the terminal's client killed) costs the desktop nothing. Weston 10
// gives every RDP peer a wl_seat and destroys the global at once when the
// peer disconnects; its helper clients, still binding the seat it just
// announced, die of "invalid global wl_seat", and a desktop shell dying
// within 30 s of weston's start makes weston quit: the session was lost,
// and under load (slower clients) more often. The gateway keeps weston's
// side of a young RDP stream open, draining it, until the seat's clients
// have had time to bind.
func TestRDPPeerLeavesEarly(t *testing.T) {
	t.Parallel()
	testutil.NeedTools(t, "xfreerdp")
	disp := testutil.StartXvfbSizes(t, "640x480x24")[0]
	e := newEnvWith(t, "b1", envOptions{gateway: true, rdp: true})
	_, _, t1, att := e.login("pia", "term-1")
	wlog := filepath.Join(e.stateDir, att.SessionID, "weston.log")
	activations := func() int {
		b, _ := os.ReadFile(wlog)
		return bytes.Count(b, []byte("xf_peer_activate"))
	}
	var pid int
	if l, err := e.comp.List(context.Background()); err == nil && len(l) == 1 {
		pid = l[0].PID
	} else {
		t.Fatalf("desktops: %v, %v; want one", l, err)
	}

	// connect runs xfreerdp through the gateway (a loopback relay, as
	// hotdesk-term's) until weston has activated its peer, then kills
	// it at once unless keep.
	connect := func(ticket []byte, keep bool) {
		t.Helper()
		c, perr := e.attach(ticket, "term-1")
		if perr != nil {
			t.Fatalf("attach: %+v", perr)
		}
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		defer ln.Close()
		go func() {
			fc, err := ln.Accept()
			if err != nil {
				return
			}
			go func() { io.Copy(c.NetConn(), fc); c.Close() }()
			io.Copy(fc, c.NetConn())
			fc.Close()
		}()
		before := activations()
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		var out bytes.Buffer
		cmd := exec.CommandContext(ctx, "xfreerdp", "/v:"+ln.Addr().String(), "/cert:ignore", "/u:x", "/p:x", "/size:640x480")
		cmd.Env = append(os.Environ(), "DISPLAY="+disp)
		cmd.Stdout, cmd.Stderr = &out, &out
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		defer cmd.Wait()
		defer cmd.Process.Kill()
		for activations() == before {
			if ctx.Err() != nil {
				b, _ := os.ReadFile(wlog)
				t.Fatalf("weston activated no RDP peer; xfreerdp:\n%s\nweston.log:\n%s", out.Bytes(), b)
			}
			time.Sleep(2 * time.Millisecond)
		}
		if !keep {
			cmd.Process.Kill() // the display client goes, its stream with it
			c.Close()
		}
	}

	for range 3 {
		connect(att.Ticket, false)
		t1.insert(att.Token) // the token again: a new ticket
		att = expectMsg[proto.Attached](t1)
	}
	// Weston still serves the desktop: a client that stays is activated
	// (weston dead, the attach or the activation fails), by the same
	// compositor.
	connect(att.Ticket, true)
	if l, err := e.comp.List(context.Background()); err != nil || len(l) != 1 || l[0].PID != pid {
		t.Fatalf("desktops after the early leaves: %v, %v; want the same weston (pid %d)", l, err, pid)
	}
	b, _ := os.ReadFile(wlog)
	for _, bad := range []string{"invalid global", "respawning", "cannot run at all"} {
		if bytes.Contains(b, []byte(bad)) {
			t.Errorf("weston.log has %q: a helper client died:\n%s", bad, b)
		}
	}
}
