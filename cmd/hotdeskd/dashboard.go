package main

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"

	"github.com/hotdesk/hotdesk/auth"
	"github.com/hotdesk/hotdesk/auth/pam"
	"github.com/hotdesk/hotdesk/cmd/internal/dashboard"
	"github.com/hotdesk/hotdesk/cmd/internal/httpserve"
	"github.com/hotdesk/hotdesk/internal/netsrc"
	"github.com/hotdesk/hotdesk/proto"
)

// listenDashboard serves the web dashboard when dashboard.listen is set:
// HTTPS with the broker's certificate (or the dashboard's own), logins by
// PAM (service dashboard.pam_service, never opening a PAM session) behind
// a failure limiter, roles from admin_group and dashboard.readonly_group.
// It is served from early in the start: until the start is done every
// page says what it is doing (503).
func (d *daemon) listenDashboard(context.Context) error {
	dc, logger := d.cfg.Dashboard, d.log.Named("dashboard")
	if dc.Listen == "" {
		return nil
	}
	cert := d.cert
	if dc.CertFile != "" {
		c, err := tls.LoadX509KeyPair(dc.CertFile, dc.KeyFile)
		if err != nil {
			return fmt.Errorf("dashboard certificate: %w", err)
		}
		cert = c
	}
	pamAuth, err := pam.New(pam.Config{
		Service: dc.PAMService, ConfDir: d.cfg.Auth.PAMDir, Timeout: d.cfg.Auth.Timeout,
		OpenSession: false, NoAudit: true, Logger: logger.Named("pam"),
	})
	if err != nil {
		return fmt.Errorf("dashboard: %w", err)
	}
	// A source (an IPv4 address, an IPv6 /64) gets the failures of one
	// user: the dashboard's few administrators share no office /64 the
	// way a floor of terminals does, and an address is cheap in a /64.
	limiter := auth.NewLimiter(auth.LimiterConfig{
		MaxFailures: d.cfg.Auth.MaxFailures, SourceMaxFailures: d.cfg.Auth.MaxFailures,
		Window: d.cfg.Auth.FailureWindow, BaseLockout: d.cfg.Auth.Lockout, MaxLockout: d.cfg.Auth.MaxLockout,
		Logger: logger.Named("audit"),
	})
	// Logins in progress are bounded as a terminal's are (a client that
	// posts logins and lets PAM stall must not hold every helper).
	gate := auth.NewGate(pamAuth, auth.GateConfig{Max: httpMaxConns / 4, PerSource: 4, PerUser: 2, PerTerminal: 4, Logger: logger.Named("gate")})
	guarded := limiter.Guard(auth.ForService(gate, dc.PAMService))
	login := func(ctx context.Context, user, password, remote string) error {
		res, err := guarded.Authenticate(ctx, auth.Request{User: user, TerminalID: "dashboard:" + netsrc.Source(remote), RemoteAddr: remote},
			passwordConv{user: user, password: password})
		if res.Session != nil {
			_ = res.Session.Close(context.WithoutCancel(ctx))
		}
		if errors.Is(err, auth.ErrLocked) || errors.Is(err, auth.ErrBusy) {
			return fmt.Errorf("%w: %w: %w", dashboard.ErrLoginFailed, dashboard.ErrLoginLocked, err)
		}
		if err != nil {
			return fmt.Errorf("%w: %w", dashboard.ErrLoginFailed, err)
		}
		if res.User != "" && res.User != user {
			return fmt.Errorf("%w: PAM changed the user name", dashboard.ErrLoginFailed)
		}
		return nil
	}
	srv, err := dashboard.New(dashboard.Config{
		Backend: &adminBackend{d: d}, Login: login, Groups: userGroups,
		AdminGroup: d.cfg.AdminGroup, ReadOnlyGroup: dc.ReadOnlyGroup,
		SessionTTL: dc.SessionTTL, Logger: logger,
		// Without the admin API's detail (how etcd is reached):
		// whoever reaches the port reads it.
		Starting: func() error { return d.starting(false) },
	})
	if err != nil {
		return err
	}
	ln, err := net.Listen("tcp", dc.Listen)
	if err != nil {
		return fmt.Errorf("dashboard listener: %w", err)
	}
	ln = httpserve.Limit(ln, httpMaxConns, httpMaxPerSource)
	logger.Info("dashboard listener", "addr", ln.Addr().String(), "admin_group", d.cfg.AdminGroup, "readonly_group", dc.ReadOnlyGroup)
	tlsCfg := &tls.Config{MinVersion: tls.VersionTLS12, Certificates: []tls.Certificate{cert}, NextProtos: []string{"h2", "http/1.1"}}
	d.serve(func() error { return srv.Serve(d.run, ln, tlsCfg) }, "dashboard")
	return nil
}

// passwordConv answers a PAM conversation from a login form: the user name
// for visible prompts, the password for secret ones.
type passwordConv struct{ user, password string }

func (c passwordConv) Prompt(_ context.Context, style proto.PromptStyle, _ string) (string, error) {
	switch style {
	case proto.PromptEchoOff:
		return c.password, nil
	case proto.PromptEchoOn:
		return c.user, nil
	case proto.PromptError, proto.PromptInfo:
		return "", nil
	}
	return "", errors.New("dashboard: unexpected PAM prompt")
}

// httpMaxConns bounds the connections the dashboard and the metrics
// listener each hold open; more wait in the kernel's accept queue, costing
// no descriptor of ours (connectionBudget reserves these). One source gets
// at most httpMaxPerSource of them, so that it cannot hold them all.
const (
	httpMaxConns     = 64
	httpMaxPerSource = 8
)
