package testutil

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// ReadyBound bounds how long a Daemon may take to report ready: a safety
// bound for a loaded machine (an embedded etcd, TLS keys), not a timing
// assertion.
const ReadyBound = 60 * time.Second

// stopBound bounds how long a stopped Daemon may take to exit before it is
// killed.
const stopBound = 30 * time.Second

// FreeAddr returns a loopback TCP address that was free a moment ago, that
// no other call in this test process returned (handOut), and whose port is
// below the kernel's ephemeral range (pickPort) where it can: between the
// pick and the daemon's listen, no port 0 listener or outgoing connection
// of any process (other tests' daemons, etcd members, clients) can take it.
func FreeAddr(t testing.TB) string {
	t.Helper()
	for range 200 {
		addr, err := pickPort()
		if err != nil {
			t.Fatal(err)
		}
		if addr != "" && handOut(addr) {
			return addr
		}
	}
	t.Fatal("testutil: no free loopback port left that this process did not hand out")
	return ""
}

// EmbeddedEtcd returns a hotdeskd configuration block for an embedded etcd
// member on free loopback ports.
func EmbeddedEtcd(t testing.TB) string {
	t.Helper()
	return fmt.Sprintf("etcd {\n  embedded {\n    client_url = \"http://%s\"\n    peer_url = \"http://%s\"\n  }\n}\n",
		FreeAddr(t), FreeAddr(t))
}

// DaemonConfig returns the head of a test daemon's configuration: its
// server id, data directory (dir/data), terminal listener (addr), admin
// socket (AdminSocket(dir)) and etcd block, an embedded member on free
// ports (EmbeddedEtcd) when etcd is "". The test appends its own blocks.
func DaemonConfig(t testing.TB, id, dir, addr, etcd string) string {
	t.Helper()
	if etcd == "" {
		etcd = EmbeddedEtcd(t)
	}
	return fmt.Sprintf("server_id = %q\ndata_dir = %q\nlisten = %q\nadmin_socket = %q\n%s",
		id, filepath.Join(dir, "data"), addr, AdminSocket(dir), etcd)
}

// AdminSocket is the admin socket DaemonConfig gives a daemon in dir.
func AdminSocket(dir string) string { return filepath.Join(dir, "admin.sock") }

// Daemon is one hotdeskd process of a test, driven through hotdeskctl as an
// administrator would. The test's cleanup stops it (SIGINT, then SIGKILL
// after a bound) and, when the test failed, logs the tail of its log.
type Daemon struct {
	// Bin is the directory holding hotdeskd and hotdeskctl (Build).
	Bin string
	// Dir holds the configuration (hotdesk.hcl) and the log (hotdeskd.log).
	Dir string
	// Config is the configuration file's path; Socket the admin socket
	// the configuration names.
	Config, Socket string
	// Pin is the terminal listener's certificate fingerprint, as
	// `hotdesk-term -pin` takes it.
	Pin string
	// Name names the daemon in failure messages ("hotdeskd" unless set).
	Name string
	// Wrap is a command hotdeskd runs under that execs it (prlimit …).
	Wrap []string

	t       testing.TB
	cmd     *exec.Cmd
	done    chan struct{}
	exitErr error // cmd.Wait's, set before done closes
}

// NewDaemon writes cfg (with a kiosk account prefix of the test's own,
// WithOwnKioskAccounts) to dir/hotdesk.hcl and reads the daemon's
// certificate fingerprint (hotdeskd -fingerprint). socket is the admin
// socket cfg names. Start runs the daemon.
func NewDaemon(t testing.TB, bin, dir, socket, cfg string) *Daemon {
	t.Helper()
	d := &Daemon{Bin: bin, Dir: dir, Config: filepath.Join(dir, "hotdesk.hcl"), Socket: socket, Name: "hotdeskd", t: t}
	// Its own kiosk accounts, removed after it stops (this cleanup runs
	// after the daemon's, registered below).
	cfg = WithOwnKioskAccounts(t, cfg)
	if err := os.WriteFile(d.Config, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	fp, err := exec.Command(filepath.Join(bin, "hotdeskd"), "-config", d.Config, "-fingerprint").Output()
	if err != nil {
		t.Fatalf("%s: fingerprint: %v", d.Name, err)
	}
	d.Pin = strings.TrimSpace(string(fp))
	t.Cleanup(func() {
		d.Stop(os.Interrupt)
		// Desktops outlive a daemon that keeps them (keep_on_stop, the
		// default): end those it recorded, or every test run leaves
		// westons behind for the next tests to compete with.
		KillRecordedDesktops(dir)
		if t.Failed() {
			t.Logf("%s log (tail):\n%s", d.Name, d.LogTail(64<<10))
		}
	})
	return d
}

// KillRecordedDesktops kills the process group of every desktop recorded
// below dir (a weston session.json) whose process is still the one
// recorded (its start time matches): what a stopped daemon left running.
func KillRecordedDesktops(dir string) {
	_ = filepath.WalkDir(dir, func(path string, e fs.DirEntry, err error) error {
		if err != nil || e.IsDir() || e.Name() != "session.json" {
			return nil
		}
		b, err := os.ReadFile(path)
		if err != nil {
			return nil
		}
		var rec struct {
			PID        int    `json:"pid"`
			StartTicks uint64 `json:"start_ticks"`
		}
		if json.Unmarshal(b, &rec) != nil || rec.PID <= 1 {
			return nil
		}
		stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", rec.PID))
		i := bytes.LastIndexByte(stat, ')')
		if err != nil || i < 0 {
			return nil
		}
		fields := strings.Fields(string(stat[i+1:]))
		// After the name: state is field 3, start time field 22.
		if len(fields) < 20 || fields[19] != strconv.FormatUint(rec.StartTicks, 10) {
			return nil
		}
		_ = syscall.Kill(-rec.PID, syscall.SIGKILL)
		_ = syscall.Kill(rec.PID, syscall.SIGKILL)
		return nil
	})
}

// LogPath is the daemon's log file (its stderr, appended across restarts).
func (d *Daemon) LogPath() string { return filepath.Join(d.Dir, "hotdeskd.log") }

// LogTail returns at most the last n bytes of the daemon's log.
func (d *Daemon) LogTail(n int) string {
	b, _ := os.ReadFile(d.LogPath())
	if len(b) > n {
		b = b[len(b)-n:]
	}
	return string(b)
}

// LogLines returns the lines of the daemon's log at level ("ERROR",
// "WARN", …) so far.
func (d *Daemon) LogLines(level string) []string {
	b, _ := os.ReadFile(d.LogPath())
	var out []string
	for _, l := range strings.Split(string(b), "\n") {
		if strings.Contains(l, "["+level+"]") {
			out = append(out, l)
		}
	}
	return out
}

// Start runs hotdeskd and waits until it reports ready (hotdeskctl ready),
// failing the test after ReadyBound.
func (d *Daemon) Start() {
	d.t.Helper()
	d.Launch()
	d.WaitReady()
}

// Launch runs hotdeskd without waiting for it to be ready.
func (d *Daemon) Launch() {
	d.t.Helper()
	argv := append(append([]string{}, d.Wrap...), filepath.Join(d.Bin, "hotdeskd"), "-config", d.Config)
	d.cmd = exec.Command(argv[0], argv[1:]...)
	logf, err := os.OpenFile(d.LogPath(), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		d.t.Fatal(err)
	}
	d.cmd.Stderr = logf
	if err := d.cmd.Start(); err != nil {
		logf.Close()
		d.t.Fatal(err)
	}
	d.done = make(chan struct{})
	cmd, done := d.cmd, d.done
	go func() { d.exitErr = cmd.Wait(); logf.Close(); close(done) }()
}

// WaitReady waits until the daemon reports ready, failing the test after
// ReadyBound or when the daemon exits first.
func (d *Daemon) WaitReady() {
	d.t.Helper()
	deadline := time.Now().Add(ReadyBound)
	for {
		if _, err := d.Ctl("-timeout", "2s", "ready"); err == nil {
			return
		}
		select {
		case <-d.done:
			d.t.Fatalf("%s exited before it was ready", d.Name)
		default:
		}
		if time.Now().After(deadline) {
			d.t.Fatalf("%s not ready in %v", d.Name, ReadyBound)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// Stop sends sig and waits for the daemon to exit, killing it after a
// bound. It does nothing when the daemon is not running.
func (d *Daemon) Stop(sig os.Signal) {
	if d.cmd == nil {
		return
	}
	d.cmd.Process.Signal(sig)
	select {
	case <-d.done:
	case <-time.After(stopBound):
		d.cmd.Process.Kill()
		<-d.done
	}
	d.cmd = nil
}

// PID is the running daemon's process id (0 when not running).
func (d *Daemon) PID() int {
	if d.cmd == nil {
		return 0
	}
	return d.cmd.Process.Pid
}

// Exited is closed when the daemon last started has exited.
func (d *Daemon) Exited() <-chan struct{} { return d.done }

// ExitErr is how the daemon last started ended (nil: exit status 0); call
// it after Exited has closed.
func (d *Daemon) ExitErr() error { return d.exitErr }

// Ctl runs hotdeskctl against the daemon's admin socket and returns its
// standard output; a failure's error carries its standard error.
func (d *Daemon) Ctl(args ...string) ([]byte, error) {
	cmd := exec.Command(filepath.Join(d.Bin, "hotdeskctl"), append([]string{"-socket", d.Socket}, args...)...)
	var stderr strings.Builder
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return out, fmt.Errorf("hotdeskctl %s: %w: %s", strings.Join(args, " "), err, strings.TrimSpace(stderr.String()))
	}
	return out, nil
}

// MustCtl is Ctl failing the test on an error.
func (d *Daemon) MustCtl(args ...string) []byte {
	d.t.Helper()
	out, err := d.Ctl(args...)
	if err != nil {
		d.t.Fatalf("%s: %v", d.Name, err)
	}
	return out
}

// Exec runs the program bin with args and returns its combined output and
// exit status; a program that cannot be started fails the test.
func Exec(t testing.TB, bin string, args ...string) (string, int) {
	t.Helper()
	out, err := exec.Command(bin, args...).CombinedOutput()
	var ee *exec.ExitError
	switch {
	case err == nil:
		return string(out), 0
	case errors.As(err, &ee):
		return string(out), ee.ExitCode()
	default:
		t.Fatalf("%s: %v", bin, err)
		return "", -1
	}
}

// JSONEvents decodes r's lines as JSON objects (a -json process's events)
// onto the returned channel, passing over lines that are not, and closes it
// at EOF or a read error: its goroutine ends when the process's output
// does. buf is the channel's buffer.
func JSONEvents(r io.Reader, buf int) <-chan map[string]any {
	ch := make(chan map[string]any, buf)
	go func() {
		defer close(ch)
		sc := bufio.NewScanner(r)
		for sc.Scan() {
			var ev map[string]any
			if json.Unmarshal(sc.Bytes(), &ev) == nil {
				ch <- ev
			}
		}
	}()
	return ch
}

// StartEvents starts cmd, a process that prints JSON events on its standard
// output (hotdesk-term -json, hotdeskctl events --json), and returns its
// events (JSONEvents, buf of them buffered) and its standard input. When the
// test ends, its standard input is closed and it gets SIGTERM, then SIGKILL
// if it has not exited after a bound, and is waited for.
func StartEvents(t testing.TB, cmd *exec.Cmd, buf int) (<-chan map[string]any, io.WriteCloser) {
	t.Helper()
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		stdin.Close()
		cmd.Process.Signal(syscall.SIGTERM)
		// Not waited for before: Wait closes stdout, which may still
		// hold the last events.
		exited := make(chan struct{})
		go func() {
			cmd.Wait()
			close(exited)
		}()
		select {
		case <-exited:
		case <-time.After(stopBound):
			cmd.Process.Kill()
			<-exited
		}
	})
	return JSONEvents(stdout, buf), stdin
}

// NextEvent returns the next event of evs (JSONEvents of a -json process)
// whose "event" is want, passing over the others. It fails the test when an
// "error" event comes first (unless want is "error"), when evs closes (the
// process has exited), or after d.
func NextEvent(t testing.TB, evs <-chan map[string]any, want string, d time.Duration) map[string]any {
	t.Helper()
	return AwaitEvent(t, evs, fmt.Sprintf("event %q", want), d, func(ev map[string]any) bool {
		if ev["event"] == "error" && want != "error" {
			t.Fatalf("error event while waiting for %q: %v", want, ev)
		}
		return ev["event"] == want
	})
}

// Drain hands each event evs holds now to f, without waiting for more.
func Drain(evs <-chan map[string]any, f func(ev map[string]any)) {
	for {
		select {
		case ev, ok := <-evs:
			if !ok {
				return
			}
			f(ev)
		default:
			return
		}
	}
}

// AwaitEvent returns the first event of evs that match accepts, passing
// over the others (match may fail the test on an event that must not
// come). It fails the test when evs closes (the process has exited) or
// after d; what names the awaited event in those failures.
func AwaitEvent(t testing.TB, evs <-chan map[string]any, what string, d time.Duration, match func(ev map[string]any) bool) map[string]any {
	t.Helper()
	timeout := time.After(d)
	for {
		select {
		case ev, ok := <-evs:
			if !ok {
				t.Fatalf("process exited while waiting for %s", what)
			}
			if match(ev) {
				return ev
			}
		case <-timeout:
			t.Fatalf("no %s in %v", what, d)
		}
	}
}
