package main

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/hotdesk/hotdesk/internal/testutil"
	"github.com/hotdesk/hotdesk/proto"
	"github.com/hotdesk/hotdesk/registry/etcdtest"
)

// e2e runs the real hotdeskd with real PAM (pam_matrix) and drives it with
// the real hotdesk-term and hotdeskctl binaries.
type e2e struct {
	t      *testing.T
	d      *testutil.Daemon
	bin    string // d.Bin
	dir    string // d.Dir
	addr   string // the terminal listener
	pin    string // d.Pin
	socket string // d.Socket

	westonLogs sync.Once // runTermWith's failure log of the desktops
}

// newE2E prepares a daemon in dir listening on addr, with cfg as its
// configuration; start runs it.
func newE2E(t *testing.T, bin, dir, addr, cfg string) *e2e {
	t.Helper()
	d := testutil.NewDaemon(t, bin, dir, testutil.AdminSocket(dir), cfg)
	return &e2e{t: t, d: d, bin: bin, dir: dir, addr: addr, pin: d.Pin, socket: d.Socket}
}

// fingerprint returns the daemon's certificate fingerprint (pin) as the
// bytes a terminal pins.
func (e *e2e) fingerprint() []byte {
	e.t.Helper()
	pin, err := proto.ParseFingerprint(e.pin)
	if err != nil {
		e.t.Fatal(err)
	}
	return pin
}

func startE2E(t *testing.T, authBlock, defaultPolicy string) *e2e {
	return startE2EWith(t, authBlock, defaultPolicy, false, "")
}

// startE2EWith starts the daemon; etcdBlock replaces the embedded etcd
// ("" keeps it).
func startE2EWith(t *testing.T, authBlock, defaultPolicy string, keep bool, etcdBlock string, extra ...string) *e2e {
	t.Helper()
	return startE2EAt(t, "", authBlock, defaultPolicy, keep, etcdBlock, extra...)
}

// startE2EAt is startE2EWith with the terminal listener on addr ("": a
// free loopback port).
func startE2EAt(t *testing.T, addr, authBlock, defaultPolicy string, keep bool, etcdBlock string, extra ...string) *e2e {
	t.Helper()
	testutil.NeedMatrix(t)
	testutil.NeedTools(t, "weston")
	bin := buildBinaries(t)
	dir := t.TempDir()
	pamDir := filepath.Join(dir, "pam.d")
	if err := os.MkdirAll(pamDir, 0o755); err != nil {
		t.Fatal(err)
	}
	// pam_matrix password files (user:secret:service): passwords for
	// "hotdesk", PINs for "hotdesk-pin".
	secrets := map[string]string{
		"hotdesk":     "alice:alice-pw:hotdesk\npat:pat-pw:hotdesk\ncarl:carl-pw:hotdesk\n",
		"hotdesk-pin": "pat:2468:hotdesk-pin\n",
	}
	for svc, users := range secrets {
		db := filepath.Join(dir, svc+".passdb")
		if err := os.WriteFile(db, []byte(users), 0o600); err != nil {
			t.Fatal(err)
		}
		stack := "auth requisite pam_succeed_if.so quiet user != root\n" + testutil.MatrixStack(db)
		if err := os.WriteFile(filepath.Join(pamDir, svc), []byte(stack), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	if addr == "" {
		addr = testutil.FreeAddr(t)
	}
	cfg := testutil.DaemonConfig(t, "e2e", dir, addr, etcdBlock) + fmt.Sprintf(`
%s
session {
  auth = %q
  keep_on_stop = %v
}
auth {
  pam_dir = %q
  open_session = false
%s
}
`, strings.Join(extra, "\n"), defaultPolicy, keep, pamDir, authBlock)
	e := newE2E(t, bin, dir, addr, cfg)
	e.start()
	return e
}

// start runs hotdeskd and waits until it is ready.
func (e *e2e) start() { e.t.Helper(); e.d.Start() }

// stop interrupts hotdeskd and waits for it to exit.
func (e *e2e) stop() { e.d.Stop(os.Interrupt) }

// sessions lists the daemon's sessions through hotdeskctl.
func (e *e2e) sessions() []struct {
	ID, State string
	PID       int
} {
	e.t.Helper()
	out := e.d.MustCtl("sessions", "-json")
	var ss []struct {
		ID, State string
		PID       int
	}
	if err := json.Unmarshal(out, &ss); err != nil {
		e.t.Fatal(err)
	}
	return ss
}

// enroll pairs a new software token for user into a keystore and returns its path.
func (e *e2e) enroll(user string) string {
	e.t.Helper()
	ks, err := e.enrollErr(user)
	if err != nil {
		e.t.Fatal(err)
	}
	return ks
}

// enrollErr is enroll returning its failure (for Concurrently).
func (e *e2e) enrollErr(user string) (string, error) {
	out, err := e.d.Ctl("token", "pair", "-user", user, "-json")
	if err != nil {
		return "", err
	}
	var pr struct{ Code string }
	if err := json.Unmarshal(out, &pr); err != nil {
		return "", fmt.Errorf("token pair -json: %w", err)
	}
	ks := filepath.Join(e.dir, user+"-"+pr.Code, "tokens.json")
	if out, err := exec.Command(filepath.Join(e.bin, "hotdesk-term"), "-server", e.addr, "-pin", e.pin, "-id", "enroll",
		"-keystore", ks, "-json", "pair", pr.Code).CombinedOutput(); err != nil {
		return "", fmt.Errorf("hotdesk-term pair: %v\n%s", err, out)
	}
	return ks, nil
}

// enrollAll enrolls a token for each of users at once and returns their
// keystores in the same order.
func (e *e2e) enrollAll(users ...string) []string {
	e.t.Helper()
	kss := make([]string, len(users))
	fns := make([]func() error, len(users))
	for i, u := range users {
		fns[i] = func() (err error) { kss[i], err = e.enrollErr(u); return err }
	}
	testutil.Concurrently(e.t, fns...)
	return kss
}

// present runs a terminal that presents the keystore's token (or logs in
// with a user name when ks is "user:<name>"), answering prompts with
// answers, and returns the first attached or error event.
func (e *e2e) present(term, ks string, answers ...string) map[string]any {
	e.t.Helper()
	ev, err := e.presentErr(term, ks, answers...)
	if err != nil {
		e.t.Fatal(err)
	}
	return ev
}

// presentErr is present returning its failure (for Concurrently).
func (e *e2e) presentErr(term, ks string, answers ...string) (map[string]any, error) {
	args := []string{"-server", e.addr, "-pin", e.pin, "-id", term, "-json"}
	line := "insert default"
	if name, ok := strings.CutPrefix(ks, "user:"); ok {
		line = "login " + name
		ks = filepath.Join(e.dir, "none.json")
	}
	args = append(args, "-keystore", ks)
	for _, a := range answers {
		args = append(args, "-answer", a)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, filepath.Join(e.bin, "hotdesk-term"), append(args, "run")...)
	stdin, _ := cmd.StdinPipe()
	stdout, _ := cmd.StdoutPipe()
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	evs := testutil.JSONEvents(stdout, 16)
	defer func() {
		stdin.Close()
		cmd.Wait()
		for range evs { // until its reader has seen the end of the output
		}
	}()
	sent := false
	for ev := range evs {
		switch ev["event"] {
		case "connected":
			if !sent {
				fmt.Fprintln(stdin, line)
				sent = true
			}
		case "attached", "error":
			fmt.Fprintln(stdin, "quit")
			return ev, nil
		}
	}
	return nil, fmt.Errorf("terminal %s ended without an answer", term)
}

// presentAll runs present for each of calls at once (their terminals must
// differ, and so must their tokens: one token presented at two terminals
// at once is a takeover) and returns the answers in the same order.
func (e *e2e) presentAll(calls ...presentCall) []map[string]any {
	e.t.Helper()
	evs := make([]map[string]any, len(calls))
	fns := make([]func() error, len(calls))
	for i, c := range calls {
		fns[i] = func() (err error) { evs[i], err = e.presentErr(c.term, c.ks, c.answers...); return err }
	}
	testutil.Concurrently(e.t, fns...)
	return evs
}

// presentCall is one presentation of presentAll.
type presentCall struct {
	term, ks string
	answers  []string
}

// TestPolicyE2E runs every login policy through hotdesk-term against the
// real daemon and real PAM.
func TestPolicyE2E(t *testing.T) {
	t.Parallel() // its own daemon, data dir, ports and terminals
	e := startE2E(t, `
  policy {
    users = ["pat"]
    auth  = "card+pin"
  }
  policy {
    users = ["carl"]
    auth  = "card"
  }
  policy {
    users = ["kim"]
    auth  = "kiosk"
  }
  policy {
    users = ["dora"]
    auth  = "password"
  }`, "card+password")
	kss := e.enrollAll("alice", "pat", "carl", "kim")
	alice, pat, carl, kim := kss[0], kss[1], kss[2], kss[3]
	tests := []struct {
		name, term, ks string
		answers        []string
		wantUser       string
		wantErr        string
	}{
		{"card+password right", "t-a1", alice, []string{"alice-pw"}, "alice", ""},
		{"card+password wrong", "t-a2", alice, []string{"nope"}, "", "auth_failed"},
		{"card+pin right", "t-p1", pat, []string{"2468"}, "pat", ""},
		{"card+pin password is not the pin", "t-p2", pat, []string{"pat-pw"}, "", "auth_failed"},
		{"card alone", "t-c1", carl, nil, "carl", ""},
		{"kiosk", "t-k1", kim, nil, "", ""},
		{"password without a card, unknown user", "t-d1", "user:dora", []string{"x"}, "", "auth_failed"},
	}
	// The cases run at once, but those presenting one token one after the
	// other: the same token at two terminals at once would be a takeover.
	tokenBusy := map[string]*sync.Mutex{}
	for _, tt := range tests {
		if tokenBusy[tt.ks] == nil {
			tokenBusy[tt.ks] = &sync.Mutex{}
		}
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			mu := tokenBusy[tt.ks]
			mu.Lock()
			ev, err := e.presentErr(tt.term, tt.ks, tt.answers...)
			mu.Unlock()
			if err != nil {
				t.Fatal(err)
			}
			if tt.wantErr != "" {
				if ev["event"] != "error" || ev["name"] != tt.wantErr {
					t.Fatalf("got %v; want error %s", ev, tt.wantErr)
				}
				return
			}
			if ev["event"] != "attached" {
				t.Fatalf("got %v; want attached", ev)
			}
			if tt.wantUser != "" && ev["user"] != tt.wantUser {
				t.Fatalf("attached as %v; want %s", ev["user"], tt.wantUser)
			}
		})
	}
}

// TestPasswordOnlyE2E: with the password policy the user name typed at a
// terminal locates the session; another terminal resumes it.
func TestPasswordOnlyE2E(t *testing.T) {
	t.Parallel() // its own daemon, data dir, ports and terminals
	e := startE2E(t, "", "password")
	first := e.present("t-1", "user:alice", "alice-pw")
	if first["event"] != "attached" || first["user"] != "alice" {
		t.Fatalf("login: %v; want attached as alice", first)
	}
	again := e.present("t-2", "user:alice", "alice-pw")
	if again["event"] != "attached" || again["session"] != first["session"] {
		t.Fatalf("second terminal: %v; want session %v", again, first["session"])
	}
}

// TestRestartKeepsSessions: with keep_on_stop a stopped hotdeskd leaves the
// desktops running, and the next start re-adopts them: same session, same
// compositor PID, resumable by its token.
func TestRestartKeepsSessions(t *testing.T) {
	t.Parallel() // its own daemon, data dir, ports and terminals
	e := startE2EWith(t, "", "kiosk", true, "")
	kss := e.enrollAll("alice", "bob")
	ksA, ksB := kss[0], kss[1]
	firsts := e.presentAll(presentCall{term: "t-1", ks: ksA}, presentCall{term: "t-2", ks: ksB})
	firstA, firstB := firsts[0], firsts[1]
	if firstA["event"] != "attached" || firstB["event"] != "attached" {
		t.Fatalf("first inserts: %v, %v", firstA, firstB)
	}
	before := e.sessions()
	if len(before) != 2 {
		t.Fatalf("sessions = %+v; want 2", before)
	}
	pids := map[string]int{}
	for _, s := range before {
		pids[s.ID] = s.PID
		pid := s.PID
		t.Cleanup(func() { syscall.Kill(pid, syscall.SIGKILL) })
	}
	e.stop()
	for id, pid := range pids {
		if syscall.Kill(pid, 0) != nil {
			t.Fatalf("compositor %d of %s did not outlive hotdeskd", pid, id)
		}
	}
	e.start()
	after := e.sessions()
	if len(after) != 2 {
		t.Fatalf("after restart: %+v; want both sessions", after)
	}
	for _, s := range after {
		if pids[s.ID] != s.PID || s.State != "suspended" {
			t.Fatalf("after restart: %+v; want pid %d, suspended", s, pids[s.ID])
		}
	}
	agains := e.presentAll(presentCall{term: "t-3", ks: ksA}, presentCall{term: "t-4", ks: ksB})
	for i, first := range firsts {
		if again := agains[i]; again["event"] != "attached" || again["session"] != first["session"] || again["resumed"] != true {
			t.Fatalf("after restart: %v; want session %v resumed", again, first["session"])
		}
	}
	var kills []func() error
	for id := range pids { // end them for good
		kills = append(kills, func() error { _, err := e.d.Ctl("session", "kill", id); return err })
	}
	testutil.Concurrently(t, kills...)
}

// TestLeaseLossE2E cuts the real daemon off from its etcd through a TCP
// proxy: it reports not ready on its own timer, keeps its session, and when
// etcd is reachable again takes a new lease, re-claims the session and is
// ready again.
func TestLeaseLossE2E(t *testing.T) {
	t.Parallel() // its own daemon, data dir, ports and terminals
	eps := etcdtest.Start(t)
	proxy := etcdtest.NewProxy(t, strings.TrimPrefix(eps[0], "http://"))
	// The lease must die only when the test cuts the link: 6 s, not less,
	// holds while the proxy (in this busy test process) forwards slowly.
	e := startE2EWith(t, "", "kiosk", false, fmt.Sprintf("etcd {\n  endpoints = [%q]\n  lease_ttl = \"6s\"\n}", proxy.URL()))
	ks := e.enroll("alice")
	first := e.present("t-1", ks)
	if first["event"] != "attached" {
		t.Fatalf("insert: %v", first)
	}
	ready := func() bool {
		_, err := e.d.Ctl("-timeout", "2s", "ready")
		return err == nil
	}
	proxy.Blackhole()
	waitUntil(t, "not ready while cut off", func() bool { return !ready() })
	cli := etcdtest.Client(t, eps)
	sessionKeys := func() int {
		resp, err := cli.Get(context.Background(), "/hotdesk/sessions/", clientv3.WithPrefix(), clientv3.WithCountOnly())
		if err != nil {
			return -1
		}
		return int(resp.Count)
	}
	waitUntil(t, "the cut-off daemon's lease expired in etcd", func() bool { return sessionKeys() == 0 })
	proxy.Heal()
	proxy.CloseConns()
	waitUntil(t, "ready again after healing", ready)
	waitUntil(t, "session re-claimed", func() bool {
		resp, err := cli.Get(context.Background(), "/hotdesk/sessions/", clientv3.WithPrefix())
		return err == nil && len(resp.Kvs) == 1 && strings.Contains(string(resp.Kvs[0].Value), fmt.Sprint(first["session"]))
	})
	again := e.present("t-2", ks)
	if again["event"] != "attached" || again["session"] != first["session"] {
		t.Fatalf("after healing: %v; want session %v resumed", again, first["session"])
	}
}

// waitUntil polls cond for up to a minute; on timeout it fails the test
// with what and what the optional state functions tell of the last check.
func waitUntil(t *testing.T, what string, cond func() bool, state ...func() string) {
	t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			for _, f := range state {
				what += "; " + f()
			}
			t.Fatalf("timed out: %s", what)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// waylandProbe is a display client for tests: it connects to the relay
// address, asks the compositor for its registry over the stream and writes
// "ok" to a file when the compositor answers.
const waylandProbe = `package main

import (
	"encoding/binary"
	"io"
	"net"
	"os"
	"time"
)

func main() {
	c, err := net.DialTimeout("tcp", os.Args[1], 10*time.Second)
	if err != nil {
		os.Exit(1)
	}
	req := make([]byte, 12)
	binary.LittleEndian.PutUint32(req[0:], 1)
	binary.LittleEndian.PutUint32(req[4:], 12<<16|1)
	binary.LittleEndian.PutUint32(req[8:], 2)
	c.Write(req)
	c.SetReadDeadline(time.Now().Add(10 * time.Second))
	hdr := make([]byte, 8)
	if _, err := io.ReadFull(c, hdr); err != nil || binary.LittleEndian.Uint32(hdr) != 2 {
		os.Exit(2)
	}
	os.WriteFile(os.Args[2], []byte("ok"), 0o600)
	time.Sleep(time.Minute) // stay attached until the agent stops us
}
`

// TestDisplayThroughGateway: hotdesk-term -display starts a display client
// that reaches the session's real compositor through the broker's attach
// gateway with the Attached ticket.
func TestDisplayThroughGateway(t *testing.T) {
	t.Parallel() // its own daemon, data dir, ports and terminals
	// The probe is built while the daemon starts.
	probeDir := t.TempDir()
	probe := filepath.Join(probeDir, "probe") // not in the binaries every test shares
	var buildErr error
	built := make(chan struct{})
	t.Cleanup(func() { <-built }) // before probeDir is removed
	go func() {
		defer close(built)
		if buildErr = os.WriteFile(filepath.Join(probeDir, "main.go"), []byte(waylandProbe), 0o600); buildErr != nil {
			return
		}
		cmd := exec.Command("go", "build", "-o", probe, "main.go")
		cmd.Dir = probeDir
		cmd.Env = append(os.Environ(), "GO111MODULE=off")
		if out, err := cmd.CombinedOutput(); err != nil {
			buildErr = fmt.Errorf("building the probe: %v\n%s", err, out)
		}
	}()
	e := startE2E(t, "", "kiosk")
	ks := e.enroll("alice")
	<-built
	if buildErr != nil {
		t.Fatal(buildErr)
	}
	okFile := filepath.Join(t.TempDir(), "ok")
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	term := exec.CommandContext(ctx, filepath.Join(e.bin, "hotdesk-term"), "-server", e.addr, "-pin", e.pin, "-id", "t-d",
		"-keystore", ks, "-json", "-insert", "default", "-display", probe+" {addr} "+okFile, "run")
	stdin, _ := term.StdinPipe()
	if err := term.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { stdin.Close(); term.Wait() }()
	deadline := time.Now().Add(30 * time.Second)
	for {
		if b, err := os.ReadFile(okFile); err == nil && string(b) == "ok" {
			return
		}
		if time.Now().After(deadline) {
			t.Fatal("the display client never reached the compositor through the gateway")
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// TestPAMSessionOutlivesRestart: with open_session, a desktop's PAM session
// stays open across a restart of hotdeskd that keeps the desktop, and is
// closed once the desktop ends (here killed by the restarted daemon).
func TestPAMSessionOutlivesRestart(t *testing.T) {
	t.Parallel() // its own daemon, data dir, ports and terminals
	e := startE2EWith(t, "", "password", true, "")
	readHook := e.openSessions("session")

	ev := e.present("t-1", "user:alice", "alice-pw")
	if ev["event"] != "attached" {
		t.Fatalf("login: %v; want attached", ev)
	}
	sid := fmt.Sprint(ev["session"])
	if got := readHook(); got != "open_session alice\n" {
		t.Fatalf("PAM hook after the login: %q; want the session opened", got)
	}
	e.stop()
	// A helper that closed the session with its daemon would have done so
	// at once: give it ample time to do so wrongly.
	deadline := time.Now().Add(2 * time.Second)
	for time.Now().Before(deadline) {
		if strings.Contains(readHook(), "close_session") {
			t.Fatalf("PAM session closed by the restart while the desktop runs: %q", readHook())
		}
		time.Sleep(100 * time.Millisecond)
	}
	e.start()
	if ss := e.sessions(); len(ss) != 1 || ss[0].ID != sid {
		t.Fatalf("after restart: %+v; want %s re-adopted", ss, sid)
	}
	e.d.MustCtl("session", "kill", sid)
	waitUntil(t, "the PAM session closed with its desktop", func() bool {
		return readHook() == "open_session alice\nclose_session alice\n"
	}, readHook)
}

// openSessions restarts the daemon with open_session and a pam_exec hook
// in the PAM stacks of types (of service hotdesk) logging "TYPE USER" of
// each call, and returns a function reading the log (configuration set
// while stopped: the harness starts without).
func (e *e2e) openSessions(types ...string) (readHook func() string) {
	t := e.t
	t.Helper()
	e.stop()
	hookLog := filepath.Join(e.dir, "pam-hook.log")
	hook := filepath.Join(e.dir, "pam-hook.sh")
	if err := os.WriteFile(hook, []byte("#!/bin/sh\necho \"$PAM_TYPE $PAM_USER\" >> "+hookLog+"\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	stack := filepath.Join(e.dir, "pam.d", "hotdesk")
	b, err := os.ReadFile(stack)
	if err != nil {
		t.Fatal(err)
	}
	for _, typ := range types {
		// First in its stack, so it runs whatever the others decide
		// (it succeeds: it decides nothing).
		b = append([]byte(typ+" required pam_exec.so quiet "+hook+"\n"), b...)
	}
	if err := os.WriteFile(stack, b, 0o644); err != nil {
		t.Fatal(err)
	}
	cfg, err := os.ReadFile(e.d.Config)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(e.d.Config, []byte(strings.Replace(string(cfg), "open_session = false", "open_session = true", 1)), 0o600); err != nil {
		t.Fatal(err)
	}
	e.start()
	return func() string { b, _ := os.ReadFile(hookLog); return string(b) }
}

// TestCardPAMSession: with open_session a card login's new desktop gets
// its PAM session, as a password login's does (account, then
// open_session; never auth), the card resuming it elsewhere has its
// account checked only, and the session closes when the desktop ends.
func TestCardPAMSession(t *testing.T) {
	t.Parallel() // its own daemon, data dir, ports and terminals
	e := startE2E(t, "", "card")
	readHook := e.openSessions("auth", "account", "session")
	carl := e.enroll("carl")
	ev := e.present("t-cs1", carl)
	if ev["event"] != "attached" || ev["user"] != "carl" {
		t.Fatalf("card login: %v; want attached as carl", ev)
	}
	sid := fmt.Sprint(ev["session"])
	if got := readHook(); got != "account carl\nopen_session carl\n" {
		t.Fatalf("PAM hook after the card login: %q; want the account checked and the session opened", got)
	}
	if ev := e.present("t-cs2", carl); ev["event"] != "attached" || fmt.Sprint(ev["session"]) != sid {
		t.Fatalf("card resume: %v; want attached to %s", ev, sid)
	}
	if got := readHook(); got != "account carl\nopen_session carl\naccount carl\n" {
		t.Fatalf("PAM hook after the resume: %q; want the account checked, no session opened", got)
	}
	e.d.MustCtl("session", "kill", sid)
	waitUntil(t, "the card desktop's PAM session closed with it", func() bool {
		return readHook() == "account carl\nopen_session carl\naccount carl\nclose_session carl\n"
	}, readHook)
}

// TestDesktopLimitsE2E: /etc/security/limits.conf applies to a hotdesk
// desktop as to an ssh login: pam_limits in the login's session stack
// sets the limits in the PAM helper, and the desktop (weston, as the
// user) starts with them. Before, they stayed in the helper: desktops ran
// with hotdeskd's own limits whatever limits.conf said.
func TestDesktopLimitsE2E(t *testing.T) {
	t.Parallel() // its own daemon, data dir, ports and terminals
	const user = "hdlime2e"
	testutil.AddAccount(t, user)
	e := startE2E(t, "", "card")
	e.openSessions("session")
	conf := filepath.Join(e.dir, "limits.conf")
	if err := os.WriteFile(conf, []byte(user+" soft nofile 777\n"+user+" hard nofile 888\n"+user+" hard nproc 300\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	// libpam reads the stack at each login: no restart.
	stack := filepath.Join(e.dir, "pam.d", "hotdesk")
	b, err := os.ReadFile(stack)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(stack, append(b, "session required pam_limits.so conf="+conf+"\n"...), 0o644); err != nil {
		t.Fatal(err)
	}
	db := filepath.Join(e.dir, "hotdesk.passdb")
	if b, err = os.ReadFile(db); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(db, append(b, user+":pw:hotdesk\n"...), 0o600); err != nil {
		t.Fatal(err)
	}
	ev := e.present("t-lim1", e.enroll(user))
	if ev["event"] != "attached" || ev["user"] != user {
		t.Fatalf("card login: %v; want attached as %s", ev, user)
	}
	var pid int
	for _, s := range e.sessions() {
		if s.ID == fmt.Sprint(ev["session"]) {
			pid = s.PID
		}
	}
	lim, err := os.ReadFile(fmt.Sprintf("/proc/%d/limits", pid))
	if err != nil {
		t.Fatalf("desktop of session %v (pid %d): %v", ev["session"], pid, err)
	}
	for _, want := range []string{`(?m)^Max open files\s+777\s+888\s`, `(?m)^Max processes\s+300\s+300\s`} {
		if !regexp.MustCompile(want).Match(lim) {
			t.Errorf("the desktop's limits:\n%s\nwant %s (limits.conf)", lim, want)
		}
	}
}

// TestAccountDisabledE2E: off-boarding stops a card. Under the card policy
// carl's card gets a desktop; the administrator then disables carl in the
// account stack (here: drops him from pam_matrix's database, as an expired
// or AD-disabled account is refused by pam_unix or pam_sss), and his card
// no longer resumes the desktop: the terminal is told the account is
// disabled.
func TestAccountDisabledE2E(t *testing.T) {
	t.Parallel() // its own daemon, data dir, ports and terminals
	e := startE2E(t, "", "card")
	carl := e.enroll("carl")
	if ev := e.present("t-ad1", carl); ev["event"] != "attached" || ev["user"] != "carl" {
		t.Fatalf("card login: %v; want attached as carl", ev)
	}
	db := filepath.Join(e.dir, "hotdesk.passdb")
	if err := os.WriteFile(db, []byte("alice:alice-pw:hotdesk\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	ev := e.present("t-ad2", carl)
	if ev["event"] != "error" || ev["name"] != "auth_failed" || !strings.Contains(fmt.Sprint(ev["message"]), "account disabled") {
		t.Fatalf("card of a disabled account: %v; want auth_failed, account disabled", ev)
	}
	for _, s := range e.sessions() {
		if s.State == "active" {
			t.Errorf("session %+v active after its account was disabled", s)
		}
	}
}
