package registry

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/hashicorp/go-hclog"
	"go.etcd.io/etcd/client/pkg/v3/transport"
	"go.etcd.io/etcd/server/v3/embed"
	"go.uber.org/zap/zapcore"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// embedReadyTimeout bounds how long StartEmbedded waits for the member to
// become ready when the caller's context has no earlier deadline.
const embedReadyTimeout = 60 * time.Second

// EmbedConfig configures an in-process etcd member.
type EmbedConfig struct {
	Dir            string // data directory (created 0700); required
	Name           string // member name, default "default"
	ClientURL      string // e.g. "http://127.0.0.1:2379"; "" = a free 127.0.0.1 port
	PeerURL        string // "" = a free 127.0.0.1 port
	InitialCluster string // "" = the single member "name=peerURL"; set for multi-member clusters
	ClusterState   string // "new" (default) or "existing"
	UnsafeNoFsync  bool   // tests only: skip fsync (data may be lost on a crash)
	// ElectionTimeout is the member's election timeout (0 = etcd's 1 s),
	// its heartbeat a tenth of it. etcd's shortest lease is 1.5 election
	// timeouts rounded up to whole seconds: at most 666 ms allows 1 s leases.
	ElectionTimeout time.Duration
	// TLSDir, if set, closes the member to everyone but its owner: client
	// and peer listeners require TLS client certificates signed by a
	// private CA generated in TLSDir (0700, files 0600) on first start;
	// http URLs are served as https. Only a process that can read TLSDir
	// (hotdeskd's user, root) gets in: other local users can neither read
	// nor write a key. ClientTLS returns what the client needs. "" = plain
	// http on loopback, for in-process tests and benchmarks only.
	TLSDir string
	// QuotaBackendBytes is the member's database quota (0: etcd's 2 GiB);
	// past it etcd raises the NOSPACE alarm and refuses every write.
	QuotaBackendBytes int64
	Logger            hclog.Logger
}

// Embedded is a running in-process etcd member. It is the registry's default
// backend when no endpoints are configured: one registry code path from one
// machine to a group.
type Embedded struct {
	etcd      *embed.Etcd
	name      string
	clientURL string
	peerURL   string
	tlsDir    string

	closeOnce   sync.Once
	closing     *atomic.Bool // demotes etcd's shutdown noise to debug
	stopStreams context.CancelFunc
}

// StartEmbedded starts an etcd member with cfg and waits until it is ready
// to serve (it has joined or formed its cluster and has a leader), until ctx
// is done, or at most 60 s. On any failure the member is closed again and an
// error is returned. When the member's ports were picked automatically and
// another process took one between picking and binding, it retries with new
// ports (at most 3 attempts).
//
// Starting again on the same Dir reuses the data: the member keeps its
// identity and its keys (the URLs given on the first start should be reused;
// a single member also survives new ports).
func StartEmbedded(ctx context.Context, cfg EmbedConfig) (*Embedded, error) {
	return startEmbedded(ctx, cfg, nil)
}

// startEmbedded is StartEmbedded; serving, if not nil, is called as soon as
// the member serves its peer port (before it is ready), on every attempt.
func startEmbedded(ctx context.Context, cfg EmbedConfig, serving func()) (*Embedded, error) {
	if cfg.Dir == "" {
		return nil, errors.New("registry: embedded etcd: empty data directory")
	}
	if cfg.Name == "" {
		cfg.Name = embed.DefaultName
	}
	switch cfg.ClusterState {
	case "":
		cfg.ClusterState = embed.ClusterStateFlagNew
	case embed.ClusterStateFlagNew, embed.ClusterStateFlagExisting:
	default:
		return nil, fmt.Errorf("registry: embedded etcd: cluster state %q is neither %q nor %q",
			cfg.ClusterState, embed.ClusterStateFlagNew, embed.ClusterStateFlagExisting)
	}
	if err := os.MkdirAll(cfg.Dir, 0o700); err != nil {
		return nil, fmt.Errorf("registry: embedded etcd: %w", err)
	}
	if cfg.Logger == nil {
		cfg.Logger = hclog.NewNullLogger()
	}
	if cfg.TLSDir != "" {
		if err := ensureEmbedPKI(cfg.TLSDir); err != nil {
			return nil, fmt.Errorf("registry: embedded etcd: certificates: %w", err)
		}
	}
	autoPorts := cfg.ClientURL == "" || cfg.PeerURL == ""
	ctx, cancel := context.WithTimeout(ctx, embedReadyTimeout)
	defer cancel()

	const attempts = 3
	var lastErr error
	for i := 0; i < attempts; i++ {
		e, err := startEmbeddedOnce(ctx, cfg, serving)
		if err == nil {
			return e, nil
		}
		lastErr = err
		if !autoPorts || !isAddrInUse(err) || ctx.Err() != nil {
			break
		}
		cfg.Logger.Debug("embedded etcd port taken, retrying", "attempt", i+1, "error", err)
	}
	return nil, lastErr
}

func startEmbeddedOnce(ctx context.Context, cfg EmbedConfig, serving func()) (*Embedded, error) {
	clientURL, peerURL := cfg.ClientURL, cfg.PeerURL
	var err error
	if clientURL == "" {
		if clientURL, err = FreeLoopbackURL(); err != nil {
			return nil, fmt.Errorf("registry: embedded etcd: %w", err)
		}
	}
	if peerURL == "" {
		if peerURL, err = FreeLoopbackURL(); err != nil {
			return nil, fmt.Errorf("registry: embedded etcd: %w", err)
		}
	}
	if cfg.TLSDir != "" {
		clientURL, peerURL = httpsURL(clientURL), httpsURL(peerURL)
	}
	cu, err := url.Parse(clientURL)
	if err != nil {
		return nil, fmt.Errorf("registry: embedded etcd: client url: %w", err)
	}
	pu, err := url.Parse(peerURL)
	if err != nil {
		return nil, fmt.Errorf("registry: embedded etcd: peer url: %w", err)
	}

	ec := embed.NewConfig()
	ec.Name = cfg.Name
	ec.Dir = cfg.Dir
	ec.ListenClientUrls = []url.URL{*cu}
	ec.AdvertiseClientUrls = []url.URL{*cu}
	ec.ListenPeerUrls = []url.URL{*pu}
	ec.AdvertisePeerUrls = []url.URL{*pu}
	ec.InitialCluster = cfg.InitialCluster
	if ec.InitialCluster == "" {
		ec.InitialCluster = cfg.Name + "=" + peerURL
	}
	ec.ClusterState = cfg.ClusterState
	if cfg.TLSDir != "" {
		ca := filepath.Join(cfg.TLSDir, embedCAFile)
		info := transport.TLSInfo{
			CertFile:       filepath.Join(cfg.TLSDir, embedServerCert),
			KeyFile:        filepath.Join(cfg.TLSDir, embedServerKey),
			TrustedCAFile:  ca,
			ClientCertAuth: true,
		}
		ec.ClientTLSInfo = info
		ec.PeerTLSInfo = info
		// The member's own gRPC gateway dials the client listener too.
		ec.ClientTLSInfo.ClientCertFile = filepath.Join(cfg.TLSDir, embedClientCert)
		ec.ClientTLSInfo.ClientKeyFile = filepath.Join(cfg.TLSDir, embedClientKey)
	}
	ec.UnsafeNoFsync = cfg.UnsafeNoFsync
	if cfg.QuotaBackendBytes > 0 {
		ec.QuotaBackendBytes = cfg.QuotaBackendBytes
	}
	if ms := uint(cfg.ElectionTimeout.Milliseconds()); ms > 0 {
		ec.ElectionMs = ms
		ec.TickMs = max(ms/10, 1)
	}
	// Registry keys churn (claims, updates): keep one hour of history.
	ec.AutoCompactionMode = embed.CompactorModePeriodic
	ec.AutoCompactionRetention = "1h"
	ec.LogLevel = "error"
	closing := new(atomic.Bool)
	ec.ZapLoggerBuilder = embed.NewZapLoggerBuilder(newZapLogger(cfg.Logger, zapcore.ErrorLevel, closing))
	stopping, stopStreams := context.WithCancel(context.Background())
	ec.GRPCAdditionalServerOptions = []grpc.ServerOption{grpc.ChainStreamInterceptor(endStreams(stopping))}

	e, err := embed.StartEtcd(ec) // closes itself on error
	if err != nil {
		stopStreams()
		return nil, fmt.Errorf("registry: embedded etcd: start: %w", err)
	}
	if serving != nil {
		serving()
	}
	abort := func() {
		closing.Store(true)
		stopStreams()
		// embed.Etcd.Close waits for the client servers, which only start
		// (or give up) once the member is ready or stopping: stop the
		// member first, or Close blocks forever.
		e.Server.HardStop()
		e.Close()
	}
	select {
	case <-e.Server.ReadyNotify():
	case <-e.Server.StopNotify():
		abort()
		return nil, errors.New("registry: embedded etcd: member stopped before it was ready")
	case <-ctx.Done():
		abort()
		return nil, fmt.Errorf("registry: embedded etcd: waiting for ready: %w", ctx.Err())
	}
	cfg.Logger.Info("embedded etcd ready", "name", cfg.Name, "client_url", clientURL, "peer_url", peerURL)
	return &Embedded{etcd: e, name: cfg.Name, clientURL: clientURL, peerURL: peerURL, tlsDir: cfg.TLSDir, closing: closing, stopStreams: stopStreams}, nil
}

// errMemberStopping ends the streams of a member that stops (endStreams).
var errMemberStopping = status.Error(codes.Unavailable, "registry: embedded etcd member stopping")

// endStreams is a stream interceptor that ends every stream the member
// serves (watches, lease keep-alives) once stopping is done, answering
// errMemberStopping: Unavailable, what a lost connection looks like to an
// etcd client, which tries again (elsewhere if it can) rather than giving
// the watch up. Without it embed.Etcd.Close waited for the streams of
// other processes' clients (brokers using this broker's member, the demo's
// layout) until its request timeout, about 7 s: its HTTP server's shutdown
// waits for every stream to end, and a watch ends only when its client
// or its context does. A stream opened after stopping ends at once.
func endStreams(stopping context.Context) grpc.StreamServerInterceptor {
	return func(srv any, ss grpc.ServerStream, _ *grpc.StreamServerInfo, handler grpc.StreamHandler) error {
		ctx, cancel := context.WithCancel(ss.Context())
		defer cancel()
		defer context.AfterFunc(stopping, cancel)()
		err := handler(srv, ctxStream{ServerStream: ss, ctx: ctx})
		if stopping.Err() != nil && ss.Context().Err() == nil {
			return errMemberStopping
		}
		return err
	}
}

// ctxStream is a server stream with a context of its own.
type ctxStream struct {
	grpc.ServerStream
	ctx context.Context
}

func (s ctxStream) Context() context.Context { return s.ctx }

// httpsURL turns an http URL into https (the scheme of a TLS member).
func httpsURL(s string) string {
	if rest, ok := strings.CutPrefix(s, "http://"); ok {
		return "https://" + rest
	}
	return s
}

// Endpoints returns the member's client URLs, for clientv3.Config.Endpoints.
func (e *Embedded) Endpoints() []string { return []string{e.clientURL} }

// ClientTLS returns the TLS configuration a client of this member needs
// (its CA and client certificate), or nil when the member was started
// without EmbedConfig.TLSDir.
func (e *Embedded) ClientTLS() (*tls.Config, error) {
	if e.tlsDir == "" {
		return nil, nil
	}
	return ClientTLSFromFiles(EmbedTLSFiles(e.tlsDir))
}

// Name returns the member name.
func (e *Embedded) Name() string { return e.name }

// PeerURL returns the member's peer URL.
func (e *Embedded) PeerURL() string { return e.peerURL }

// Err reports fatal errors of the running member (e.g. a listener failing).
// It is closed after Close returns.
func (e *Embedded) Err() <-chan error { return e.etcd.Err() }

// Close stops the member, waiting for its goroutines to end. It is
// idempotent and safe for concurrent use; it always returns nil.
func (e *Embedded) Close() error {
	e.closeOnce.Do(func() {
		e.closing.Store(true)
		e.stopStreams()
		e.etcd.Close()
	})
	return nil
}

// Kill stops the member abruptly, the way a crash looks to its peers and
// clients: the raft member stops at once, without handing leadership over,
// then its listeners close. Meant for fault tests; Close is the clean stop.
// It is idempotent with Close.
func (e *Embedded) Kill() {
	e.closeOnce.Do(func() {
		e.closing.Store(true)
		e.etcd.Server.HardStop()
		e.stopStreams() // a crash ends them at once too
		e.etcd.Close()
	})
}

// FreeLoopbackURL returns "http://127.0.0.1:<port>" for a TCP port that was
// free a moment ago. Another process may take it before it is bound;
// StartEmbedded retries in that case.
func FreeLoopbackURL() (string, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	addr := l.Addr().String()
	if err := l.Close(); err != nil {
		return "", err
	}
	return "http://" + addr, nil
}

func isAddrInUse(err error) bool {
	return errors.Is(err, syscall.EADDRINUSE) || strings.Contains(err.Error(), "address already in use")
}

// StartCluster starts len(cfgs) embedded members forming one new cluster on
// free loopback ports. Each cfg gives Dir, and optionally Name (default
// "m<i>"), UnsafeNoFsync and Logger; StartCluster fills in the URLs and the
// initial cluster and returns the configurations used (to restart a member
// later with ClusterState "existing"). On failure it closes whatever it
// started.
//
// The members start one after the other, each as soon as the one before
// serves its peer port, and then become ready together: a member
// bootstrapping a new cluster first asks every other member's peer port
// whether it is part of a cluster already, and a port that is bound but
// not served yet (its member is bootstrapping too) answers only when the
// question times out, a second per member; a port not bound yet refuses at
// once.
func StartCluster(ctx context.Context, cfgs []EmbedConfig) ([]*Embedded, []EmbedConfig, error) {
	cfgs = append([]EmbedConfig(nil), cfgs...)
	peers := make([]string, len(cfgs))
	for i := range cfgs {
		cu, err := FreeLoopbackURL()
		if err != nil {
			return nil, nil, err
		}
		pu, err := FreeLoopbackURL()
		if err != nil {
			return nil, nil, err
		}
		if cfgs[i].Name == "" {
			cfgs[i].Name = fmt.Sprintf("m%d", i)
		}
		cfgs[i].ClientURL, cfgs[i].PeerURL = cu, pu
		peers[i] = cfgs[i].Name + "=" + pu
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	members := make([]*Embedded, len(cfgs))
	errs := make([]error, len(cfgs))
	var wg sync.WaitGroup
	for i := range cfgs {
		cfgs[i].InitialCluster = strings.Join(peers, ",")
	}
	for i := range cfgs {
		serving := make(chan struct{})
		var once sync.Once
		served := func() { once.Do(func() { close(serving) }) }
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer served()
			members[i], errs[i] = startEmbedded(ctx, cfgs[i], served)
			if errs[i] != nil {
				errs[i] = fmt.Errorf("member %d: %w", i, errs[i])
				cancel() // the others cannot reach quorum without this one
			}
		}()
		<-serving
		if err := ctx.Err(); err != nil {
			if i+1 < len(cfgs) {
				errs[i+1] = fmt.Errorf("member %d: not started: %w", i+1, err)
			}
			break
		}
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		for _, m := range members {
			if m != nil {
				m.Close()
			}
		}
		return nil, nil, fmt.Errorf("registry: start cluster: %w", err)
	}
	return members, cfgs, nil
}
