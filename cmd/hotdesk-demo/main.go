// Command hotdesk-demo runs the scripted hot-desk of `make demo` against the
// real binaries: one hotdeskd on the embedded etcd, two hotdesk-term
// terminals, a software token enrolled by pairing code and moved between
// them. It prints a timeline in milliseconds and exits non-zero if any step
// does not happen as the product promises.
package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"time"
)

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "demo failed:", err)
		os.Exit(1)
	}
}

type demo struct {
	bin     string
	dir     string
	socket  string
	addr    string
	pin     string
	start   time.Time
	verbose bool
	daemon  *exec.Cmd
}

func run() error {
	bin := flag.String("bin", "bin", "directory holding hotdeskd, hotdesk-term and hotdeskctl")
	keep := flag.Bool("keep", false, "keep the demo directory")
	verbose := flag.Bool("v", false, "show the daemon's log")
	flag.Parse()

	dir, err := os.MkdirTemp("", "hotdesk-demo-")
	if err != nil {
		return err
	}
	if !*keep {
		defer os.RemoveAll(dir)
	}
	d := &demo{bin: *bin, dir: dir, socket: filepath.Join(dir, "admin.sock"), verbose: *verbose}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	defer d.stopDaemon()
	return d.script(ctx)
}

func (d *demo) step(format string, args ...any) {
	fmt.Printf("%8.1f ms  %s\n", float64(time.Since(d.start).Microseconds())/1000, fmt.Sprintf(format, args...))
}

func (d *demo) script(ctx context.Context) error {
	port, err := freePort()
	if err != nil {
		return err
	}
	d.addr = fmt.Sprintf("127.0.0.1:%d", port)
	etcdClient, err1 := freePort()
	etcdPeer, err2 := freePort()
	if err := errors.Join(err1, err2); err != nil {
		return err
	}
	cfgPath := filepath.Join(d.dir, "hotdesk.hcl")
	cfg := fmt.Sprintf(`server_id    = "demo-1"
data_dir     = %q
listen       = %q
advertise    = %q
admin_socket = %q
log_level    = "info"
etcd {
  embedded {
    client_url = "http://127.0.0.1:%d"
    peer_url   = "http://127.0.0.1:%d"
  }
}
session {
  suspend_timeout = "1h"
  auth            = "kiosk"
  kiosk_user      = "demo"
}
`, filepath.Join(d.dir, "data"), d.addr, d.addr, d.socket, etcdClient, etcdPeer)
	if err := os.WriteFile(cfgPath, []byte(cfg), 0o600); err != nil {
		return err
	}

	fmt.Println("hotdesk demo: one broker (embedded etcd), two terminals, one software token")
	fmt.Println()
	d.start = time.Now()
	if err := d.startDaemon(cfgPath); err != nil {
		return err
	}
	if err := d.waitReady(ctx); err != nil {
		return err
	}
	d.step("hotdeskd ready on %s (embedded etcd, weston backend)", d.addr)
	fp, err := exec.CommandContext(ctx, filepath.Join(d.bin, "hotdeskd"), "-config", cfgPath, "-fingerprint").Output()
	if err != nil {
		return fmt.Errorf("hotdeskd -fingerprint: %w", err)
	}
	d.pin = strings.TrimSpace(string(fp))

	var pr struct{ Code string }
	if err := d.ctlJSON(ctx, &pr, "token", "pair", "-user", "demo", "-label", "demo token", "-json"); err != nil {
		return err
	}
	d.step("admin created pairing code %s (hotdeskctl token pair)", pr.Code)
	ks1 := filepath.Join(d.dir, "term1", "tokens.json")
	out, err := exec.CommandContext(ctx, filepath.Join(d.bin, "hotdesk-term"), "-server", d.addr, "-pin", d.pin,
		"-id", "term-1", "-keystore", ks1, "-json", "pair", pr.Code).CombinedOutput()
	if err != nil {
		return fmt.Errorf("pair: %v: %s", err, out)
	}
	token := jsonField(out, "paired", "token")
	if token == "" {
		return fmt.Errorf("pair: no token in %q", out)
	}
	d.step("terminal 1 enrolled software token %s", token)
	// The person carries the token (its key) to the other terminal.
	ks2 := filepath.Join(d.dir, "term2", "tokens.json")
	if err := copyFile(ks1, ks2); err != nil {
		return err
	}

	t1, err := d.terminal(ctx, "term-1", ks1)
	if err != nil {
		return err
	}
	t2, err := d.terminal(ctx, "term-2", ks2)
	if err != nil {
		return err
	}
	if _, err := t1.wait(ctx, "connected"); err != nil {
		return err
	}
	if _, err := t2.wait(ctx, "connected"); err != nil {
		return err
	}
	d.step("terminals term-1 and term-2 connected (TLS 1.3, pinned %s…)", d.pin[:19])

	// 1. Insert at terminal 1: a new session.
	t0 := time.Now()
	t1.cmd("insert default")
	att, err := t1.wait(ctx, "attached")
	if err != nil {
		return err
	}
	took := ms(t0)
	session := att["session"].(string)
	pid, state, err := d.sessionPID(ctx, session)
	if err != nil {
		return err
	}
	d.step("token inserted at term-1 → session %s created, weston pid %d, %s  [%s]", session, pid, state, took)

	// 2. Remove: suspended, compositor still running.
	t0 = time.Now()
	t1.cmd("remove default")
	det, err := t1.wait(ctx, "detached")
	if err != nil {
		return err
	}
	took = ms(t0)
	pid2, state, err := d.sessionPID(ctx, session)
	if err != nil {
		return err
	}
	if state != "suspended" || pid2 != pid || !alive(pid) {
		return fmt.Errorf("after removal: state %s pid %d (alive %v); want suspended pid %d alive", state, pid2, alive(pid2), pid)
	}
	d.step("token removed at term-1 → %s, session %s, weston pid %d still running  [%s]", det["reason"], state, pid2, took)

	// 3. Insert at terminal 2: the same session resumes there.
	t0 = time.Now()
	t2.cmd("insert default")
	att, err = t2.wait(ctx, "attached")
	if err != nil {
		return err
	}
	took = ms(t0)
	pid3, state, err := d.sessionPID(ctx, session)
	if err != nil {
		return err
	}
	if att["session"] != session || att["resumed"] != true || pid3 != pid {
		return fmt.Errorf("at term-2: session %v resumed %v pid %d; want %s resumed pid %d", att["session"], att["resumed"], pid3, session, pid)
	}
	d.step("token inserted at term-2 → session %s resumed (same id, weston pid %d), %s  [%s]", session, pid3, state, took)

	// 4. Insert at terminal 1 while active at terminal 2: takeover.
	t0 = time.Now()
	t1.cmd("insert default")
	att, err = t1.wait(ctx, "attached")
	if err != nil {
		return err
	}
	det, err = t2.wait(ctx, "detached")
	if err != nil {
		return err
	}
	if att["session"] != session || det["reason"] != "takeover" {
		return fmt.Errorf("takeover: term-1 got %v, term-2 told %v", att["session"], det["reason"])
	}
	d.step("token inserted at term-1 while active at term-2 → takeover; term-2 told %q (%v)  [%s]", det["reason"], det["message"], ms(t0))

	pid4, _, err := d.sessionPID(ctx, session)
	if err != nil {
		return err
	}
	if pid4 != pid {
		return fmt.Errorf("weston pid changed: %d → %d", pid, pid4)
	}
	t1.cmd("quit")
	t2.cmd("quit")
	d.stopDaemon()
	d.step("hotdeskd stopped (SIGTERM); session %s kept one weston (pid %d) from start to end", session, pid)
	fmt.Println("\ndemo ok")
	return nil
}

func ms(t0 time.Time) string {
	return fmt.Sprintf("%.1f ms", float64(time.Since(t0).Microseconds())/1000)
}

func (d *demo) startDaemon(cfgPath string) error {
	cmd := exec.Command(filepath.Join(d.bin, "hotdeskd"), "-config", cfgPath)
	logf, err := os.Create(filepath.Join(d.dir, "hotdeskd.log"))
	if err != nil {
		return err
	}
	if d.verbose {
		cmd.Stderr = io.MultiWriter(logf, os.Stderr)
	} else {
		cmd.Stderr = logf
	}
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("start hotdeskd: %w", err)
	}
	d.daemon = cmd
	return nil
}

func (d *demo) stopDaemon() {
	if d.daemon == nil {
		return
	}
	_ = d.daemon.Process.Signal(syscall.SIGTERM)
	done := make(chan error, 1)
	go func() { done <- d.daemon.Wait() }()
	select {
	case <-done:
	case <-time.After(30 * time.Second):
		_ = d.daemon.Process.Kill()
		<-done
	}
	d.daemon = nil
}

func (d *demo) daemonLog() string {
	b, _ := os.ReadFile(filepath.Join(d.dir, "hotdeskd.log"))
	s := string(b)
	if len(s) > 4000 {
		s = s[len(s)-4000:]
	}
	return s
}

func (d *demo) waitReady(ctx context.Context) error {
	deadline := time.Now().Add(60 * time.Second)
	for time.Now().Before(deadline) {
		if d.daemon.ProcessState != nil {
			break
		}
		if err := exec.CommandContext(ctx, filepath.Join(d.bin, "hotdeskctl"), "-socket", d.socket, "ready").Run(); err == nil {
			return nil
		}
		time.Sleep(50 * time.Millisecond)
	}
	return fmt.Errorf("hotdeskd did not become ready; its log:\n%s", d.daemonLog())
}

func (d *demo) ctlJSON(ctx context.Context, v any, args ...string) error {
	out, err := exec.CommandContext(ctx, filepath.Join(d.bin, "hotdeskctl"), append([]string{"-socket", d.socket}, args...)...).Output()
	if err != nil {
		var ee *exec.ExitError
		if errors.As(err, &ee) {
			return fmt.Errorf("hotdeskctl %s: %v: %s", strings.Join(args, " "), err, ee.Stderr)
		}
		return err
	}
	return json.Unmarshal(out, v)
}

// sessionPID asks the admin API for a session's compositor pid and state.
func (d *demo) sessionPID(ctx context.Context, id string) (int, string, error) {
	var ss []struct {
		ID    string
		State string
		PID   int
	}
	if err := d.ctlJSON(ctx, &ss, "sessions", "-json"); err != nil {
		return 0, "", err
	}
	for _, s := range ss {
		if s.ID == id {
			return s.PID, s.State, nil
		}
	}
	return 0, "", fmt.Errorf("session %s not listed", id)
}

// term drives one hotdesk-term over its stdin and JSON event lines.
type term struct {
	name   string
	stdin  io.WriteCloser
	events chan map[string]any
	d      *demo
}

func (d *demo) terminal(ctx context.Context, id, keystore string) (*term, error) {
	cmd := exec.CommandContext(ctx, filepath.Join(d.bin, "hotdesk-term"), "-server", d.addr, "-pin", d.pin,
		"-id", id, "-keystore", keystore, "-json", "run")
	stdin, err := cmd.StdinPipe()
	if err != nil {
		return nil, err
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	logf, err := os.Create(filepath.Join(d.dir, id+".log"))
	if err != nil {
		return nil, err
	}
	cmd.Stderr = logf
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start %s: %w", id, err)
	}
	t := &term{name: id, stdin: stdin, events: make(chan map[string]any, 64), d: d}
	go func() {
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			var ev map[string]any
			if json.Unmarshal(sc.Bytes(), &ev) == nil {
				t.events <- ev
			}
		}
		close(t.events)
		_ = cmd.Wait()
	}()
	return t, nil
}

func (t *term) cmd(line string) { fmt.Fprintln(t.stdin, line) }

// wait returns the next event named want; an error event fails the demo.
func (t *term) wait(ctx context.Context, want string) (map[string]any, error) {
	timeout := time.After(30 * time.Second)
	for {
		select {
		case ev, ok := <-t.events:
			if !ok {
				return nil, fmt.Errorf("%s exited while waiting for %q", t.name, want)
			}
			if ev["event"] == want {
				return ev, nil
			}
			if ev["event"] == "error" {
				return nil, fmt.Errorf("%s: error while waiting for %q: %v", t.name, want, ev["message"])
			}
		case <-timeout:
			return nil, fmt.Errorf("%s: no %q event in 30 s; daemon log:\n%s", t.name, want, t.d.daemonLog())
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
}

func jsonField(out []byte, event, field string) string {
	for _, line := range strings.Split(string(out), "\n") {
		var ev map[string]any
		if json.Unmarshal([]byte(line), &ev) == nil && ev["event"] == event {
			s, _ := ev[field].(string)
			return s
		}
	}
	return ""
}

func copyFile(src, dst string) error {
	b, err := os.ReadFile(src)
	if err != nil {
		return err
	}
	if err := os.MkdirAll(filepath.Dir(dst), 0o700); err != nil {
		return err
	}
	return os.WriteFile(dst, b, 0o600)
}

func freePort() (int, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port, nil
}

func alive(pid int) bool {
	return pid > 0 && syscall.Kill(pid, 0) == nil
}
