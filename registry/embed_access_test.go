package registry_test

import (
	"bytes"
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"

	"github.com/hotdesk/hotdesk/registry"
)

// Environment of the helper run as another uid by TestEmbeddedClosedToOtherUsers.
const (
	envAccessEndpoint = "HOTDESK_TEST_ETCD_ENDPOINT"
	envAccessTLSDir   = "HOTDESK_TEST_ETCD_TLSDIR"
)

// TestEmbeddedClosedToOtherUsers: a member started with TLSDir serves its
// owner (the client certificate from TLSDir) and nobody else: a process
// running as the unprivileged uid "nobody" can read neither the
// certificates nor a key, and cannot write one, by the client API, the
// HTTP gateway or the peer port.
func TestEmbeddedClosedToOtherUsers(t *testing.T) {
	if os.Geteuid() != 0 {
		failOrSkip(t, "needs root to run a helper as another uid")
	}
	setpriv, err := exec.LookPath("setpriv")
	if err != nil {
		failOrSkip(t, "setpriv (util-linux) not installed")
	}
	base := t.TempDir()
	tlsDir := filepath.Join(base, "etcd-tls")
	ctx := tctx(t)
	e, err := registry.StartEmbedded(ctx, registry.EmbedConfig{
		Dir: filepath.Join(base, "etcd"), TLSDir: tlsDir, UnsafeNoFsync: true, Logger: testLogger(t),
	})
	if err != nil {
		t.Fatalf("StartEmbedded: %v", err)
	}
	t.Cleanup(func() { e.Close() })
	if !strings.HasPrefix(e.Endpoints()[0], "https://") || !strings.HasPrefix(e.PeerURL(), "https://") {
		t.Fatalf("endpoints %v, peer %s; want https", e.Endpoints(), e.PeerURL())
	}
	for _, f := range []string{"ca.crt", "client.key", "server.key"} {
		fi, err := os.Stat(filepath.Join(tlsDir, f))
		if err != nil || fi.Mode().Perm() != 0o600 {
			t.Fatalf("%s: mode %v, %v; want 0600", f, fi.Mode().Perm(), err)
		}
	}

	// The owner gets in with the generated client certificate.
	tc, err := e.ClientTLS()
	if err != nil {
		t.Fatal(err)
	}
	cli, err := clientv3.New(clientv3.Config{Endpoints: e.Endpoints(), TLS: tc, DialTimeout: 5 * time.Second, Logger: zap.NewNop()})
	if err != nil {
		t.Fatal(err)
	}
	defer cli.Close()
	if _, err := cli.Put(ctx, "/hotdesk/tokens/soft.victim", "victim"); err != nil {
		t.Fatalf("owner put: %v", err)
	}

	// The helper: this test binary, copied where nobody can run it.
	binDir, err := os.MkdirTemp("", "hd-access-")
	if err != nil {
		t.Fatal(err)
	}
	defer os.RemoveAll(binDir)
	self, err := os.ReadFile(os.Args[0])
	if err != nil {
		t.Fatal(err)
	}
	bin := filepath.Join(binDir, "registry.test")
	if err := os.WriteFile(bin, self, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(binDir, 0o755); err != nil {
		t.Fatal(err)
	}
	cmd := exec.CommandContext(ctx, setpriv, "--reuid=nobody", "--regid=nogroup", "--clear-groups",
		bin, "-test.run=^TestAccessHelper$", "-test.v")
	cmd.Env = append(os.Environ(), envAccessEndpoint+"="+e.Endpoints()[0]+","+e.PeerURL(), envAccessTLSDir+"="+tlsDir)
	out, err := cmd.CombinedOutput()
	t.Logf("helper as nobody:\n%s", out)
	if err != nil {
		t.Fatalf("helper: %v", err)
	}
	if !strings.Contains(string(out), "ATTEMPTS 6") {
		t.Fatalf("helper did not make its 6 attempts")
	}
	if strings.Contains(string(out), "BREACH") {
		t.Fatal("another uid reached the registry")
	}
	resp, err := cli.Get(ctx, "/hotdesk/tokens/soft.victim")
	if err != nil || len(resp.Kvs) != 1 || string(resp.Kvs[0].Value) != "victim" {
		t.Fatalf("victim key after the attempts = %v, %v; want unchanged", resp, err)
	}
	resp, err = cli.Get(ctx, "/hotdesk/tokens/soft.attacker")
	if err != nil || len(resp.Kvs) != 0 {
		t.Fatalf("attacker key = %v, %v; want absent", resp, err)
	}
}

// TestAccessHelper runs only as the helper of TestEmbeddedClosedToOtherUsers
// (as another uid); it prints BREACH for every attempt that got through.
func TestAccessHelper(t *testing.T) {
	eps := os.Getenv(envAccessEndpoint)
	if eps == "" {
		t.Skip("helper process only")
	}
	client, peer, _ := strings.Cut(eps, ",")
	tlsDir := os.Getenv(envAccessTLSDir)
	attempts := 0
	breach := func(what string, err error) {
		attempts++
		if err == nil {
			fmt.Printf("BREACH %s\n", what)
		} else {
			fmt.Printf("refused %s: %v\n", what, err)
		}
	}
	// 1. The certificates.
	_, err := os.ReadFile(filepath.Join(tlsDir, "client.key"))
	breach("read client.key", err)
	// 2, 3. The client API without a certificate.
	insecure := &tls.Config{InsecureSkipVerify: true}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	cli, err := clientv3.New(clientv3.Config{Endpoints: []string{client}, TLS: insecure, DialTimeout: 2 * time.Second, Logger: zap.NewNop()})
	if err == nil {
		rctx, rcancel := context.WithTimeout(ctx, 3*time.Second)
		_, err = cli.Get(rctx, "/hotdesk/tokens/soft.victim")
		rcancel()
		breach("grpc get", err)
		rctx, rcancel = context.WithTimeout(ctx, 3*time.Second)
		_, err = cli.Put(rctx, "/hotdesk/tokens/soft.attacker", "x")
		rcancel()
		breach("grpc put", err)
		cli.Close()
	} else {
		breach("grpc get", err)
		breach("grpc put", err)
	}
	// 4, 5. The HTTP gateway, over TLS and in clear.
	body := []byte(`{"key":"L2hvdGRlc2svdG9rZW5zL3NvZnQudmljdGlt"}`)
	hc := &http.Client{Timeout: 3 * time.Second, Transport: &http.Transport{TLSClientConfig: insecure}}
	post := func(url string) error {
		resp, err := hc.Post(url+"/v3/kv/range", "application/json", bytes.NewReader(body))
		if err != nil {
			return err
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
		if resp.StatusCode != http.StatusOK || !bytes.Contains(b, []byte("kvs")) {
			return fmt.Errorf("status %d: %.100s", resp.StatusCode, b)
		}
		return nil
	}
	breach("gateway https range", post(client))
	breach("gateway http range", post(strings.Replace(client, "https://", "http://", 1)))
	// 6. The peer port.
	resp, err := hc.Get(peer + "/members")
	if err == nil {
		if resp.StatusCode != http.StatusOK {
			err = fmt.Errorf("status %d", resp.StatusCode)
		}
		resp.Body.Close()
	}
	breach("peer members", err)
	fmt.Printf("ATTEMPTS %d\n", attempts)
}

// failOrSkip fails under CI=true (a missing component is a failure there)
// and skips otherwise.
func failOrSkip(t *testing.T, why string) {
	t.Helper()
	if os.Getenv("CI") == "true" {
		t.Fatal(why)
	}
	t.Skip(why)
}
