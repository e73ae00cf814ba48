package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	sd "github.com/coreos/go-systemd/v22/daemon"
	"github.com/hashicorp/go-hclog"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"

	"github.com/hotdesk/hotdesk/auth"
	"github.com/hotdesk/hotdesk/auth/pam"
	"github.com/hotdesk/hotdesk/broker"
	"github.com/hotdesk/hotdesk/cmd/hotdeskd/config"
	"github.com/hotdesk/hotdesk/cmd/internal/adminapi"
	"github.com/hotdesk/hotdesk/cmd/internal/httpserve"
	"github.com/hotdesk/hotdesk/compositor"
	"github.com/hotdesk/hotdesk/compositor/procsup"
	"github.com/hotdesk/hotdesk/compositor/wayray"
	"github.com/hotdesk/hotdesk/compositor/weston"
	"github.com/hotdesk/hotdesk/internal/clock"
	"github.com/hotdesk/hotdesk/internal/event"
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
	clk      clock.Clock // every timer, wait and retry of the daemon and its subsystems
	embedded *registry.Embedded
	etcd     *clientv3.Client
	// store is the registry's lease-independent storage (tokens, pairing
	// codes, commands, events): one for the daemon's life.
	store    *registry.Store
	regMu    sync.Mutex
	reg      *registry.Registry // the lease; replaced when it is re-established
	comp     compositor.Backend
	broker   *broker.Broker
	pairer   *pairing.Pairer
	termLn   net.Listener
	adminLn  net.Listener
	log      hclog.Logger
	bus      *broker.Bus // the broker's events (events.go)
	presence *presence   // terminal presence in the registry
	metrics  *metrics
	limits   *limitCounters     // refusals by limits, in metrics
	lockouts *lockoutShare      // login lockouts shared with the group
	accounts *auth.AccountCache // account checks' answers, in metrics
	settings *settingsWatch     // the group's settings compared with ours
	clocks   *clockWatch        // the group's clocks compared with ours
	history  *historyWatch      // whether etcd compacts its history
	disk     *diskWatch         // room left for data_dir and the desktops' state
	certs    *certWatch         // the configured certificates' expiry

	// What start's steps hand to the steps after them.
	cert        tls.Certificate
	fingerprint []byte                // of cert
	advertise   string                // the terminal listener's address for the group
	serverRec   registry.ServerRecord // without its settings: record() adds those in effect
	prevLease   clientv3.LeaseID      // the previous run's lease, from the data dir
	policies    *auth.LivePolicies    // a reload replaces them
	authn       auth.Authenticator
	attachLn    net.Listener
	attachAddr  string // the attach gateway's address for terminals
	subs        struct{ presence, publish, metrics, hook *broker.Subscription }

	// run is the context every served goroutine runs in; cancel ends it
	// (first thing stop does). done has one channel per goroutine serve
	// started; stop waits for each.
	run    context.Context
	cancel context.CancelFunc
	done   []chan error
	fatal  chan error
	stops  []func(context.Context) // rollback/stop steps, run in reverse
	// started: every step of start succeeded, so stop is a stop, not the
	// rollback of a failed start. Until then the admin API and the metrics
	// listener, from their goroutines, answer with phase (what the start is
	// doing).
	started atomic.Bool
	phase   atomic.Pointer[startPhase]
	// metricsHTTP serves the metrics listener once the metrics are
	// started (see listenMetrics).
	metricsHTTP atomic.Pointer[http.Handler]
}

// holdsDesktops reports whether the broker runs any session (desktops this
// run started or adopted from the previous one).
func (d *daemon) holdsDesktops() bool {
	return d.broker != nil && len(d.broker.Sessions()) > 0
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

// start brings every subsystem up, one step after the other in the order
// below. If a step fails, what the steps before it started is stopped in
// reverse order (d.stops).
func start(ctx context.Context, cfg *config.Config, logger hclog.Logger) (_ *daemon, err error) {
	d := &daemon{cfg: cfg, clk: clock.Real{}, fatal: make(chan error, 4), log: logger}
	defer func() {
		if err != nil {
			d.stop(logger)
		}
	}()
	for _, step := range []struct {
		run  func(context.Context) error
		what string // what the admin API and /readyz say the start is doing meanwhile
	}{
		{d.prepare, "preparing its data dir"},                                // data dir, configuration warnings
		{d.listenAdmin, "opening its admin socket"},                          // the admin API, answering "starting" until the end
		{d.listenMetrics, "opening its metrics listener"},                    // /livez, /readyz, answering "starting" until startMetrics
		{d.loadCert, "loading its TLS certificate"},                          // or creating it on a first start
		{d.listenDashboard, "opening its dashboard"},                         // if configured, answering "starting" until the end
		{d.openEtcd, "opening etcd"},                                         // embedded etcd or a cluster, the etcd client; waits until etcd answers
		{d.listenTerminals, "opening its terminal listener"},                 // its address goes into the server record
		{d.takeLease, "taking its lease"},                                    // this server's record and lease
		{d.startCompositor, "starting its compositor backend"},               // weston or a WayRay compositor
		{d.startAuth, "loading its policies"},                                // policies, PAM, the failure limiter, the pairer
		{d.listenAttach, "opening its attach gateway"},                       // the attach gateway's listener
		{d.startEvents, "starting its event bus"},                            // subscribed before the broker can emit
		{d.startBroker, "starting its broker"},                               // the session broker
		{d.adoptDesktops, "adopting the desktops its previous run left"},     // claims taken over
		{d.serveTerminals, "serving terminals"},                              // the terminal listener and the attach gateway
		{d.startAdmin, "starting the group's administration"},                // group commands, event log, presence, metrics
		{d.startMetrics, "serving its metrics"},                              // /metrics, and /readyz the broker's readiness
		{d.startBackground, "starting seats, lease supervisor, token watch"}, // and the sharing of lockouts
	} {
		d.setPhase(step.what, "")
		if err := step.run(ctx); err != nil {
			return nil, err
		}
	}
	d.started.Store(true)
	return d, nil
}

// startPhase is what the start is doing: what, for anyone who reaches the
// metrics listener, and a detail (how each etcd endpoint is reached) for
// the admin API's users only.
type startPhase struct{ what, detail string }

// text says what the start is doing, with the detail or without it.
func (p *startPhase) text(detail bool) string {
	if detail && p.detail != "" {
		return "hotdeskd is starting: " + p.what + ": " + p.detail
	}
	return "hotdeskd is starting: " + p.what
}

// starting is nil once the start is done, and until then an error saying
// what the start is doing: with its detail for the admin API's users, or
// without it for whoever reaches the dashboard.
func (d *daemon) starting(detail bool) error {
	if d.started.Load() {
		return nil
	}
	return errors.New(d.phase.Load().text(detail))
}

// setPhase says what the start does or waits for now.
func (d *daemon) setPhase(what, detail string) { d.phase.Store(&startPhase{what, detail}) }

// dataDirLock is the file in the data directory whose flock a running
// hotdeskd holds (see prepare).
const dataDirLock = "hotdeskd.lock"

// prepare creates the data directory, locks it and logs what is insecure
// about the configuration. The lock (an flock on <data_dir>/hotdeskd.lock,
// held until the stop, or the process's exit) comes before anything is
// written there: a second hotdeskd started on the same data_dir (a copied
// configuration) would otherwise join the group under its own server_id
// and overwrite the running one's lease file before failing, and the
// running broker's next restart could not take its own registrations over.
func (d *daemon) prepare(context.Context) error {
	if err := os.MkdirAll(d.cfg.DataDir, 0o700); err != nil {
		return fmt.Errorf("data dir: %w", err)
	}
	lock, err := procsup.LockFile(filepath.Join(d.cfg.DataDir, dataDirLock))
	if errors.Is(err, procsup.ErrLocked) {
		return fmt.Errorf("data dir %s is in use by another hotdeskd: give each hotdeskd on this host its own data_dir", d.cfg.DataDir)
	}
	if err != nil {
		return fmt.Errorf("data dir: %w", err)
	}
	d.stops = append(d.stops, func(context.Context) {
		if err := lock.Unlock(); err != nil {
			d.log.Warn("unlocking the data dir", "error", err)
		}
	})
	for _, w := range d.cfg.Warnings() {
		d.log.Warn("insecure configuration: " + w)
	}
	// Before the embedded etcd starts: on a full disk its first write
	// stops the daemon, with etcd's words only.
	d.disk = newDiskWatch(d.log.Named("disk"), d.cfg, d.clk)
	d.disk.check()
	// As the steps below load them (an expired etcd certificate is said
	// before the registry fails to answer).
	d.certs = newCertWatch(d.log.Named("tls"), certFiles(d.cfg))
	d.certs.check(d.clk.Now())
	return nil
}

// loadCert loads (or creates) the broker's TLS certificate: the terminal
// listener's, the attach gateway's and, unless it has its own, the
// dashboard's.
func (d *daemon) loadCert(context.Context) error {
	cfg := d.cfg
	cert, err := proto.LoadOrCreateCert(cfg.TLS.CertFile, cfg.TLS.KeyFile, certHosts(cfg))
	if err != nil {
		return fmt.Errorf("tls: %w", err)
	}
	leaf, err := x509.ParseCertificate(cert.Certificate[0])
	if err != nil {
		return fmt.Errorf("tls: %w", err)
	}
	d.cert = cert
	d.fingerprint = proto.Fingerprint(leaf.Raw)
	if d.certs != nil { // generated just now on a first start
		d.certs.loaded("tls.cert_file", cfg.TLS.CertFile, leaf)
	}
	return nil
}

// listenTerminals opens the terminal listener, whose address is published
// in the server record.
func (d *daemon) listenTerminals(context.Context) error {
	cfg := d.cfg
	var err error
	d.termLn, err = net.Listen("tcp", cfg.Listen)
	if err != nil {
		return fmt.Errorf("terminal listener: %w", err)
	}
	d.stops = append(d.stops, func(context.Context) { d.termLn.Close() })
	d.advertise = cfg.Advertise
	if host, port, _ := net.SplitHostPort(d.advertise); port == "0" {
		_, realPort, _ := net.SplitHostPort(d.termLn.Addr().String())
		d.advertise = net.JoinHostPort(host, realPort)
	}
	d.log.Info("terminal listener", "addr", d.termLn.Addr().String(), "advertise", d.advertise,
		"fingerprint", proto.FormatFingerprint(d.fingerprint))
	return nil
}

// openEtcd starts the embedded etcd (the default) or reaches the
// configured cluster, and waits until it answers.
func (d *daemon) openEtcd(ctx context.Context) error {
	cfg, logger := d.cfg, d.log
	endpoints := cfg.Etcd.Endpoints
	var err error
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
			return fmt.Errorf("embedded etcd: %w", err)
		}
		d.stops = append(d.stops, func(context.Context) { d.embedded.Close() })
		endpoints = d.embedded.Endpoints()
	}
	etcdTLS, err := etcdClientTLS(cfg)
	if err != nil {
		return err
	}
	if d.embedded != nil {
		if etcdTLS, err = d.embedded.ClientTLS(); err != nil {
			return fmt.Errorf("embedded etcd: %w", err)
		}
	}
	d.etcd, err = clientv3.New(clientv3.Config{
		Endpoints:   endpoints,
		DialTimeout: cfg.Etcd.DialTimeout,
		DialOptions: registry.DialOptions(cfg.Etcd.DialTimeout),
		TLS:         etcdTLS,
		Logger:      zap.NewNop(),
	})
	if err != nil {
		return fmt.Errorf("etcd client: %w", err)
	}
	d.stops = append(d.stops, func(context.Context) { d.etcd.Close() })
	if d.embedded != nil {
		// etcd auth: the daemon's certificate may touch the registry
		// prefix and nothing else (provisioned on the first start).
		actx, cancel := context.WithTimeout(ctx, 30*time.Second)
		enabled, err := registry.EnableEmbeddedAuth(actx, d.etcd, filepath.Join(cfg.DataDir, "etcd-tls"), cfg.Etcd.Prefix)
		cancel()
		if err != nil {
			return fmt.Errorf("embedded etcd: %w", err)
		}
		if enabled {
			logger.Info("embedded etcd: authentication enabled; the daemon's certificate is limited to the registry prefix",
				"user", registry.EmbeddedClientUser, "prefix", cfg.Etcd.Prefix)
		}
	}
	// An administrator's clearing of a lockout is kept as long as a
	// lockout may last (max_lockout): a lockout imposed before it,
	// published late, is refused until then.
	d.store, err = registry.NewStore(d.etcd, cfg.ServerID, registry.WithPrefix(cfg.Etcd.Prefix), registry.WithClock(d.clk),
		registry.WithLogger(logger.Named("registry")), registry.WithMaxLockout(cfg.Auth.MaxLockout))
	if err != nil {
		return fmt.Errorf("registry: %w", err)
	}
	// Until etcd answers, terminals are refused (no listener yet) and
	// turn to the group's other brokers at once; on a listener nobody
	// serves, a dial waits its stagger (PROTOCOL.md §11) before the next
	// broker and hangs until its handshake timeout.
	return d.waitForEtcd(ctx, func(ctx context.Context) string {
		return strings.Join(registry.Reach(ctx, endpoints, etcdTLS, 2*time.Second), "; ")
	})
}

// takeLease publishes this server's record under a new lease (the previous
// run's taken over).
func (d *daemon) takeLease(ctx context.Context) error {
	cfg, logger := d.cfg, d.log
	var err error
	d.serverRec = registry.ServerRecord{
		ID: cfg.ServerID, Addr: d.advertise, Fingerprint: d.fingerprint,
		Capacity: cfg.Session.MaxSessions, Weight: cfg.Session.Weight, StartedUnixMs: d.clk.Now().UnixMilli(),
		Version: version.String(),
	}
	d.settings = newSettingsWatch(logger.Named("group"), cfg.ServerID, cfg.GroupSettings())
	d.clocks = newClockWatch(logger.Named("group"), cfg.ServerID, d.clk)
	d.history = newHistoryWatch(logger.Named("registry"))
	// The lease of the previous run, if it kept its desktops: this run
	// takes its server record and claims over (adoptDesktops).
	d.prevLease = readLeaseFile(cfg.DataDir)
	d.reg, err = d.newRegistry(ctx)
	if err != nil {
		return etcdAccessHint(err, cfg) // "registry: ..." already
	}
	writeLeaseFile(cfg.DataDir, d.reg.LeaseID(), logger)
	d.stops = append(d.stops, func(ctx context.Context) {
		if cfg.Session.KeepOnStop && (d.started.Load() || d.holdsDesktops()) {
			// The desktops keep running: so do their claims, until the
			// lease expires or the next run takes them over, so that no
			// broker replaces a desktop that still exists.
			d.registry().Abandon()
			return
		}
		// A clean stop revokes the lease: the server and its claims leave
		// the registry at once. So does a start that failed before it
		// held any desktop (a taken admin socket, a bad listener): its
		// record would otherwise stay a member of the group for a TTL,
		// one that new sessions are placed on and terminals redirected
		// to, though nothing answers there.
		if err := d.registry().Close(ctx); err != nil {
			logger.Warn("revoking registry lease", "error", err)
		}
	})
	return nil
}

// startCompositor builds the compositor backend the configuration names.
func (d *daemon) startCompositor(context.Context) error {
	cfg, logger := d.cfg, d.log
	var err error
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
			MaxUserTasks:       cfg.Compositor.MaxUserTasks,
			AllowRoot:          cfg.Compositor.InsecureAllowRoot,
			// RDPGuard nil: weston guards RDP ports with portguard's
			// default table (see -check's checkRDPGuard).
			InsecureUnguardedRDP: cfg.Compositor.InsecureUnguardedRDP,
			Logger:               logger.Named("weston"),
		})
	case "wayray":
		// A compositor speaking hotdesk's control protocol (proto/COMPOSITOR.md).
		// It runs as hotdeskd's user: never as root.
		if os.Geteuid() == 0 && !cfg.Compositor.InsecureAllowRoot {
			return errors.New("compositor: type wayray runs desktops as hotdeskd's user, which is root: refused (run hotdeskd as an unprivileged user)")
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
		return fmt.Errorf("compositor: %w", err)
	}
	d.stops = append(d.stops, func(context.Context) { d.comp.Close() })
	return nil
}

// startAuth builds the login policies, PAM in a helper process per login,
// the failure limiter with its audit lines around both, and the pairer.
func (d *daemon) startAuth(context.Context) error {
	cfg, logger := d.cfg, d.log
	policies, err := auth.NewLivePolicies(buildPolicies(cfg))
	if err != nil {
		return fmt.Errorf("auth: %w", err)
	}
	pamAuth, err := pam.New(pam.Config{
		Service:       cfg.Auth.PAMService,
		ConfDir:       cfg.Auth.PAMDir,
		Timeout:       cfg.Auth.Timeout,
		PromptTimeout: cfg.Auth.PromptTimeout,
		OpenSession:   cfg.Auth.OpenSession,
		NoAudit:       true, // the limiter's guard audits every decision
		Logger:        logger.Named("pam"),
		// Card logins and hot-desks check the account: do not make them
		// wait for a helper process to start.
		SpareHelper: true,
		// and a helper runs many checks, one after the other: a check
		// then costs a PAM transaction, not a process start.
		AccountHelperUses: accountHelperUses,
		MaxHelpers:        pamHelpers(cfg),
	})
	if err != nil {
		return fmt.Errorf("auth: %w", err)
	}
	d.stops = append(d.stops, func(context.Context) { pamAuth.Close() })
	d.lockouts = newLockoutShare(d.store, cfg.ServerID, d.clk, logger.Named("auth"))
	limiter := auth.NewLimiter(auth.LimiterConfig{
		MaxFailures: cfg.Auth.MaxFailures, Window: cfg.Auth.FailureWindow,
		BaseLockout: cfg.Auth.Lockout, MaxLockout: cfg.Auth.MaxLockout,
		Clock: d.clk, Logger: logger.Named("audit"), OnLockout: d.lockouts.started,
		OnFailure: d.lockouts.failed, OnReset: d.lockouts.succeeded,
	})
	d.lockouts.limiter = limiter
	// Logins in progress are bounded in all, per source, per user and per
	// terminal: clients that never answer a prompt cannot hold every PAM
	// helper.
	d.limits = newLimitCounters()
	gateCfg := auth.GateConfig{
		Max: cfg.Limits.MaxPendingLogins, PerSource: cfg.Limits.MaxPendingLoginsPerSource,
		PerUser: cfg.Limits.MaxPendingLoginsPerUser, PerTerminal: cfg.Limits.MaxPendingLoginsPerTerminal,
		Logger:    logger.Named("auth"),
		OnRefused: d.limits.authRefused,
	}
	gate := auth.NewGate(pamAuth, gateCfg)
	d.policies = policies
	// Logins that ask no secret (card, a hot-desk without re-authentication)
	// consult the account stack; a positive answer is reused for a minute
	// at most, so hot-desking back and forth stays fast. The checks have a
	// gate of their own: logins left waiting at a prompt (anyone can start
	// one for any user name) must not hold up card users, and a copied
	// card presented from many terminal ids starts at most so many helpers.
	accountGate := auth.NewGate(pamAuth, gateCfg)
	d.accounts = auth.NewAccountCache(accountGate, auth.AccountCacheConfig{Clock: d.clk})
	chooser := &auth.Chooser{Policies: policies, Groups: userGroups, Services: gate, Accounts: d.accounts}
	if cfg.Auth.OpenSession {
		// A card login's new desktop gets the PAM session a password
		// login's gets (home mounted, limits, logind …): its account
		// check and session in one fresh helper, through the account
		// checks' gate (card users are not held up by prompts).
		chooser.Sessions = accountGate
	}
	d.authn = limiter.Guard(chooser)
	d.pairer = pairing.New(d.store,
		pairing.WithClock(d.clk), pairing.WithLogger(logger.Named("pairing")),
		pairing.WithLimits(cfg.Pairing.MaxFailures, cfg.Pairing.FailureWindow, cfg.Pairing.Lockout))
	return nil
}

// listenAttach opens the attach gateway's listener: terminals reach the
// desktops only through it.
func (d *daemon) listenAttach(context.Context) error {
	attachListen := d.cfg.AttachListen
	if attachListen == "" {
		host, _, _ := net.SplitHostPort(d.cfg.Listen)
		attachListen = net.JoinHostPort(host, "0")
	}
	ln, err := net.Listen("tcp", attachListen)
	if err != nil {
		return fmt.Errorf("attach listener: %w", err)
	}
	d.attachLn = ln
	d.stops = append(d.stops, func(context.Context) { ln.Close() })
	advHost, _, _ := net.SplitHostPort(d.advertise)
	_, attachPort, _ := net.SplitHostPort(ln.Addr().String())
	d.attachAddr = net.JoinHostPort(advHost, attachPort)
	return nil
}

// startEvents creates the event bus and its subscribers' queues, before the
// broker can emit anything.
func (d *daemon) startEvents(context.Context) error {
	d.bus = broker.NewBus(d.log.Named("events"))
	d.presence = newPresence(d, d.log.Named("presence"))
	d.metrics = newMetrics(d, d.bus)
	d.subs.presence, d.subs.publish, d.subs.metrics = d.bus.Subscribe("presence", 4096), d.bus.Subscribe("registry", publishBuffer), d.bus.Subscribe("metrics", 4096)
	if d.cfg.EventHook != "" {
		d.subs.hook = d.bus.Subscribe("hook", hookBuffer)
		d.startHook()
	}
	d.stops = append(d.stops, func(context.Context) { d.bus.Close() })
	return nil
}

// startHook runs the event hook for every event of d.subs.hook. Unlike the
// goroutines serve starts, it outlives the run context: a stop's last
// events (the broker's, this server's server_left) come after the run
// context ends, and sites script reactions to them. Its stop step runs
// after the bus's Close (it is registered before it), and waits for the
// hook to run what is queued, for one event_hook_timeout on d.clk at most
// (and within the stop's bound); then a hook still running is killed and
// what is left is dropped.
func (d *daemon) startHook() {
	cfg, logger := d.cfg, d.log.Named("hook")
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		runHook(ctx, d.clk, cfg.EventHook, cfg.EventHookTimeout, d.subs.hook, logger)
	}()
	d.stops = append(d.stops, func(stopCtx context.Context) {
		bound := make(chan struct{})
		t := d.clk.AfterFunc(cfg.EventHookTimeout, func() { close(bound) })
		defer t.Stop()
		select {
		case <-done:
		case <-bound:
		case <-stopCtx.Done():
		}
		cancel()
		<-done
	})
}

// startBroker builds the session broker.
func (d *daemon) startBroker(context.Context) error {
	cfg, logger := d.cfg, d.log
	var err error
	d.broker, err = broker.New(broker.Config{
		Events:                 d.bus,
		AttachAddr:             d.attachAddr,
		ServerID:               cfg.ServerID,
		Registry:               d.reg,
		Compositor:             d.comp,
		Auth:                   d.authn,
		Pairer:                 d.pairer,
		Claims:                 d.store,
		Clock:                  d.clk,
		Logger:                 logger.Named("broker"),
		SuspendTimeout:         cfg.Session.SuspendTimeout,
		ReconnectGrace:         cfg.Session.ReconnectGrace,
		PingInterval:           pingInterval(cfg.Etcd.LeaseTTL),
		AuthTimeout:            cfg.Auth.Timeout,
		MaxSessions:            cfg.Session.MaxSessions,
		KeepSessionsOnShutdown: cfg.Session.KeepOnStop,
		Policies:               d.policies,
		Groups:                 userGroups,
		Limits: broker.Limits{
			MaxConnections:              connectionBudget(cfg, logger),
			MaxConnectionsPerSource:     cfg.Limits.MaxConnectionsPerSource,
			MaxUnauthenticated:          cfg.Limits.MaxUnauthenticated,
			MaxUnauthenticatedPerSource: cfg.Limits.MaxUnauthenticatedPerSource,
			HandshakeTimeout:            cfg.Limits.HandshakeTimeout,
			MaxTicketsPerSession:        cfg.Limits.MaxTicketsPerSession,
			TokenEventsPerSecond:        cfg.Limits.TokenEventsPerSecond,
			OnLimit:                     d.limits.brokerRefused,
		},
	})
	if err != nil {
		return err
	}
	d.stops = append(d.stops, func(ctx context.Context) {
		if err := d.broker.Shutdown(ctx); err != nil {
			logger.Warn("broker shutdown", "error", err)
		}
	})
	return nil
}

// adoptDesktops makes the desktops a previous run left behind suspended
// sessions again, stops those that belong to no token, and drops what the
// previous run's lease still holds.
func (d *daemon) adoptDesktops(ctx context.Context) error {
	logger := d.log
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
	switch n := d.broker.Unclaimed(); {
	case d.prevLease == 0 || d.prevLease == d.reg.LeaseID():
	case n > 0:
		// Their claims may still be under the previous lease: the broker
		// takes them over as soon as etcd answers; the rest of that lease
		// expires by itself.
		logger.Warn("previous run's lease left to expire: adopted sessions not claimed yet", "sessions", n)
	default:
		// What the previous run's lease still holds belongs to no desktop
		// that survived: drop it now instead of after the TTL.
		if err := d.reg.RevokeLease(ctx, d.prevLease); err != nil {
			logger.Warn("revoking the previous run's lease", "error", err)
		}
	}
	return nil
}

// serveTerminals serves the terminal listener and the attach gateway in
// the daemon's run context.
func (d *daemon) serveTerminals(context.Context) error {
	d.serve(func() error {
		return d.broker.Serve(d.run, d.termLn, proto.ServerTLSConfig(d.cert))
	}, "terminal listener")
	d.serve(func() error {
		return d.broker.ServeAttach(d.run, d.attachLn, proto.ServerTLSConfig(d.cert))
	}, "attach gateway")
	return nil
}

// listenAdmin starts the daemon's run context (cancelled first by stop) and
// serves the admin API on its unix socket. Until the start is done every
// request but /livez is answered 503 with what the start is doing
// ("hotdeskd is starting: waiting for etcd to answer: …"), so that
// `hotdeskctl ready` and the rest say why during a long start rather than
// find no socket; and a socket another hotdeskd serves is found before
// anything else is started.
func (d *daemon) listenAdmin(ctx context.Context) error {
	cfg, logger := d.cfg, d.log
	d.run, d.cancel = context.WithCancel(ctx)
	var err error
	d.adminLn, err = adminapi.Listen(cfg.AdminSocket, 0o660)
	if errors.Is(err, adminapi.ErrInUse) {
		return fmt.Errorf("admin socket %s is in use by another running hotdeskd: give each hotdeskd on this host its own admin_socket", cfg.AdminSocket)
	}
	if err != nil {
		return fmt.Errorf("admin socket: %w", err)
	}
	d.stops = append(d.stops, func(context.Context) { d.adminLn.Close(); os.Remove(cfg.AdminSocket) })
	gid, err := lookupGroup(cfg.AdminGroup)
	if err != nil {
		return fmt.Errorf("admin group: %w", err)
	}
	if gid >= 0 {
		if err := adminapi.ShareWithGroup(cfg.AdminSocket, gid); err != nil {
			return fmt.Errorf("admin socket: %w", err)
		}
	}
	admin := adminapi.NewServer(&adminBackend{d: d}, logger.Named("admin"), gid)
	admin.Starting(func() error { return d.starting(true) })
	d.serve(func() error { return admin.Serve(d.run, d.adminLn) }, "admin api")
	return nil
}

// startAdmin serves what the group's administration needs besides the
// admin API (listenAdmin) and the dashboard (listenDashboard): commands
// other members forward here, events stored for the group's stream,
// terminal presence and metrics (the event hook runs from startEvents on).
func (d *daemon) startAdmin(context.Context) error {
	cfg, logger, run := d.cfg, d.log, d.run
	backend := &adminBackend{d: d}
	d.serve(func() error { d.store.ServeCommands(run, backend.handleCommand); return nil }, "admin commands")
	evlog := d.store.NewEventLog()
	d.serve(func() error { publishEvents(run, evlog, d.subs.publish, logger.Named("events")); return nil }, "event log")
	// This server's own membership events: joined now; left at a stop,
	// stored before its record goes (the publisher has stopped by then).
	d.bus.Emit(event.Event{Kind: event.ServerJoined, Server: cfg.ServerID, Time: d.clk.Now(), Reason: "version " + version.String()})
	d.stops = append(d.stops, func(ctx context.Context) {
		// The broker's shutdown first (a later step would otherwise run
		// it): the events of the stop itself (sessions suspended,
		// destroyed without keep_on_stop) are then stored with what the
		// publisher had not stored when the run ended, and server_left
		// is this member's last word in the group's history.
		if err := d.broker.Shutdown(ctx); err != nil {
			logger.Warn("broker shutdown", "error", err)
		}
		storePending(ctx, evlog, d.subs.publish, logger.Named("events"))
		left := event.Event{Kind: event.ServerLeft, Server: cfg.ServerID, Time: d.clk.Now(), Reason: "stopped"}
		d.bus.Emit(left) // its log line
		storeEvent(ctx, evlog, left, logger.Named("events"))
	})
	d.serve(func() error { d.presence.run(run, d.subs.presence); return nil }, "terminal presence")
	d.serve(func() error { d.metrics.run(run, d.subs.metrics); return nil }, "metrics")
	// The settings' listing of the group is the clocks' too: only the
	// members' readings are compared.
	listServers := func(ctx context.Context) ([]registry.ServerRecord, error) {
		recs, err := d.store.Servers(ctx)
		if err == nil {
			d.clocks.listed(recs)
		}
		return recs, err
	}
	d.serve(func() error { d.settings.run(run, d.clk, listServers, d.publishSettings); return nil }, "group settings")
	d.serve(func() error {
		d.clocks.run(run, d.clk, func(ctx context.Context) error { return d.registry().PutClock(ctx) }, d.store.WatchClocks(run))
		return nil
	}, "group clocks")
	d.serve(func() error { d.history.run(run, d.clk, d.store); return nil }, "etcd history")
	d.serve(func() error { d.disk.run(run); return nil }, "disk space")
	d.serve(func() error { d.certs.run(run, d.clk); return nil }, "certificate expiry")
	return nil
}

// listenMetrics serves /metrics, /livez and /readyz unless metrics_listen
// is "off"; the default address being taken is only a warning. It is
// served from early in the start, as the admin API is: until
// startMetrics, /livez answers ok and the rest 503 with what the start is
// doing, so that a load balancer or a monitor polling /readyz is told
// "starting: waiting for etcd to answer", not refused.
func (d *daemon) listenMetrics(context.Context) error {
	cfg, logger := d.cfg, d.log
	if cfg.MetricsListen == "off" {
		return nil
	}
	mln, err := net.Listen("tcp", cfg.MetricsListen)
	switch {
	case err != nil && cfg.MetricsListen == config.DefaultMetricsListen:
		logger.Warn("metrics listener not started: the default address is taken; set metrics_listen", "addr", cfg.MetricsListen, "error", err)
	case err != nil:
		return fmt.Errorf("metrics listener: %w", err)
	default:
		logger.Info("metrics listener", "addr", mln.Addr().String())
		mln = httpserve.Limit(mln, httpMaxConns, httpMaxPerSource)
		d.serve(func() error {
			return serveMetrics(d.run, mln, http.HandlerFunc(d.serveMetricsHTTP), logger.Named("metrics"))
		}, "metrics listener")
	}
	return nil
}

// serveMetricsHTTP answers the metrics listener: with the metrics' handler
// once startMetrics has set it, else as a start in progress.
func (d *daemon) serveMetricsHTTP(w http.ResponseWriter, r *http.Request) {
	if h := d.metricsHTTP.Load(); h != nil {
		(*h).ServeHTTP(w, r)
		return
	}
	if r.URL.Path == "/livez" {
		writeHealth(w, http.StatusOK, "ok", "")
		return
	}
	// What the start does, without the admin API's detail: the port is
	// open to every local user.
	writeHealth(w, http.StatusServiceUnavailable, "not ready", d.phase.Load().text(false))
}

// startMetrics has the metrics listener (listenMetrics) serve the metrics
// and the broker's readiness.
func (d *daemon) startMetrics(context.Context) error {
	h := d.metrics.handler(d.broker.Ready)
	d.metricsHTTP.Store(&h)
	return nil
}

// startBackground starts the local terminal agents of this host's card
// readers (one per seat), the lease supervisor (lease loss makes the broker
// not ready until a new lease is held and the sessions are re-claimed), the
// sharing of login failures and lockouts with the group, and the token watch (a token
// disabled or deleted anywhere in the group locks its session here). Each
// ends with the run context; stop waits for them.
func (d *daemon) startBackground(context.Context) error {
	run, logger := d.run, d.log
	for _, seat := range d.cfg.Seats {
		d.serve(func() error {
			runSeat(run, d.clk, d.cfg, seat, d.termLn.Addr(), proto.FormatFingerprint(d.fingerprint), logger.Named("seat").With("seat", seat.Name))
			return nil
		}, "seat "+seat.Name)
	}
	d.serve(func() error { d.superviseLease(run, logger); return nil }, "lease supervisor")
	d.serve(func() error { d.lockouts.run(run); return nil }, "lockout sharing")
	tokens := d.store.WatchTokens(run)
	d.serve(func() error {
		for ch := range tokens {
			d.broker.TokenChanged(ch)
		}
		return nil
	}, "token watch")
	return nil
}

// newRegistry takes this server's lease. After a crash the previous
// process's lease still holds the server id until it expires (TTL plus an
// etcd election timeout), so an id in use is retried for a while; an id
// still held after that is another running broker's, and the error names
// it (its address and start) and says to give each broker its own id.
// An etcd that does not answer (a site powered up with its brokers
// before its etcd members, a quorum lost) is waited for, as long as it
// takes, rather than the start failing into a loop of restarts.
// The registry runs on d.clk; the wait is in real time, as the etcd lease's.
func (d *daemon) newRegistry(ctx context.Context) (*registry.Registry, error) {
	clk, cli, store, cfg, rec, logger, prev := d.clk, d.etcd, d.store, d.cfg, d.record(), d.log, d.prevLease
	defer d.phase.Store(d.phase.Load())
	start := time.Now()
	deadline := start.Add(3*cfg.Etcd.LeaseTTL + 5*time.Second)
	for {
		tried := time.Now()
		reg, err := registry.New(ctx, cli, rec, registry.WithPrefix(cfg.Etcd.Prefix),
			registry.WithLeaseTTL(cfg.Etcd.LeaseTTL), registry.WithClock(clk), registry.WithLogger(logger.Named("registry")),
			registry.WithPreviousLease(prev))
		if registry.Unanswered(err) && ctx.Err() == nil {
			if err := d.waitForEtcd(ctx, nil); err != nil {
				return nil, err
			}
			// An attempt that failed at once (a connection error) while
			// etcd answers reads is not tried again at once.
			select {
			case <-ctx.Done():
				return nil, ctx.Err()
			case <-time.After(time.Until(tried.Add(registry.ReconnectEvery))):
			}
			deadline = time.Now().Add(3*cfg.Etcd.LeaseTTL + 5*time.Second)
			continue
		}
		if !errors.Is(err, registry.ErrServerIDInUse) {
			return reg, err
		}
		holder := "another lease"
		if s, serr := store.Server(ctx, rec.ID); serr == nil {
			holder = fmt.Sprintf("the broker at %s started %s", s.Addr, time.UnixMilli(s.StartedUnixMs).UTC().Format(time.RFC3339))
		}
		if time.Now().After(deadline) {
			return nil, fmt.Errorf("%w: %s has kept it for %s: another running broker has server_id %q; give each broker of the group its own server_id",
				err, holder, time.Since(start).Round(time.Second), rec.ID)
		}
		d.setPhase(fmt.Sprintf("waiting for server id %q to be free", rec.ID), "held by "+holder)
		logger.Warn("server id in use; waiting for its lease to expire (this server's previous run) or giving up (another broker with this server_id)",
			"server_id", rec.ID, "holder", holder)
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(time.Second):
		}
	}
}

// waitForEtcd returns once etcd answers (store's WaitAnswering), or
// ctx's error if it ends first: a start waits for etcd as long as it takes
// (a site powered up with its brokers before its etcd members, a quorum
// lost) rather than failing into a loop of restarts. While it waits it
// says so in the log (a warning, again every minute) and to systemd: its
// status line, and the start's timeout extended (EXTEND_TIMEOUT_USEC),
// else systemd would kill a start that waits longer than TimeoutStartSec.
// reach, if set, tells how each endpoint is reached (registry.Reach), for
// the warning.
//
// Meanwhile the admin API says the start is "waiting for etcd to answer",
// with how each endpoint is reached once that is known.
func (d *daemon) waitForEtcd(ctx context.Context, reach func(context.Context) string) error {
	store, cfg, logger := d.store, d.cfg, d.log
	defer d.phase.Store(d.phase.Load())
	const every = 5 * time.Second
	begin := time.Now()
	var said time.Time
	for {
		wctx, cancel := context.WithTimeout(ctx, every)
		answers := store.WaitAnswering(wctx)
		cancel()
		switch {
		case answers && said.IsZero():
			return nil
		case answers:
			logger.Info("etcd answers", "waited", time.Since(begin).Round(time.Millisecond))
			notify(logger, "STATUS=")
			return nil
		case ctx.Err() != nil:
			return ctx.Err()
		}
		if time.Since(said) >= time.Minute {
			said = time.Now()
			args := []any{"endpoints", strings.Join(cfg.Etcd.Endpoints, ","), "waited", time.Since(begin).Round(time.Second)}
			detail := ""
			if reach != nil {
				detail = reach(ctx)
				args = append(args, "reach", detail)
			}
			d.setPhase("waiting for etcd to answer", detail)
			logger.Warn("etcd does not answer (its members down or unreachable, or without a quorum): waiting for it", args...)
		}
		notify(logger, "STATUS=waiting for etcd to answer")
		notify(logger, fmt.Sprintf("EXTEND_TIMEOUT_USEC=%d", (3*every).Microseconds()))
	}
}

// record is this server's record as a new lease publishes it: with the
// group settings in effect (a reload changes them), which only the
// settings watch holds.
func (d *daemon) record() registry.ServerRecord {
	rec := d.serverRec
	rec.Settings = d.settings.ourSettings()
	return rec
}

// publishSettings writes the group settings in effect in this server's
// record (members compare theirs with them).
func (d *daemon) publishSettings(ctx context.Context) error {
	ours := d.settings.ourSettings()
	return d.registry().UpdateServer(ctx, func(r *registry.ServerRecord) { r.Settings = ours })
}

// superviseLease waits for the registry lease to be lost, then builds a new
// registry (new lease) with backoff and moves the broker's sessions to it.
// Until then the broker is not ready: it attaches and claims nothing.
func (d *daemon) superviseLease(ctx context.Context, logger hclog.Logger) {
	sup := &leaseSupervisor{
		newRegistry: func(ctx context.Context, prev clientv3.LeaseID) (*registry.Registry, error) {
			return registry.New(ctx, d.etcd, d.record(), registry.WithPrefix(d.cfg.Etcd.Prefix),
				registry.WithLeaseTTL(d.cfg.Etcd.LeaseTTL), registry.WithClock(d.clk), registry.WithLogger(logger.Named("registry")),
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
		clk:        d.clk,
		minBackoff: 250 * time.Millisecond,
		maxBackoff: 10 * time.Second,
		etcd:       d.store,
	}
	sup.run(ctx)
}

// serve runs f in the background; an unexpected error is fatal. The
// first failures go to d.fatal (run stops the daemon on the first one it
// reads); one that finds it full, the daemon stopping already, is logged:
// never waited for, as nobody reads d.fatal once run has returned.
func (d *daemon) serve(f func() error, what string) {
	ch := make(chan error, 1)
	d.done = append(d.done, ch)
	go func() {
		err := f()
		ch <- err
		if err == nil {
			return
		}
		select {
		case d.fatal <- fmt.Errorf("%s: %w", what, err):
		default:
			d.log.Error("subsystem failed", "subsystem", what, "error", err)
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

// etcdAccessHint adds to a permission error of a group's etcd what the
// administrator has to do: etcd takes the client certificate's common name
// as the user name, and that user needs a role that reads and writes the
// registry prefix (configs/group/hotdesk.hcl has the etcdctl commands).
// Other errors, and the embedded member's (provisioned by the daemon), are
// returned as they are.
func etcdAccessHint(err error, cfg *config.Config) error {
	if !errors.Is(err, rpctypes.ErrPermissionDenied) || cfg.UsesEmbeddedEtcd() {
		return err
	}
	prefix := cfg.Etcd.Prefix
	if cfg.Etcd.CertFile == "" {
		return fmt.Errorf("%w: etcd has authentication on and this broker presents no client certificate (etcd.cert_file, key_file): give it a certificate whose common name is an etcd user with a role that reads and writes %q (configs/group/hotdesk.hcl)", err, prefix)
	}
	cn := "?"
	if pair, lerr := tls.LoadX509KeyPair(cfg.Etcd.CertFile, cfg.Etcd.KeyFile); lerr == nil {
		if leaf, perr := x509.ParseCertificate(pair.Certificate[0]); perr == nil {
			cn = leaf.Subject.CommonName
		}
	}
	return fmt.Errorf("%w: etcd takes the common name of etcd.cert_file %s (%q) as the user name, and that user may not read and write %q: "+
		"etcdctl user add %s --no-password (if it is missing), etcdctl user grant-role %s ROLE, for a ROLE granted readwrite on %s with --prefix=true (configs/group/hotdesk.hcl)",
		err, cfg.Etcd.CertFile, cn, prefix, cn, cn, prefix)
}

// etcdClientTLS is the TLS of the daemon's etcd client: none without
// etcd.ca_file and etcd.cert_file (plain http endpoints).
func etcdClientTLS(cfg *config.Config) (*tls.Config, error) {
	e := cfg.Etcd
	if e.CAFile == "" && e.CertFile == "" {
		return nil, nil
	}
	return registry.ClientTLSFromFiles(e.CAFile, e.CertFile, e.KeyFile)
}

func notify(logger hclog.Logger, state string) {
	if _, err := sd.SdNotify(false, state); err != nil {
		logger.Debug("sd_notify failed", "error", err)
	}
}

// pingInterval is the keepalive interval the broker announces to its
// terminals: a sixth of the lease TTL (at most the protocol's default,
// proto.DefaultPingInterval; at least 100 ms, below every accepted TTL's
// sixth), so that a terminal
// notices a silent broker (3 unanswered Pings, within 4 intervals) within
// 2/3 of the TTL, before the broker's lease can expire and another broker
// take its tokens over.
func pingInterval(leaseTTL time.Duration) time.Duration {
	return min(max(leaseTTL/6, 100*time.Millisecond), proto.DefaultPingInterval)
}

// pamHelpers is how many PAM helpers may run transactions at once: the
// login gate's and the account gate's (max_pending_logins each). Fewer
// helper slots than that and logins left waiting at a prompt (anyone can
// start one for any user name) would take the slots card logins' account
// checks wait for, their gate of their own notwithstanding.
func pamHelpers(cfg *config.Config) int {
	return 2 * cfg.Limits.MaxPendingLogins
}

// accountHelperUses is how many account checks a PAM helper runs before
// it exits (pam.Config.AccountHelperUses): dovecot's default for its PAM
// workers, which bounds what a module leaking memory or descriptors at
// each transaction can hold.
const accountHelperUses = 100

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
	// 3 descriptors each PAM helper (the idle ones too).
	reserve := 128 + 3*(pamHelpers(cfg)+pam.IdleHelpers) + 4*cfg.Session.MaxSessions + 2*httpMaxConns // + dashboard, metrics
	per := (int(min(rl.Cur, 1<<30)) - reserve) / 2                                                    // terminal listener and attach gateway
	if per >= want {
		return want
	}
	per = max(per, 16)
	logger.Warn("limits.max_connections lowered to fit RLIMIT_NOFILE", "max_connections", want,
		"lowered_to", per, "rlimit_nofile", rl.Cur, "reserved", reserve)
	return per
}
