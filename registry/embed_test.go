package registry_test

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/hotdesk/hotdesk/registry"
	"github.com/hotdesk/hotdesk/registry/etcdtest"
)

// TestEmbeddedRestartKeepsData: a member restarted on the same data
// directory keeps its keys, with the same URLs and with new ports.
func TestEmbeddedRestartKeepsData(t *testing.T) {
	t.Parallel()
	dir := filepath.Join(t.TempDir(), "etcd")
	ctx := tctx(t)
	start := func(clientURL, peerURL string) *registry.Embedded {
		t.Helper()
		e, err := registry.StartEmbedded(ctx, registry.EmbedConfig{
			Dir: dir, Name: "hd1", ClientURL: clientURL, PeerURL: peerURL, Logger: testLogger(t),
		})
		if err != nil {
			t.Fatalf("StartEmbedded err = %v; want nil", err)
		}
		t.Cleanup(func() { e.Close() })
		return e
	}

	e := start("", "")
	if fi, err := os.Stat(dir); err != nil || fi.Mode().Perm() != 0o700 {
		t.Errorf("data dir mode = %v, %v; want 0700", fi.Mode().Perm(), err)
	}
	clientURL, peerURL := e.Endpoints()[0], e.PeerURL()
	cli := etcdtest.Client(t, e.Endpoints())
	if _, err := cli.Put(ctx, "/hotdesk/tokens/soft.keep", `{"id":"soft.keep"}`); err != nil {
		t.Fatal(err)
	}
	cli.Close()
	if err := e.Close(); err != nil {
		t.Fatal(err)
	}
	if err := e.Close(); err != nil {
		t.Fatalf("second Close err = %v; want nil", err)
	}

	tests := []struct {
		name               string
		clientURL, peerURL string
	}{
		{"same urls", clientURL, peerURL},
		{"new ports", "", ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := start(tt.clientURL, tt.peerURL)
			defer e.Close()
			cli := etcdtest.Client(t, e.Endpoints())
			defer cli.Close()
			resp, err := cli.Get(ctx, "/hotdesk/tokens/soft.keep")
			if err != nil {
				t.Fatal(err)
			}
			if len(resp.Kvs) != 1 || string(resp.Kvs[0].Value) != `{"id":"soft.keep"}` {
				t.Errorf("after restart: %v; want the key written before", resp.Kvs)
			}
		})
	}
}

func TestEmbeddedConfigErrors(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		cfg  registry.EmbedConfig
	}{
		{"no dir", registry.EmbedConfig{}},
		{"bad cluster state", registry.EmbedConfig{Dir: t.TempDir(), ClusterState: "maybe"}},
		{"bad client url", registry.EmbedConfig{Dir: t.TempDir(), ClientURL: "http://[::1"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e, err := registry.StartEmbedded(context.Background(), tt.cfg)
			if err == nil {
				e.Close()
				t.Fatal("StartEmbedded err = nil; want an error")
			}
		})
	}

	t.Run("cancelled", func(t *testing.T) {
		ctx, cancel := context.WithCancel(context.Background())
		cancel()
		// Two members announced, one started: it can never become ready.
		peer, _ := registry.FreeLoopbackURL()
		other, _ := registry.FreeLoopbackURL()
		e, err := registry.StartEmbedded(ctx, registry.EmbedConfig{
			Dir: t.TempDir(), Name: "a", PeerURL: peer, InitialCluster: "a=" + peer + ",b=" + other, Logger: testLogger(t),
		})
		if err == nil {
			e.Close()
			t.Fatal("StartEmbedded err = nil; want an error")
		}
		if !errorsIsCtx(err) {
			t.Errorf("err = %v; want context.Canceled", err)
		}
	})
}

// TestCluster: three members form one cluster; a write through one member
// is read through another, and registries on different members see each
// other's claims.
func TestCluster(t *testing.T) {
	t.Parallel()
	eps, members := etcdtest.StartCluster(t, 3)
	if len(eps) != 3 || len(members) != 3 {
		t.Fatalf("StartCluster = %d endpoints, %d members; want 3, 3", len(eps), len(members))
	}
	ctx := tctx(t)
	c0 := etcdtest.Client(t, eps[0:1])
	c2 := etcdtest.Client(t, eps[2:3])
	if _, err := c0.Put(ctx, "/probe", "v"); err != nil {
		t.Fatal(err)
	}
	resp, err := c2.Get(ctx, "/probe")
	if err != nil || len(resp.Kvs) != 1 || string(resp.Kvs[0].Value) != "v" {
		t.Fatalf("Get via member 2 = %v, %v; want v", resp, err)
	}
	ml, err := c2.MemberList(ctx)
	if err != nil || len(ml.Members) != 3 {
		t.Fatalf("MemberList = %v, %v; want 3 members", ml, err)
	}

	a := newReg(t, c0, "s1")
	b := newReg(t, c2, "s2")
	c, won, err := a.Claim(ctx, "soft.cluster", registry.Session{ID: "x"})
	if err != nil || !won {
		t.Fatalf("Claim = %v, %v", won, err)
	}
	got, won, err := b.Claim(ctx, "soft.cluster", registry.Session{ID: "y"})
	if err != nil || won || got.Fence != c.Fence || got.Session.ServerID != "s1" {
		t.Errorf("b.Claim = %+v, %v, %v; want s1's claim, not won", got, won, err)
	}
}

// TestEmbeddedCloseEndsStreams: closing a member ends the streams other
// processes' clients hold on it (a broker's watch on the demo's broker
// that runs the group's etcd) at once, as Unavailable, which an etcd
// client tries again rather than giving its watch up. Before, Close waited
// for them until etcd's request timeout (about 7 s) and then cut the
// connections: the stream ended as a transport error, not with this
// message.
func TestEmbeddedCloseEndsStreams(t *testing.T) {
	t.Parallel()
	ctx := tctx(t)
	e, err := registry.StartEmbedded(ctx, registry.EmbedConfig{
		Dir: t.TempDir(), TLSDir: filepath.Join(t.TempDir(), "tls"), UnsafeNoFsync: true, Logger: testLogger(t),
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { e.Close() })
	cli := etcdtest.EmbeddedClient(t, e)
	ws, err := pb.NewWatchClient(cli.ActiveConnection()).Watch(ctx)
	if err != nil {
		t.Fatal(err)
	}
	create := &pb.WatchRequest{RequestUnion: &pb.WatchRequest_CreateRequest{CreateRequest: &pb.WatchCreateRequest{Key: []byte("/hotdesk/")}}}
	if err := ws.Send(create); err != nil {
		t.Fatal(err)
	}
	if resp, err := ws.Recv(); err != nil || !resp.Created {
		t.Fatalf("watch created: %v, %v", resp, err)
	}
	begin := time.Now()
	closed := make(chan struct{})
	go func() { e.Close(); close(closed) }()
	_, err = ws.Recv()
	if status.Code(err) != codes.Unavailable || !strings.Contains(err.Error(), "embedded etcd member stopping") {
		t.Errorf("the watch stream at Close ended with %v; want Unavailable, the member stopping", err)
	}
	<-closed
	t.Logf("Close with another client's watch open: %v", time.Since(begin))
}
