package broker

import (
	"errors"
	"io"
	"net"
	"sync"
	"testing"
	"time"
)

// settleWait bounds the waits of the settleConn tests (a failure limit,
// never a timing assertion).
const settleWait = 20 * time.Second

// spawner is a settleConn's owner in tests: it runs the drains and waits
// for them; off, it runs none.
type spawner struct {
	wg  sync.WaitGroup
	off bool
}

func (s *spawner) spawn(f func()) bool {
	if s.off {
		return false
	}
	s.wg.Add(1)
	go func() { defer s.wg.Done(); f() }()
	return true
}

// settlePair returns the gateway's side of a new TCP connection on ln and
// the compositor's.
func settlePair(t *testing.T, ln net.Listener) (gw, comp net.Conn) {
	t.Helper()
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
	comp = <-accepted
	t.Cleanup(func() { gw.Close(); comp.Close() })
	return gw, comp
}

// TestSettleConn: closing the compositor's side of a young RDP stream
// ends it for the gateway at once (a Read in progress returns, later
// Reads and Writes fail) while the compositor keeps a connection that
// takes whatever it sends and ends no sooner than the settle time after
// it opened, on a goroutine its owner waits for.
func TestSettleConn(t *testing.T) {
	t.Parallel()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	const settle = 2 * time.Second
	opened := time.Now()
	gw, comp := settlePair(t, ln)
	var owner spawner
	sc := newSettleConn(gw, settle, owner.spawn, make(chan struct{}))

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
	owner.wg.Wait() // the drain ended with the connection

	// Past the settle time, Close closes at once.
	c2, _ := settlePair(t, ln)
	old := newSettleConn(c2, 0, owner.spawn, nil)
	if err := old.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := c2.Write([]byte("x")); err == nil {
		t.Fatal("a settled stream's Close left the connection open")
	}
}

// TestSettleConnOwnerStops: a stopping owner does not wait for the
// streams: one closed while it stops is closed at once, and a drain under
// way ends when it stops.
func TestSettleConnOwnerStops(t *testing.T) {
	t.Parallel()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	ended := func(comp net.Conn) {
		t.Helper()
		_ = comp.SetReadDeadline(time.Now().Add(settleWait))
		if n, err := comp.Read(make([]byte, 1)); err != io.EOF {
			t.Fatalf("the compositor's side: read %d, %v; want EOF", n, err)
		}
	}
	gw, comp := settlePair(t, ln)
	stopping := &spawner{off: true}
	if err := newSettleConn(gw, time.Hour, stopping.spawn, nil).Close(); err != nil {
		t.Fatal(err)
	}
	ended(comp)

	gw, comp = settlePair(t, ln)
	var owner spawner
	stop := make(chan struct{})
	if err := newSettleConn(gw, time.Hour, owner.spawn, stop).Close(); err != nil {
		t.Fatal(err)
	}
	close(stop)
	ended(comp) // an hour early
	owner.wg.Wait()
}
