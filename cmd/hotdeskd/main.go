// Command hotdeskd is the hotdesk session broker daemon: the one place where
// token providers, authentication, the group registry, the compositor
// backend and the terminal and admin listeners are wired together.
//
// Usage:
//
//	hotdeskd [-config /etc/hotdesk/hotdesk.hcl] [-check | -fingerprint | -version]
//
// Any argument besides the flags is a usage error (exit status 2); -help
// exits 0. The help text, the man page hotdeskd(8) and hotdesk.hcl(5) and
// the shell completion come from one description (cli.go):
// `hotdeskd __gendocs man|bash|zsh DIR` writes them.
//
// SIGINT/SIGTERM stop it gracefully (a second signal forces exit), SIGHUP
// reloads the configuration (a bad new configuration is logged and the old
// one kept). With no etcd endpoints configured it runs an embedded
// single-member etcd in its data directory.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/hashicorp/go-hclog"

	"github.com/hotdesk/hotdesk/auth/pam"
	"github.com/hotdesk/hotdesk/cmd/hotdeskd/config"
	"github.com/hotdesk/hotdesk/cmd/internal/clidoc"
	"github.com/hotdesk/hotdesk/cmd/internal/exitcode"
	"github.com/hotdesk/hotdesk/internal/clock"
	"github.com/hotdesk/hotdesk/internal/trustpath"
	"github.com/hotdesk/hotdesk/internal/version"
	"github.com/hotdesk/hotdesk/proto"
)

const defaultConfigPath = "/etc/hotdesk/hotdesk.hcl"

func main() {
	// The daemon re-executes itself as the helper of one PAM login, so a
	// module that crashes or sleeps harms only that login.
	if len(os.Args) == 2 && os.Args[1] == "pam-helper" {
		os.Exit(pam.HelperMain())
	}
	exitcode.Exit("hotdeskd", run(os.Args[1:]), flag.ErrHelp)
}

func run(args []string) error {
	var o options
	fs, page := newFlagSet(&o, os.Stderr)
	if ok, err := clidoc.Main(args, version.String(), page, configPage()); ok {
		return err
	}
	if err := exitcode.Parse(fs, args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		fs.Usage()
		return fmt.Errorf("%w: unexpected argument %q (hotdeskd takes only flags)", exitcode.ErrUsage, fs.Arg(0))
	}
	if n := countTrue(o.check, o.fingerprint, o.version); n > 1 {
		return fmt.Errorf("%w: -check, -fingerprint and -version exclude each other", exitcode.ErrUsage)
	}
	if o.version {
		fmt.Println("hotdeskd", version.String())
		return nil
	}
	cfg, path, err := loadConfig(o.configPath)
	if err != nil {
		return err
	}
	if o.check {
		// What the configuration exposes, loudly, on stderr.
		guardWarnings, err := checkRDPGuard(cfg, "")
		if err != nil {
			return fmt.Errorf("%s: %w", displayPath(path), err)
		}
		warnings := append(cfg.Warnings(), cfg.HostWarnings(config.Host{})...)
		warnings = append(warnings, newDiskWatch(hclog.NewNullLogger(), cfg, clock.Real{}).warnings()...)
		warnings = append(warnings, newCertWatch(hclog.NewNullLogger(), certFiles(cfg)).warnings(time.Now())...)
		for _, w := range append(warnings, guardWarnings...) {
			fmt.Fprintf(os.Stderr, "WARNING: %s: %s\n", displayPath(path), w)
		}
		fmt.Printf("%s: ok\n", displayPath(path))
		return nil
	}
	if o.fingerprint {
		cert, err := proto.LoadOrCreateCert(cfg.TLS.CertFile, cfg.TLS.KeyFile, certHosts(cfg))
		if err != nil {
			return fmt.Errorf("tls: %w", err)
		}
		fmt.Println(proto.FormatFingerprint(proto.Fingerprint(cert.Certificate[0])))
		return nil
	}
	logger := newLogger(cfg)
	logger.Info("starting hotdeskd", "version", version.String(), "config", displayPath(path))
	for _, w := range cfg.HostWarnings(config.Host{}) {
		logger.Warn("configuration: " + w)
	}

	ctx, stop := context.WithCancel(context.Background())
	defer stop()
	sigs := make(chan os.Signal, 4)
	signal.Notify(sigs, syscall.SIGINT, syscall.SIGTERM, syscall.SIGHUP)
	defer signal.Stop(sigs)

	d, err := startInterruptible(ctx, stop, sigs, cfg, logger)
	if d == nil {
		return err
	}
	notify(logger, "READY=1")
	logger.Info("hotdeskd ready", "server_id", cfg.ServerID, "version", version.String(), "listen", d.listenAddr(), "admin_socket", cfg.AdminSocket,
		"embedded_etcd", cfg.UsesEmbeddedEtcd())

	running := *cfg // the configuration in effect, which a reload changes
	for {
		select {
		case err := <-d.fatal:
			logger.Error("subsystem failed", "error", err)
			d.stop(logger)
			return err
		case sig := <-sigs:
			if sig == syscall.SIGHUP {
				notify(logger, "RELOADING=1")
				reload(logger, path, &running, d.applyReload)
				notify(logger, "READY=1")
				continue
			}
			logger.Info("stopping", "signal", sig.String())
			notify(logger, "STOPPING=1")
			go func() {
				<-sigs
				logger.Warn("second signal: exiting now")
				os.Exit(1)
			}()
			d.stop(logger)
			return nil
		}
	}
}

// startInterruptible runs start while it listens to sigs: a SIGINT or
// SIGTERM during the start cancels ctx (with cancel), which ends the
// start's waits (etcd, a server id still held, adopting desktops); start
// then rolls back what it started, and the daemon stops as for any stop
// (nil error, no daemon). A second one exits at once. A SIGHUP during the
// start is put back on sigs once the start succeeded, for the running
// daemon to reload. A start that succeeds though a stop was asked for
// meanwhile is stopped.
func startInterruptible(ctx context.Context, cancel context.CancelFunc, sigs chan os.Signal,
	cfg *config.Config, logger hclog.Logger) (*daemon, error) {
	type result struct {
		d   *daemon
		err error
	}
	res := make(chan result, 1)
	go func() {
		d, err := start(ctx, cfg, logger)
		res <- result{d, err}
	}()
	signalled, hup := false, false
	for {
		select {
		case r := <-res:
			switch {
			case !signalled:
				if hup && r.err == nil {
					select {
					case sigs <- syscall.SIGHUP:
					default: // a signal is waiting already
					}
				}
				return r.d, r.err
			case r.err != nil:
				logger.Info("start abandoned", "error", r.err)
			default:
				r.d.stop(logger)
			}
			return nil, nil
		case sig := <-sigs:
			switch {
			case sig == syscall.SIGHUP:
				hup = true // reloaded once started
			case signalled:
				logger.Warn("second signal: exiting now")
				os.Exit(1)
			default:
				signalled = true
				logger.Info("stopping during the start", "signal", sig.String())
				notify(logger, "STOPPING=1")
				cancel()
			}
		}
	}
}

// loadConfig reads path, or the default path if it exists, or the defaults.
func loadConfig(path string) (*config.Config, string, error) {
	if path == "" {
		if _, err := os.Stat(defaultConfigPath); err == nil {
			path = defaultConfigPath
		}
	}
	if path == "" {
		cfg := config.Default()
		if err := cfg.Validate(); err != nil {
			return nil, "", err
		}
		return cfg, "", cfg.CheckHost(nil, config.Host{})
	}
	cfg, err := readConfig(path)
	return cfg, path, err
}

// readConfig reads the configuration file at path and checks what it
// names on this host (groups, paths), before anything starts, as a start
// and a reload do. A file others may change is refused: hotdeskd takes
// from it the commands it runs as root, the PAM stacks it trusts, the
// desktops' users and the login policies (which a reload applies at
// once).
func readConfig(path string) (*config.Config, error) {
	if err := trustpath.Check(path); err != nil {
		return nil, fmt.Errorf("%s: path others may change: %w: hotdeskd takes from it what it runs as root, the PAM stacks it trusts and the login policies, so only root (or hotdeskd's user) may be able to change it, a directory above it or a link on the way", path, err)
	}
	cfg, pos, err := config.LoadWithPositions(path)
	if err != nil {
		return nil, err
	}
	if err := cfg.CheckHost(pos, config.Host{}); err != nil {
		return nil, err
	}
	return cfg, nil
}

func displayPath(p string) string {
	if p == "" {
		return "(defaults)"
	}
	return p
}

func newLogger(cfg *config.Config) hclog.InterceptLogger {
	return hclog.NewInterceptLogger(&hclog.LoggerOptions{
		Name:       "hotdeskd",
		Level:      hclog.LevelFromString(cfg.LogLevel),
		JSONFormat: cfg.LogJSON,
		Output:     os.Stderr,
	})
}

// countTrue is how many of bs are true.
func countTrue(bs ...bool) int {
	n := 0
	for _, b := range bs {
		if b {
			n++
		}
	}
	return n
}
