package broker

import (
	"errors"
	"io"
	"net"
	"testing"
	"time"
)

// TestSettleConn: closing the compositor's side of a young RDP stream
// ends it for the gateway at once (a Read in progress returns, later
// Reads and Writes fail) while the compositor keeps a connection that
// takes whatever it sends and ends no sooner than the settle time after
// it opened.
// settleWait bounds the waits of TestSettleConn (a failure limit, never a
// timing assertion).
const settleWait = 20 * time.Second

func TestSettleConn(t *testing.T) {
	t.Parallel()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	accepted := make(chan net.Conn, 1)
	go func() {
		c, err := ln.Accept()
		if err == nil {
			accepted <- c
		}
	}()
	gw, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	const settle = 2 * time.Second
	opened := time.Now()
	sc := newSettleConn(gw, settle)
	comp := <-accepted // weston's end
	defer comp.Close()

	read := make(chan error, 1)
	go func() {
		_, err := sc.Read(make([]byte, 64))
		read <- err
	}()
	time.Sleep(10 * time.Millisecond) // let the Read start (either way it must end)
	if err := sc.Close(); err != nil {
		t.Fatalf("Close = %v", err)
	}
	select {
	case err := <-read:
		if err == nil {
			t.Fatal("the Read in progress returned no error after Close")
		}
	case <-time.After(settleWait):
		t.Fatal("the Read in progress still blocks after Close")
	}
	if _, err := sc.Read(make([]byte, 1)); !errors.Is(err, net.ErrClosed) {
		t.Fatalf("Read after Close = %v; want net.ErrClosed", err)
	}
	if _, err := sc.Write([]byte("x")); !errors.Is(err, net.ErrClosed) {
		t.Fatalf("Write after Close = %v; want net.ErrClosed", err)
	}
	// The compositor writes far more than the socket buffers hold: the
	// lingering side drains it, so it never waits for long.
	big := make([]byte, 8<<20)
	_ = comp.SetWriteDeadline(time.Now().Add(settleWait))
	if _, err := comp.Write(big); err != nil {
		t.Fatalf("the compositor's writes after Close: %v; want them taken", err)
	}
	_ = comp.SetReadDeadline(time.Now().Add(settleWait))
	if n, err := comp.Read(make([]byte, 1)); err != io.EOF {
		t.Fatalf("the compositor's side: read %d, %v; want EOF once settled", n, err)
	}
	if d := time.Since(opened); d < settle {
		t.Fatalf("the compositor's side ended %v after it opened; want no sooner than %v", d, settle)
	}

	// Past the settle time, Close closes at once.
	c2, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	old := newSettleConn(c2, 0)
	if err := old.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := c2.Write([]byte("x")); err == nil {
		t.Fatal("a settled stream's Close left the connection open")
	}
}
