// Package etcdtest starts real etcd members in-process for tests: one member
// (Start) or a cluster of several (StartCluster, StopMember, RestartMember),
// on free loopback ports, in t.TempDir(), with fsync off, and puts a TCP
// Proxy between clients and a member to cut and heal the network. Everything
// it starts is stopped by t.Cleanup.
package etcdtest

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"

	"github.com/hotdesk/hotdesk/internal/testutil"
	"github.com/hotdesk/hotdesk/registry"
)

// startTimeout bounds the start of a member or cluster.
const startTimeout = 60 * time.Second

// Start starts an embedded single member on free loopback ports in
// t.TempDir() with UnsafeNoFsync and a 500 ms election timeout (so that 1 s
// leases are granted as asked: a single member never holds an election),
// registers its Close with t.Cleanup, and returns its client endpoints. It
// fails the test if the member cannot start.
func Start(t testing.TB) []string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), startTimeout)
	defer cancel()
	e, err := registry.StartEmbedded(ctx, registry.EmbedConfig{
		Dir:             t.TempDir(),
		UnsafeNoFsync:   true,
		ElectionTimeout: 500 * time.Millisecond,
		Logger:          logger(t, "etcd"),
	})
	if err != nil {
		t.Fatalf("etcdtest: start: %v", err)
	}
	t.Cleanup(func() { e.Close() })
	return e.Endpoints()
}

// Client returns a clientv3 client for endpoints, closed by t.Cleanup.
func Client(t testing.TB, endpoints []string) *clientv3.Client {
	t.Helper()
	return newClient(t, clientv3.Config{Endpoints: endpoints, DialTimeout: 5 * time.Second})
}

// BrokerClient returns a clientv3 client for endpoints that dials as a
// broker's does (registry.DialOptions: a lost member is dialled again every
// second), closed by t.Cleanup.
func BrokerClient(t testing.TB, endpoints []string) *clientv3.Client {
	t.Helper()
	return newClient(t, clientv3.Config{Endpoints: endpoints, DialTimeout: 2 * time.Second,
		DialOptions: registry.DialOptions(2 * time.Second)})
}

// EmbeddedClient returns a clientv3 client of the member e, with the client
// certificate it generated when it serves TLS, closed by t.Cleanup.
func EmbeddedClient(t testing.TB, e *registry.Embedded) *clientv3.Client {
	t.Helper()
	tc, err := e.ClientTLS()
	if err != nil {
		t.Fatalf("etcdtest: client TLS: %v", err)
	}
	return newClient(t, clientv3.Config{Endpoints: e.Endpoints(), TLS: tc, DialTimeout: 5 * time.Second})
}

// Revision is etcd's revision now, as cli reads it: a test counts the
// writes (transactions) a step made by it.
func Revision(t testing.TB, cli *clientv3.Client) int64 {
	t.Helper()
	resp, err := cli.Get(context.Background(), "nothing")
	if err != nil {
		t.Fatalf("etcdtest: revision: %v", err)
	}
	return resp.Header.Revision
}

func newClient(t testing.TB, cfg clientv3.Config) *clientv3.Client {
	t.Helper()
	cfg.Logger = zap.NewNop()
	cli, err := clientv3.New(cfg)
	if err != nil {
		t.Fatalf("etcdtest: client: %v", err)
	}
	t.Cleanup(func() { cli.Close() })
	return cli
}

// StartCluster starts n members forming one cluster on free loopback ports
// (each in its own t.TempDir()), waits until all are ready, and returns all
// client endpoints and the members (to stop one in a test: Close is
// idempotent). Everything is closed by t.Cleanup.
//
// When the test is over the members, including those RestartMember started
// again, are killed all at once (Embedded.Kill): a graceful Close one after
// the other hands leadership over and waits up to a second for each
// member's peer connections, about 3 s for three members, for data nobody
// reads again. Kill waits for the members' goroutines all the same.
func StartCluster(t testing.TB, n int) (endpoints []string, members []*registry.Embedded) {
	t.Helper()
	if n < 1 {
		t.Fatalf("etcdtest: start cluster: n = %d", n)
	}
	const attempts = 3
	var err error
	for range attempts {
		members, err = startCluster(t, n)
		if err == nil {
			break
		}
		t.Logf("etcdtest: start cluster: %v; retrying", err)
	}
	if err != nil {
		t.Fatalf("etcdtest: start cluster: %v", err)
	}
	c := &cluster{members: append([]*registry.Embedded(nil), members...)}
	for _, m := range members {
		v, _ := memberConfigs.Load(m)
		mc := v.(memberConfig)
		mc.cluster = c
		memberConfigs.Store(m, mc)
		endpoints = append(endpoints, m.Endpoints()...)
	}
	t.Cleanup(c.kill)
	return endpoints, members
}

// cluster is what one StartCluster started, for its cleanup.
type cluster struct {
	mu      sync.Mutex
	members []*registry.Embedded // every member started, stopped or not
}

func (c *cluster) add(m *registry.Embedded) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.members = append(c.members, m)
}

// kill kills every member at once and waits until all have stopped.
func (c *cluster) kill() {
	c.mu.Lock()
	members := c.members
	c.members = nil
	c.mu.Unlock()
	var wg sync.WaitGroup
	for _, m := range members {
		wg.Add(1)
		go func() {
			defer wg.Done()
			m.Kill() // a no-op for a member already stopped
			memberConfigs.Delete(m)
		}()
	}
	wg.Wait()
}

// memberConfig is how a member started by StartCluster was configured, for
// RestartMember, and the cluster it belongs to.
type memberConfig struct {
	cfg     registry.EmbedConfig
	cluster *cluster
}

// memberConfigs remembers every running or stopped member of a cluster.
var memberConfigs sync.Map // *registry.Embedded -> memberConfig

// StopMember kills member m (started by StartCluster) as a crash would look
// to its peers and clients: no leadership hand-over, its ports close; its
// data directory stays for RestartMember.
func StopMember(t testing.TB, m *registry.Embedded) {
	t.Helper()
	m.Kill()
}

// RestartMember starts a stopped member of a StartCluster cluster again on
// the same data directory and URLs, waits until it is ready (it has rejoined
// the cluster), and returns it; it is killed with its cluster when the test
// that started the cluster is over.
func RestartMember(t testing.TB, m *registry.Embedded) *registry.Embedded {
	t.Helper()
	v, ok := memberConfigs.Load(m)
	if !ok {
		t.Fatalf("etcdtest: restart member %s: not started by StartCluster", m.Name())
	}
	mc := v.(memberConfig)
	cfg := mc.cfg
	cfg.ClusterState = "existing"
	ctx, cancel := context.WithTimeout(context.Background(), startTimeout)
	defer cancel()
	n, err := registry.StartEmbedded(ctx, cfg)
	for errors.Is(err, syscall.EADDRINUSE) && ctx.Err() == nil {
		// Its port, free while it was down, is some other socket's now
		// (most often an outgoing connection's, given it as its local
		// port by the kernel: short-lived): tried again until the bound.
		time.Sleep(200 * time.Millisecond)
		n, err = registry.StartEmbedded(ctx, cfg)
	}
	if err != nil {
		t.Fatalf("etcdtest: restart member %s: %v", m.Name(), err)
	}
	memberConfigs.Store(n, memberConfig{cfg: cfg, cluster: mc.cluster})
	mc.cluster.add(n)
	return n
}

// startCluster makes one attempt; on failure it closes what it started.
func startCluster(t testing.TB, n int) ([]*registry.Embedded, error) {
	cfgs := make([]registry.EmbedConfig, n)
	for i := range cfgs {
		name := fmt.Sprintf("m%d", i)
		cfgs[i] = registry.EmbedConfig{Dir: t.TempDir(), Name: name, UnsafeNoFsync: true, Logger: logger(t, "etcd."+name)}
	}
	ctx, cancel := context.WithTimeout(context.Background(), startTimeout)
	defer cancel()
	members, used, err := registry.StartCluster(ctx, cfgs)
	if err != nil {
		return nil, err
	}
	for i, m := range members {
		memberConfigs.Store(m, memberConfig{cfg: used[i]})
	}
	return members, nil
}

// logger returns an hclog logger writing etcd's errors into the test log.
// Call it before registering the member's Close, so that the writer is
// silenced only after the member has stopped.
func logger(t testing.TB, name string) hclog.Logger { return testutil.Logger(t, name, hclog.Error) }

// UserSessions returns how many session claims of user the registry holds,
// failing t if it cannot list them.
func UserSessions(ctx context.Context, t testing.TB, r *registry.Registry, user string) int {
	t.Helper()
	all, err := r.Sessions(ctx)
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, c := range all {
		if c.Session.User == user {
			n++
		}
	}
	return n
}
