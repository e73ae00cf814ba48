package main

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/hotdesk/hotdesk/internal/testutil"
	"github.com/hotdesk/hotdesk/proto"
	"github.com/hotdesk/hotdesk/proto/prototest"
	"github.com/hotdesk/hotdesk/registry/etcdtest"
	"github.com/hotdesk/hotdesk/tokens/soft"
)

// buildBinaries builds hotdesk-term, hotdeskd and hotdeskctl once per
// test process (testutil.BuildHotdesk).
func buildBinaries(t testing.TB) string {
	t.Helper()
	return testutil.BuildHotdesk(t)
}

// groupBroker is one hotdeskd process of a group sharing one etcd.
type groupBroker struct {
	*testutil.Daemon
	t    testing.TB
	id   string
	addr string
}

func newGroupBroker(t testing.TB, bin, id string, etcd []string) *groupBroker {
	t.Helper()
	return newGroupBrokerTTL(t, bin, id, etcd, "1s")
}

// newGroupBrokerTTL is newGroupBroker with a lease of ttl: a short one
// for a broker the test kills (its sessions leave the registry soon), a
// long one for a broker that must keep its lease on a loaded machine.
func newGroupBrokerTTL(t testing.TB, bin, id string, etcd []string, ttl string) *groupBroker {
	t.Helper()
	// Its users are no accounts of this host: the card policy's account
	// check admits every account.
	return newBroker(t, bin, id, fmt.Sprintf("etcd {\n  endpoints = [%q]\n  lease_ttl = %q\n}\nsession {\n  auth = \"card\"\n  keep_on_stop = false\n}\nauth {\n  pam_dir = %q\n}\n",
		etcd[0], ttl, testutil.PermitAccountsDir(t, t.TempDir())))
}

// newBroker prepares a hotdeskd with the given configuration blocks (etcd,
// session, auth, compositor); Start runs it.
func newBroker(t testing.TB, bin, id, blocks string) *groupBroker {
	t.Helper()
	dir, addr := t.TempDir(), testutil.FreeAddr(t)
	socket := filepath.Join(dir, "admin.sock")
	cfg := fmt.Sprintf(`server_id = %q
data_dir = %q
listen = %q
admin_socket = %q
%s
`, id, filepath.Join(dir, "data"), addr, socket, blocks)
	b := &groupBroker{Daemon: testutil.NewDaemon(t, bin, dir, socket, cfg), t: t, id: id, addr: addr}
	b.Name = "hotdeskd " + id
	return b
}

// compositorPIDs returns the PIDs of the broker's desktops.
func (b *groupBroker) compositorPIDs() []int {
	b.t.Helper()
	var ss []struct{ PID int }
	if err := json.Unmarshal(b.MustCtl("sessions", "-json"), &ss); err != nil {
		b.t.Fatal(err)
	}
	var pids []int
	for _, s := range ss {
		pids = append(pids, s.PID)
	}
	return pids
}

// pair enrolls key (of keystore ks, which signs its proof of possession)
// for user at the broker through the terminal protocol, as hotdesk-term
// pair does.
func (b *groupBroker) pair(user string, ks *soft.Keystore, key soft.Key) {
	b.t.Helper()
	out := b.MustCtl("token", "pair", "-user", user, "-json")
	var pr struct{ Code string }
	if err := json.Unmarshal(out, &pr); err != nil {
		b.t.Fatal(err)
	}
	pin, err := proto.ParseFingerprint(b.Pin)
	if err != nil {
		b.t.Fatal(err)
	}
	cfg := prototest.PinnedTLS(b.t, pin)
	ctx, cancel := context.WithTimeout(context.Background(), waitBound)
	defer cancel()
	c, err := proto.Dial(ctx, b.addr, cfg, proto.WithReadTimeout(waitBound))
	if err != nil {
		b.t.Fatal(err)
	}
	defer c.Close()
	w, err := proto.ClientHandshake(c, proto.Hello{TerminalID: "enroll"})
	if err != nil {
		b.t.Fatal(err)
	}
	msg, err := soft.PairMessage("enroll", w.ServerID, w.Nonce, pr.Code, soft.Kind, key.Public)
	if err != nil {
		b.t.Fatal(err)
	}
	sig, err := ks.Sign(key.Token, msg)
	if err != nil {
		b.t.Fatal(err)
	}
	if err := c.Send(&proto.Pair{Code: pr.Code, Kind: soft.Kind, PublicKey: key.Public, Signature: sig}); err != nil {
		b.t.Fatal(err)
	}
	for {
		m, err := c.Recv()
		if err != nil {
			b.t.Fatalf("pairing: %v", err)
		}
		switch body := m.Body.(type) {
		case *proto.Paired:
			if body.Token != key.Token {
				b.t.Fatalf("paired %s; want %s", body.Token, key.Token)
			}
			return
		case *proto.Error:
			b.t.Fatalf("pairing refused: %+v", body)
		}
	}
}

// events reads a process's JSON event lines.
type events struct {
	t   testing.TB
	ch  <-chan map[string]any
	mu  sync.Mutex
	all []map[string]any
}

// next returns the next event whose name is one of names, failing the
// test after waitBound (a safety bound, not a timing assertion). skipped
// gets every event passed over.
func (e *events) next(names ...string) map[string]any {
	e.t.Helper()
	timeout := time.After(2 * waitBound)
	for {
		select {
		case ev, ok := <-e.ch:
			if !ok {
				e.t.Fatalf("the agent exited while waiting for %v", names)
			}
			for _, n := range names {
				if ev["event"] == n {
					return ev
				}
			}
		case <-timeout:
			e.t.Fatalf("no %v event", names)
		}
	}
}

// startService starts hotdesk-term agent with no standard input.
func startService(t testing.TB, bin string, args ...string) (*exec.Cmd, *events) {
	t.Helper()
	cmd := exec.Command(filepath.Join(bin, "hotdesk-term"), append(args, "agent")...)
	cmd.Stdin = nil // /dev/null: a service has no input
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	logPath := filepath.Join(t.TempDir(), "agent.log")
	logf, _ := os.Create(logPath)
	cmd.Stderr = logf
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	in, ch := testutil.JSONEvents(stdout, 1024), make(chan map[string]any, 1024)
	evs := &events{t: t, ch: ch}
	go func() {
		defer close(ch)
		for ev := range in {
			evs.mu.Lock()
			evs.all = append(evs.all, ev)
			evs.mu.Unlock()
			ch <- ev
		}
	}()
	t.Cleanup(func() {
		cmd.Process.Signal(syscall.SIGTERM)
		done := make(chan struct{})
		go func() { cmd.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(waitBound):
			cmd.Process.Kill()
			<-done
		}
		logf.Close()
		if t.Failed() {
			b, _ := os.ReadFile(logPath)
			t.Logf("agent log:\n%s", b)
		}
	})
	return cmd, evs
}

// newKeystore returns a new soft-token keystore holding one key, "default".
func newKeystore(t testing.TB) (*soft.Keystore, soft.Key) {
	t.Helper()
	ks, err := soft.OpenKeystore(filepath.Join(t.TempDir(), "tokens.json"))
	if err != nil {
		t.Fatal(err)
	}
	key, err := ks.Generate("default", "")
	if err != nil {
		t.Fatal(err)
	}
	if err := ks.Save(); err != nil {
		t.Fatal(err)
	}
	return ks, key
}

// startGroupService starts the terminal service "desk-1" with brokers a
// and b, trusting a's pin only, with the key "default" of ks inserted.
func startGroupService(t testing.TB, bin string, ks *soft.Keystore, a, b *groupBroker) (*exec.Cmd, *events) {
	t.Helper()
	return startService(t, bin, "-server", a.addr, "-server", b.addr, "-pin", a.Pin, "-id", "desk-1",
		"-keystore", ks.Path(), "-insert", "default", "-json", "-log-level", "debug",
		"-min-backoff", "100ms", "-max-backoff", "1s")
}

// TestServiceFailoverE2E: the terminal service starts with no input before
// any broker is up and waits; it trusts only broker a's pin, so it refuses
// broker b while b is alone; once a is up it connects, learns the group
// (a and b) from a's Welcome, and its token gets a desktop on a. Broker a
// is killed (SIGKILL): the service fails over to b, which it now trusts,
// presents the token again, is redirected to the dead a while the
// registry still names a, retries instead of losing the insert, and ends
// attached on b. Then the terminal reboots while a (its only configured
// broker) is still down: the members it learned and kept in its state
// directory let it reach b, where its desktop is. Events are asserted, not
// timings (the figures are logged). Budget: about 25 s.
func TestServiceFailoverE2E(t *testing.T) {
	t.Parallel()
	testutil.NeedTools(t, "weston")
	etcd := etcdtest.Start(t) // while another test builds the binaries
	bin := buildBinaries(t)
	a := newGroupBroker(t, bin, "a", etcd)          // killed: a short lease
	b := newGroupBrokerTTL(t, bin, "b", etcd, "6s") // never dies: a late renewal on a loaded machine must not lose its lease

	ks, key := newKeystore(t)
	agent, evs := startGroupService(t, bin, ks, a, b)

	// No broker: the service reports and retries; it does not exit.
	if ev := evs.next("error"); ev["name"] != errConnect {
		t.Fatalf("first event = %v; want a %s error", ev, errConnect)
	}
	evs.next("reconnecting")

	// Broker b alone is not trusted: a's pin is the only anchor so far.
	b.Start()
	b.pair("alice", ks, key)
	for range 3 {
		if ev := evs.next("connected", "reconnecting"); ev["event"] == "connected" {
			t.Fatalf("connected to %v before any trusted broker was up", ev)
		}
	}

	a.Start()
	if ev := evs.next("connected"); ev["server"] != "a" {
		t.Fatalf("connected = %v; want server a", ev)
	}
	grp := evs.next("group")
	if ids := fmt.Sprint(grp["servers"]); ids != "[a b]" {
		t.Fatalf("group = %v; want servers [a b]", grp)
	}
	first := evs.next("attached")
	if first["server"] != "a" || first["token"] != key.Token {
		t.Fatalf("attached = %v; want token %s on a", first, key.Token)
	}
	for _, pid := range a.compositorPIDs() {
		t.Cleanup(func() { syscall.Kill(-pid, syscall.SIGKILL); syscall.Kill(pid, syscall.SIGKILL) })
	}

	killed := time.Now()
	a.Stop(syscall.SIGKILL)
	evs.next("disconnected")
	if ev := evs.next("connected"); ev["server"] != "b" {
		t.Fatalf("after a died: connected = %v; want server b", ev)
	}
	reconnected := time.Since(killed)
	redirects := 0
	for {
		ev := evs.next("attached", "redirect", "error")
		if ev["event"] == "attached" {
			if ev["server"] != "b" || ev["token"] != key.Token {
				t.Fatalf("after failover: attached = %v; want token %s on b", ev, key.Token)
			}
			break
		}
		if ev["event"] == "redirect" {
			redirects++
			if ev["server"] != "a" {
				t.Fatalf("redirect = %v; want to the dead owner a", ev)
			}
		}
		if ev["event"] == "error" && ev["name"] != errRedirect {
			t.Fatalf("after failover: %v; want only redirect retries", ev)
		}
	}
	t.Logf("broker a killed: reconnected to b after %v; token attached on b after %v (%d redirects to the dead owner retried)",
		reconnected.Round(time.Millisecond), time.Since(killed).Round(time.Millisecond), redirects)
	if agent.ProcessState != nil {
		t.Fatalf("the service exited: %v", agent.ProcessState)
	}

	// The terminal reboots while its only configured broker (a) is down:
	// the members it learned, kept in its state directory, let it reach b.
	agent.Process.Signal(syscall.SIGTERM)
	for range evs.ch { // until the agent's output ends
	}
	st, err := os.Stat(filepath.Join(filepath.Dir(ks.Path()), membersFile))
	if err != nil || st.Mode().Perm() != 0o600 {
		t.Fatalf("learned members file: %v, %v; want mode 0600", st, err)
	}
	_, evs = startService(t, bin, "-server", a.addr, "-pin", a.Pin, "-id", "desk-1",
		"-keystore", ks.Path(), "-insert", "default", "-json", "-log-level", "debug",
		"-min-backoff", "100ms", "-max-backoff", "1s")
	if ev := evs.next("connected"); ev["server"] != "b" {
		t.Fatalf("after a reboot with a down: connected = %v; want the learned member b", ev)
	}
	if ev := evs.next("attached"); ev["server"] != "b" || ev["token"] != key.Token || ev["resumed"] != true {
		t.Fatalf("after a reboot: attached = %v; want token %s resumed on b", ev, key.Token)
	}
}
