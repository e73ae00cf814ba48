package main

import (
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"net"
	"net/http"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/hotdesk/hotdesk/internal/testutil"
	"github.com/hotdesk/hotdesk/registry"
	"github.com/hotdesk/hotdesk/registry/etcdtest"
)

// startWaitingForID launches hotdeskd with server id while another live
// lease (returned; closing it frees the id) holds that id, and returns once
// the daemon's start waits for it.
func startWaitingForID(t *testing.T, id string) (*testutil.Daemon, *registry.Registry) {
	t.Helper()
	eps := etcdtest.Start(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	holder, err := registry.New(ctx, etcdtest.Client(t, eps), registry.ServerRecord{ID: id, Addr: "127.0.0.1:1"}, registry.WithLeaseTTL(10*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { holder.Close(context.Background()) })
	dir := t.TempDir()
	etcd := fmt.Sprintf("etcd {\n  endpoints = [%q]\n  lease_ttl = \"10s\"\n}\nmetrics_listen = \"off\"\n", eps[0])
	d := testutil.NewDaemon(t, buildBinaries(t), dir, testutil.AdminSocket(dir), testutil.DaemonConfig(t, id, dir, testutil.FreeAddr(t), etcd))
	d.Launch()
	testutil.WaitFor(t, 60*time.Second, "the start waiting for the server id", func() bool {
		return strings.Contains(d.LogTail(1<<20), "server id in use; waiting")
	})
	return d, holder
}

// TestDaemonStopsDuringStart: a SIGTERM that arrives while the start
// waits (here for a server id another live lease holds, which it would
// wait for up to 3 lease TTLs and 5 s) ends the start: what it started is
// rolled back and the daemon exits 0 as for any stop, instead of the
// signal going unheard until the start gives up by itself.
func TestDaemonStopsDuringStart(t *testing.T) {
	t.Parallel() // its own etcd and daemon
	d, _ := startWaitingForID(t, "stop-in-start")
	exited := d.Exited()
	if err := syscall.Kill(d.PID(), syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	<-exited
	if log := d.LogTail(1 << 20); strings.Contains(log, "another running broker has server_id") {
		t.Fatalf("the start ran until it gave up, the SIGTERM unheard:\n%s", log)
	}
	if err := d.ExitErr(); err != nil {
		t.Fatalf("exit after a SIGTERM during the start: %v; want status 0", err)
	}
}

// TestServeFailuresNeverBlock: goroutines serve started that fail after
// the daemon's fatal queue is full (the daemon stopping already, its run
// loop gone) end all the same: none waits for ever to report its error.
func TestServeFailuresNeverBlock(t *testing.T) {
	d := &daemon{fatal: make(chan error, 4), log: hclog.NewNullLogger()}
	d.run, d.cancel = context.WithCancel(context.Background())
	for i := range 2 * cap(d.fatal) {
		d.serve(func() error { return fmt.Errorf("listener %d: accept: broken", i) }, "listener")
	}
	d.stop(d.log)
	if leaked := testutil.Leaked(5*time.Second, "hotdeskd.(*daemon).serve"); len(leaked) > 0 {
		t.Fatalf("%d goroutines of serve still running:\n\n%s", len(leaked), strings.Join(leaked, "\n\n"))
	}
}

// TestDaemonReloadsAfterStart: a SIGHUP that arrives while the start
// waits is not lost: the daemon reloads its configuration once it runs.
func TestDaemonReloadsAfterStart(t *testing.T) {
	t.Parallel() // its own etcd and daemon
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	d, holder := startWaitingForID(t, "hup-in-start")
	// Meanwhile the admin API says what the start waits for.
	if _, err := d.Ctl("ready"); err == nil || !strings.Contains(err.Error(), `hotdeskd is starting: waiting for server id "hup-in-start" to be free: held by the broker at 127.0.0.1:1`) {
		t.Errorf("hotdeskctl ready while the start waits for its server id: %v; want it to say so, and who holds the id", err)
	}
	if err := syscall.Kill(d.PID(), syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	if err := holder.Close(ctx); err != nil { // the server id is free: the start goes on
		t.Fatal(err)
	}
	d.WaitReady()
	testutil.WaitFor(t, 30*time.Second, "the configuration reloaded", func() bool {
		return strings.Contains(d.LogTail(1<<20), "configuration reloaded")
	})
}

// TestDaemonWaitsForEtcd: a broker started while its etcd does not answer
// (a site powered up with the brokers first) waits for it, saying so, and
// is ready once etcd is, without a restart. Before, its start failed after
// one call timeout, and systemd restarted it in a loop.
func TestDaemonWaitsForEtcd(t *testing.T) {
	t.Parallel() // its own etcd and daemon
	eps, members := etcdtest.StartCluster(t, 1)
	etcdtest.StopMember(t, members[0])
	dir := t.TempDir()
	metrics, dash := testutil.FreeAddr(t), testutil.FreeAddr(t)
	etcd := fmt.Sprintf("etcd {\n  endpoints = [%q]\n  lease_ttl = \"2s\"\n}\nmetrics_listen = %q\nadmin_group = \"daemon\"\ndashboard {\n  listen = %q\n}\n", eps[0], metrics, dash)
	addr := testutil.FreeAddr(t)
	d := testutil.NewDaemon(t, buildBinaries(t), dir, testutil.AdminSocket(dir), testutil.DaemonConfig(t, "waits-for-etcd", dir, addr, etcd))
	d.Launch()
	waitLogged(t, d, "the start waiting for etcd", "etcd does not answer")
	// Several grant timeouts (the lease TTL, 2 s) later it still waits.
	select {
	case <-d.Exited():
		t.Fatalf("hotdeskd exited while etcd was down: %v", d.ExitErr())
	case <-time.After(5 * time.Second):
	}
	if log := d.LogTail(1 << 20); !strings.Contains(log, `reach="`+eps[0]+": dial tcp") || !strings.Contains(log, "connection refused") {
		t.Errorf("the warning does not say the endpoint refused the connection:\n%s", log)
	}
	// The admin API says why the broker is not ready (it had no socket
	// until the start was done).
	if _, err := d.Ctl("ready"); err == nil || !strings.Contains(err.Error(), "hotdeskd is starting: waiting for etcd to answer: "+eps[0]+": dial tcp") {
		t.Errorf("hotdeskctl ready while the start waits for etcd: %v; want it to say the start waits for etcd, and why", err)
	}
	if _, err := d.Ctl("sessions"); err == nil || !strings.Contains(err.Error(), "hotdeskd is starting") {
		t.Errorf("hotdeskctl sessions while the start waits for etcd: %v; want it to say the start is not done", err)
	}
	// So does the metrics listener's /readyz, for a load balancer or a
	// monitor, without the detail (every local user reaches it); /livez
	// answers.
	if code, body := httpGet(t, "http://"+metrics+"/readyz"); code != http.StatusServiceUnavailable ||
		!strings.Contains(body, "hotdeskd is starting: waiting for etcd to answer") || strings.Contains(body, "dial tcp") {
		t.Errorf("/readyz while the start waits for etcd: %d %s; want 503 saying the start waits for etcd, not how etcd is reached", code, body)
	}
	if code, body := httpGet(t, "http://"+metrics+"/livez"); code != http.StatusOK {
		t.Errorf("/livez while the start waits for etcd: %d %s; want 200", code, body)
	}
	// And the dashboard's every page (it refused connections until the
	// start was done).
	dashGet := func(path string) (int, string) {
		t.Helper()
		c := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{InsecureSkipVerify: true}}} // the broker's self-signed certificate
		defer c.CloseIdleConnections()
		resp, err := c.Get("https://" + dash + path)
		if err != nil {
			t.Fatalf("dashboard %s: %v", path, err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	if code, body := dashGet("/login"); code != http.StatusServiceUnavailable ||
		!strings.Contains(body, "hotdeskd is starting: waiting for etcd to answer") || strings.Contains(body, "dial tcp") {
		t.Errorf("the dashboard while the start waits for etcd: %d %s; want 503 saying the start waits for etcd, not how etcd is reached", code, body)
	}
	// Meanwhile terminals are refused, and turn to other brokers at once
	// (a listener that never answered would hold each for its handshake
	// timeout).
	if c, err := net.Dial("tcp", addr); err == nil {
		c.Close()
		t.Fatalf("the terminal listener %s accepts while the broker waits for etcd", addr)
	}
	etcdtest.RestartMember(t, members[0])
	d.WaitReady()
	if code, body := httpGet(t, "http://"+metrics+"/readyz"); code != http.StatusOK {
		t.Errorf("/readyz once started: %d %s; want 200", code, body)
	}
	if code, body := httpGet(t, "http://"+metrics+"/metrics"); code != http.StatusOK || !strings.Contains(body, "hotdesk_") {
		t.Errorf("/metrics once started: %d; want 200 and the metrics:\n%.300s", code, body)
	}
	if code, body := dashGet("/login"); code != http.StatusOK || !strings.Contains(body, `id="login-form"`) {
		t.Errorf("the dashboard once started: %d; want 200 and its login form:\n%.300s", code, body)
	}
	if log := d.LogTail(1 << 20); !strings.Contains(log, "etcd answers") {
		t.Fatalf("no line saying etcd answers:\n%s", log)
	}
}

// TestDaemonWaitsForEtcdSaysWhy: a broker that etcd does not answer because
// the etcd CA it was given does not vouch for etcd's certificate (a
// misconfiguration, not an outage) waits all the same, but its warning
// says what failed, in words an administrator can act on.
func TestDaemonWaitsForEtcdSaysWhy(t *testing.T) {
	t.Parallel() // its own etcd and daemon
	ctx := context.Background()
	served, other := filepath.Join(t.TempDir(), "etcd-tls"), filepath.Join(t.TempDir(), "etcd-tls")
	e, err := registry.StartEmbedded(ctx, registry.EmbedConfig{Dir: t.TempDir(), TLSDir: served, UnsafeNoFsync: true})
	if err != nil {
		t.Fatalf("etcd: %v", err)
	}
	t.Cleanup(func() { e.Close() })
	// Another etcd's PKI: its CA vouches for nothing e serves.
	o, err := registry.StartEmbedded(ctx, registry.EmbedConfig{Dir: t.TempDir(), TLSDir: other, UnsafeNoFsync: true})
	if err != nil {
		t.Fatalf("etcd: %v", err)
	}
	o.Close()
	wrongCA, _, _ := registry.EmbedTLSFiles(other)
	_, cert, key := registry.EmbedTLSFiles(served)
	etcd := fmt.Sprintf("etcd {\n  endpoints = [%q]\n  ca_file = %q\n  cert_file = %q\n  key_file = %q\n}\nmetrics_listen = \"off\"\n",
		e.Endpoints()[0], wrongCA, cert, key)
	dir := t.TempDir()
	d := testutil.NewDaemon(t, buildBinaries(t), dir, testutil.AdminSocket(dir), testutil.DaemonConfig(t, "wrong-ca", dir, testutil.FreeAddr(t), etcd))
	d.Launch()
	want := `reach="` + e.Endpoints()[0] + ": TLS: tls: failed to verify certificate: x509: certificate signed by unknown authority"
	waitLogged(t, d, "the warning saying why etcd does not answer", want)
}

// waitLogged waits until d's log holds want, failing the test if d exits
// first or after a minute.
func waitLogged(t *testing.T, d *testutil.Daemon, what, want string) {
	t.Helper()
	testutil.WaitFor(t, time.Minute, what, func() bool {
		select {
		case <-d.Exited():
			return true // told below
		default:
		}
		return strings.Contains(d.LogTail(1<<20), want)
	})
	select {
	case <-d.Exited():
		t.Fatalf("hotdeskd exited waiting for %s: %v", what, d.ExitErr())
	default:
	}
}
