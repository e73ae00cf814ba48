package main

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/hotdesk/hotdesk/internal/testutil"

	"github.com/hotdesk/hotdesk/registry/etcdtest"
)

// requireSecureE2E fails (CI=true) or skips a test that needs root, real
// PAM (pam_matrix), weston and setpriv.
func requireSecureE2E(t *testing.T) {
	t.Helper()
	missing := ""
	switch {
	case os.Geteuid() != 0:
		missing = "root (desktops as other users, a registry client as nobody)"
	default:
		if _, err := os.Stat(testutil.MatrixModule); err != nil {
			missing = "pam_matrix (libpam-wrapper)"
		}
		for _, b := range []string{"weston", "setpriv", "useradd"} {
			if _, err := exec.LookPath(b); err != nil {
				missing = b
			}
		}
	}
	if missing == "" {
		return
	}
	testutil.SkipOrFail(t, "%s missing", missing)
}

// shippedConfig is configs/hotdesk.hcl as shipped, with only what must
// differ for a test on a shared machine replaced: paths, ports (the metrics
// port too), the server id and the PAM directory. Policies, compositor and
// limits are as shipped.
func shippedConfig(t *testing.T, dataDir, listen, socket, clientURL, peerURL, metrics, pamDir string) string {
	t.Helper()
	b, err := os.ReadFile("../../configs/hotdesk.hcl")
	if err != nil {
		t.Fatal(err)
	}
	s := string(b)
	for _, r := range []struct{ old, new string }{
		{`# server_id = "broker-1"`, `server_id = "shipped"`},
		{`data_dir = "/var/lib/hotdesk"`, fmt.Sprintf("data_dir = %q", dataDir)},
		{`listen = "0.0.0.0:4500"`, fmt.Sprintf("listen = %q", listen)},
		{`metrics_listen = "127.0.0.1:9450"`, fmt.Sprintf("metrics_listen = %q", metrics)},
		{`admin_socket = "/run/hotdesk/admin.sock"`, fmt.Sprintf("admin_socket = %q", socket)},
		{`client_url = "http://127.0.0.1:4501"`, fmt.Sprintf("client_url = %q", clientURL)},
		{`peer_url   = "http://127.0.0.1:4502"`, fmt.Sprintf("peer_url   = %q", peerURL)},
		{`pam_dir     = ""`, fmt.Sprintf("pam_dir     = %q", pamDir)},
	} {
		if strings.Count(s, r.old) != 1 {
			t.Fatalf("configs/hotdesk.hcl: %q appears %d times; want once", r.old, strings.Count(s, r.old))
		}
		s = strings.Replace(s, r.old, r.new, 1)
	}
	return s
}

// procStatus returns the fields of pid's /proc/PID/status line named
// name (colon included, e.g. "Uid:": real, effective, saved, fs).
func procStatus(pid int, name string) ([]string, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return nil, err
	}
	for _, l := range strings.Split(string(b), "\n") {
		if rest, ok := strings.CutPrefix(l, name); ok {
			return strings.Fields(rest), nil
		}
	}
	return nil, fmt.Errorf("pid %d: no %s line", pid, name)
}

// groupMembers returns the pids of process group pgid.
func groupMembers(pgid int) []int {
	return testutil.Pids(func(pid int) bool {
		g, err := syscall.Getpgid(pid)
		return err == nil && g == pgid
	})
}

// TestShippedConfigNoRootDesktops runs hotdeskd with configs/hotdesk.hcl as
// shipped (only paths and ports changed): logins under its default policy
// (card+pin) get desktops, and no process of any desktop runs as uid 0,
// not even for a token registered to root; an unprivileged local user can
// neither read nor write the registry; token registration takes only ids a
// reader produces and users this host knows.
func TestShippedConfigNoRootDesktops(t *testing.T) {
	t.Parallel() // its own daemon, ports, PAM dir; shipuser is this test's alone
	requireSecureE2E(t)
	bin := buildBinaries(t)
	dir := t.TempDir()
	const pin, rootPIN = "1357", "2468"
	pamDir := testutil.MatrixServices(t, dir, "shipuser:"+pin+":hotdesk-pin\nroot:"+rootPIN+":hotdesk-pin\n",
		"session optional pam_permit.so\n", "hotdesk", "hotdesk-pin")
	addr, clientAddr, peerAddr, metricsAddr := testutil.FreeAddr(t), testutil.FreeAddr(t), testutil.FreeAddr(t), testutil.FreeAddr(t)
	dataDir := filepath.Join(dir, "data")
	cfg := shippedConfig(t, dataDir, addr, filepath.Join(dir, "admin.sock"), "http://"+clientAddr, "http://"+peerAddr, metricsAddr, pamDir)
	e := newE2E(t, bin, dir, addr, cfg)
	// The shipped file checks clean: nothing insecure to warn about.
	if out, err := exec.Command(filepath.Join(bin, "hotdeskd"), "-config", e.d.Config, "-check").CombinedOutput(); err != nil || strings.Contains(string(out), "WARNING") {
		t.Fatalf("hotdeskd -check: %v\n%s", err, out)
	}
	// -check warns loudly about a plaintext group etcd and refuses an
	// embedded member on a non-loopback address.
	for _, c := range []struct {
		name, src, want string
		ok              bool
	}{
		{"plaintext.hcl", "etcd {\n  endpoints = [\"http://etcd-1:2379\"]\n}\n", "WARNING", true},
		{"open.hcl", "etcd {\n  embedded {\n    client_url = \"http://0.0.0.0:4501\"\n  }\n}\n", "not on loopback", false},
	} {
		f := filepath.Join(dir, c.name)
		if err := os.WriteFile(f, []byte(c.src), 0o600); err != nil {
			t.Fatal(err)
		}
		out, err := exec.Command(filepath.Join(bin, "hotdeskd"), "-config", f, "-check").CombinedOutput()
		if (err == nil) != c.ok || !strings.Contains(string(out), c.want) {
			t.Errorf("hotdeskd -check %s: %v\n%s\nwant ok=%v and %q", c.name, err, out, c.ok, c.want)
		}
	}
	e.start()

	// The registry, as an unprivileged local user: its refused attempts
	// wait for their timeouts, meanwhile the logins below go on.
	var access struct {
		out string
		err error
	}
	accessDone := make(chan struct{})
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	go func() {
		defer close(accessDone)
		access.out, access.err = etcdtest.AccessAsUser(ctx, "nobody", "nogroup", "TestRegistryAccessHelper",
			"https://"+clientAddr, "https://"+peerAddr, filepath.Join(dataDir, "etcd-tls"))
	}()
	t.Cleanup(func() { <-accessDone })

	// Logins under the shipped default policy: card + PIN.
	kss := e.enrollAll("shipuser", "root")
	alice, root := kss[0], kss[1]
	if ev := e.present("t-1", alice, "0000"); ev["event"] != "error" {
		t.Fatalf("wrong PIN: %v; want an error", ev)
	}
	if ev := e.present("t-2", alice, pin); ev["event"] != "attached" {
		t.Fatalf("shipuser with PIN: %v; want attached", ev)
	}
	if ev := e.present("t-3", root, rootPIN); ev["event"] != "attached" {
		t.Fatalf("root's token with PIN: %v; want attached (as a pooled account)", ev)
	}

	// Every process of every desktop: not uid 0, not hotdeskd's uid.
	ss := e.sessions()
	if len(ss) != 2 {
		t.Fatalf("sessions = %+v; want 2", ss)
	}
	checked := 0
	for _, s := range ss {
		if s.PID <= 0 {
			t.Fatalf("session %s has no compositor pid", s.ID)
		}
		for _, pid := range groupMembers(s.PID) {
			uids, err := procStatus(pid, "Uid:")
			if err != nil {
				continue // exited meanwhile
			}
			for _, u := range uids {
				if u == "0" || u == strconv.Itoa(os.Geteuid()) {
					t.Fatalf("session %s: pid %d runs with uids %v; want no uid 0 and not hotdeskd's", s.ID, pid, uids)
				}
			}
			checked++
		}
	}
	if checked < 2 {
		t.Fatalf("checked %d desktop processes; want at least one per session", checked)
	}
	t.Logf("%d desktop processes checked: none runs as uid 0", checked)

	// The registry, as an unprivileged local user (started above).
	<-accessDone
	t.Logf("registry access as nobody:\n%s", access.out)
	if access.err != nil {
		t.Fatalf("helper: %v", access.err)
	}
	if !strings.Contains(access.out, fmt.Sprintf("ATTEMPTS %d", etcdtest.AccessAttempts)) || strings.Contains(access.out, "BREACH") {
		t.Fatal("an unprivileged user reached the registry (or the helper did not run)")
	}

	// Registration takes only what a reader produces, for users that exist.
	testutil.AddAccount(t, "shipuser")
	ctl := func(args ...string) error {
		return exec.Command(filepath.Join(bin, "hotdeskctl"), append([]string{"-socket", e.socket, "token", "register"}, args...)...).Run()
	}
	for _, bad := range [][]string{
		{"uid.zz", "-user", "shipuser"},
		{"uid.04A1B2C3", "-user", "shipuser"},
		{"uid.04a1b2c", "-user", "shipuser"},
		{"piv.1234", "-user", "shipuser"},
		{"uid.04a1b2c3", "-user", "no-such-user-hd"},
	} {
		if err := ctl(bad...); err == nil {
			t.Errorf("token register %v accepted; want refused", bad)
		}
	}
	if err := ctl("uid.04a1b2c3", "-user", "shipuser"); err != nil {
		t.Errorf("token register uid.04a1b2c3 for shipuser: %v; want accepted", err)
	}
}

// TestRegistryAccessHelper is the helper run as nobody by
// TestShippedConfigNoRootDesktops and TestAdversarial.
func TestRegistryAccessHelper(t *testing.T) {
	if !etcdtest.AccessHelperMain() {
		t.Skip("helper process only")
	}
}
