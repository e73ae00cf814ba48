// Package pcscdtest runs a private pcscd with the vpcd virtual reader driver
// for tests: its own socket directory and its own two vpcd ports, so it
// neither disturbs nor depends on a system pcscd.
//
// pcscd 1.9 always binds /run/pcscd/pcscd.comm; the daemon therefore runs in
// a private mount namespace (unshare -m) where a temporary directory is
// bind-mounted on /run/pcscd, and this process's libpcsclite is pointed at
// the socket with PCSCLITE_CSOCK_NAME. libpcsclite reads that variable once,
// at its first call, so a process talks to one Daemon (Start sets the
// variable; restart the daemon in place). Tests that run in parallel each
// start a Daemon of their own and talk to it from child processes, with
// SocketEnv=Socket() in their environment (tokens/pcsc runs each such test
// in a child test process; cmd/hotdesk-term's tests run the agents).
//
// vpcd listens on the two ports of its configuration on all interfaces; Start
// picks two free consecutive ports and makes sure this daemon is the one
// listening on them: another process (a daemon of a test running in
// parallel, in this process or another) that takes a port between the pick
// and vpcd's bind makes the daemon start again on two other ports, so two
// daemons never share a reader. Requirements: pcscd, the vpcd driver,
// unshare(1) and mount(8), and root or unprivileged user namespaces. Without
// them Start fails with an error wrapping ErrMissing; tests then fail when
// the environment variable CI is "true" and skip otherwise (Require).
//
// Only tokens/pcsc (and packages that import this helper) start pcscd.
package pcscdtest

import (
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/hotdesk/hotdesk/internal/procnet"
)

// VPCDDriver is the vpcd driver shipped by Debian's vsmartcard-vpcd.
const VPCDDriver = "/usr/lib/pcsc/drivers/serial/libifdvpcd.so"

// SocketEnv is the libpcsclite variable naming the daemon's socket.
const SocketEnv = "PCSCLITE_CSOCK_NAME"

// ErrMissing means pcscd, vpcd or the means to run a private daemon are missing.
var ErrMissing = errors.New("pcscdtest: private pcscd with vpcd not available")

// Readers are the names of the two vpcd readers.
var Readers = [2]string{"Virtual PCD 00 00", "Virtual PCD 00 01"}

// Daemon is a private pcscd.
type Daemon struct {
	dir    string // holds run/ (socket, pid) and conf/ (reader.conf.d)
	socket string

	mu   sync.Mutex
	port int // vpcd reader 0; reader 1 is port+1 (Restart may move them)
	cmd  *exec.Cmd
	done chan struct{} // closed when cmd has been waited for
}

// Start starts a private pcscd in a new temporary directory (removed by
// Close) and sets PCSCLITE_CSOCK_NAME for this process. It returns when the
// daemon accepts clients and both vpcd readers listen.
func Start() (*Daemon, error) {
	for _, f := range []string{VPCDDriver} {
		if _, err := os.Stat(f); err != nil {
			return nil, fmt.Errorf("%w: %w", ErrMissing, err)
		}
	}
	for _, bin := range []string{"pcscd", "unshare", "mount"} {
		if _, err := exec.LookPath(bin); err != nil {
			return nil, fmt.Errorf("%w: %w", ErrMissing, err)
		}
	}
	dir, err := os.MkdirTemp("", "pcscd")
	if err != nil {
		return nil, fmt.Errorf("pcscdtest: %w", err)
	}
	d := &Daemon{dir: dir, socket: filepath.Join(dir, "run", "pcscd.comm")}
	if err := d.setup(); err != nil {
		os.RemoveAll(dir)
		return nil, err
	}
	if err := os.Setenv(SocketEnv, d.socket); err != nil {
		os.RemoveAll(dir)
		return nil, fmt.Errorf("pcscdtest: %w", err)
	}
	if err := d.Restart(); err != nil {
		d.Close()
		return nil, err
	}
	return d, nil
}

func (d *Daemon) setup() error {
	for _, sub := range []string{"run", "conf"} {
		if err := os.Mkdir(filepath.Join(d.dir, sub), 0o755); err != nil {
			return fmt.Errorf("pcscdtest: %w", err)
		}
	}
	return d.pickPorts()
}

// pickPorts picks two free consecutive ports for vpcd and writes its
// configuration.
func (d *Daemon) pickPorts() error {
	port, err := freePortPair()
	if err != nil {
		return err
	}
	d.port = port
	conf := fmt.Sprintf("FRIENDLYNAME \"Virtual PCD\"\nDEVICENAME   /dev/null:0x%X\nLIBPATH      %s\nCHANNELID    0x%X\n",
		port, VPCDDriver, port)
	if err := os.WriteFile(filepath.Join(d.dir, "conf", "vpcd"), []byte(conf), 0o644); err != nil {
		return fmt.Errorf("pcscdtest: %w", err)
	}
	return nil
}

// freePortPair finds p such that p and p+1 are free TCP ports.
func freePortPair() (int, error) {
	for range 50 {
		l, err := net.Listen("tcp", ":0")
		if err != nil {
			return 0, fmt.Errorf("pcscdtest: %w", err)
		}
		p := l.Addr().(*net.TCPAddr).Port
		if p >= 65535 {
			l.Close()
			continue
		}
		l2, err := net.Listen("tcp", ":"+strconv.Itoa(p+1))
		l.Close()
		if err != nil {
			continue
		}
		l2.Close()
		return p, nil
	}
	return 0, errors.New("pcscdtest: no two consecutive free ports")
}

// Port returns the TCP port of vpcd reader i (0 or 1), for vcard.Insert.
// It may change when Restart has to move the readers to free ports.
func (d *Daemon) Port(i int) int {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.port + i
}

// Socket returns the daemon's socket path.
func (d *Daemon) Socket() string { return d.socket }

// Log returns the daemon's output so far (for failing tests).
func (d *Daemon) Log() string {
	b, _ := os.ReadFile(filepath.Join(d.dir, "pcscd.log"))
	return string(b)
}

// logSince reports whether the daemon's log from offset on holds text.
func (d *Daemon) logSince(offset int64, text string) bool {
	f, err := os.Open(filepath.Join(d.dir, "pcscd.log"))
	if err != nil {
		return false
	}
	defer f.Close()
	b, _ := io.ReadAll(io.NewSectionReader(f, offset, 1<<20))
	return strings.Contains(string(b), text)
}

// Running reports whether the daemon process is running.
func (d *Daemon) Running() bool {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.runningLocked()
}

// runningLocked is Running with d.mu held.
func (d *Daemon) runningLocked() bool {
	if d.cmd == nil {
		return false
	}
	select {
	case <-d.done:
		return false
	default:
		return true
	}
}

// Restart starts the daemon if it is not running, after removing the files
// a killed daemon leaves behind, and waits until it is ready (at most 10 s).
// If another process listens on a vpcd port meanwhile, the daemon starts
// again on two other ports (Port tells which).
func (d *Daemon) Restart() error {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.runningLocked() {
		return nil
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		err := d.startLocked(deadline)
		if !errors.Is(err, errPortTaken) {
			return err
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%w: %w", ErrMissing, err)
		}
		if err := d.pickPorts(); err != nil {
			return err
		}
	}
}

// errPortTaken: another process listens on a port of the daemon's vpcd.
var errPortTaken = errors.New("pcscdtest: vpcd port taken by another process")

// startLocked starts pcscd once and waits until it is ready, with d.mu held.
func (d *Daemon) startLocked(deadline time.Time) error {
	run := filepath.Join(d.dir, "run")
	os.Remove(filepath.Join(run, "pcscd.comm"))
	os.Remove(filepath.Join(run, "pcscd.pid"))
	logf, err := os.OpenFile(filepath.Join(d.dir, "pcscd.log"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return fmt.Errorf("pcscdtest: %w", err)
	}
	defer logf.Close()
	logStart, _ := logf.Seek(0, io.SeekEnd) // this run's lines follow
	args := []string{"-m", "--propagation", "private"}
	if os.Geteuid() != 0 {
		args = append([]string{"-r"}, args...)
	}
	script := `mkdir -p /run/pcscd && mount --bind "$1" /run/pcscd && exec pcscd --foreground --config "$2"`
	args = append(args, "sh", "-c", script, "sh", run, filepath.Join(d.dir, "conf"))
	cmd := exec.Command("unshare", args...)
	cmd.Stdout, cmd.Stderr = logf, logf
	// pcscd (unshare and sh exec it: one process) dies with the test
	// process, even one killed at its deadline before any cleanup ran.
	// The signal follows the thread that started it, not the process:
	// that thread stays locked to the goroutine below until pcscd has
	// ended. Then it is unlocked, not ended with the goroutine: it may
	// have started, before this goroutine locked it, another child with
	// the same signal (the bench's etcd members), which its end would kill.
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	started := make(chan error, 1)
	done := make(chan struct{})
	go func() {
		runtime.LockOSThread()
		defer runtime.UnlockOSThread()
		err := cmd.Start()
		started <- err
		if err == nil {
			cmd.Wait()
		}
		close(done)
	}()
	if err := <-started; err != nil {
		<-done
		return fmt.Errorf("%w: start pcscd: %w", ErrMissing, err)
	}
	d.cmd, d.done = cmd, done
	if err := d.waitReady(cmd.Process.Pid, done, deadline, logStart); err != nil {
		cmd.Process.Kill()
		<-done
		if errors.Is(err, errPortTaken) {
			return err
		}
		return fmt.Errorf("%w: %w\n%s", ErrMissing, err, d.Log())
	}
	return nil
}

// waitReady waits until the socket accepts connections and the process pid
// (pcscd: unshare and sh exec it) listens on both vpcd ports. It does not
// connect to the vpcd ports: that would insert a card. A vpcd whose bind
// failed (its log since logStart says the address was in use: another
// process held the port a moment, a port probe of another test) is
// errPortTaken too, though nobody listens there any more: pcscd does not
// try the bind again.
func (d *Daemon) waitReady(pid int, done <-chan struct{}, deadline time.Time, logStart int64) error {
	for {
		select {
		case <-done:
			return errors.New("pcscd exited")
		default:
		}
		if c, err := net.Dial("unix", d.socket); err == nil {
			c.Close()
			ready := true
			for _, port := range []int{d.port, d.port + 1} {
				switch inodes := procnet.Listening("/proc", port); {
				case len(inodes) == 0:
					ready = false
				case !procnet.Owns("/proc", pid, inodes):
					return fmt.Errorf("%w: port %d", errPortTaken, port)
				}
			}
			if ready {
				return nil
			}
			if d.logSince(logStart, "Address already in use") {
				return fmt.Errorf("%w: vpcd's bind failed", errPortTaken)
			}
		}
		if time.Now().After(deadline) {
			return errors.New("pcscd not ready")
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// Kill kills the daemon with SIGKILL (a crash: clients see their contexts
// die) and waits until it has exited.
func (d *Daemon) Kill() error { return d.stop(os.Kill) }

// Stop stops the daemon with SIGTERM and waits until it has exited (pcscd
// takes about a second: it waits for its reader threads' next poll).
func (d *Daemon) Stop() error { return d.stop(syscall.SIGTERM) }

func (d *Daemon) stop(sig os.Signal) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	if !d.runningLocked() {
		return nil
	}
	if err := d.cmd.Process.Signal(sig); err != nil {
		return fmt.Errorf("pcscdtest: stop: %w", err)
	}
	select {
	case <-d.done:
	case <-time.After(10 * time.Second):
		d.cmd.Process.Kill()
		<-d.done
	}
	return nil
}

// Close kills the daemon and removes its directory. It does not stop pcscd
// gracefully (Stop): that takes a second and leaves nothing a test needs.
func (d *Daemon) Close() error {
	err := d.Kill()
	os.RemoveAll(d.dir)
	return err
}

// Require fails tb when err wraps ErrMissing and CI is "true", skips it
// otherwise; it fails tb for any other non-nil err.
func Require(tb testing.TB, err error) {
	tb.Helper()
	switch {
	case err == nil:
	case errors.Is(err, ErrMissing) && os.Getenv("CI") != "true":
		tb.Skipf("pcscd with vpcd not available: %v", err)
	default:
		tb.Fatalf("pcscd with vpcd: %v", err)
	}
}
