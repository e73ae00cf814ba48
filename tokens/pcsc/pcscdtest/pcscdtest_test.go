package pcscdtest

import (
	"errors"
	"net"
	"strconv"
	"testing"
)

// TestRestartMovesTakenPorts: when another process listens on a vpcd port
// (here this test, between a kill and the restart), the daemon starts on two
// other ports that it listens on itself.
func TestRestartMovesTakenPorts(t *testing.T) {
	t.Parallel()
	d, err := Start()
	Require(t, err)
	defer d.Close()
	if err := d.Kill(); err != nil {
		t.Fatalf("Kill: %v", err)
	}
	taken := d.Port(1)
	l, err := net.Listen("tcp", ":"+strconv.Itoa(taken))
	if err != nil {
		t.Fatalf("listen on the daemon's port: %v", err)
	}
	defer l.Close()
	if err := d.Restart(); err != nil {
		t.Fatalf("Restart: %v\n%s", err, d.Log())
	}
	if d.Port(0) == taken || d.Port(1) == taken {
		t.Fatalf("ports %d, %d after Restart; want other than %d", d.Port(0), d.Port(1), taken)
	}
	d.mu.Lock()
	pid := d.cmd.Process.Pid
	d.mu.Unlock()
	for i := range 2 {
		if inodes := listeners(d.Port(i)); !ownsSocket(pid, inodes) {
			t.Errorf("port %d (reader %d): pcscd does not listen (sockets %v)", d.Port(i), i, inodes)
		}
	}
	if inodes := listeners(taken); len(inodes) == 0 || ownsSocket(pid, inodes) {
		t.Errorf("taken port %d: listeners %v; want this test's only", taken, inodes)
	}
}

// TestStartTwice: two daemons started at once get readers of their own.
func TestStartTwice(t *testing.T) {
	t.Parallel()
	ds := make(chan *Daemon, 2)
	errs := make(chan error, 2)
	for range 2 {
		go func() {
			d, err := Start()
			ds <- d
			errs <- err
		}()
	}
	var got []*Daemon
	var err error
	for range 2 {
		if d := <-ds; d != nil {
			t.Cleanup(func() { d.Close() })
			got = append(got, d)
		}
		err = errors.Join(err, <-errs)
	}
	Require(t, err)
	a, b := got[0], got[1]
	if a.Port(0) == b.Port(0) || a.Port(0) == b.Port(1) || a.Port(1) == b.Port(0) {
		t.Fatalf("ports %d/%d and %d/%d overlap", a.Port(0), a.Port(1), b.Port(0), b.Port(1))
	}
	if a.Socket() == b.Socket() {
		t.Fatalf("one socket %s for both", a.Socket())
	}
}
