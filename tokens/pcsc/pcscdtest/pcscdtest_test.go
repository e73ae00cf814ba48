package pcscdtest

import (
	"bytes"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"github.com/hotdesk/hotdesk/internal/procnet"
	"github.com/hotdesk/hotdesk/internal/testutil"
)

// TestRestartMovesTakenPorts: when another process listens on a vpcd port
// (here this test, between a kill and the restart), the daemon starts on two
// other ports that it listens on itself.
func TestRestartMovesTakenPorts(t *testing.T) {
	t.Parallel()
	d, taken, l := killedPortTaken(t, 1)
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
		if inodes := procnet.Listening("/proc", d.Port(i)); !procnet.Owns("/proc", pid, inodes) {
			t.Errorf("port %d (reader %d): pcscd does not listen (sockets %v)", d.Port(i), i, inodes)
		}
	}
	if inodes := procnet.Listening("/proc", taken); len(inodes) == 0 || procnet.Owns("/proc", pid, inodes) {
		t.Errorf("taken port %d: listeners %v; want this test's only", taken, inodes)
	}
}

// TestRestartAfterFailedBind: a port held only a moment by another process
// (a free-port probe of another test) while vpcd binds makes vpcd's bind
// fail for good, though nobody listens there by the time the daemon is
// checked: the daemon starts again on other ports instead of waiting for a
// listener that never comes (a CI run failed so: "pcscd not ready").
func TestRestartAfterFailedBind(t *testing.T) {
	t.Parallel()
	d, taken, l := killedPortTaken(t, 0)
	logStart := int64(len(d.Log()))
	released := make(chan struct{})
	go func() { // let go as soon as vpcd has failed to bind
		defer close(released)
		defer l.Close()
		for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(time.Millisecond) {
			if d.logSince(logStart, "Address already in use") {
				return
			}
		}
	}()
	if err := d.Restart(); err != nil {
		t.Fatalf("Restart: %v\n%s", err, d.Log())
	}
	<-released
	if d.Port(0) == taken {
		t.Fatalf("port %d after Restart; want another than the one vpcd failed to bind", d.Port(0))
	}
}

// killedPortTaken starts a daemon (closed when t ends), kills it, and
// listens on the port of its reader i, as another process would.
func killedPortTaken(t *testing.T, i int) (d *Daemon, taken int, l net.Listener) {
	t.Helper()
	d, err := Start()
	Require(t, err)
	t.Cleanup(func() { d.Close() })
	if err := d.Kill(); err != nil {
		t.Fatalf("Kill: %v", err)
	}
	taken = d.Port(i)
	if l, err = net.Listen("tcp", ":"+strconv.Itoa(taken)); err != nil {
		t.Fatalf("listen on the daemon's port: %v", err)
	}
	return d, taken, l
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

const helperEnv = "PCSCDTEST_HELPER"

// TestDiesWithTestProcess: a test process that ends without its cleanup
// (killed at its deadline, or here os.Exit) takes its pcscd with it.
func TestDiesWithTestProcess(t *testing.T) {
	if os.Getenv(helperEnv) == "1" {
		d, err := Start()
		if err != nil {
			fmt.Println("error:", err)
			os.Exit(3)
		}
		d.mu.Lock()
		fmt.Printf("pid %d dir %s\n", d.cmd.Process.Pid, d.dir)
		d.mu.Unlock()
		os.Exit(0) // no Close, no cleanup
	}
	t.Parallel()
	cmd := exec.Command(os.Args[0], "-test.run=^TestDiesWithTestProcess$", "-test.count=1")
	cmd.Env = append(os.Environ(), helperEnv+"=1")
	out, err := cmd.CombinedOutput()
	var pid int
	var dir string
	if _, serr := fmt.Sscanf(string(out), "pid %d dir %s", &pid, &dir); serr != nil {
		if bytes.Contains(out, []byte(ErrMissing.Error())) {
			Require(t, fmt.Errorf("%w: %s", ErrMissing, out))
		}
		t.Fatalf("helper process: %v\n%s", err, out)
	}
	defer os.RemoveAll(dir)
	testutil.WaitFor(t, 10*time.Second, "pcscd gone with the process that started it", func() bool {
		// Gone, or a zombie that nobody has reaped yet.
		stat, err := os.ReadFile(filepath.Join("/proc", strconv.Itoa(pid), "stat"))
		i := bytes.LastIndexByte(stat, ')')
		return err != nil || (i > 0 && i+2 < len(stat) && stat[i+2] == 'Z')
	})
}
