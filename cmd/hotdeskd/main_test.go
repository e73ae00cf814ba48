package main

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/hotdesk/hotdesk/cmd/internal/adminapi"
	"github.com/hotdesk/hotdesk/internal/testutil"
	"github.com/hotdesk/hotdesk/proto"
)

// TestMain removes the binaries the end-to-end tests share.
func TestMain(m *testing.M) {
	code := m.Run()
	testutil.RemoveBuilds()
	os.Exit(code)
}

// buildBinaries builds hotdeskd, hotdesk-term and hotdeskctl once for every
// test of the package and returns their directory.
func buildBinaries(t *testing.T) string {
	return testutil.Build(t, ".", "../hotdesk-term", "../hotdeskctl")
}

func TestCheckReportsPosition(t *testing.T) {
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
	bin := filepath.Join(buildBinaries(t), "hotdeskd")
	dir := t.TempDir()
	sock := filepath.Join(dir, "admin.sock")
	cfgPath := filepath.Join(dir, "hotdesk.hcl")
	cfg := fmt.Sprintf(`server_id = "sig-test"
data_dir = %q
listen = %q
admin_socket = %q
etcd {
  embedded {
    client_url = "http://%s"
    peer_url = "http://%s"
  }
}
`, filepath.Join(dir, "data"), testutil.FreeAddr(t), sock, testutil.FreeAddr(t), testutil.FreeAddr(t))
	if err := os.WriteFile(cfgPath, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bin, "-config", cfgPath)
	stderr, _ := cmd.StderrPipe()
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	lines := make(chan string, 1000)
	go func() {
		sc := bufio.NewScanner(stderr)
		for sc.Scan() {
			lines <- sc.Text()
		}
		close(lines)
	}()
	waitLine := func(substr string) {
		t.Helper()
		timeout := time.After(60 * time.Second)
		for {
			select {
			case l, ok := <-lines:
				if !ok {
					t.Fatalf("hotdeskd exited before logging %q", substr)
				}
				if strings.Contains(l, substr) {
					return
				}
			case <-timeout:
				t.Fatalf("no log line containing %q", substr)
			}
		}
	}
	waitLine("hotdeskd ready")
	c := adminapi.NewClient(sock)
	if err := c.Ready(context.Background()); err != nil {
		t.Fatalf("ready: %v", err)
	}

	// A broken config on SIGHUP is reported and the daemon keeps running.
	if err := os.WriteFile(cfgPath, []byte("bogus = 1\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	cmd.Process.Signal(syscall.SIGHUP)
	waitLine("keeping the running configuration")
	if err := c.Ready(context.Background()); err != nil {
		t.Fatalf("ready after bad reload: %v", err)
	}

	cmd.Process.Signal(syscall.SIGTERM)
	done := make(chan error, 1)
	go func() {
		for range lines {
		}
		done <- cmd.Wait()
	}()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("exit after SIGTERM: %v; want status 0", err)
		}
	case <-time.After(60 * time.Second):
		t.Fatal("hotdeskd did not stop after SIGTERM")
	}
	if _, err := os.Stat(sock); !os.IsNotExist(err) {
		t.Fatalf("admin socket left behind: %v", err)
	}
}
