package registry_test

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/hotdesk/hotdesk/internal/testutil"
	"github.com/hotdesk/hotdesk/registry"
	"github.com/hotdesk/hotdesk/registry/etcdtest"
)

// TestEmbeddedClosedToOtherUsers: a member started with TLSDir serves its
// owner (the client certificate from TLSDir) and nobody else: a process
// running as the unprivileged uid "nobody" can read neither the
// certificates nor a key, and cannot write one, by the client API, the
// HTTP gateway or the peer port.
func TestEmbeddedClosedToOtherUsers(t *testing.T) {
	t.Parallel()
	testutil.NeedRoot(t, "needs root to run a helper as another uid")
	testutil.NeedTools(t, "setpriv") // util-linux
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
	cli := etcdtest.EmbeddedClient(t, e)
	if _, err := cli.Put(ctx, "/hotdesk/tokens/soft.victim", "victim"); err != nil {
		t.Fatalf("owner put: %v", err)
	}

	out, err := etcdtest.AccessAsUser(ctx, "nobody", "nogroup", "TestAccessHelper", e.Endpoints()[0], e.PeerURL(), tlsDir)
	t.Logf("helper as nobody:\n%s", out)
	if err != nil {
		t.Fatalf("helper: %v", err)
	}
	if !strings.Contains(out, fmt.Sprintf("ATTEMPTS %d", etcdtest.AccessAttempts)) {
		t.Fatalf("helper did not make its %d attempts", etcdtest.AccessAttempts)
	}
	if strings.Contains(out, "BREACH") {
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
// (as another uid).
func TestAccessHelper(t *testing.T) {
	t.Parallel()
	if !etcdtest.AccessHelperMain() {
		t.Skip("helper process only")
	}
}
