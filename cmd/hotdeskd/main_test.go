package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/hotdesk/hotdesk/cmd/internal/adminapi"
	"github.com/hotdesk/hotdesk/internal/testutil"
	"github.com/hotdesk/hotdesk/proto"
)

// TestMain removes the binaries the end-to-end tests share. Unless
// -test.parallel is given (or -race) it runs up to 4 tests at once: they
// wait on daemons, etcd, weston and browsers far more than they compute,
// and the default (GOMAXPROCS) is 2 on the CI machine.
func TestMain(m *testing.M) {
	testutil.RaiseParallel(4)
	os.Exit(testutil.RunWithBuilds(m))
}

// buildBinaries builds hotdeskd, hotdesk-term and hotdeskctl once for every
// test of the package, stamped as the Makefile stamps them (testutil.Stamp),
// and returns their directory.
func buildBinaries(t *testing.T) string {
	t.Helper()
	return testutil.BuildHotdesk(t)
}

func TestCheckReportsPosition(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	bad := filepath.Join(dir, "bad.hcl")
	if err := os.WriteFile(bad, []byte("log_level = \"info\"\n\nsession {\n  suspend_timeout = \"soon\"\n}\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	err := run([]string{"-config", bad, "-check"})
	if err == nil || !strings.Contains(err.Error(), "bad.hcl:4:") {
		t.Fatalf("run -check on a bad duration = %v; want an error naming bad.hcl:4:col", err)
	}
	good := filepath.Join(dir, "good.hcl")
	if err := os.WriteFile(good, []byte("log_level = \"debug\"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := run([]string{"-config", good, "-check"}); err != nil {
		t.Fatalf("run -check on a good file = %v", err)
	}
}

// TestFingerprintIsStable stays serial: captureStdout swaps os.Stdout.
func TestFingerprintIsStable(t *testing.T) {
	dir := t.TempDir()
	cfgPath := filepath.Join(dir, "h.hcl")
	if err := os.WriteFile(cfgPath, []byte(fmt.Sprintf("data_dir = %q\n", dir)), 0o600); err != nil {
		t.Fatal(err)
	}
	cert, err := proto.LoadOrCreateCert(filepath.Join(dir, "tls", "server.crt"), filepath.Join(dir, "tls", "server.key"), nil)
	if err != nil {
		t.Fatal(err)
	}
	want := proto.FormatFingerprint(proto.Fingerprint(cert.Certificate[0]))
	out, err := captureStdout(func() error { return run([]string{"-config", cfgPath, "-fingerprint"}) })
	if err != nil || strings.TrimSpace(out) != want {
		t.Fatalf("-fingerprint printed %q, %v; want %q", out, err, want)
	}
}

func captureStdout(f func() error) (string, error) {
	r, w, err := os.Pipe()
	if err != nil {
		return "", err
	}
	old := os.Stdout
	os.Stdout = w
	ferr := f()
	os.Stdout = old
	w.Close()
	b, _ := io.ReadAll(r)
	return string(b), ferr
}

// TestDaemonSignals runs the real binary: it becomes ready, survives a
// SIGHUP with a broken config (keeping the old one), and stops cleanly on
// SIGTERM, removing its admin socket.
func TestDaemonSignals(t *testing.T) {
	t.Parallel() // its own daemon, data dir, ports and terminals
	dir := t.TempDir()
	sock := testutil.AdminSocket(dir)
	cfg := testutil.DaemonConfig(t, "sig-test", dir, testutil.FreeAddr(t), "")
	d := testutil.NewDaemon(t, buildBinaries(t), dir, sock, cfg)
	d.Start()
	waitLine := func(substr string) {
		t.Helper()
		testutil.WaitFor(t, 60*time.Second, fmt.Sprintf("a log line containing %q", substr), func() bool {
			return strings.Contains(d.LogTail(1<<20), substr)
		})
	}
	waitLine("hotdeskd ready")
	c := adminapi.NewClient(sock)
	if err := c.Ready(context.Background()); err != nil {
		t.Fatalf("ready: %v", err)
	}

	// A broken config on SIGHUP is reported and the daemon keeps running.
	good, err := os.ReadFile(d.Config)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(d.Config, []byte("bogus = 1\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	syscall.Kill(d.PID(), syscall.SIGHUP)
	waitLine("keeping the running configuration")
	if err := c.Ready(context.Background()); err != nil {
		t.Fatalf("ready after bad reload: %v", err)
	}
	// So is a good one that others may change (they would choose the
	// login policies a reload applies).
	if err := os.WriteFile(d.Config, good, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(d.Config, 0o666); err != nil {
		t.Fatal(err)
	}
	syscall.Kill(d.PID(), syscall.SIGHUP)
	waitLine("path others may change")
	if strings.Contains(d.LogTail(1<<20), "configuration reloaded") {
		t.Fatalf("a configuration others may write was reloaded:\n%s", d.LogTail(4096))
	}

	exited := d.Exited()
	d.Stop(syscall.SIGTERM)
	<-exited
	if err := d.ExitErr(); err != nil {
		t.Fatalf("exit after SIGTERM: %v; want status 0", err)
	}
	if _, err := os.Stat(sock); !os.IsNotExist(err) {
		t.Fatalf("admin socket left behind: %v", err)
	}
}

// TestCheckRefusesWhatStartWouldRefuse: -check fails, naming file:line:column,
// for an unknown admin or read-only group and for two listeners on one
// address; before, -check said ok and the start failed after etcd had
// started (or, for readonly_group, never said anything).
func TestCheckRefusesWhatStartWouldRefuse(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	for _, tt := range []struct{ name, src, want string }{
		{"admin group", "log_level = \"info\"\nadmin_group = \"nosuchgroup-hd7\"\n", ":2:15: unknown group: admin_group"},
		{"readonly group", "admin_group = \"root\"\ndashboard {\n  listen = \"127.0.0.1:0\"\n  readonly_group = \"nosuchgrp-hd7\"\n}\n",
			":4:20: unknown group: dashboard.readonly_group"},
		{"attach on listen", "listen = \"127.0.0.1:4600\"\nattach_listen = \"127.0.0.1:4600\"\n", ":2:17: address already used: attach_listen"},
		{"metrics on listen", "listen = \"127.0.0.1:4600\"\nmetrics_listen = \"127.0.0.1:4600\"\n", ":2:18: address already used: metrics_listen"},
	} {
		path := filepath.Join(dir, strings.ReplaceAll(tt.name, " ", "-")+".hcl")
		if err := os.WriteFile(path, []byte(tt.src), 0o600); err != nil {
			t.Fatal(err)
		}
		err := run([]string{"-config", path, "-check"})
		if err == nil || !strings.Contains(err.Error(), path+tt.want) {
			t.Errorf("%s: run -check = %v; want an error containing %q", tt.name, err, path+tt.want)
		}
	}
}

// TestCheckRefusesConfigOthersMayChange: -check (and so a start and a
// reload, which read the file the same way) refuses a configuration file
// others may write, or one in a directory they may write: they would
// choose what hotdeskd runs as root and the login policies.
func TestCheckRefusesConfigOthersMayChange(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	path := filepath.Join(dir, "hotdesk.hcl")
	if err := os.WriteFile(path, []byte("log_level = \"info\"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	check := func() error {
		_, err := captureStdout(func() error { return run([]string{"-config", path, "-check"}) })
		return err
	}
	if err := check(); err != nil {
		t.Fatalf("-check of a file only its owner may write: %v", err)
	}
	for _, tt := range []struct {
		what     string
		file, in os.FileMode
	}{{"the file others may write", 0o666, 0o755}, {"its directory others may write", 0o644, 0o777}} {
		if err := os.Chmod(path, tt.file); err != nil {
			t.Fatal(err)
		}
		if err := os.Chmod(dir, tt.in); err != nil {
			t.Fatal(err)
		}
		if err := check(); err == nil || !strings.Contains(err.Error(), path+": path others may change") {
			t.Errorf("%s: -check = %v; want %q", tt.what, err, path+": path others may change")
		}
	}
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
}

// TestCheckWarnsMissingPAMService: hotdeskd -check names a PAM service the
// configuration uses that has no file, and the file (libpam would use
// "other" instead), and still exits 0 (a fresh install must start).
func TestCheckWarnsMissingPAMService(t *testing.T) {
	t.Parallel()
	bin := buildBinaries(t)
	dir := t.TempDir()
	pamDir := filepath.Join(dir, "pam.d")
	if err := os.Mkdir(pamDir, 0o755); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, "h.hcl")
	src := fmt.Sprintf("data_dir = %q\nauth {\n  pam_dir = %q\n}\n", filepath.Join(dir, "data"), pamDir)
	if err := os.WriteFile(path, []byte(src), 0o600); err != nil {
		t.Fatal(err)
	}
	out, code := testutil.Exec(t, filepath.Join(bin, "hotdeskd"), "-config", path, "-check")
	want := fmt.Sprintf(`WARNING: %s: PAM service "hotdesk-pin" (auth.pin_service, used by the card+pin login policy (session.auth)) has no file %s`,
		path, filepath.Join(pamDir, "hotdesk-pin"))
	if code != 0 || !strings.Contains(out, want) || !strings.Contains(out, path+": ok") {
		t.Fatalf("hotdeskd -check: exit %d, output:\n%s\nwant exit 0, %q and ok", code, out, want)
	}
	if err := os.WriteFile(filepath.Join(pamDir, "hotdesk-pin"), []byte("auth required pam_deny.so\nsession required pam_permit.so\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if out, code := testutil.Exec(t, filepath.Join(bin, "hotdeskd"), "-config", path, "-check"); code != 0 || strings.Contains(out, "WARNING") {
		t.Fatalf("hotdeskd -check with the file: exit %d, output:\n%s\nwant exit 0 and no warning", code, out)
	}
}
