package main

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/go-hclog"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"

	"github.com/hotdesk/hotdesk/auth"
	"github.com/hotdesk/hotdesk/broker"
	"github.com/hotdesk/hotdesk/compositor"
	"github.com/hotdesk/hotdesk/proto"
	"github.com/hotdesk/hotdesk/registry"
	"github.com/hotdesk/hotdesk/tokens/soft"
)

// groupConfig says how to build the group.
type groupConfig struct {
	Dir     string
	Brokers int
	NoFsync bool // etcd UnsafeNoFsync
	Inproc  bool // etcd members in this process instead of a child
	Log     hclog.Logger
	// Auth is the brokers' authenticator (nil: kiosk, user "bench").
	Auth auth.Authenticator
}

// group is a running server group: an etcd cluster and one broker per
// member, each broker's registry client talking to its own member.
type group struct {
	log      hclog.Logger
	etcd     cluster
	observer *clientv3.Client // all endpoints; the bench's own view of etcd
	nodes    []*node
	keys     *keyring
}

// node is one broker of the group.
type node struct {
	id   string
	addr string
	pin  []byte
	cli  *clientv3.Client
	reg  *registry.Registry
	b    *broker.Broker
	comp compositor.Backend
	// attach is the attach gateway's address ("" without one).
	attach string
	cancel context.CancelFunc
	served chan struct{}

	// Transition counters, fed by broker hooks.
	creating  atomic.Int64
	active    atomic.Int64
	suspended atomic.Int64
}

// benchConns bounds the connections of one broker of the bench: every
// simulated terminal dials from the loopback address.
const benchConns = 1 << 16

func newClient(eps []string) (*clientv3.Client, error) {
	cli, err := clientv3.New(clientv3.Config{Endpoints: eps, DialTimeout: 5 * time.Second, Logger: zap.NewNop()})
	if err != nil {
		return nil, fmt.Errorf("bench: etcd client: %w", err)
	}
	return cli, nil
}

// startGroup starts the etcd cluster and the brokers. On failure whatever
// was started is stopped again.
func startGroup(ctx context.Context, cfg groupConfig) (g *group, err error) {
	g = &group{log: cfg.Log, keys: newKeyring()}
	defer func() {
		if err != nil {
			g.Close()
			g = nil
		}
	}()
	if cfg.Inproc {
		ms, err := startMembers(ctx, filepath.Join(cfg.Dir, "etcd"), childMembers, cfg.NoFsync, cfg.Log.Named("etcd"))
		if err != nil {
			return g, err
		}
		g.etcd = &inprocCluster{members: ms}
	} else {
		c, err := startChildCluster(ctx, filepath.Join(cfg.Dir, "etcd"), cfg.NoFsync)
		if err != nil {
			return g, err
		}
		g.etcd = c
	}
	eps := g.etcd.Endpoints()
	if g.observer, err = newClient(eps); err != nil {
		return g, err
	}
	for i := range cfg.Brokers {
		n, err := startNode(ctx, cfg, fmt.Sprintf("b%d", i), eps[i%len(eps)])
		if err != nil {
			return g, err
		}
		g.nodes = append(g.nodes, n)
	}
	return g, nil
}

// nodeOptions change what startNode builds: by default a broker with the
// null compositor and no attach gateway.
type nodeOptions struct {
	comp   compositor.Backend // nil: a null backend
	attach bool               // serve an attach gateway on 127.0.0.1:0
}

func startNode(ctx context.Context, cfg groupConfig, id, endpoint string) (n *node, err error) {
	return startNodeWith(ctx, cfg, id, endpoint, nodeOptions{})
}

// startNodeWith starts a broker; on failure nothing is left running and
// o.comp is closed.
func startNodeWith(ctx context.Context, cfg groupConfig, id, endpoint string, o nodeOptions) (n *node, err error) {
	if o.comp == nil {
		o.comp = newNullBackend()
	}
	dir := filepath.Join(cfg.Dir, id)
	cert, err := proto.LoadOrCreateCert(filepath.Join(dir, "tls.crt"), filepath.Join(dir, "tls.key"), nil)
	if err != nil {
		return nil, fmt.Errorf("bench: broker %s: %w", id, err)
	}
	leaf, err := x509.ParseCertificate(cert.Certificate[0])
	if err != nil {
		return nil, fmt.Errorf("bench: broker %s: %w", id, err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		o.comp.Close()
		return nil, fmt.Errorf("bench: broker %s: %w", id, err)
	}
	var attachLn net.Listener
	n = &node{id: id, addr: ln.Addr().String(), pin: proto.Fingerprint(leaf.Raw), comp: o.comp, served: make(chan struct{})}
	fail := func(err error) (*node, error) {
		ln.Close()
		if attachLn != nil {
			attachLn.Close()
		}
		n.close()
		return nil, fmt.Errorf("bench: broker %s: %w", id, err)
	}
	if o.attach {
		if attachLn, err = net.Listen("tcp", "127.0.0.1:0"); err != nil {
			return fail(err)
		}
		n.attach = attachLn.Addr().String()
	}
	if n.cli, err = newClient([]string{endpoint}); err != nil {
		return fail(err)
	}
	log := cfg.Log.Named(id)
	var authn auth.Authenticator = auth.Kiosk{User: "bench"}
	if cfg.Auth != nil {
		authn = cfg.Auth
	}
	// A member starved by other work on the machine can miss the lease
	// grant's deadline while the group is healthy: try again (a broker
	// under hotdeskd's supervisor does the same).
	for attempt := 1; ; attempt++ {
		n.reg, err = registry.New(ctx, n.cli, registry.ServerRecord{ID: id, Addr: n.addr, Fingerprint: n.pin, Weight: 1},
			registry.WithLogger(log.Named("registry")))
		if err == nil || attempt == 3 || ctx.Err() != nil || !errors.Is(err, context.DeadlineExceeded) {
			break
		}
		log.Warn("registry start timed out; trying again", "attempt", attempt, "error", err)
	}
	if err != nil {
		return fail(err)
	}
	n.b, err = broker.New(broker.Config{
		ServerID: id, Registry: n.reg, Claims: n.reg, Compositor: n.comp, Auth: authn, Logger: log,
		// Nothing to keep with the null compositor, but Shutdown then skips
		// releasing 10,000 claims one by one: revoking the lease drops them.
		// Real desktops (the pixels node) are destroyed at Shutdown.
		KeepSessionsOnShutdown: !o.attach,
		AttachAddr:             n.attach,
		// The simulated terminals hot-desk one connection as fast as it
		// goes (hundreds a second), which a real terminal never does, and
		// all of them connect from one address (storm: hundreds at once).
		Limits: broker.Limits{TokenEventsPerSecond: -1, MaxConnections: benchConns, MaxConnectionsPerSource: benchConns,
			MaxUnauthenticated: benchConns, MaxUnauthenticatedPerSource: benchConns},
	})
	if err != nil {
		return fail(err)
	}
	n.b.SetHooks(broker.Hooks{OnTransition: func(_ string, _, to broker.State) {
		switch to {
		case broker.Creating:
			n.creating.Add(1)
		case broker.Active:
			n.active.Add(1)
		case broker.Suspended:
			n.suspended.Add(1)
		}
	}})
	sctx, cancel := context.WithCancel(context.Background())
	n.cancel = cancel
	tlsCfg := proto.ServerTLSConfig(cert)
	var served sync.WaitGroup
	served.Add(1)
	go func() {
		defer served.Done()
		if err := n.b.Serve(sctx, ln, tlsCfg); err != nil {
			log.Error("serve ended", "error", err)
		}
	}()
	if attachLn != nil {
		served.Add(1)
		go func() {
			defer served.Done()
			if err := n.b.ServeAttach(sctx, attachLn, tlsCfg); err != nil {
				log.Error("attach gateway ended", "error", err)
			}
		}()
	}
	go func() { served.Wait(); close(n.served) }()
	return n, nil
}

// close stops the node within a bound; safe on a partly started node.
func (n *node) close() {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if n.b != nil {
		_ = n.b.Shutdown(ctx)
	}
	if n.cancel != nil {
		n.cancel()
		select {
		case <-n.served:
		case <-ctx.Done():
		}
	}
	if n.reg != nil {
		_ = n.reg.Close(ctx)
	}
	n.comp.Close()
	if n.cli != nil {
		n.cli.Close()
	}
}

// Close stops the brokers, then etcd.
func (g *group) Close() {
	var wg sync.WaitGroup
	for _, n := range g.nodes {
		wg.Add(1)
		go func() { defer wg.Done(); n.close() }()
	}
	wg.Wait()
	if g.observer != nil {
		g.observer.Close()
	}
	if g.etcd != nil {
		g.etcd.Close()
	}
}

// creations is the number of sessions created so far across the group.
func (g *group) creations() int64 {
	var s int64
	for _, n := range g.nodes {
		s += n.creating.Load()
	}
	return s
}

// placeOn makes new sessions land on broker a: every other broker is
// marked draining in the registry (as an administrator's drain would) until
// the returned function is called. The brokers' load-aware placement would
// otherwise spread the sessions a scenario needs on one broker.
func (g *group) placeOn(ctx context.Context, a *node) (restore func(), err error) {
	set := func(ctx context.Context, v bool) error {
		for _, n := range g.nodes {
			if n == a {
				continue
			}
			if err := n.reg.UpdateServer(ctx, func(r *registry.ServerRecord) { r.Draining = v }); err != nil {
				return fmt.Errorf("bench: drain %s: %w", n.id, err)
			}
		}
		return nil
	}
	if err := set(ctx, true); err != nil {
		_ = set(context.WithoutCancel(ctx), false)
		return nil, err
	}
	return func() {
		if err := set(context.WithoutCancel(ctx), false); err != nil {
			g.log.Error("undrain failed", "error", err)
		}
	}, nil
}

// enroll creates count software tokens, enrolls them in the registry
// (through broker 0's registry, as an administrator would) with at most
// 16 enrolments in flight, and adds their keys to the keyring.
func (g *group) enroll(ctx context.Context, count int) ([]string, error) {
	ids := make([]string, count)
	for i := range ids {
		pub, priv, err := ed25519.GenerateKey(rand.Reader)
		if err != nil {
			return nil, fmt.Errorf("bench: enroll: %w", err)
		}
		ids[i] = soft.TokenID(pub)
		g.keys.add(ids[i], priv)
	}
	var (
		wg    sync.WaitGroup
		next  atomic.Int64
		errMu sync.Mutex
		first error
	)
	reg := g.nodes[0].reg
	for range min(16, count) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := int(next.Add(1) - 1)
				if i >= count || ctx.Err() != nil {
					return
				}
				priv := g.keys.get(ids[i])
				err := reg.EnrollToken(ctx, registry.TokenRecord{
					ID: ids[i], Kind: soft.Kind, PublicKey: priv.Public().(ed25519.PublicKey), User: "bench",
				})
				if err != nil {
					errMu.Lock()
					first = cmpErr(first, err)
					errMu.Unlock()
					return
				}
			}
		}()
	}
	wg.Wait()
	if first == nil {
		first = ctx.Err()
	}
	if first != nil {
		return nil, fmt.Errorf("bench: enroll: %w", first)
	}
	return ids, nil
}

func cmpErr(a, b error) error {
	if a != nil {
		return a
	}
	return b
}

// keyring holds the bench's token keys; every simulated terminal can sign
// for any token (a person carries the card from desk to desk).
type keyring struct {
	mu   sync.RWMutex
	keys map[string]ed25519.PrivateKey
}

func newKeyring() *keyring { return &keyring{keys: make(map[string]ed25519.PrivateKey)} }

func (k *keyring) add(id string, priv ed25519.PrivateKey) {
	k.mu.Lock()
	k.keys[id] = priv
	k.mu.Unlock()
}

func (k *keyring) get(id string) ed25519.PrivateKey {
	k.mu.RLock()
	defer k.mu.RUnlock()
	return k.keys[id]
}

var errNoKey = errors.New("bench: no key for token")
