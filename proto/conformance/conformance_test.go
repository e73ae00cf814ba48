// Package conformance_test runs proto/conformance, the independent terminal
// written in Python from PROTOCOL.md alone, against real brokers.
package conformance_test

import (
	"bufio"
	"context"
	"crypto/ed25519"
	"crypto/sha256"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/hotdesk/hotdesk/internal/testutil"
	"github.com/hotdesk/hotdesk/registry/etcdtest"
	"github.com/hotdesk/hotdesk/tokens/soft"
)

// conformLease is the brokers' lease TTL in TestConformance: long enough
// to hold on a loaded machine. The client's read-timeout checks scale with
// it (PingInterval is a sixth of it, the broker's read timeout four
// PingIntervals).
const conformLease = 10 * time.Second

// conformBound bounds the conformance client's run (about a minute and a
// half on 2 idle cores): a safety bound for a loaded machine, not a timing
// assertion.
const conformBound = 8 * time.Minute

// conformUser is the user the client pairs its tokens for and logs in as;
// not an account of the host (its desktops run as pooled kiosk accounts).
const (
	conformUser = "hdconf"
	conformPIN  = "2468"
	conformPW   = "pw-hdconf"
)

// conformToken is the token id of the client's key n ("A" … "E"): an
// Ed25519 key whose seed is SHA-256("conf-" + n) (proto/conformance
// conform.py, key()).
func conformToken(n string) string {
	seed := sha256.Sum256([]byte("conf-" + n))
	return soft.TokenID(ed25519.NewKeyFromSeed(seed[:]).Public().(ed25519.PublicKey))
}

// TestConformance runs proto/conformance, a terminal written in Python
// from PROTOCOL.md alone (no Go code of the project), against two real
// brokers of one group: every check of the protocol it makes (about 300:
// TLS, framing, CBOR, handshake, logins, pairing, redirects, the attach
// gateway, limits, shutdown) must pass. It prints PASS, FAIL, SPEC (the
// spec does not say) and INFO lines and exits non-zero on any FAIL, SPEC
// or crashed group; each of those fails the test. Its slow group (a
// minute's prompt timeout) is left out.
func TestConformance(t *testing.T) {
	t.Parallel() // its own brokers, etcd, data dirs and ports
	testutil.NeedTools(t, "python3", "weston")
	testutil.NeedMatrix(t)
	bin := testutil.BuildHotdesk(t)
	eps := etcdtest.Start(t)
	// pam_matrix services, a password file each (pam_matrix takes a
	// user's first line): hdc the password (and the card policy's
	// account check), hdc-pin the PIN.
	pamDir := filepath.Join(t.TempDir(), "pam.d")
	if err := os.MkdirAll(pamDir, 0o755); err != nil {
		t.Fatal(err)
	}
	for svc, secret := range map[string]string{"hdc": conformPW, "hdc-pin": conformPIN} {
		db := filepath.Join(pamDir, svc+".passdb")
		if err := os.WriteFile(db, []byte(conformUser+":"+secret+":"+svc+"\n"), 0o600); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(pamDir, svc), []byte(testutil.MatrixStack(db)), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	// The client's tokens: A asks a PIN (card+pin), B–E are card-only; the
	// user logs in with a password too (user.<name>). Broker 1 takes the
	// new sessions (weight; the client drains broker 2 besides).
	auth := fmt.Sprintf(`
auth {
  pam_service  = "hdc"
  pin_service  = "hdc-pin"
  pam_dir      = %q
  open_session = false
  policy {
    tokens = [%q]
    auth   = "card+pin"
  }
  policy {
    tokens = [%q, %q, %q, %q]
    auth   = "card"
  }
  policy {
    users = [%q]
    auth  = "password"
  }
}
compositor {
  backend = "headless"
}
`, pamDir, conformToken("A"), conformToken("B"), conformToken("C"), conformToken("D"), conformToken("E"), conformUser)
	type broker struct {
		*testutil.Daemon
		addr, attach string
	}
	start := func(id, weight string) broker {
		dir := t.TempDir()
		b := broker{addr: testutil.FreeAddr(t), attach: testutil.FreeAddr(t)}
		etcd := fmt.Sprintf("etcd {\n  endpoints = [%q]\n  lease_ttl = %q\n}", eps[0], conformLease)
		cfg := testutil.DaemonConfig(t, id, dir, b.addr, etcd) + fmt.Sprintf(`
advertise      = %q
attach_listen  = %q
metrics_listen = "off"
log_level      = "debug"
session {
  auth         = "card+pin"
  keep_on_stop = false
  %s
}
%s`, b.addr, b.attach, weight, auth)
		b.Daemon = testutil.NewDaemon(t, bin, dir, testutil.AdminSocket(dir), cfg)
		b.Name = id
		b.Launch()
		return b
	}
	b1, b2 := start("conf-b1", "weight = 1000"), start("conf-b2", "")
	b1.WaitReady()
	b2.WaitReady()

	ctx, cancel := context.WithTimeout(context.Background(), conformBound)
	defer cancel()
	cmd := exec.CommandContext(ctx, "python3", "-u", "conform.py",
		"--addr", b1.addr, "--attach", b1.attach, "--socket", b1.Socket, "--pin", b1.Pin, "--id", "conf-b1",
		"--addr2", b2.addr, "--pin2", b2.Pin, "--id2", "conf-b2", "--pid2", strconv.Itoa(b2.PID()),
		"--ctl", filepath.Join(bin, "hotdeskctl"),
		"--user", conformUser, "--user-pin", conformPIN, "--user-password", conformPW,
		"--ping-interval", strconv.FormatInt((conformLease/6).Milliseconds(), 10))
	cmd.WaitDelay = 10 * time.Second
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	var stderr testutil.LockedBuffer
	cmd.Stderr = &stderr
	began := time.Now()
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	failed := conformFailures(t, out)
	err = cmd.Wait()
	t.Logf("conform.py ran %v", time.Since(began).Round(time.Second))
	for _, f := range failed {
		t.Error(f)
	}
	if err != nil {
		t.Fatalf("conform.py: %v (%d FAIL/SPEC/ERR lines above)\n%s", err, len(failed), stderr.String())
	}
	if len(failed) > 0 {
		t.Fatalf("conform.py exited 0 after %d FAIL/SPEC/ERR lines", len(failed))
	}
	// The shutdown group sent broker 2 SIGTERM: it exits, and cleanly.
	select {
	case <-b2.Exited():
		if err := b2.ExitErr(); err != nil {
			t.Errorf("conf-b2 after SIGTERM: %v", err)
		}
	case <-time.After(time.Minute):
		t.Error("conf-b2 still runs a minute after the client's SIGTERM")
	}
}

// conformFailures logs the client's output line by line as it comes and
// returns its FAIL, SPEC and ERR checks, each with its detail lines.
func conformFailures(t *testing.T, r io.Reader) []string {
	t.Helper()
	var failed []string
	cur := -1
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		l := sc.Text()
		t.Log(l)
		switch {
		case strings.HasPrefix(l, "FAIL ") || strings.HasPrefix(l, "SPEC ") || strings.HasPrefix(l, "ERR "):
			failed = append(failed, "conform.py: "+l)
			cur = len(failed) - 1
		case cur >= 0 && strings.HasPrefix(l, "       ") && len(failed[cur]) < 2000:
			failed[cur] += "\n" + l
		default:
			cur = -1
		}
	}
	if err := sc.Err(); err != nil {
		t.Errorf("reading conform.py's output: %v", err)
	}
	return failed
}
