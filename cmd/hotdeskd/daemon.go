package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"sync"
	"syscall"
	"time"

	sd "github.com/coreos/go-systemd/v22/daemon"
	"github.com/hashicorp/go-hclog"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"

	"github.com/hotdesk/hotdesk/auth"
	"github.com/hotdesk/hotdesk/auth/pam"
	"github.com/hotdesk/hotdesk/broker"
	"github.com/hotdesk/hotdesk/cmd/hotdeskd/config"
	"github.com/hotdesk/hotdesk/cmd/internal/adminapi"
	"github.com/hotdesk/hotdesk/compositor"
	"github.com/hotdesk/hotdesk/compositor/wayray"
	"github.com/hotdesk/hotdesk/compositor/weston"
	"github.com/hotdesk/hotdesk/internal/clock"
	"github.com/hotdesk/hotdesk/internal/version"
	"github.com/hotdesk/hotdesk/proto"
	"github.com/hotdesk/hotdesk/registry"
	"github.com/hotdesk/hotdesk/registry/pairing"
)

// stopTimeout bounds a graceful stop.
const stopTimeout = 20 * time.Second

// daemon holds the running subsystems, in start order. It is built only
// here; packages get what they need through their constructors.
type daemon struct {
	cfg      *config.Config
	embedded *registry.Embedded
	etcd     *clientv3.Client
	regMu    sync.Mutex
	reg      *registry.Registry // replaced when the lease is re-established
	comp     compositor.Backend
	broker   *broker.Broker
	pairer   *pairing.Pairer
	termLn   net.Listener
	adminLn  net.Listener
	log      hclog.Logger
	bus      *broker.Bus // the broker's events (events.go)
	presence *presence   // terminal presence in the registry
	metrics  *metrics
	limits   *limitCounters // refusals by limits, in metrics

	cancel context.CancelFunc
	done   []chan error
	fatal  chan error
	stops  []func(context.Context) // rollback/stop steps, run in reverse
}

func (d *daemon) registry() *registry.Registry {
	d.regMu.Lock()
	defer d.regMu.Unlock()
	return d.reg
}

func (d *daemon) listenAddr() string {
	if d.termLn == nil {
		return ""
	}
	return d.termLn.Addr().String()
}

// start brings every subsystem up in order. If one fails, the ones already
// started are stopped in reverse order.
func start(ctx context.Context, cfg *config.Config, logger hclog.Logger) (_ *daemon, err error) {
	d := &daemon{cfg: cfg, fatal: make(chan error, 4), log: logger}
	defer func() {
		if err != nil {
			d.stop(logger)
		}
	}()
	if err := os.MkdirAll(cfg.DataDir, 0o700); err != nil {
		return nil, fmt.Errorf("data dir: %w", err)
	}
	for _, w := range cfg.Warnings() {
		logger.Warn("insecure configuration: " + w)
	}

	// Terminal listener first: its address is published in the server record.
	cert, err := proto.LoadOrCreateCert(cfg.TLS.CertFile, cfg.TLS.KeyFile, certHosts(cfg))
	if err != nil {
		return nil, fmt.Errorf("tls: %w", err)
	}
	leaf, err := x509.ParseCertificate(cert.Certificate[0])
	if err != nil {
		return nil, fmt.Errorf("tls: %w", err)
	}
	d.termLn, err = net.Listen("tcp", cfg.Listen)
	if err != nil {
		return nil, fmt.Errorf("terminal listener: %w", err)
	}
	d.stops = append(d.stops, func(context.Context) { d.termLn.Close() })
	advertise := cfg.Advertise
	if host, port, _ := net.SplitHostPort(advertise); port == "0" {
		_, realPort, _ := net.SplitHostPort(d.termLn.Addr().String())
		advertise = net.JoinHostPort(host, realPort)
	}
	fingerprint := proto.Fingerprint(leaf.Raw)
	logger.Info("terminal listener", "addr", d.termLn.Addr().String(), "advertise", advertise,
		"fingerprint", proto.FormatFingerprint(fingerprint))

	// Registry: embedded etcd by default, a real cluster when configured.
	endpoints := cfg.Etcd.Endpoints
	if cfg.UsesEmbeddedEtcd() {
		d.embedded, err = registry.StartEmbedded(ctx, registry.EmbedConfig{
			Dir:       filepath.Join(cfg.DataDir, "etcd"),
			Name:      cfg.ServerID,
			ClientURL: cfg.Etcd.Embedded.ClientURL,
			PeerURL:   cfg.Etcd.Embedded.PeerURL,
			// Only hotdeskd (and root) can read the client certificate:
			// no other local user reaches the registry.
			TLSDir: filepath.Join(cfg.DataDir, "etcd-tls"),
			Logger: logger.Named("etcd"),
		})
		if err != nil {
			return nil, fmt.Errorf("embedded etcd: %w", err)
		}
		d.stops = append(d.stops, func(context.Context) { d.embedded.Close() })
		endpoints = d.embedded.Endpoints()
	}
	etcdTLS, err := etcdClientTLS(cfg)
	if err != nil {
		return nil, err
	}
	if d.embedded != nil {
		if etcdTLS, err = d.embedded.ClientTLS(); err != nil {
			return nil, fmt.Errorf("embedded etcd: %w", err)
		}
	}
	d.etcd, err = clientv3.New(clientv3.Config{
		Endpoints:   endpoints,
		DialTimeout: cfg.Etcd.DialTimeout,
		TLS:         etcdTLS,
		Logger:      zap.NewNop(),
	})
	if err != nil {
		return nil, fmt.Errorf("etcd client: %w", err)
	}
	d.stops = append(d.stops, func(context.Context) { d.etcd.Close() })
	if d.embedded != nil {
		// etcd auth: the daemon's certificate may touch the registry
		// prefix and nothing else (provisioned on the first start).
		actx, cancel := context.WithTimeout(ctx, 30*time.Second)
		enabled, err := registry.EnableEmbeddedAuth(actx, d.etcd, filepath.Join(cfg.DataDir, "etcd-tls"), cfg.Etcd.Prefix)
		cancel()
		if err != nil {
			return nil, fmt.Errorf("embedded etcd: %w", err)
		}
		if enabled {
			logger.Info("embedded etcd: authentication enabled; the daemon's certificate is limited to the registry prefix",
				"user", registry.EmbeddedClientUser, "prefix", cfg.Etcd.Prefix)
		}
	}
	serverRec := registry.ServerRecord{
		ID: cfg.ServerID, Addr: advertise, Fingerprint: fingerprint,
		Capacity: cfg.Session.MaxSessions, Weight: 1, StartedUnixMs: time.Now().UnixMilli(),
		Version: version.String(),
	}
	// The lease of the previous run, if it kept its desktops: this run
	// takes its server record and claims over (Adopt, below).
	prevLease := readLeaseFile(cfg.DataDir)
	d.reg, err = newRegistry(ctx, d.etcd, cfg, serverRec, logger, prevLease)
	if err != nil {
		return nil, fmt.Errorf("registry: %w", err)
	}
	writeLeaseFile(cfg.DataDir, d.reg.LeaseID(), logger)
	d.stops = append(d.stops, func(ctx context.Context) {
		if cfg.Session.KeepOnStop {
			// The desktops keep running: so do their claims, until the
			// lease expires or the next run takes them over, so that no
			// broker replaces a desktop that still exists.
			d.registry().Abandon()
			return
		}
		// A clean stop revokes the lease: the server and its claims leave
		// the registry at once.
		if err := d.registry().Close(ctx); err != nil {
			logger.Warn("revoking registry lease", "error", err)
		}
	})

	// Compositor backend.
	switch cfg.Compositor.Type {
	case "weston":
		d.comp, err = weston.New(weston.Config{
			Binary:       cfg.Compositor.Binary,
			Backend:      cfg.Compositor.Backend,
			StateDir:     cfg.Compositor.StateDir,
			ExtraArgs:    cfg.Compositor.Args,
			StartTimeout: cfg.Compositor.StartTimeout,
			StopGrace:    cfg.Compositor.StopGrace,
			RunAsUser:    cfg.Compositor.RunAsUser,
			// The cap is taken when the desktop starts, under the
			// backend's lock: concurrent logins never overshoot it.
			MaxSessions:        cfg.Session.MaxSessions,
			KioskAccountPrefix: cfg.Compositor.KioskAccountPrefix,
			MaxKioskAccounts:   cfg.Compositor.KioskAccounts,
			AllowRoot:          cfg.Compositor.InsecureAllowRoot,
			Logger:             logger.Named("weston"),
		})
	case "wayray":
		// A compositor speaking hotdesk's control protocol (proto/COMPOSITOR.md).
		// It runs as hotdeskd's user: never as root.
		if os.Geteuid() == 0 && !cfg.Compositor.InsecureAllowRoot {
			return nil, errors.New("compositor: type wayray runs desktops as hotdeskd's user, which is root: refused (run hotdeskd as an unprivileged user)")
		}
		d.comp, err = wayray.New(wayray.Config{
			Command:      append([]string{cfg.Compositor.Binary}, cfg.Compositor.Args...),
			StateDir:     cfg.Compositor.StateDir,
			StartTimeout: cfg.Compositor.StartTimeout,
			StopGrace:    cfg.Compositor.StopGrace,
			Logger:       logger.Named("wayray"),
		})
	default:
		err = fmt.Errorf("unknown compositor type %q", cfg.Compositor.Type)
	}
	if err != nil {
		return nil, fmt.Errorf("compositor: %w", err)
	}
	d.stops = append(d.stops, func(context.Context) { d.comp.Close() })

	// Authentication: the login policies, PAM in a helper process per
	// login, and the failure limiter with its audit lines around both.
	policies, err := buildPolicies(cfg)
	if err != nil {
		return nil, fmt.Errorf("auth: %w", err)
	}
	pamAuth, err := pam.New(pam.Config{
		Service:     cfg.Auth.PAMService,
		ConfDir:     cfg.Auth.PAMDir,
		Timeout:     cfg.Auth.Timeout,
		OpenSession: cfg.Auth.OpenSession,
		NoAudit:     true, // the limiter's guard audits every decision
		Logger:      logger.Named("pam"),
	})
	if err != nil {
		return nil, fmt.Errorf("auth: %w", err)
	}
	limiter := auth.NewLimiter(auth.LimiterConfig{
		MaxFailures: cfg.Auth.MaxFailures, Window: cfg.Auth.FailureWindow,
		BaseLockout: cfg.Auth.Lockout, MaxLockout: cfg.Auth.MaxLockout,
		Logger: logger.Named("audit"),
	})
	// Logins in progress are bounded in all, per source, per user and per
	// terminal: clients that never answer a prompt cannot hold every PAM
	// helper.
	d.limits = newLimitCounters()
	gate := auth.NewGate(pamAuth, auth.GateConfig{
		Max: cfg.Limits.MaxPendingLogins, PerSource: cfg.Limits.MaxPendingLoginsPerSource,
		PerUser: cfg.Limits.MaxPendingLoginsPerUser, PerTerminal: cfg.Limits.MaxPendingLoginsPerTerminal,
		Logger:    logger.Named("auth"),
		OnRefused: d.limits.authRefused,
	})
	authn := limiter.Guard(&auth.Chooser{Policies: policies, Groups: userGroups, Services: gate})

	d.pairer = pairing.New(d.reg,
		pairing.WithLogger(logger.Named("pairing")),
		pairing.WithLimits(cfg.Pairing.MaxFailures, cfg.Pairing.FailureWindow, cfg.Pairing.Lockout))

	// The attach gateway: terminals reach the desktops only through it.
	attachListen := cfg.AttachListen
	if attachListen == "" {
		host, _, _ := net.SplitHostPort(cfg.Listen)
		attachListen = net.JoinHostPort(host, "0")
	}
	attachLn, err := net.Listen("tcp", attachListen)
	if err != nil {
		return nil, fmt.Errorf("attach listener: %w", err)
	}
	d.stops = append(d.stops, func(context.Context) { attachLn.Close() })
	advHost, _, _ := net.SplitHostPort(advertise)
	_, attachPort, _ := net.SplitHostPort(attachLn.Addr().String())
	attachAddr := net.JoinHostPort(advHost, attachPort)

	// Events: one bus, subscribed before the broker can emit anything.
	d.bus = broker.NewBus(logger.Named("events"))
	d.presence = newPresence(d, logger.Named("presence"))
	d.metrics = newMetrics(d, d.bus)
	presenceSub, publishSub, metricsSub := d.bus.Subscribe(4096), d.bus.Subscribe(publishBuffer), d.bus.Subscribe(4096)
	var hookSub *broker.Subscription
	if cfg.EventHook != "" {
		hookSub = d.bus.Subscribe(hookBuffer)
	}
	d.stops = append(d.stops, func(context.Context) { d.bus.Close() })

	d.broker, err = broker.New(broker.Config{
		Events:                 d.bus,
		AttachAddr:             attachAddr,
		ServerID:               cfg.ServerID,
		Registry:               d.reg,
		Compositor:             d.comp,
		Auth:                   authn,
		Pairer:                 d.pairer,
		Clock:                  clock.Real{},
		Logger:                 logger.Named("broker"),
		SuspendTimeout:         cfg.Session.SuspendTimeout,
		PingInterval:           pingInterval(cfg.Etcd.LeaseTTL),
		AuthTimeout:            cfg.Auth.Timeout,
		MaxSessions:            cfg.Session.MaxSessions,
		KeepSessionsOnShutdown: cfg.Session.KeepOnStop,
		Policies:               policies,
		Groups:                 userGroups,
		Limits: broker.Limits{
			MaxConnections:          connectionBudget(cfg, logger),
			MaxConnectionsPerSource: cfg.Limits.MaxConnectionsPerSource,
			MaxUnauthenticated:      cfg.Limits.MaxUnauthenticated,
			HandshakeTimeout:        cfg.Limits.HandshakeTimeout,
			MaxTicketsPerSession:    cfg.Limits.MaxTicketsPerSession,
			OnLimit:                 d.limits.brokerRefused,
		},
	})
	if err != nil {
		return nil, err
	}

	// Desktops a previous run left behind become suspended sessions again.
	running, lost, err := d.comp.Adopt(ctx)
	if err != nil {
		logger.Warn("adopting compositors", "error", err)
	}
	for _, l := range lost {
		logger.Warn("compositor from a previous run could not be adopted", "session", l.SessionID, "pid", l.PID, "reason", l.Err)
	}
	adopted, unknown := d.broker.Adopt(ctx, running)
	for _, u := range unknown {
		logger.Warn("stopping a compositor that belongs to no token", "session", u.SessionID, "pid", u.PID, "reason", u.Err)
		_ = d.comp.Destroy(ctx, u.SessionID)
	}
	if len(adopted) > 0 {
		logger.Info("sessions re-adopted from the previous run", "sessions", len(adopted))
	}
	if prevLease != 0 && prevLease != d.reg.LeaseID() {
		// What the previous run's lease still holds belongs to no desktop
		// that survived: drop it now instead of after the TTL.
		if err := d.reg.RevokeLease(ctx, prevLease); err != nil {
			logger.Warn("revoking the previous run's lease", "error", err)
		}
	}

	sctx, cancel := context.WithCancel(ctx)
	d.cancel = cancel
	d.stops = append(d.stops, func(ctx context.Context) {
		if err := d.broker.Shutdown(ctx); err != nil {
			logger.Warn("broker shutdown", "error", err)
		}
	})
	d.serve(func() error {
		return d.broker.Serve(sctx, d.termLn, proto.ServerTLSConfig(cert))
	}, "terminal listener")
	d.serve(func() error {
		return d.broker.ServeAttach(sctx, attachLn, proto.ServerTLSConfig(cert))
	}, "attach gateway")

	// Admin API on a local unix socket.
	d.adminLn, err = adminapi.Listen(cfg.AdminSocket, 0o660)
	if err != nil {
		return nil, fmt.Errorf("admin socket: %w", err)
	}
	d.stops = append(d.stops, func(context.Context) { d.adminLn.Close(); os.Remove(cfg.AdminSocket) })
	gid, err := lookupGroup(cfg.AdminGroup)
	if err != nil {
		return nil, fmt.Errorf("admin group: %w", err)
	}
	if gid >= 0 {
		if err := adminapi.ShareWithGroup(cfg.AdminSocket, gid); err != nil {
			return nil, fmt.Errorf("admin socket: %w", err)
		}
	}
	backend := &adminBackend{d: d}
	admin := adminapi.NewServer(backend, logger.Named("admin"), gid)
	d.serve(func() error { return admin.Serve(sctx, d.adminLn) }, "admin api")

	// Group administration: commands other members forward here, events
	// stored for the group's stream, terminal presence, metrics, the hook.
	cmdReg := d.reg // its etcd client outlives a lease change; the server id is the same
	d.serve(func() error { cmdReg.ServeCommands(sctx, backend.handleCommand); return nil }, "admin commands")
	evlog := d.reg.NewEventLog()
	d.serve(func() error { publishEvents(sctx, evlog, publishSub, logger.Named("events")); return nil }, "event log")
	d.serve(func() error { d.presence.run(sctx, presenceSub); return nil }, "terminal presence")
	d.serve(func() error { d.metrics.run(sctx, metricsSub); return nil }, "metrics")
	if hookSub != nil {
		d.serve(func() error {
			runHook(sctx, cfg.EventHook, cfg.EventHookTimeout, hookSub, logger.Named("hook"))
			return nil
		}, "event hook")
	}
	if err := d.startDashboard(sctx, backend, cert, logger.Named("dashboard")); err != nil {
		return nil, err
	}
	if cfg.MetricsListen != "off" {
		mln, err := net.Listen("tcp", cfg.MetricsListen)
		switch {
		case err != nil && cfg.MetricsListen == config.DefaultMetricsListen:
			logger.Warn("metrics listener not started: the default address is taken; set metrics_listen", "addr", cfg.MetricsListen, "error", err)
		case err != nil:
			return nil, fmt.Errorf("metrics listener: %w", err)
		default:
			logger.Info("metrics listener", "addr", mln.Addr().String())
			h := d.metrics.handler(d.broker.Ready)
			d.serve(func() error { return serveMetrics(sctx, mln, h, logger.Named("metrics")) }, "metrics listener")
		}
	}

	// Card readers of this host, one local terminal agent per seat.
	for _, seat := range cfg.Seats {
		go runSeat(sctx, cfg, seat, d.termLn.Addr(), proto.FormatFingerprint(fingerprint), logger.Named("seat").With("seat", seat.Name))
	}

	// Lease loss makes the broker not ready until a new lease is held and
	// the sessions are re-claimed.
	go d.superviseLease(sctx, serverRec, logger)
	// A token disabled or deleted anywhere in the group locks its session here.
	go func() {
		for ch := range d.registry().WatchTokens(sctx) {
			d.broker.TokenChanged(sctx, ch)
		}
	}()
	return d, nil
}

// newRegistry takes this server's lease. After a crash the previous
// process's lease still holds the server id until it expires (TTL plus an
// etcd election timeout), so an id in use is retried for a while.
func newRegistry(ctx context.Context, cli *clientv3.Client, cfg *config.Config, rec registry.ServerRecord, logger hclog.Logger, prev clientv3.LeaseID) (*registry.Registry, error) {
	deadline := time.Now().Add(3*cfg.Etcd.LeaseTTL + 5*time.Second)
	for {
		reg, err := registry.New(ctx, cli, rec, registry.WithPrefix(cfg.Etcd.Prefix),
			registry.WithLeaseTTL(cfg.Etcd.LeaseTTL), registry.WithLogger(logger.Named("registry")),
			registry.WithPreviousLease(prev))
		if !errors.Is(err, registry.ErrServerIDInUse) || time.Now().After(deadline) {
			return reg, err
		}
		logger.Warn("server id still held by a previous lease; waiting for it to expire", "server_id", rec.ID)
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(time.Second):
		}
	}
}

// superviseLease waits for the registry lease to be lost, then builds a new
// registry (new lease) with backoff and moves the broker's sessions to it.
// Until then the broker is not ready: it attaches and claims nothing.
func (d *daemon) superviseLease(ctx context.Context, rec registry.ServerRecord, logger hclog.Logger) {
	sup := &leaseSupervisor{
		newRegistry: func(ctx context.Context, prev clientv3.LeaseID) (*registry.Registry, error) {
			return registry.New(ctx, d.etcd, rec, registry.WithPrefix(d.cfg.Etcd.Prefix),
				registry.WithLeaseTTL(d.cfg.Etcd.LeaseTTL), registry.WithLogger(logger.Named("registry")),
				registry.WithPreviousLease(prev))
		},
		reestablish: func(ctx context.Context, reg *registry.Registry) ([]broker.SessionInfo, error) {
			return d.broker.Reestablish(ctx, reg)
		},
		current: d.registry,
		install: func(reg *registry.Registry) {
			d.regMu.Lock()
			d.reg = reg
			d.regMu.Unlock()
			writeLeaseFile(d.cfg.DataDir, reg.LeaseID(), logger)
		},
		log:        logger,
		minBackoff: 250 * time.Millisecond,
		maxBackoff: 10 * time.Second,
	}
	sup.run(ctx)
}

// serve runs f in the background; an unexpected error is fatal.
func (d *daemon) serve(f func() error, what string) {
	ch := make(chan error, 1)
	d.done = append(d.done, ch)
	go func() {
		err := f()
		ch <- err
		if err != nil {
			d.fatal <- fmt.Errorf("%s: %w", what, err)
		}
	}()
}

// stop stops every started subsystem in reverse order within stopTimeout.
func (d *daemon) stop(logger hclog.Logger) {
	ctx, cancel := context.WithTimeout(context.Background(), stopTimeout)
	defer cancel()
	if d.cancel != nil {
		d.cancel()
	}
	for _, ch := range d.done {
		select {
		case <-ch:
		case <-ctx.Done():
		}
	}
	for i := len(d.stops) - 1; i >= 0; i-- {
		d.stops[i](ctx)
	}
	d.stops = nil
	if ctx.Err() != nil {
		logger.Warn("stop did not finish in time", "timeout", stopTimeout)
	}
}

func certHosts(cfg *config.Config) []string {
	var hosts []string
	if h, _, err := net.SplitHostPort(cfg.Advertise); err == nil && h != "" {
		hosts = append(hosts, h)
	}
	if hn, err := os.Hostname(); err == nil {
		hosts = append(hosts, hn)
	}
	return hosts
}

func etcdClientTLS(cfg *config.Config) (*tls.Config, error) {
	e := cfg.Etcd
	if e.CAFile == "" && e.CertFile == "" {
		return nil, nil
	}
	tc := &tls.Config{MinVersion: tls.VersionTLS12}
	if e.CAFile != "" {
		pem, err := os.ReadFile(e.CAFile)
		if err != nil {
			return nil, fmt.Errorf("etcd ca: %w", err)
		}
		tc.RootCAs = x509.NewCertPool()
		if !tc.RootCAs.AppendCertsFromPEM(pem) {
			return nil, errors.New("etcd ca: no certificate found")
		}
	}
	if e.CertFile != "" {
		c, err := tls.LoadX509KeyPair(e.CertFile, e.KeyFile)
		if err != nil {
			return nil, fmt.Errorf("etcd client certificate: %w", err)
		}
		tc.Certificates = []tls.Certificate{c}
	}
	return tc, nil
}

func notify(logger hclog.Logger, state string) {
	if _, err := sd.SdNotify(false, state); err != nil {
		logger.Debug("sd_notify failed", "error", err)
	}
}

// pingInterval is the keepalive interval the broker announces to its
// terminals: a sixth of the lease TTL (at most 15 s), so that a terminal
// notices a silent broker (3 unanswered Pings, within 4 intervals) within
// 2/3 of the TTL, before the broker's lease can expire and another broker
// take its tokens over.
func pingInterval(leaseTTL time.Duration) time.Duration {
	return min(max(leaseTTL/6, 250*time.Millisecond), 15*time.Second)
}

// connectionBudget returns max_connections, lowered when the process's
// RLIMIT_NOFILE could not hold both listeners' connections besides what
// the rest of the daemon needs (etcd, PAM helpers, compositors): clients
// must never be able to take the descriptors a session needs.
func connectionBudget(cfg *config.Config, logger hclog.Logger) int {
	want := cfg.Limits.MaxConnections
	var rl syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &rl); err != nil {
		return want
	}
	reserve := 128 + 3*cfg.Limits.MaxPendingLogins + 4*cfg.Session.MaxSessions
	per := (int(min(rl.Cur, 1<<30)) - reserve) / 2 // terminal listener and attach gateway
	if per >= want {
		return want
	}
	per = max(per, 16)
	logger.Warn("limits.max_connections lowered to fit RLIMIT_NOFILE", "max_connections", want,
		"lowered_to", per, "rlimit_nofile", rl.Cur, "reserved", reserve)
	return per
}
