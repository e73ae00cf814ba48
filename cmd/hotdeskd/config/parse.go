package config

import (
	"fmt"
	"path/filepath"
	"strings"
	"time"

	"github.com/hashicorp/hcl/v2"
	"github.com/hashicorp/hcl/v2/gohcl"
	"github.com/hashicorp/hcl/v2/hclsyntax"
)

// raw* mirror the file's schema; durations are strings converted afterwards.
type rawConfig struct {
	ServerID         string `hcl:"server_id,optional"`
	DataDir          string `hcl:"data_dir,optional"`
	Listen           string `hcl:"listen,optional"`
	Advertise        string `hcl:"advertise,optional"`
	AdminSocket      string `hcl:"admin_socket,optional"`
	AttachListen     string `hcl:"attach_listen,optional"`
	AdminGroup       string `hcl:"admin_group,optional"`
	MetricsListen    string `hcl:"metrics_listen,optional"`
	EventHook        string `hcl:"event_hook,optional"`
	EventHookTimeout string `hcl:"event_hook_timeout,optional"`
	LogLevel         string `hcl:"log_level,optional"`
	LogJSON          bool   `hcl:"log_json,optional"`

	TLS        *rawTLS        `hcl:"tls,block"`
	Etcd       *rawEtcd       `hcl:"etcd,block"`
	Session    *rawSession    `hcl:"session,block"`
	Auth       *rawAuth       `hcl:"auth,block"`
	Seats      []rawSeat      `hcl:"seat,block"`
	SeatAgent  string         `hcl:"seat_agent,optional"`
	Compositor *rawCompositor `hcl:"compositor,block"`
	Pairing    *rawPairing    `hcl:"pairing,block"`
	Limits     *rawLimits     `hcl:"limits,block"`
	Dashboard  *rawDashboard  `hcl:"dashboard,block"`
}

type rawDashboard struct {
	Listen        string `hcl:"listen,optional"`
	CertFile      string `hcl:"cert_file,optional"`
	KeyFile       string `hcl:"key_file,optional"`
	ReadOnlyGroup string `hcl:"readonly_group,optional"`
	PAMService    string `hcl:"pam_service,optional"`
	SessionTTL    string `hcl:"session_ttl,optional"`
}

type rawLimits struct {
	MaxConnections              int    `hcl:"max_connections,optional"`
	MaxConnectionsPerSource     int    `hcl:"max_connections_per_source,optional"`
	MaxUnauthenticated          int    `hcl:"max_unauthenticated,optional"`
	MaxUnauthenticatedPerSource int    `hcl:"max_unauthenticated_per_source,optional"`
	HandshakeTimeout            string `hcl:"handshake_timeout,optional"`
	MaxPendingLogins            int    `hcl:"max_pending_logins,optional"`
	MaxPendingLoginsPerSource   int    `hcl:"max_pending_logins_per_source,optional"`
	MaxPendingLoginsPerUser     int    `hcl:"max_pending_logins_per_user,optional"`
	MaxPendingLoginsPerTerminal int    `hcl:"max_pending_logins_per_terminal,optional"`
	MaxTicketsPerSession        int    `hcl:"max_tickets_per_session,optional"`
	TokenEventsPerSecond        int    `hcl:"token_events_per_second,optional"`
}

type rawTLS struct {
	CertFile string `hcl:"cert_file,optional"`
	KeyFile  string `hcl:"key_file,optional"`
}

type rawEtcd struct {
	Endpoints   []string     `hcl:"endpoints,optional"`
	LeaseTTL    string       `hcl:"lease_ttl,optional"`
	DialTimeout string       `hcl:"dial_timeout,optional"`
	Prefix      string       `hcl:"prefix,optional"`
	CAFile      string       `hcl:"ca_file,optional"`
	CertFile    string       `hcl:"cert_file,optional"`
	KeyFile     string       `hcl:"key_file,optional"`
	Embedded    *rawEmbedded `hcl:"embedded,block"`
}

type rawEmbedded struct {
	ClientURL string `hcl:"client_url,optional"`
	PeerURL   string `hcl:"peer_url,optional"`
}

type rawSession struct {
	SuspendTimeout string `hcl:"suspend_timeout,optional"`
	ReconnectGrace string `hcl:"reconnect_grace,optional"`
	Auth           string `hcl:"auth,optional"`
	KioskUser      string `hcl:"kiosk_user,optional"`
	MaxSessions    int    `hcl:"max_sessions,optional"`
	Weight         int    `hcl:"weight,optional"`
	KeepOnStop     bool   `hcl:"keep_on_stop,optional"`
}

type rawAuth struct {
	PAMService         string          `hcl:"pam_service,optional"`
	PINService         string          `hcl:"pin_service,optional"`
	PAMDir             string          `hcl:"pam_dir,optional"`
	OpenSession        bool            `hcl:"open_session,optional"`
	Timeout            string          `hcl:"timeout,optional"`
	PromptTimeout      string          `hcl:"prompt_timeout,optional"`
	ReauthOnHotdesk    bool            `hcl:"reauth_on_hotdesk,optional"`
	SelfRegister       bool            `hcl:"self_register,optional"`
	MaxSessionsPerUser int             `hcl:"max_sessions_per_user,optional"`
	MaxFailures        int             `hcl:"max_failures,optional"`
	FailureWindow      string          `hcl:"failure_window,optional"`
	Lockout            string          `hcl:"lockout,optional"`
	MaxLockout         string          `hcl:"max_lockout,optional"`
	Policies           []rawPolicyRule `hcl:"policy,block"`
}

type rawSeat struct {
	Name        string   `hcl:"name,label"`
	Readers     []string `hcl:"readers,optional"`
	RemoveGrace string   `hcl:"remove_grace,optional"`
}

type rawPolicyRule struct {
	Tokens          []string `hcl:"tokens,optional"`
	Users           []string `hcl:"users,optional"`
	Groups          []string `hcl:"groups,optional"`
	Auth            string   `hcl:"auth"`
	Service         string   `hcl:"service,optional"`
	ReauthOnHotdesk *bool    `hcl:"reauth_on_hotdesk,optional"`
	MaxSessions     int      `hcl:"max_sessions,optional"`
}

type rawCompositor struct {
	Type         string   `hcl:"type,optional"`
	Binary       string   `hcl:"binary,optional"`
	Backend      string   `hcl:"backend,optional"`
	Args         []string `hcl:"args,optional"`
	StateDir     string   `hcl:"state_dir,optional"`
	StartTimeout string   `hcl:"start_timeout,optional"`
	StopGrace    string   `hcl:"stop_grace,optional"`
	RunAsUser    bool     `hcl:"run_as_user,optional"`

	KioskAccountPrefix string `hcl:"kiosk_account_prefix,optional"`
	KioskAccounts      int    `hcl:"kiosk_accounts,optional"`
	MaxUserTasks       int    `hcl:"max_user_tasks,optional"`
	InsecureAllowRoot  bool   `hcl:"insecure_allow_root,optional"`

	InsecureUnguardedRDP bool `hcl:"insecure_unguarded_rdp,optional"`
}

type rawPairing struct {
	CodeTTL       string `hcl:"code_ttl,optional"`
	MaxFailures   int    `hcl:"max_failures,optional"`
	FailureWindow string `hcl:"failure_window,optional"`
	Lockout       string `hcl:"lockout,optional"`
}

// ranges maps "block.attr" (e.g. "etcd.lease_ttl") to its value's range,
// "block" to the block's definition and "" to the start of the file.
type ranges map[string]hcl.Range

// ptr returns the range of key, else of its closest enclosing block, else
// of the file; nil when the config did not come from a file.
func (r ranges) ptr(key string) *hcl.Range {
	if r == nil {
		return nil
	}
	for {
		if rg, ok := r[key]; ok {
			return &rg
		}
		if key == "" {
			return nil
		}
		i := strings.LastIndexByte(key, '.')
		if i < 0 {
			key = ""
		} else {
			key = key[:i]
		}
	}
}

func collectRanges(body *hclsyntax.Body, prefix string, out ranges) {
	for name, a := range body.Attributes {
		out[prefix+name] = a.Expr.Range()
	}
	for _, b := range body.Blocks {
		key := prefix + b.Type
		if _, dup := out[key]; !dup {
			out[key] = b.DefRange()
		}
		collectRanges(b.Body, key+".", out)
	}
}

func parse(src []byte, filename, dir string) (*Config, ranges, error) {
	file, diags := hclsyntax.ParseConfig(src, filename, hcl.InitialPos)
	if diags.HasErrors() {
		return nil, nil, &Error{Diagnostics: diags}
	}
	rg := ranges{"": {Filename: filename, Start: hcl.InitialPos, End: hcl.InitialPos}}
	if body, ok := file.Body.(*hclsyntax.Body); ok {
		collectRanges(body, "", rg)
	}

	// Decode over the defaults: gohcl leaves absent attributes untouched.
	d := base()
	raw := rawConfig{
		DataDir: d.DataDir, Listen: d.Listen, AdminSocket: d.AdminSocket, LogLevel: d.LogLevel,
		MetricsListen: d.MetricsListen, EventHookTimeout: d.EventHookTimeout.String(),
		TLS: &rawTLS{},
		Etcd: &rawEtcd{
			LeaseTTL: d.Etcd.LeaseTTL.String(), DialTimeout: d.Etcd.DialTimeout.String(),
			Prefix:   d.Etcd.Prefix,
			Embedded: &rawEmbedded{ClientURL: d.Etcd.Embedded.ClientURL, PeerURL: d.Etcd.Embedded.PeerURL},
		},
		Session: &rawSession{SuspendTimeout: d.Session.SuspendTimeout.String(), ReconnectGrace: d.Session.ReconnectGrace.String(),
			Auth: d.Session.Auth, KeepOnStop: d.Session.KeepOnStop,
			MaxSessions: d.Session.MaxSessions, Weight: d.Session.Weight},
		Auth: &rawAuth{
			PAMService: d.Auth.PAMService, PINService: d.Auth.PINService, OpenSession: d.Auth.OpenSession,
			Timeout: d.Auth.Timeout.String(), PromptTimeout: d.Auth.PromptTimeout.String(), ReauthOnHotdesk: d.Auth.ReauthOnHotdesk,
			MaxFailures: d.Auth.MaxFailures, FailureWindow: d.Auth.FailureWindow.String(),
			Lockout: d.Auth.Lockout.String(), MaxLockout: d.Auth.MaxLockout.String(),
		},
		Compositor: &rawCompositor{
			Type: d.Compositor.Type, Binary: d.Compositor.Binary, Backend: d.Compositor.Backend,
			StartTimeout: d.Compositor.StartTimeout.String(), StopGrace: d.Compositor.StopGrace.String(),
			RunAsUser: d.Compositor.RunAsUser, KioskAccountPrefix: d.Compositor.KioskAccountPrefix,
			KioskAccounts: d.Compositor.KioskAccounts, MaxUserTasks: d.Compositor.MaxUserTasks,
		},
		Limits: &rawLimits{
			MaxConnections: d.Limits.MaxConnections, MaxConnectionsPerSource: d.Limits.MaxConnectionsPerSource,
			MaxUnauthenticated: d.Limits.MaxUnauthenticated, MaxUnauthenticatedPerSource: d.Limits.MaxUnauthenticatedPerSource,
			HandshakeTimeout: d.Limits.HandshakeTimeout.String(),
			MaxPendingLogins: d.Limits.MaxPendingLogins, MaxPendingLoginsPerSource: d.Limits.MaxPendingLoginsPerSource,
			MaxPendingLoginsPerUser: d.Limits.MaxPendingLoginsPerUser, MaxPendingLoginsPerTerminal: d.Limits.MaxPendingLoginsPerTerminal,
			MaxTicketsPerSession: d.Limits.MaxTicketsPerSession, TokenEventsPerSecond: d.Limits.TokenEventsPerSecond,
		},
		Dashboard: &rawDashboard{PAMService: d.Dashboard.PAMService, SessionTTL: d.Dashboard.SessionTTL.String()},
		Pairing: &rawPairing{
			CodeTTL: d.Pairing.CodeTTL.String(), MaxFailures: d.Pairing.MaxFailures,
			FailureWindow: d.Pairing.FailureWindow.String(), Lockout: d.Pairing.Lockout.String(),
		},
	}
	diags = gohcl.DecodeBody(file.Body, nil, &raw)
	if diags.HasErrors() {
		return nil, nil, &Error{Diagnostics: diags}
	}

	var dd hcl.Diagnostics
	dur := func(key, s string) time.Duration {
		v, err := time.ParseDuration(s)
		if err != nil {
			dd = append(dd, &hcl.Diagnostic{
				Severity: hcl.DiagError,
				Summary:  "Invalid duration",
				Detail:   fmt.Sprintf("%s = %q is not a duration such as \"500ms\", \"10s\" or \"24h\".", key, s),
				Subject:  rg.ptr(key),
			})
		}
		return v
	}
	c := &Config{
		ServerID:         raw.ServerID,
		DataDir:          resolve(dir, raw.DataDir),
		Listen:           raw.Listen,
		Advertise:        raw.Advertise,
		AdminSocket:      resolve(dir, raw.AdminSocket),
		AttachListen:     raw.AttachListen,
		AdminGroup:       raw.AdminGroup,
		MetricsListen:    raw.MetricsListen,
		EventHook:        resolve(dir, raw.EventHook),
		EventHookTimeout: dur("event_hook_timeout", raw.EventHookTimeout),
		LogLevel:         raw.LogLevel,
		LogJSON:          raw.LogJSON,
		TLS: TLS{
			CertFile: resolve(dir, raw.TLS.CertFile),
			KeyFile:  resolve(dir, raw.TLS.KeyFile),
		},
		Etcd: Etcd{
			Endpoints:   raw.Etcd.Endpoints,
			LeaseTTL:    dur("etcd.lease_ttl", raw.Etcd.LeaseTTL),
			DialTimeout: dur("etcd.dial_timeout", raw.Etcd.DialTimeout),
			Prefix:      raw.Etcd.Prefix,
			CAFile:      resolve(dir, raw.Etcd.CAFile),
			CertFile:    resolve(dir, raw.Etcd.CertFile),
			KeyFile:     resolve(dir, raw.Etcd.KeyFile),
			Embedded: EmbeddedEtcd{
				ClientURL: raw.Etcd.Embedded.ClientURL,
				PeerURL:   raw.Etcd.Embedded.PeerURL,
			},
		},
		Session: Session{
			SuspendTimeout: dur("session.suspend_timeout", raw.Session.SuspendTimeout),
			ReconnectGrace: dur("session.reconnect_grace", raw.Session.ReconnectGrace),
			Auth:           raw.Session.Auth,
			KioskUser:      raw.Session.KioskUser,
			MaxSessions:    raw.Session.MaxSessions,
			Weight:         raw.Session.Weight,
			KeepOnStop:     raw.Session.KeepOnStop,
		},
		Auth: Auth{
			PAMService:         raw.Auth.PAMService,
			PINService:         raw.Auth.PINService,
			PAMDir:             resolve(dir, raw.Auth.PAMDir),
			OpenSession:        raw.Auth.OpenSession,
			Timeout:            dur("auth.timeout", raw.Auth.Timeout),
			PromptTimeout:      dur("auth.prompt_timeout", raw.Auth.PromptTimeout),
			ReauthOnHotdesk:    raw.Auth.ReauthOnHotdesk,
			SelfRegister:       raw.Auth.SelfRegister,
			MaxSessionsPerUser: raw.Auth.MaxSessionsPerUser,
			MaxFailures:        raw.Auth.MaxFailures,
			FailureWindow:      dur("auth.failure_window", raw.Auth.FailureWindow),
			Lockout:            dur("auth.lockout", raw.Auth.Lockout),
			MaxLockout:         dur("auth.max_lockout", raw.Auth.MaxLockout),
		},
		Compositor: Compositor{
			Type:         raw.Compositor.Type,
			Binary:       resolveBinary(dir, raw.Compositor.Binary),
			Backend:      raw.Compositor.Backend,
			Args:         raw.Compositor.Args,
			StateDir:     resolve(dir, raw.Compositor.StateDir),
			StartTimeout: dur("compositor.start_timeout", raw.Compositor.StartTimeout),
			StopGrace:    dur("compositor.stop_grace", raw.Compositor.StopGrace),
			RunAsUser:    raw.Compositor.RunAsUser,

			KioskAccountPrefix: raw.Compositor.KioskAccountPrefix,
			KioskAccounts:      raw.Compositor.KioskAccounts,
			MaxUserTasks:       raw.Compositor.MaxUserTasks,
			InsecureAllowRoot:  raw.Compositor.InsecureAllowRoot,

			InsecureUnguardedRDP: raw.Compositor.InsecureUnguardedRDP,
		},
		Limits: Limits{
			MaxConnections:              raw.Limits.MaxConnections,
			MaxConnectionsPerSource:     raw.Limits.MaxConnectionsPerSource,
			MaxUnauthenticated:          raw.Limits.MaxUnauthenticated,
			MaxUnauthenticatedPerSource: raw.Limits.MaxUnauthenticatedPerSource,
			HandshakeTimeout:            dur("limits.handshake_timeout", raw.Limits.HandshakeTimeout),
			MaxPendingLogins:            raw.Limits.MaxPendingLogins,
			MaxPendingLoginsPerSource:   raw.Limits.MaxPendingLoginsPerSource,
			MaxPendingLoginsPerUser:     raw.Limits.MaxPendingLoginsPerUser,
			MaxPendingLoginsPerTerminal: raw.Limits.MaxPendingLoginsPerTerminal,
			MaxTicketsPerSession:        raw.Limits.MaxTicketsPerSession,
			TokenEventsPerSecond:        raw.Limits.TokenEventsPerSecond,
		},
		Pairing: Pairing{
			CodeTTL:       dur("pairing.code_ttl", raw.Pairing.CodeTTL),
			MaxFailures:   raw.Pairing.MaxFailures,
			FailureWindow: dur("pairing.failure_window", raw.Pairing.FailureWindow),
			Lockout:       dur("pairing.lockout", raw.Pairing.Lockout),
		},
		Dashboard: Dashboard{
			Listen:        raw.Dashboard.Listen,
			CertFile:      resolve(dir, raw.Dashboard.CertFile),
			KeyFile:       resolve(dir, raw.Dashboard.KeyFile),
			ReadOnlyGroup: raw.Dashboard.ReadOnlyGroup,
			PAMService:    raw.Dashboard.PAMService,
			SessionTTL:    dur("dashboard.session_ttl", raw.Dashboard.SessionTTL),
		},
	}
	c.SeatAgent = resolveBinary(dir, raw.SeatAgent)
	for _, st := range raw.Seats {
		grace := time.Second
		if st.RemoveGrace != "" {
			grace = dur("seat.remove_grace", st.RemoveGrace)
		}
		c.Seats = append(c.Seats, Seat{Name: st.Name, Readers: nilIfEmpty(st.Readers), RemoveGrace: grace})
	}
	for _, p := range raw.Auth.Policies {
		c.Auth.Rules = append(c.Auth.Rules, PolicyRule{
			Tokens: nilIfEmpty(p.Tokens), Users: nilIfEmpty(p.Users), Groups: nilIfEmpty(p.Groups),
			Auth: p.Auth, Service: p.Service, ReauthOnHotdesk: p.ReauthOnHotdesk, MaxSessions: p.MaxSessions,
		})
	}
	if dd.HasErrors() {
		return nil, nil, &Error{Diagnostics: dd}
	}
	// An empty list in the file means "none", like an absent one.
	if len(c.Etcd.Endpoints) == 0 {
		c.Etcd.Endpoints = nil
	}
	if len(c.Compositor.Args) == 0 {
		c.Compositor.Args = nil
	}
	// prompt_timeout's default yields to a shorter login timeout; one set
	// in the file must fit in it (validate).
	if _, set := rg["auth.prompt_timeout"]; !set {
		c.Auth.PromptTimeout = min(c.Auth.PromptTimeout, c.Auth.Timeout)
	}
	if c.DataDir != "" {
		c.deriveDefaults()
	}
	c.boundLockouts(rg)
	if err := c.validate(rg); err != nil {
		return nil, nil, err
	}
	return c, rg, nil
}

// boundLockouts takes an auth.max_lockout (and an auth.lockout) over
// MaxLockoutBound as the bound, and notes it for HostWarnings: releases
// before the bound accepted any, and a configuration an earlier release
// ran with must not stop an upgraded daemon from starting (its desktops
// would be left without a broker). validate refuses such a value set in
// code.
func (c *Config) boundLockouts(rg ranges) {
	for _, f := range []struct {
		key string
		v   *time.Duration
	}{{"auth.lockout", &c.Auth.Lockout}, {"auth.max_lockout", &c.Auth.MaxLockout}} {
		if *f.v <= MaxLockoutBound {
			continue
		}
		at := ""
		if r := rg.ptr(f.key); r != nil {
			at = fmt.Sprintf("line %d: ", r.Start.Line)
		}
		c.notes = append(c.notes, fmt.Sprintf("%s%s = %s is taken as %s, the longest lockout there is (a longer one is an account disabled: do that in the account stack); set it to at most %s",
			at, f.key, *f.v, MaxLockoutBound, MaxLockoutBound))
		*f.v = MaxLockoutBound
	}
}

func nilIfEmpty(s []string) []string {
	if len(s) == 0 {
		return nil
	}
	return s
}

// resolve joins a relative path to dir; "" stays "".
func resolve(dir, p string) string {
	if p == "" || filepath.IsAbs(p) {
		return p
	}
	return filepath.Join(dir, p)
}

// resolveBinary resolves a binary path containing a "/"; a bare name is
// left for $PATH lookup.
func resolveBinary(dir, p string) string {
	if !strings.Contains(p, "/") {
		return p
	}
	return resolve(dir, p)
}
