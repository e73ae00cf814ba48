package etcdtest_test

import (
	"bufio"
	"errors"
	"net"
	"os"
	"testing"
	"time"

	"github.com/hotdesk/hotdesk/registry/etcdtest"
)

// echoServer echoes every line back until the connection closes.
func echoServer(t *testing.T) string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	t.Cleanup(func() { ln.Close(); <-done })
	go func() {
		defer close(done)
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				s := bufio.NewScanner(c)
				for s.Scan() {
					if _, err := c.Write(append(s.Bytes(), '\n')); err != nil {
						return
					}
				}
			}()
		}
	}()
	return ln.Addr().String()
}

// TestProxy: bytes flow through; a blackhole holds them (the connection
// stays open) and the heal delivers them; CloseConns resets connections and
// new ones still work.
func TestProxy(t *testing.T) {
	t.Parallel()
	p := etcdtest.NewProxy(t, "http://"+echoServer(t))
	dial := func() (net.Conn, *bufio.Reader) {
		c, err := net.Dial("tcp", p.URL()[len("http://"):])
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		return c, bufio.NewReader(c)
	}
	roundTrip := func(c net.Conn, r *bufio.Reader, msg string) (string, error) {
		if _, err := c.Write([]byte(msg + "\n")); err != nil {
			return "", err
		}
		return r.ReadString('\n')
	}

	c, r := dial()
	if got, err := roundTrip(c, r, "one"); err != nil || got != "one\n" {
		t.Fatalf("echo = %q, %v; want %q", got, err, "one\n")
	}

	p.Blackhole()
	if _, err := c.Write([]byte("held\n")); err != nil {
		t.Fatal(err)
	}
	// Nothing comes back while blackholed: the read times out, not EOF.
	c.SetReadDeadline(time.Now().Add(200 * time.Millisecond))
	if got, err := r.ReadString('\n'); !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("read while blackholed = %q, %v; want a timeout", got, err)
	}
	c.SetReadDeadline(time.Time{})
	p.Heal()
	if got, err := r.ReadString('\n'); err != nil || got != "held\n" {
		t.Fatalf("read after heal = %q, %v; want the held %q", got, err, "held\n")
	}

	p.CloseConns()
	c.SetReadDeadline(time.Now().Add(10 * time.Second)) // bound only
	if _, err := roundTrip(c, r, "after reset"); err == nil {
		t.Fatalf("round trip after CloseConns err = nil; want an error")
	}
	c2, r2 := dial()
	if got, err := roundTrip(c2, r2, "two"); err != nil || got != "two\n" {
		t.Fatalf("echo on a new connection = %q, %v; want %q", got, err, "two\n")
	}
}
