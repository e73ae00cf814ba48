package registry_test

import (
	"crypto/tls"
	"errors"
	"os"
	"path/filepath"
	"testing"
	"time"

	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"

	"github.com/hotdesk/hotdesk/registry"
	"github.com/hotdesk/hotdesk/registry/etcdtest"
)

// TestEmbeddedAuth: with etcd auth enabled on a TLS member, the daemon's
// certificate (CN hotdeskd) reads and writes the registry prefix and
// registers, claims and watches as before, but touches no other key and
// administers nothing; a certificate of another CN signed by the same CA
// (the member's own server certificate) reads and writes nothing. After a
// restart of the member the provisioning is found in place, changes
// nothing, and the registry works; a changed prefix is granted. Budget:
// ~5 s.
func TestEmbeddedAuth(t *testing.T) {
	t.Parallel()
	base := t.TempDir()
	tlsDir := filepath.Join(base, "etcd-tls")
	ctx := tctx(t)
	cfg := registry.EmbedConfig{Dir: filepath.Join(base, "etcd"), TLSDir: tlsDir, UnsafeNoFsync: true, Logger: testLogger(t)}
	start := func() (*registry.Embedded, *clientv3.Client) {
		t.Helper()
		e, err := registry.StartEmbedded(ctx, cfg)
		if err != nil {
			t.Fatalf("StartEmbedded: %v", err)
		}
		t.Cleanup(func() { e.Close() })
		cfg.ClientURL, cfg.PeerURL = e.Endpoints()[0], e.PeerURL() // the same ports after a restart
		return e, etcdtest.EmbeddedClient(t, e)
	}
	e, cli := start()
	const prefix = "/hotdesk/"
	// Before auth a stray key outside the prefix can be written (and will
	// be out of reach afterwards).
	if _, err := cli.Put(ctx, "/elsewhere/k", "v"); err != nil {
		t.Fatal(err)
	}
	enabled, err := registry.EnableEmbeddedAuth(ctx, cli, tlsDir, prefix)
	if err != nil || !enabled {
		t.Fatalf("EnableEmbeddedAuth = %v, %v; want enabled", enabled, err)
	}
	if fi, err := os.Stat(registry.EmbedRootPasswordFile(tlsDir)); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("root password file: %v, %v; want 0600", fi, err)
	}

	works := func(cli *clientv3.Client, id string) {
		t.Helper()
		r := newReg(t, cli, id, registry.WithPrefix(prefix))
		if _, won, err := r.Claim(ctx, "tok-"+id, registry.Session{ID: "s-" + id, User: "u"}); err != nil || !won {
			t.Fatalf("claim under auth: won=%v err=%v", won, err)
		}
		if _, won, err := r.ClaimLimited(ctx, "tok2-"+id, registry.Session{ID: "s2-" + id, User: "u"}, 5); err != nil || !won {
			t.Fatalf("limited claim under auth: won=%v err=%v", won, err)
		}
		if ss, err := r.Sessions(ctx); err != nil || len(ss) < 2 {
			t.Fatalf("sessions under auth: %v, %v", ss, err)
		}
		wctx, cancel := clientv3.WithRequireLeader(ctx), func() {}
		defer cancel()
		wch := cli.Watch(wctx, prefix, clientv3.WithPrefix(), clientv3.WithRev(1))
		select {
		case wr := <-wch:
			if err := wr.Err(); err != nil {
				t.Fatalf("watch under auth: %v", err)
			}
		case <-time.After(waitBound):
			t.Fatal("watch under auth: nothing")
		}
	}
	denied := func(what string, err error) {
		t.Helper()
		if !errors.Is(err, rpctypes.ErrPermissionDenied) && !errors.Is(err, rpctypes.ErrUserNotFound) &&
			!errors.Is(err, rpctypes.ErrUserEmpty) && !errors.Is(err, rpctypes.ErrAuthFailed) {
			t.Errorf("%s = %v; want permission denied", what, err)
		}
	}
	works(cli, "s1")
	_, err = cli.Get(ctx, "/elsewhere/k")
	denied("daemon reads outside its prefix", err)
	_, err = cli.Put(ctx, "/elsewhere/k2", "v")
	denied("daemon writes outside its prefix", err)
	_, err = cli.UserAdd(ctx, "mallory", "pw")
	denied("daemon adds a user", err)
	_, err = cli.AuthDisable(ctx)
	denied("daemon disables auth", err)

	// Another CN of the same CA: the member's server certificate.
	other, err := registry.ClientTLSFromFiles(filepath.Join(tlsDir, "ca.crt"), filepath.Join(tlsDir, "server.crt"), filepath.Join(tlsDir, "server.key"))
	if err != nil {
		t.Fatal(err)
	}
	ocli := tlsClient(t, e.Endpoints(), other)
	_, err = ocli.Get(ctx, prefix, clientv3.WithPrefix())
	denied("another CN reads the prefix", err)
	_, err = ocli.Put(ctx, prefix+"tokens/uid.0badcafe", `{"user":"mallory"}`)
	denied("another CN writes the prefix", err)

	// Restart: found enabled, nothing changed, the registry works.
	cli.Close()
	e.Close()
	_, cli2 := start()
	if enabled, err := registry.EnableEmbeddedAuth(ctx, cli2, tlsDir, prefix); err != nil || enabled {
		t.Fatalf("EnableEmbeddedAuth after a restart = %v, %v; want already enabled", enabled, err)
	}
	works(cli2, "s2")
	_, err = cli2.Get(ctx, "/elsewhere/k")
	denied("daemon reads outside its prefix after a restart", err)

	// The configured prefix changed: the role is granted it (as root).
	const prefix2 = "/hotdesk-b/"
	_, err = cli2.Put(ctx, prefix2+"k", "v")
	denied("daemon writes a prefix not granted yet", err)
	if enabled, err := registry.EnableEmbeddedAuth(ctx, cli2, tlsDir, prefix2); err != nil || enabled {
		t.Fatalf("EnableEmbeddedAuth with a new prefix = %v, %v; want already enabled, no error", enabled, err)
	}
	r := newReg(t, cli2, "s3", registry.WithPrefix(prefix2))
	if _, won, err := r.Claim(ctx, "tok-s3", registry.Session{ID: "s-s3", User: "u"}); err != nil || !won {
		t.Fatalf("claim under the new prefix: won=%v err=%v", won, err)
	}
	_, err = cli2.Get(ctx, "/elsewhere/k")
	denied("daemon reads outside its prefixes", err)
}

// tlsClient connects to an embedded member's endpoints with tc; the
// client is closed on cleanup.
func tlsClient(t testing.TB, endpoints []string, tc *tls.Config) *clientv3.Client {
	t.Helper()
	cli, err := clientv3.New(clientv3.Config{Endpoints: endpoints, TLS: tc, DialTimeout: 5 * time.Second, Logger: zap.NewNop()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cli.Close() })
	return cli
}
