// Command hotdesk-demo runs the scripted hot-desk of `make demo` against the
// real binaries: a hotdeskd on the embedded etcd, hotdesk-term terminals, a
// software token enrolled by pairing code and moved between them (created,
// suspended, resumed, taken over), a password login, a restart of hotdeskd
// that keeps the desktop, and a second hotdeskd joining the group, to which
// a terminal presents the token and is redirected. -cards is the smart-card
// version (virtual readers and cards), -from the same demo as an upgrade
// from the previous release. It prints a timeline in milliseconds and exits
// non-zero if any step does not happen as the product promises.
package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/hotdesk/hotdesk/internal/freeport"
	"github.com/hotdesk/hotdesk/internal/version"
)

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "demo failed:", err)
		os.Exit(1)
	}
}

type demo struct {
	bin string
	// from is the previous release's bin directory (-from): demo-1 starts
	// from its hotdeskd and is upgraded to bin's at the restart, demo-2
	// joins running it, and terminals 1 and 3 run its hotdesk-term.
	from    string
	dir     string
	start   time.Time
	verbose io.Writer // with -v, where the daemons' logs go as well (nil: none)
	nodes   []*node
	// etcdURL is the embedded etcd of the first broker; later brokers join it.
	etcdURL string
	etcdTLS string // the first broker's embedded etcd certificates
	// pamDir holds the demo's PAM service: pam_matrix with a password file.
	pamDir string
	// userAdded is the local user the demo created ("" if none), removed
	// when it ends.
	userAdded string
}

// node is one running hotdeskd.
type node struct {
	name   string
	bin    string // the directory of the hotdeskd it runs
	cfg    string
	addr   string
	socket string
	pin    string
	log    string
	cmd    *exec.Cmd
	exited chan struct{} // closed when the process has exited
}

func run() error {
	bin := flag.String("bin", "bin", "directory holding hotdeskd, hotdesk-term and hotdeskctl")
	keep := flag.Bool("keep", false, "keep the demo directory")
	verbose := flag.Bool("v", false, "show the daemon's log")
	cards := flag.Bool("cards", false, "the smart-card demo: a virtual card moved between two virtual readers (private pcscd + vpcd)")
	from := flag.String("from", "", "the upgrade demo: the previous release's bin directory; demo-1 runs its hotdeskd until the restart, which upgrades it to -bin's, demo-2 joins running it (a group of two releases), terminals 1 and 3 run its hotdesk-term")
	showVersion := flag.Bool("version", false, "print the version and exit")
	flag.Parse() // exits 2 on a bad flag, 0 on -help
	if flag.NArg() > 0 {
		fmt.Fprintf(os.Stderr, "hotdesk-demo: unexpected argument %q\n", flag.Arg(0))
		flag.Usage()
		os.Exit(2)
	}
	if *showVersion {
		fmt.Println("hotdesk-demo", version.String())
		return nil
	}
	if *from != "" && *cards {
		fmt.Fprintln(os.Stderr, "hotdesk-demo: -from is the software-token demo's; not with -cards")
		os.Exit(2)
	}

	dir, err := os.MkdirTemp("", "hotdesk-demo-")
	if err != nil {
		return err
	}
	if !*keep {
		defer os.RemoveAll(dir)
	}
	d := &demo{bin: *bin, from: *from, dir: dir}
	if *verbose {
		d.verbose = os.Stderr
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	defer d.removeUser() // after the desktops running as the user are gone
	defer d.stopAll()
	if *cards {
		return d.cardScript(ctx)
	}
	return d.script(ctx)
}

func (d *demo) step(format string, args ...any) {
	fmt.Printf("%8.1f ms  %s\n", float64(time.Since(d.start).Microseconds())/1000, fmt.Sprintf(format, args...))
}

func (d *demo) script(ctx context.Context) error {
	fmt.Println("hotdesk demo: brokers on the embedded etcd, terminals, one software token")
	if d.from != "" {
		fmt.Printf("upgrade: from %s (%s) to %s (%s)\n", d.from, d.release(d.from), d.bin, d.release(d.bin))
	}
	fmt.Println()
	d.start = time.Now()
	n1, err := d.startFirst(ctx)
	if err != nil {
		return err
	}
	d.step("hotdeskd demo-1 %sready on %s (embedded etcd, weston backend)", d.runs(n1.bin), n1.addr)

	var pr struct{ Code string }
	if err := d.ctlJSON(ctx, n1, &pr, "token", "pair", "-user", "demo", "-label", "demo token", "-json"); err != nil {
		return err
	}
	d.step("admin created pairing code %s (hotdeskctl token pair)", pr.Code)
	ks1 := filepath.Join(d.dir, "term-1", "tokens.json")
	out, err := exec.CommandContext(ctx, filepath.Join(d.bin, "hotdesk-term"), "-server", n1.addr, "-pin", n1.pin,
		"-id", "term-1", "-keystore", ks1, "-json", "pair", pr.Code).CombinedOutput()
	if err != nil {
		return fmt.Errorf("pair: %v: %s", err, out)
	}
	token := jsonField(out, "paired", "token")
	if token == "" {
		return fmt.Errorf("pair: no token in %q", out)
	}
	d.step("terminal 1 enrolled software token %s", token)

	t1, err := d.terminal(ctx, "term-1", ks1, n1)
	if err != nil {
		return err
	}
	t2, err := d.carriedTo(ctx, "term-2", ks1, n1)
	if err != nil {
		return err
	}
	if err := connected(ctx, t1, t2); err != nil {
		return err
	}
	d.step("terminals term-1 %sand term-2 %sconnected to demo-1 (TLS 1.3, pinned %s…)", d.runs(d.termBin("term-1")), d.runs(d.termBin("term-2")), n1.pin[:19])

	// 1. Insert at terminal 1: a new session.
	t0 := time.Now()
	t1.cmd("insert default")
	att, err := t1.wait(ctx, "attached")
	if err != nil {
		return err
	}
	took := ms(t0)
	session := att["session"].(string)
	pid, state, err := d.sessionPID(ctx, n1, session)
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
	// The broker cuts the terminal first, then suspends the desktop: the
	// state follows the detach shortly after.
	pid2, state, err := d.awaitState(ctx, n1, session, "suspended")
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
	pid3, state, err := d.sessionPID(ctx, n1, session)
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

	// 5. Password login without a card (user carol, policy "password"): the
	// terminal relays PAM's prompt; the user name locates the session.
	t0 = time.Now()
	t2.cmd("login carol")
	pr2, err := t2.wait(ctx, "prompt")
	if err != nil {
		return err
	}
	t2.cmd("answer carol-pw")
	att, err = t2.wait(ctx, "attached")
	if err != nil {
		return err
	}
	if att["user"] != "carol" {
		return fmt.Errorf("password login: attached as %v; want carol", att["user"])
	}
	d.step("login carol at term-2 → PAM asked %q, password answered → session %v for carol  [%s]", pr2["text"], att["session"], ms(t0))

	// 6. hotdeskd restarts (an upgrade): the desktops keep running, the new
	// process re-adopts them, and the terminals reconnect by themselves.
	// With -from, the new process is this release's.
	t0 = time.Now()
	n1.stop()
	if !alive(pid) {
		return fmt.Errorf("weston %d did not survive the broker's stop", pid)
	}
	n1.bin = d.bin
	if err := d.launch(ctx, n1); err != nil {
		return err
	}
	att, err = t1.wait(ctx, "attached")
	if err != nil {
		return err
	}
	pidR, stateR, err := d.sessionPID(ctx, n1, session)
	if err != nil {
		return err
	}
	if att["session"] != session || pidR != pid {
		return fmt.Errorf("after restart: session %v pid %d; want %s pid %d", att["session"], pidR, session, pid)
	}
	d.step("hotdeskd demo-1 restarted %s→ session %s re-adopted (weston pid %d unchanged), term-1 reconnected and resumed it, %s  [%s]", d.runs(n1.bin), session, pidR, stateR, ms(t0))

	// 7. A second broker joins the group; a terminal on it finds the session on demo-1.
	n2, err := d.startNode(ctx, "demo-2", d.oldOr(d.bin))
	if err != nil {
		return err
	}
	var servers []struct {
		ID       string
		Sessions int
	}
	if err := d.ctlJSON(ctx, n2, &servers, "server", "list", "-json"); err != nil {
		return err
	}
	d.step("hotdeskd demo-2 %sjoined the group (demo-1's etcd) on %s; hotdeskctl server list shows %d servers", d.runs(n2.bin), n2.addr, len(servers))
	t3, err := d.carriedTo(ctx, "term-3", ks1, n2)
	if err != nil {
		return err
	}
	if err := connected(ctx, t3); err != nil {
		return err
	}
	t1.cmd("remove default")
	if _, err := t1.wait(ctx, "detached"); err != nil {
		return err
	}
	t0 = time.Now()
	t3.cmd("insert default")
	red, err := t3.wait(ctx, "redirect")
	if err != nil {
		return err
	}
	att, err = t3.wait(ctx, "attached")
	if err != nil {
		return err
	}
	took = ms(t0)
	if att["session"] != session || att["server"] != "demo-1" || red["server"] != "demo-1" {
		return fmt.Errorf("cross-server: redirect %v, attached %v on %v; want session %s on demo-1", red["server"], att["session"], att["server"], session)
	}
	d.step("token inserted at term-3 %son demo-2 → redirected to demo-1 (fence %v) → session %s resumed there  [%s]", d.runs(d.termBin("term-3")), red["fence"], session, took)

	pid4, _, err := d.sessionPID(ctx, n1, session)
	if err != nil {
		return err
	}
	if pid4 != pid {
		return fmt.Errorf("weston pid changed: %d → %d", pid, pid4)
	}
	for _, t := range []*term{t1, t2, t3} {
		t.cmd("quit")
	}
	d.stopAll()
	d.step("sessions ended, brokers stopped; session %s kept one weston (pid %d) from start to end", session, pid)
	fmt.Println("\ndemo ok")
	return nil
}

func ms(t0 time.Time) string {
	return fmt.Sprintf("%.1f ms", float64(time.Since(t0).Microseconds())/1000)
}

// matrixModule is libpam-wrapper's test module: passwords from a file.
const matrixModule = "/usr/lib/x86_64-linux-gnu/pam_wrapper/pam_matrix.so"

// writePAM writes the demo's PAM service "hotdesk": pam_matrix with one
// user, carol, password carol-pw.
func (d *demo) writePAM() error {
	if _, err := os.Stat(matrixModule); err != nil {
		return fmt.Errorf("pam_matrix (Debian package libpam-wrapper) is needed for the password login: %w", err)
	}
	d.pamDir = filepath.Join(d.dir, "pam.d")
	if err := os.MkdirAll(d.pamDir, 0o755); err != nil {
		return err
	}
	db := filepath.Join(d.dir, "passdb")
	if err := os.WriteFile(db, []byte("carol:carol-pw:hotdesk\n"), 0o600); err != nil {
		return err
	}
	stack := fmt.Sprintf("auth required %[1]s passdb=%[2]s\naccount required %[1]s passdb=%[2]s\n", matrixModule, db)
	return os.WriteFile(filepath.Join(d.pamDir, "hotdesk"), []byte(stack), 0o644)
}

// carriedTo starts terminal id on broker n with a copy of the software
// token keystore ks: the person carries the token (its key) to that
// terminal.
func (d *demo) carriedTo(ctx context.Context, id, ks string, n *node) (*term, error) {
	b, err := os.ReadFile(ks)
	if err != nil {
		return nil, err
	}
	copied := filepath.Join(d.dir, id, "tokens.json")
	if err := os.MkdirAll(filepath.Dir(copied), 0o700); err != nil {
		return nil, err
	}
	if err := os.WriteFile(copied, b, 0o600); err != nil {
		return nil, err
	}
	return d.terminal(ctx, id, copied, n)
}

// startFirst writes the PAM service and starts the first broker, demo-1,
// which runs the group's embedded etcd.
func (d *demo) startFirst(ctx context.Context) (*node, error) {
	if err := d.writePAM(); err != nil {
		return nil, err
	}
	return d.startNode(ctx, "demo-1", d.oldOr(d.bin))
}

// oldOr returns the previous release's bin directory with -from, else bin.
func (d *demo) oldOr(bin string) string {
	if d.from != "" {
		return d.from
	}
	return bin
}

// termBin is the bin directory of terminal id's hotdesk-term: with -from,
// terminals 1 and 3 run the previous release's (an old terminal at an
// upgraded broker), terminal 2 this one's (a new terminal at a broker not
// upgraded yet).
func (d *demo) termBin(id string) string {
	if id == "term-2" {
		return d.bin
	}
	return d.oldOr(d.bin)
}

// runs says, with -from, which release bin is ("(f477c10) "), for a step's
// line; "" otherwise.
func (d *demo) runs(bin string) string {
	if d.from == "" {
		return ""
	}
	return "(" + d.release(bin) + ") "
}

// release is the version bin's hotdeskd reports.
func (d *demo) release(bin string) string {
	out, err := exec.Command(filepath.Join(bin, "hotdeskd"), "-version").Output()
	if err != nil {
		return "?"
	}
	f := strings.Fields(string(out))
	if len(f) == 0 {
		return "?"
	}
	return f[len(f)-1]
}

// startNode writes a config for a new broker, starts it and waits until it
// is ready. The first broker runs the embedded etcd; later ones join it.
func (d *demo) startNode(ctx context.Context, name, bin string) (*node, error) {
	port, err := freeport.Loopback()
	if err != nil {
		return nil, err
	}
	n := &node{name: name, bin: bin, addr: fmt.Sprintf("127.0.0.1:%d", port),
		socket: filepath.Join(d.dir, name+".sock"), cfg: filepath.Join(d.dir, name+".hcl"),
		log: filepath.Join(d.dir, name+".log")}
	var etcd string
	if d.etcdURL == "" {
		client, err1 := freeport.Loopback()
		peer, err2 := freeport.Loopback()
		if err := errors.Join(err1, err2); err != nil {
			return nil, err
		}
		d.etcdURL = fmt.Sprintf("https://127.0.0.1:%d", client)
		d.etcdTLS = filepath.Join(d.dir, name, "etcd-tls") // the first broker's private etcd PKI
		etcd = fmt.Sprintf("etcd {\n  embedded {\n    client_url = %q\n    peer_url   = \"https://127.0.0.1:%d\"\n  }\n}\n", d.etcdURL, peer)
	} else {
		// The embedded etcd takes only clients with its certificate.
		etcd = fmt.Sprintf("etcd {\n  endpoints = [%q]\n  ca_file   = %q\n  cert_file = %q\n  key_file  = %q\n}\n", d.etcdURL,
			filepath.Join(d.etcdTLS, "ca.crt"), filepath.Join(d.etcdTLS, "client.crt"), filepath.Join(d.etcdTLS, "client.key"))
	}
	cfg := fmt.Sprintf(`server_id    = %q
data_dir     = %q
listen       = %q
advertise    = %q
admin_socket = %q
log_level    = "info"
%s
session {
  suspend_timeout = "1h"
  auth            = "kiosk"
  kiosk_user      = "demo"
  keep_on_stop    = true
}
auth {
  pam_dir      = %q
  open_session = false
  policy {
    users = ["carol"]
    auth  = "password"
  }
}
`, name, filepath.Join(d.dir, name), n.addr, n.addr, n.socket, etcd, d.pamDir)
	if err := os.WriteFile(n.cfg, []byte(cfg), 0o600); err != nil {
		return nil, err
	}
	fp, err := exec.CommandContext(ctx, filepath.Join(n.bin, "hotdeskd"), "-config", n.cfg, "-fingerprint").Output()
	if err != nil {
		return nil, fmt.Errorf("hotdeskd -fingerprint: %w", err)
	}
	n.pin = strings.TrimSpace(string(fp))
	d.nodes = append(d.nodes, n)
	if err := d.launch(ctx, n); err != nil {
		return nil, err
	}
	return n, nil
}

// launch starts n's hotdeskd and waits until it is ready.
func (d *demo) launch(ctx context.Context, n *node) error {
	n.cmd = exec.Command(filepath.Join(n.bin, "hotdeskd"), "-config", n.cfg)
	logf, err := os.OpenFile(n.log, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return err
	}
	if d.verbose != nil {
		// A pipe, copied to both while the daemon runs: logf stays open
		// until it has exited (closed earlier, the copy ends, and the
		// daemon's next log line meets a closed pipe: SIGPIPE kills it).
		n.cmd.Stderr = io.MultiWriter(logf, d.verbose)
	} else {
		n.cmd.Stderr = logf
	}
	if err := n.cmd.Start(); err != nil {
		logf.Close()
		return fmt.Errorf("start hotdeskd %s: %w", n.name, err)
	}
	exited := make(chan struct{})
	n.exited = exited
	go func() { _ = n.cmd.Wait(); logf.Close(); close(exited) }()
	deadline := time.Now().Add(60 * time.Second)
	for time.Now().Before(deadline) {
		select {
		case <-exited:
			return fmt.Errorf("hotdeskd %s exited; its log:\n%s", n.name, d.daemonLog())
		default:
		}
		if err := exec.CommandContext(ctx, filepath.Join(d.bin, "hotdeskctl"), "-socket", n.socket, "ready").Run(); err == nil {
			return nil
		}
		time.Sleep(50 * time.Millisecond)
	}
	return fmt.Errorf("hotdeskd %s did not become ready; its log:\n%s", n.name, d.daemonLog())
}

// stop stops n's hotdeskd with SIGTERM.
func (n *node) stop() {
	_ = n.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-n.exited:
	case <-time.After(30 * time.Second):
		_ = n.cmd.Process.Kill()
		<-n.exited
	}
}

// removeUser deletes the local user the demo added, if any.
func (d *demo) removeUser() {
	if d.userAdded == "" {
		return
	}
	if out, err := exec.Command("userdel", d.userAdded).CombinedOutput(); err != nil {
		fmt.Fprintf(os.Stderr, "hotdesk-demo: userdel %s: %v: %s\n", d.userAdded, err, out)
	}
	d.userAdded = ""
}

// stopAll ends every session (the brokers keep desktops across a stop)
// and then stops the brokers, newest first, with SIGTERM. Every session is
// killed while all brokers still run: a broker lists the group's sessions
// by asking every member, and a stopped one stays in the registry until
// its lease expires (it keeps its desktops' claims), so a listing after a
// stop would wait for its answer in vain.
func (d *demo) stopAll() {
	for i := len(d.nodes) - 1; i >= 0; i-- {
		n := d.nodes[i]
		var ss []struct{ ID string }
		if out, err := exec.Command(filepath.Join(d.bin, "hotdeskctl"), "-socket", n.socket, "sessions", "-json").Output(); err == nil {
			_ = json.Unmarshal(out, &ss)
		}
		for _, s := range ss {
			_ = exec.Command(filepath.Join(d.bin, "hotdeskctl"), "-socket", n.socket, "session", "kill", s.ID).Run()
		}
	}
	for i := len(d.nodes) - 1; i >= 0; i-- {
		d.nodes[i].stop()
	}
	d.nodes = nil
}

// daemonLog returns the tail of every broker's log.
func (d *demo) daemonLog() string {
	var sb strings.Builder
	for _, n := range d.nodes {
		b, _ := os.ReadFile(n.log)
		if len(b) > 3000 {
			b = b[len(b)-3000:]
		}
		fmt.Fprintf(&sb, "--- %s ---\n%s\n", n.name, b)
	}
	return sb.String()
}

func (d *demo) ctlJSON(ctx context.Context, n *node, v any, args ...string) error {
	out, err := exec.CommandContext(ctx, filepath.Join(d.bin, "hotdeskctl"), append([]string{"-socket", n.socket}, args...)...).Output()
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
func (d *demo) sessionPID(ctx context.Context, n *node, id string) (int, string, error) {
	var ss []struct {
		ID    string
		State string
		PID   int
	}
	if err := d.ctlJSON(ctx, n, &ss, "sessions", "-json"); err != nil {
		return 0, "", err
	}
	for _, s := range ss {
		if s.ID == id {
			return s.PID, s.State, nil
		}
	}
	return 0, "", fmt.Errorf("session %s not listed", id)
}

// awaitState polls a session's pid and state until the state is want, for
// at most 10 s, and returns the last seen.
func (d *demo) awaitState(ctx context.Context, n *node, id, want string) (int, string, error) {
	deadline := time.Now().Add(10 * time.Second)
	for {
		pid, state, err := d.sessionPID(ctx, n, id)
		if err != nil || state == want || time.Now().After(deadline) {
			return pid, state, err
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// term drives one hotdesk-term over its stdin and JSON event lines.
type term struct {
	name   string
	stdin  io.WriteCloser
	events chan map[string]any
	d      *demo
}

func (d *demo) terminal(ctx context.Context, id, keystore string, n *node, extra ...string) (*term, error) {
	args := append([]string{"-server", n.addr, "-pin", n.pin, "-id", id, "-keystore", keystore, "-json"}, extra...)
	cmd := exec.CommandContext(ctx, filepath.Join(d.termBin(id), "hotdesk-term"), append(args, "run")...)
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

// connected waits until every terminal of ts has connected to its broker.
func connected(ctx context.Context, ts ...*term) error {
	for _, t := range ts {
		if _, err := t.wait(ctx, "connected"); err != nil {
			return err
		}
	}
	return nil
}

func alive(pid int) bool {
	return pid > 0 && syscall.Kill(pid, 0) == nil
}
