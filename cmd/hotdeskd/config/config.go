// Package config is the HCL configuration of hotdeskd.
//
// Contract:
//
//   - Load and Parse return a fully defaulted and validated *Config, or an
//     error. Every error about the file's contents is an *Error (errors.Is
//     ErrInvalid) built from hcl.Diagnostics; its message starts with
//     "file:line:column: " naming the offending item, e.g.
//     `hotdesk.hcl:7:3: unsupported argument: An argument named "bogus" is not expected here.`
//     A file that cannot be read is reported with the os error wrapped
//     (errors.Is(err, fs.ErrNotExist) tells "absent" from "invalid").
//   - The schema is closed: unknown attributes and blocks are errors. Every
//     block is optional and may appear at most once; a duplicate block is an
//     error at the second block's position.
//   - Durations are strings in time.ParseDuration syntax ("24h", "500ms").
//   - Relative paths (data_dir, admin_socket, tls and etcd files,
//     compositor state_dir, and a compositor binary containing a "/") are
//     resolved against the directory of the configuration file: Load makes
//     them absolute; Parse joins them to filepath.Dir(filename). A binary
//     without a "/" is looked up in $PATH by whoever starts it.
//   - Derived defaults: server_id = hostname; advertise = listen with an
//     unspecified host (0.0.0.0, ::, "") replaced by the hostname;
//     tls files = <data_dir>/tls/server.crt|key; compositor state_dir =
//     <data_dir>/sessions. An embedded etcd (no endpoints) keeps its data in
//     <data_dir>/etcd.
//   - Two listeners (listen, attach_listen, metrics_listen, dashboard.listen,
//     the embedded etcd's URLs) on one address are an error.
//   - Load and Parse do not look at the host; CheckHost does (groups, the
//     etcd TLS files), with the positions LoadWithPositions returns.
//   - A Config is plain data: two configs with the same settings compare
//     equal with reflect.DeepEqual, whatever the layout of their files.
package config

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net"
	"net/url"
	"os"
	"os/user"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/hashicorp/hcl/v2"
	"github.com/hashicorp/hcl/v2/gohcl"
	"github.com/hashicorp/hcl/v2/hclsyntax"
)

// Default values of the settings that have a fixed default.
const (
	DefaultDataDir     = "/var/lib/hotdesk"
	DefaultListen      = "0.0.0.0:4500"
	DefaultAdminSocket = "/run/hotdesk/admin.sock"
	// DefaultMetricsListen is metrics_listen's default: loopback only. If
	// the default port is taken the daemon runs without it (and says so);
	// an explicit address that cannot be bound is an error.
	DefaultMetricsListen = "127.0.0.1:9450"
	DefaultLogLevel      = "info"
	DefaultEtcdPrefix    = "/hotdesk/"
	// The embedded etcd member listens on loopback only, on ports next to
	// the terminal listener's so that it does not collide with a system etcd.
	DefaultEmbeddedClientURL = "http://127.0.0.1:4501"
	DefaultEmbeddedPeerURL   = "http://127.0.0.1:4502"
)

// MaxFileSize bounds the size of a configuration file.
const MaxFileSize = 1 << 20

// MinLeaseTTL is the smallest etcd lease TTL accepted (etcd raises a TTL
// below 1.5 of its election timeouts, 2 s with default timings; 1 s needs
// an election timeout of at most 666 ms); MaxLeaseTTL the largest (a dead
// server's sessions stay in the registry this long).
const (
	MinLeaseTTL = 1 * time.Second
	MaxLeaseTTL = 10 * time.Minute
)

// DefaultMaxSessions is the default session cap of one server (WayRay's
// default capacity): every session is a desktop with its processes.
const DefaultMaxSessions = 50

var (
	logLevels       = []string{"trace", "debug", "info", "warn", "error"}
	authPolicies    = []string{"kiosk", "card", "card+pin", "card+password", "password"}
	compositorTypes = []string{"weston", "wayray"}
	westonBackends  = []string{"headless", "rdp"}
	seatNameRe      = regexp.MustCompile(`^[A-Za-z0-9_-]{1,64}$`)
	serverIDRe      = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]{0,252}$`)
	kioskPrefixRe   = regexp.MustCompile(`^[a-z][a-z0-9_-]{0,19}$`)
)

// Config is the daemon's configuration.
type Config struct {
	ServerID    string // server_id; default: hostname
	DataDir     string // data_dir
	Listen      string // listen: terminal TLS listener host:port
	Advertise   string // advertise: host:port other brokers and terminals use
	AdminSocket string // admin_socket
	// AttachListen is the attach gateway's TLS listener (host:port);
	// default: listen's host on a free port, advertised with advertise's host.
	AttachListen string // attach_listen
	// AdminGroup is the unix group whose members may use the admin socket
	// besides root and the daemon's uid; "" = none.
	AdminGroup string
	// MetricsListen serves /metrics, /livez and /readyz over plain HTTP
	// (default loopback only, DefaultMetricsListen); "off" disables it.
	MetricsListen string // metrics_listen
	// EventHook is an executable run for every event of this broker with
	// the event as JSON on stdin ("" = none), bounded by EventHookTimeout.
	EventHook        string        // event_hook
	EventHookTimeout time.Duration // event_hook_timeout
	LogLevel         string        // log_level: trace|debug|info|warn|error
	LogJSON          bool          // log_json

	TLS     TLS
	Etcd    Etcd
	Session Session
	Auth    Auth
	// Dashboard is the web admin dashboard (off unless listen is set).
	Dashboard Dashboard
	// Seats are card readers attached to this host (kiosk or console
	// case), each watched by a local terminal agent named "seat-<name>".
	Seats []Seat
	// SeatAgent is the terminal agent binary run for each seat; default
	// hotdesk-term next to hotdeskd's own executable, else in $PATH.
	SeatAgent  string
	Compositor Compositor
	Pairing    Pairing
	Limits     Limits
}

// Limits bound what clients may hold of the daemon (block limits). Each
// bites with a log line; none is unlimited by default.
type Limits struct {
	// Connections per listener (terminal listener, attach gateway).
	MaxConnections          int // max_connections; default 1024
	MaxConnectionsPerSource int // max_connections_per_source (per IP address); default 64
	// MaxUnauthenticated bounds connections that have not finished the TLS
	// handshake and their first message; default 128.
	MaxUnauthenticated int // max_unauthenticated
	// HandshakeTimeout bounds the TLS handshake plus the first message.
	HandshakeTimeout time.Duration // handshake_timeout; default 10s
	// Logins waiting in PAM (prompts included): in all, per source address,
	// per user and per terminal.
	MaxPendingLogins            int // max_pending_logins; default 64
	MaxPendingLoginsPerSource   int // max_pending_logins_per_source; default 8
	MaxPendingLoginsPerUser     int // max_pending_logins_per_user; default 2
	MaxPendingLoginsPerTerminal int // max_pending_logins_per_terminal; default 1
	// MaxTicketsPerSession bounds outstanding attach tickets of a session
	// (the oldest is revoked first); default 4.
	MaxTicketsPerSession int // max_tickets_per_session
}

// TLS is the terminal listener's certificate (generated on first start
// when the files do not exist).
type TLS struct {
	CertFile string // cert_file; default <data_dir>/tls/server.crt
	KeyFile  string // key_file; default <data_dir>/tls/server.key
}

// Etcd is the registry's etcd connection.
type Etcd struct {
	// Endpoints of a real etcd cluster; none = an embedded single member.
	Endpoints   []string
	LeaseTTL    time.Duration // lease_ttl; default 5s, at least MinLeaseTTL
	DialTimeout time.Duration // dial_timeout; default 5s
	Prefix      string        // prefix; default "/hotdesk/", starts and ends with "/"
	// mTLS for a real cluster; CertFile and KeyFile go together.
	CAFile   string
	CertFile string
	KeyFile  string
	Embedded EmbeddedEtcd
}

// EmbeddedEtcd configures the embedded member used when no endpoints are set.
type EmbeddedEtcd struct {
	ClientURL string // client_url; default DefaultEmbeddedClientURL
	PeerURL   string // peer_url; default DefaultEmbeddedPeerURL
}

// Session is the session policy.
type Session struct {
	SuspendTimeout time.Duration // suspend_timeout; default 24h
	Auth           string        // auth: default login policy: kiosk|card|card+pin|card+password|password
	KioskUser      string        // kiosk_user: local user of kiosk sessions; "" = the token's user
	MaxSessions    int           // max_sessions on this server; 0 = unlimited
	// KeepOnStop leaves the desktops running when hotdeskd stops; the next
	// start re-adopts them (a restart loses no session). Default true.
	KeepOnStop bool // keep_on_stop
}

// Compositor configures the desktop sessions.
type Compositor struct {
	Type         string        // type: "weston"
	Binary       string        // binary; default "weston" (looked up in $PATH)
	Backend      string        // backend: headless|rdp
	Args         []string      // args: extra arguments
	StateDir     string        // state_dir; default <data_dir>/sessions
	StartTimeout time.Duration // start_timeout; default 10s
	StopGrace    time.Duration // stop_grace; default 5s
	// RunAsUser starts each compositor as the session's user (uid, gid,
	// groups, a private XDG_RUNTIME_DIR owned by the user), or as a pooled
	// kiosk account when that user is not a regular local account; default
	// true. false: as the daemon's user, which is refused when that is root
	// unless InsecureAllowRoot.
	RunAsUser bool // run_as_user
	// KioskAccountPrefix and KioskAccounts name and bound the pool of
	// unprivileged accounts (<prefix>1..N, created on demand).
	KioskAccountPrefix string // kiosk_account_prefix; default "hdkiosk"
	KioskAccounts      int    // kiosk_accounts; default 256
	// InsecureAllowRoot lets run_as_user = false start desktops as root.
	// Tests with fake compositors only; -check warns.
	InsecureAllowRoot bool // insecure_allow_root
	// InsecureUnguardedRDP (backend rdp) serves desktops on loopback RDP
	// ports without the nftables guard that lets only hotdeskd connect:
	// weston authenticates no RDP client, so every local user can use
	// every desktop. Single-user hosts only; -check warns.
	InsecureUnguardedRDP bool // insecure_unguarded_rdp
}

// Auth configures PAM and the per-token, per-user and per-group login
// policies (block auth). The default policy is session.auth.
type Auth struct {
	PAMService         string        // pam_service; default "hotdesk"
	PINService         string        // pin_service: PAM service of card+pin; default "hotdesk-pin"
	PAMDir             string        // pam_dir: PAM configuration directory; "" = the system's (/etc/pam.d)
	OpenSession        bool          // open_session: PAM open/close session around the desktop; default true
	Timeout            time.Duration // timeout of one login; default 2m
	ReauthOnHotdesk    bool          // reauth_on_hotdesk: ask again when a token resumes a session; default true
	SelfRegister       bool          // self_register: unknown cards enroll on first login; default false
	MaxSessionsPerUser int           // max_sessions_per_user; 0 = unlimited
	MaxFailures        int           // max_failures before a lockout; default 5
	FailureWindow      time.Duration // failure_window; default 15m
	Lockout            time.Duration // lockout: first lockout, doubled each time; default 30s
	MaxLockout         time.Duration // max_lockout; default 15m
	Rules              []PolicyRule  // policy blocks, in file order
}

// PolicyRule (block policy) gives the tokens, users and groups it names
// another login policy than the default.
type PolicyRule struct {
	Tokens, Users, Groups []string
	Auth                  string // auth: policy kind, required
	Service               string // service: PAM service; "" = pam_service / pin_service
	ReauthOnHotdesk       *bool  // reauth_on_hotdesk; nil = auth.reauth_on_hotdesk
	MaxSessions           int    // max_sessions per user; 0 = auth.max_sessions_per_user
}

// Seat (block seat "NAME") maps readers of this host to a seat.
type Seat struct {
	Name    string
	Readers []string // readers: name filters (substrings); empty = every reader
	// RemoveGrace is the debounce before a card removal is reported.
	RemoveGrace time.Duration // remove_grace; default 1s
}

// Dashboard configures the web admin dashboard, served over HTTPS by
// hotdeskd. Users log in with PAM (PAMService) and must be members of the
// top-level admin_group (may act) or of ReadOnlyGroup (may look).
type Dashboard struct {
	Listen        string // listen; "" = no dashboard
	CertFile      string // cert_file; default: the broker's certificate (tls block)
	KeyFile       string // key_file
	ReadOnlyGroup string // readonly_group; "" = no read-only role
	PAMService    string // pam_service; default "hotdesk-admin"
	SessionTTL    time.Duration
}

// Pairing configures pairing codes (enrolling a new token from the admin CLI).
type Pairing struct {
	CodeTTL       time.Duration // code_ttl; default 10m
	MaxFailures   int           // max_failures within failure_window before lockout; default 5
	FailureWindow time.Duration // failure_window; default 15m
	Lockout       time.Duration // lockout; default 15m
}

// ErrInvalid is matched (errors.Is) by every *Error.
var ErrInvalid = errors.New("config: invalid")

// Error is an invalid configuration. Diagnostics holds every problem found;
// Error() prints one per line as "file:line:column: summary: detail"
// (without the position when the problem has none).
type Error struct {
	Diagnostics hcl.Diagnostics
}

func (e *Error) Error() string {
	var b strings.Builder
	for _, d := range e.Diagnostics {
		if d.Severity != hcl.DiagError {
			continue
		}
		if b.Len() > 0 {
			b.WriteByte('\n')
		}
		b.WriteString(formatDiag(d))
	}
	if b.Len() == 0 {
		return "config: invalid configuration"
	}
	return b.String()
}

// Is reports whether target is ErrInvalid.
func (e *Error) Is(target error) bool { return target == ErrInvalid }

func formatDiag(d *hcl.Diagnostic) string {
	msg := lowerFirst(d.Summary)
	if d.Detail != "" {
		msg += ": " + d.Detail
	}
	if d.Subject == nil {
		return msg
	}
	return fmt.Sprintf("%s:%d:%d: %s", d.Subject.Filename, d.Subject.Start.Line, d.Subject.Start.Column, msg)
}

func lowerFirst(s string) string {
	if s == "" {
		return s
	}
	// Summaries are ASCII English ("Unsupported argument").
	if s[0] >= 'A' && s[0] <= 'Z' && (len(s) == 1 || !(s[1] >= 'A' && s[1] <= 'Z')) {
		return string(s[0]+'a'-'A') + s[1:]
	}
	return s
}

// Default returns a Config with every default filled in.
func Default() *Config {
	c := base()
	c.deriveDefaults()
	return c
}

// base is the defaults that do not depend on other settings.
func base() *Config {
	return &Config{
		DataDir:          DefaultDataDir,
		Listen:           DefaultListen,
		AdminSocket:      DefaultAdminSocket,
		LogLevel:         DefaultLogLevel,
		MetricsListen:    DefaultMetricsListen,
		Dashboard:        Dashboard{PAMService: "hotdesk-admin", SessionTTL: 8 * time.Hour},
		EventHookTimeout: 10 * time.Second,
		Etcd: Etcd{
			LeaseTTL:    5 * time.Second,
			DialTimeout: 5 * time.Second,
			Prefix:      DefaultEtcdPrefix,
			Embedded: EmbeddedEtcd{
				ClientURL: DefaultEmbeddedClientURL,
				PeerURL:   DefaultEmbeddedPeerURL,
			},
		},
		Session: Session{
			SuspendTimeout: 24 * time.Hour,
			Auth:           "card+pin",
			MaxSessions:    DefaultMaxSessions,
			KeepOnStop:     true,
		},
		Auth: Auth{
			PAMService:      "hotdesk",
			PINService:      "hotdesk-pin",
			OpenSession:     true,
			Timeout:         2 * time.Minute,
			ReauthOnHotdesk: true,
			MaxFailures:     5,
			FailureWindow:   15 * time.Minute,
			Lockout:         30 * time.Second,
			MaxLockout:      15 * time.Minute,
		},
		Compositor: Compositor{
			Type:         "weston",
			Binary:       "weston",
			Backend:      "headless",
			StartTimeout: 10 * time.Second,
			StopGrace:    5 * time.Second,
			RunAsUser:    true,

			KioskAccountPrefix: "hdkiosk",
			KioskAccounts:      256,
		},
		Limits: DefaultLimits(),
		Pairing: Pairing{
			CodeTTL:       10 * time.Minute,
			MaxFailures:   5,
			FailureWindow: 15 * time.Minute,
			Lockout:       15 * time.Minute,
		},
	}
}

// DefaultLimits returns the default limits block.
func DefaultLimits() Limits {
	return Limits{
		MaxConnections:              1024,
		MaxConnectionsPerSource:     64,
		MaxUnauthenticated:          128,
		HandshakeTimeout:            10 * time.Second,
		MaxPendingLogins:            64,
		MaxPendingLoginsPerSource:   8,
		MaxPendingLoginsPerUser:     2,
		MaxPendingLoginsPerTerminal: 1,
		MaxTicketsPerSession:        4,
	}
}

// deriveDefaults fills the settings whose defaults depend on others, where
// they are empty.
func (c *Config) deriveDefaults() {
	if c.ServerID == "" {
		c.ServerID = hostname()
	}
	if c.Advertise == "" {
		c.Advertise = deriveAdvertise(c.Listen)
	}
	if c.TLS.CertFile == "" {
		c.TLS.CertFile = filepath.Join(c.DataDir, "tls", "server.crt")
	}
	if c.TLS.KeyFile == "" {
		c.TLS.KeyFile = filepath.Join(c.DataDir, "tls", "server.key")
	}
	if c.Compositor.StateDir == "" {
		c.Compositor.StateDir = filepath.Join(c.DataDir, "sessions")
	}
}

func hostname() string {
	h, err := os.Hostname()
	if err != nil || h == "" {
		return "localhost"
	}
	return h
}

// deriveAdvertise returns listen with an unspecified host replaced by the
// hostname; an unparsable listen is returned unchanged (Validate reports it).
func deriveAdvertise(listen string) string {
	host, port, err := net.SplitHostPort(listen)
	if err != nil {
		return listen
	}
	if host == "" || host == "0.0.0.0" || host == "::" {
		host = hostname()
	}
	return net.JoinHostPort(host, port)
}

// UsesEmbeddedEtcd reports whether no endpoints are configured, i.e. the
// daemon runs an embedded single etcd member in <data_dir>/etcd.
func (c *Config) UsesEmbeddedEtcd() bool { return len(c.Etcd.Endpoints) == 0 }

// Load reads, parses and validates the configuration file at path. Relative
// paths in it are resolved against the file's directory.
func Load(path string) (*Config, error) {
	c, _, err := LoadWithPositions(path)
	return c, err
}

// Positions tells where a configuration file sets each setting, for the
// errors of CheckHost. The zero value (or nil) knows no position.
type Positions struct{ rg ranges }

// LoadWithPositions is Load that also returns where the file sets each
// setting.
func LoadWithPositions(path string) (*Config, *Positions, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, nil, fmt.Errorf("config: load: %w", err)
	}
	defer f.Close()
	src, err := io.ReadAll(io.LimitReader(f, MaxFileSize+1))
	if err != nil {
		return nil, nil, fmt.Errorf("config: load: %w", err)
	}
	if len(src) > MaxFileSize {
		return nil, nil, &Error{Diagnostics: hcl.Diagnostics{{
			Severity: hcl.DiagError,
			Summary:  "Configuration file too large",
			Detail:   fmt.Sprintf("The file is larger than %d bytes.", MaxFileSize),
			Subject:  &hcl.Range{Filename: path, Start: hcl.InitialPos, End: hcl.InitialPos},
		}}}
	}
	dir, err := filepath.Abs(filepath.Dir(path))
	if err != nil {
		return nil, nil, fmt.Errorf("config: load: %w", err)
	}
	c, rg, err := parse(src, path, dir)
	if err != nil {
		return nil, nil, err
	}
	return c, &Positions{rg: rg}, nil
}

// Parse parses and validates configuration source; filename is used in
// error positions and relative paths are joined to filepath.Dir(filename).
func Parse(src []byte, filename string) (*Config, error) {
	c, _, err := parse(src, filename, filepath.Dir(filename))
	return c, err
}

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
	HandshakeTimeout            string `hcl:"handshake_timeout,optional"`
	MaxPendingLogins            int    `hcl:"max_pending_logins,optional"`
	MaxPendingLoginsPerSource   int    `hcl:"max_pending_logins_per_source,optional"`
	MaxPendingLoginsPerUser     int    `hcl:"max_pending_logins_per_user,optional"`
	MaxPendingLoginsPerTerminal int    `hcl:"max_pending_logins_per_terminal,optional"`
	MaxTicketsPerSession        int    `hcl:"max_tickets_per_session,optional"`
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
	Auth           string `hcl:"auth,optional"`
	KioskUser      string `hcl:"kiosk_user,optional"`
	MaxSessions    int    `hcl:"max_sessions,optional"`
	KeepOnStop     bool   `hcl:"keep_on_stop,optional"`
}

type rawAuth struct {
	PAMService         string          `hcl:"pam_service,optional"`
	PINService         string          `hcl:"pin_service,optional"`
	PAMDir             string          `hcl:"pam_dir,optional"`
	OpenSession        bool            `hcl:"open_session,optional"`
	Timeout            string          `hcl:"timeout,optional"`
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
		Session: &rawSession{SuspendTimeout: d.Session.SuspendTimeout.String(), Auth: d.Session.Auth, KeepOnStop: d.Session.KeepOnStop,
			MaxSessions: d.Session.MaxSessions},
		Auth: &rawAuth{
			PAMService: d.Auth.PAMService, PINService: d.Auth.PINService, OpenSession: d.Auth.OpenSession,
			Timeout: d.Auth.Timeout.String(), ReauthOnHotdesk: d.Auth.ReauthOnHotdesk,
			MaxFailures: d.Auth.MaxFailures, FailureWindow: d.Auth.FailureWindow.String(),
			Lockout: d.Auth.Lockout.String(), MaxLockout: d.Auth.MaxLockout.String(),
		},
		Compositor: &rawCompositor{
			Type: d.Compositor.Type, Binary: d.Compositor.Binary, Backend: d.Compositor.Backend,
			StartTimeout: d.Compositor.StartTimeout.String(), StopGrace: d.Compositor.StopGrace.String(),
			RunAsUser: d.Compositor.RunAsUser, KioskAccountPrefix: d.Compositor.KioskAccountPrefix,
			KioskAccounts: d.Compositor.KioskAccounts,
		},
		Limits: &rawLimits{
			MaxConnections: d.Limits.MaxConnections, MaxConnectionsPerSource: d.Limits.MaxConnectionsPerSource,
			MaxUnauthenticated: d.Limits.MaxUnauthenticated, HandshakeTimeout: d.Limits.HandshakeTimeout.String(),
			MaxPendingLogins: d.Limits.MaxPendingLogins, MaxPendingLoginsPerSource: d.Limits.MaxPendingLoginsPerSource,
			MaxPendingLoginsPerUser: d.Limits.MaxPendingLoginsPerUser, MaxPendingLoginsPerTerminal: d.Limits.MaxPendingLoginsPerTerminal,
			MaxTicketsPerSession: d.Limits.MaxTicketsPerSession,
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
			Auth:           raw.Session.Auth,
			KioskUser:      raw.Session.KioskUser,
			MaxSessions:    raw.Session.MaxSessions,
			KeepOnStop:     raw.Session.KeepOnStop,
		},
		Auth: Auth{
			PAMService:         raw.Auth.PAMService,
			PINService:         raw.Auth.PINService,
			PAMDir:             resolve(dir, raw.Auth.PAMDir),
			OpenSession:        raw.Auth.OpenSession,
			Timeout:            dur("auth.timeout", raw.Auth.Timeout),
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
			InsecureAllowRoot:  raw.Compositor.InsecureAllowRoot,

			InsecureUnguardedRDP: raw.Compositor.InsecureUnguardedRDP,
		},
		Limits: Limits{
			MaxConnections:              raw.Limits.MaxConnections,
			MaxConnectionsPerSource:     raw.Limits.MaxConnectionsPerSource,
			MaxUnauthenticated:          raw.Limits.MaxUnauthenticated,
			HandshakeTimeout:            dur("limits.handshake_timeout", raw.Limits.HandshakeTimeout),
			MaxPendingLogins:            raw.Limits.MaxPendingLogins,
			MaxPendingLoginsPerSource:   raw.Limits.MaxPendingLoginsPerSource,
			MaxPendingLoginsPerUser:     raw.Limits.MaxPendingLoginsPerUser,
			MaxPendingLoginsPerTerminal: raw.Limits.MaxPendingLoginsPerTerminal,
			MaxTicketsPerSession:        raw.Limits.MaxTicketsPerSession,
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
	if c.DataDir != "" {
		c.deriveDefaults()
	}
	if err := c.validate(rg); err != nil {
		return nil, nil, err
	}
	return c, rg, nil
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

// Validate checks the settings and their combinations. Its error is an
// *Error; for a Config that did not come from a file the problems carry no
// position. Load and Parse validate already.
func (c *Config) Validate() error { return c.validate(nil) }

func (c *Config) validate(rg ranges) error {
	var diags hcl.Diagnostics
	bad := func(key, summary, format string, args ...any) {
		diags = append(diags, &hcl.Diagnostic{
			Severity: hcl.DiagError,
			Summary:  summary,
			Detail:   key + ": " + fmt.Sprintf(format, args...),
			Subject:  rg.ptr(key),
		})
	}
	oneOf := func(key, summary, v string, allowed []string) {
		if !slices.Contains(allowed, v) {
			bad(key, summary, "%q is not one of %s.", v, strings.Join(allowed, ", "))
		}
	}
	positive := func(key string, d time.Duration) {
		if d <= 0 {
			bad(key, "Invalid duration", "must be greater than zero, got %s.", d)
		}
	}

	if c.DataDir == "" {
		// Every path default derives from it: checking them would only
		// report keys the file never set.
		bad("data_dir", "Missing data directory", "must not be empty.")
		return &Error{Diagnostics: diags}
	}
	if !serverIDRe.MatchString(c.ServerID) {
		bad("server_id", "Invalid server id", "%q must be 1-253 characters of letters, digits, '.', '_' and '-', starting with a letter or digit.", c.ServerID)
	}
	listenErr := checkHostPort(c.Listen, true)
	if listenErr != nil {
		bad("listen", "Invalid listen address", "%q: %v.", c.Listen, listenErr)
	}
	// An advertise derived from a bad listen would repeat the listen error.
	_, advertiseSet := rg["advertise"]
	if listenErr == nil || advertiseSet || (rg == nil && c.Advertise != c.Listen) {
		if err := checkHostPort(c.Advertise, false); err != nil {
			bad("advertise", "Invalid advertise address", "%q: %v.", c.Advertise, err)
		}
	}
	if c.AttachListen != "" {
		if err := checkHostPort(c.AttachListen, true); err != nil {
			bad("attach_listen", "Invalid attach listen address", "%q: %v.", c.AttachListen, err)
		}
	}
	if c.MetricsListen != "off" {
		if err := checkHostPort(c.MetricsListen, true); err != nil {
			bad("metrics_listen", "Invalid metrics listen address", "%q: %v (or \"off\").", c.MetricsListen, err)
		}
	}
	if c.Dashboard.Listen != "" {
		if err := checkHostPort(c.Dashboard.Listen, true); err != nil {
			bad("dashboard.listen", "Invalid dashboard listen address", "%q: %v.", c.Dashboard.Listen, err)
		}
		if c.AdminGroup == "" {
			bad("dashboard.listen", "Dashboard without an admin group", "the dashboard needs admin_group: only its members may act.")
		}
		if (c.Dashboard.CertFile == "") != (c.Dashboard.KeyFile == "") {
			bad("dashboard.cert_file", "Incomplete dashboard certificate", "set both cert_file and key_file, or neither (the broker's certificate is used).")
		}
		if c.Dashboard.PAMService == "" || strings.ContainsAny(c.Dashboard.PAMService, "/ \t") {
			bad("dashboard.pam_service", "Invalid PAM service", "%q is not a PAM service name.", c.Dashboard.PAMService)
		}
		positive("dashboard.session_ttl", c.Dashboard.SessionTTL)
	}
	for _, cf := range c.listenerConflicts() {
		// At the later listener, unless only the earlier one is in the file.
		if _, set := rg[cf.key]; !set && rg != nil {
			if _, otherSet := rg[cf.otherKey]; otherSet {
				cf = listenerConflict{key: cf.otherKey, addr: cf.otherAddr, otherKey: cf.key, otherAddr: cf.addr}
			}
		}
		bad(cf.key, "Address already used", "%q is also %s (%q): every listener needs an address of its own; change one of them.", cf.addr, cf.otherKey, cf.otherAddr)
	}
	if c.EventHook != "" && !filepath.IsAbs(c.EventHook) {
		bad("event_hook", "Invalid event hook", "%q must be an absolute path.", c.EventHook)
	}
	if c.AdminSocket == "" {
		bad("admin_socket", "Missing admin socket", "must not be empty.")
	}
	if strings.ContainsAny(c.AdminGroup, " \t\n:/") {
		bad("admin_group", "Invalid admin group", "%q is not a group name.", c.AdminGroup)
	}
	oneOf("log_level", "Invalid log level", c.LogLevel, logLevels)

	if (c.TLS.CertFile == "") != (c.TLS.KeyFile == "") {
		bad("tls.cert_file", "Incomplete TLS settings", "cert_file and key_file must be set together.")
	}

	e := c.Etcd
	for i, ep := range e.Endpoints {
		if err := checkEndpoint(ep); err != nil {
			bad("etcd.endpoints", "Invalid etcd endpoint", "endpoint %d %q: %v.", i, ep, err)
		}
	}
	if e.LeaseTTL < MinLeaseTTL || e.LeaseTTL > MaxLeaseTTL {
		bad("etcd.lease_ttl", "Invalid duration", "must be between %s and %s, got %s.", MinLeaseTTL, MaxLeaseTTL, e.LeaseTTL)
	}
	positive("etcd.dial_timeout", e.DialTimeout)
	if len(e.Prefix) < 2 || !strings.HasPrefix(e.Prefix, "/") || !strings.HasSuffix(e.Prefix, "/") {
		bad("etcd.prefix", "Invalid etcd prefix", "%q must start and end with \"/\" and not be \"/\" alone.", e.Prefix)
	}
	if (e.CertFile == "") != (e.KeyFile == "") {
		bad("etcd.cert_file", "Incomplete etcd TLS settings", "cert_file and key_file must be set together.")
	}
	if (e.CAFile != "" || e.CertFile != "") && len(e.Endpoints) == 0 {
		bad("etcd.endpoints", "Etcd TLS without endpoints", "ca_file, cert_file and key_file are for a real cluster; set endpoints too.")
	}
	if len(e.Endpoints) == 0 {
		for key, u := range map[string]string{"etcd.embedded.client_url": e.Embedded.ClientURL, "etcd.embedded.peer_url": e.Embedded.PeerURL} {
			if err := checkURL(u); err != nil {
				bad(key, "Invalid embedded etcd URL", "%q: %v.", u, err)
			} else if err := checkLoopbackURL(u); err != nil {
				bad(key, "Embedded etcd not on loopback", "%q: %v; the embedded member is for this host only (a group uses endpoints).", u, err)
			}
		}
	}

	positive("session.suspend_timeout", c.Session.SuspendTimeout)
	oneOf("session.auth", "Unknown auth policy", c.Session.Auth, authPolicies)
	if c.Session.MaxSessions < 0 {
		bad("session.max_sessions", "Invalid session limit", "must be 0 (unlimited) or more, got %d.", c.Session.MaxSessions)
	}

	a := c.Auth
	if a.PAMService == "" || strings.ContainsAny(a.PAMService, "/ ") {
		bad("auth.pam_service", "Invalid PAM service", "%q is not a service name.", a.PAMService)
	}
	if a.PINService == "" || strings.ContainsAny(a.PINService, "/ ") {
		bad("auth.pin_service", "Invalid PAM service", "%q is not a service name.", a.PINService)
	}
	positive("auth.timeout", a.Timeout)
	positive("auth.failure_window", a.FailureWindow)
	positive("auth.lockout", a.Lockout)
	if a.MaxLockout < a.Lockout {
		bad("auth.max_lockout", "Invalid duration", "must be at least lockout (%s), got %s.", a.Lockout, a.MaxLockout)
	}
	if a.MaxFailures < 1 {
		bad("auth.max_failures", "Invalid failure limit", "must be at least 1, got %d.", a.MaxFailures)
	}
	if a.MaxSessionsPerUser < 0 {
		bad("auth.max_sessions_per_user", "Invalid session limit", "must be 0 (unlimited) or more, got %d.", a.MaxSessionsPerUser)
	}
	for _, r := range a.Rules {
		oneOf("auth.policy.auth", "Unknown auth policy", r.Auth, authPolicies)
		if len(r.Tokens)+len(r.Users)+len(r.Groups) == 0 {
			bad("auth.policy", "Empty policy", "a policy block names no tokens, users or groups.")
		}
		if r.MaxSessions < 0 {
			bad("auth.policy.max_sessions", "Invalid session limit", "must be 0 or more, got %d.", r.MaxSessions)
		}
	}

	seen := map[string]bool{}
	for _, st := range c.Seats {
		if !seatNameRe.MatchString(st.Name) || seen[st.Name] {
			bad("seat", "Invalid seat", "seat %q: names are 1-64 letters, digits, '_' and '-', each used once.", st.Name)
		}
		seen[st.Name] = true
		if st.RemoveGrace < 0 {
			bad("seat.remove_grace", "Invalid duration", "must not be negative, got %s.", st.RemoveGrace)
		}
	}

	oneOf("compositor.type", "Unknown compositor type", c.Compositor.Type, compositorTypes)
	if c.Compositor.Type == "weston" {
		oneOf("compositor.backend", "Unknown compositor backend", c.Compositor.Backend, westonBackends)
	}
	if c.Compositor.Binary == "" {
		bad("compositor.binary", "Missing compositor binary", "must not be empty.")
	}
	if c.Compositor.StateDir == "" {
		bad("compositor.state_dir", "Missing compositor state directory", "must not be empty.")
	}
	positive("compositor.start_timeout", c.Compositor.StartTimeout)
	if c.Compositor.StopGrace < 0 {
		bad("compositor.stop_grace", "Invalid duration", "must not be negative, got %s.", c.Compositor.StopGrace)
	}

	if c.Compositor.KioskAccounts < 1 {
		bad("compositor.kiosk_accounts", "Invalid account pool", "must be at least 1, got %d.", c.Compositor.KioskAccounts)
	}
	if !kioskPrefixRe.MatchString(c.Compositor.KioskAccountPrefix) {
		bad("compositor.kiosk_account_prefix", "Invalid account prefix", "%q must be 1-20 lower-case letters, digits, '_' or '-', starting with a letter.", c.Compositor.KioskAccountPrefix)
	}

	l := c.Limits
	for key, v := range map[string]int{
		"limits.max_connections": l.MaxConnections, "limits.max_connections_per_source": l.MaxConnectionsPerSource,
		"limits.max_unauthenticated": l.MaxUnauthenticated, "limits.max_pending_logins": l.MaxPendingLogins,
		"limits.max_pending_logins_per_source": l.MaxPendingLoginsPerSource, "limits.max_pending_logins_per_user": l.MaxPendingLoginsPerUser,
		"limits.max_pending_logins_per_terminal": l.MaxPendingLoginsPerTerminal, "limits.max_tickets_per_session": l.MaxTicketsPerSession,
	} {
		if v < 1 {
			bad(key, "Invalid limit", "must be at least 1, got %d.", v)
		}
	}
	positive("limits.handshake_timeout", l.HandshakeTimeout)

	positive("pairing.code_ttl", c.Pairing.CodeTTL)
	if c.Pairing.MaxFailures < 1 {
		bad("pairing.max_failures", "Invalid failure limit", "must be at least 1, got %d.", c.Pairing.MaxFailures)
	}
	positive("pairing.failure_window", c.Pairing.FailureWindow)
	positive("pairing.lockout", c.Pairing.Lockout)

	if diags.HasErrors() {
		return &Error{Diagnostics: diags}
	}
	return nil
}

// listenerConflict is a listener whose address overlaps an earlier one's.
type listenerConflict struct{ key, addr, otherKey, otherAddr string }

// listenerConflicts returns the listeners that would bind an address
// another listener of the daemon binds first (its bind would fail with
// "address already in use"): the same port on the same host, or on any
// host when either listens on every address. Port 0 (any free port) never
// conflicts; addresses that do not parse are reported elsewhere.
// metrics_listen at its default is left out: the daemon runs without it
// when its port is taken.
func (c *Config) listenerConflicts() []listenerConflict {
	type listener struct{ key, addr string }
	ls := []listener{{"listen", c.Listen}, {"attach_listen", c.AttachListen}}
	if c.MetricsListen != "off" && c.MetricsListen != DefaultMetricsListen {
		ls = append(ls, listener{"metrics_listen", c.MetricsListen})
	}
	ls = append(ls, listener{"dashboard.listen", c.Dashboard.Listen})
	if c.UsesEmbeddedEtcd() {
		for _, l := range []listener{{"etcd.embedded.client_url", c.Etcd.Embedded.ClientURL}, {"etcd.embedded.peer_url", c.Etcd.Embedded.PeerURL}} {
			if u, err := url.Parse(l.addr); err == nil && u.Host != "" {
				ls = append(ls, listener{l.key, u.Host})
			}
		}
	}
	var out []listenerConflict
	for i, l := range ls {
		for _, o := range ls[:i] {
			if overlaps(l.addr, o.addr) {
				out = append(out, listenerConflict{key: l.key, addr: l.addr, otherKey: o.key, otherAddr: o.addr})
				break
			}
		}
	}
	return out
}

// overlaps reports whether binding a and b (host:port) would collide.
func overlaps(a, b string) bool {
	ha, pa, err1 := net.SplitHostPort(a)
	hb, pb, err2 := net.SplitHostPort(b)
	if err1 != nil || err2 != nil || pa != pb {
		return false
	}
	if n, err := strconv.Atoi(pa); err != nil || n == 0 {
		return false
	}
	// "" and "::" take every address of both families; 0.0.0.0 every
	// IPv4 address.
	v6 := func(h string) bool { ip := net.ParseIP(h); return ip != nil && ip.To4() == nil }
	for _, p := range [][2]string{{ha, hb}, {hb, ha}} {
		switch p[0] {
		case "", "::":
			return true
		case "0.0.0.0":
			return !v6(p[1])
		}
	}
	canon := func(h string) string {
		if h == "localhost" {
			return "127.0.0.1"
		}
		if ip := net.ParseIP(h); ip != nil {
			return ip.String()
		}
		return strings.ToLower(h)
	}
	return canon(ha) == canon(hb)
}

// checkHostPort checks a host:port; the host may be empty only if
// emptyHostOK (listen on every address), the port is 0-65535.
func checkHostPort(s string, emptyHostOK bool) error {
	host, port, err := net.SplitHostPort(s)
	if err != nil {
		var ae *net.AddrError
		if errors.As(err, &ae) {
			return errors.New(ae.Err)
		}
		return err
	}
	if host == "" && !emptyHostOK {
		return errors.New("missing host")
	}
	n, err := strconv.Atoi(port)
	if err != nil || n < 0 || n > 65535 {
		return fmt.Errorf("invalid port %q", port)
	}
	return nil
}

// checkEndpoint accepts an etcd client endpoint: http(s)://host:port or
// host:port.
func checkEndpoint(s string) error {
	if strings.Contains(s, "://") {
		return checkURL(s)
	}
	return checkHostPort(s, false)
}

func checkURL(s string) error {
	u, err := url.Parse(s)
	if err != nil {
		return errors.New("not a URL")
	}
	if u.Scheme != "http" && u.Scheme != "https" {
		return errors.New("scheme must be http or https")
	}
	if u.Path != "" && u.Path != "/" || u.RawQuery != "" || u.User != nil {
		return errors.New("only scheme://host:port is allowed")
	}
	return checkHostPort(u.Host, false)
}

// checkLoopbackURL accepts a URL whose host is a loopback address or
// "localhost".
func checkLoopbackURL(s string) error {
	u, err := url.Parse(s)
	if err != nil {
		return err
	}
	host := u.Hostname()
	if host == "localhost" {
		return nil
	}
	if ip := net.ParseIP(host); ip != nil && ip.IsLoopback() {
		return nil
	}
	return fmt.Errorf("host %q is not a loopback address", host)
}

// Warnings returns what a valid configuration exposes that a security
// reviewer would want to hear about: plaintext or unauthenticated etcd
// endpoints, desktops as the daemon's user, login policies without a
// login. hotdeskd -check prints them and hotdeskd logs them at start.
func (c *Config) Warnings() []string {
	var w []string
	e := c.Etcd
	for _, ep := range e.Endpoints {
		if !strings.HasPrefix(ep, "https://") {
			w = append(w, fmt.Sprintf("etcd endpoint %q is plaintext: anyone on the path can read and rewrite every token and session record; use https:// with ca_file, cert_file and key_file", ep))
		}
	}
	if len(e.Endpoints) > 0 && e.CertFile == "" {
		w = append(w, "etcd has no client certificate (cert_file/key_file): the cluster cannot tell this broker from anyone else who reaches it; use mTLS")
	}
	if len(e.Endpoints) > 0 && e.CAFile == "" {
		w = append(w, "etcd has no ca_file: the cluster's certificates are checked against the system roots only")
	}
	if !c.Compositor.RunAsUser {
		if c.Compositor.InsecureAllowRoot {
			w = append(w, "compositor.insecure_allow_root = true with run_as_user = false: desktops run as hotdeskd's user, root if it runs as root; every user gets a root shell")
		} else {
			w = append(w, "compositor.run_as_user = false: desktops run as hotdeskd's user (refused when that is root)")
		}
	}
	if c.Compositor.Type == "weston" && c.Compositor.Backend == "rdp" && c.Compositor.InsecureUnguardedRDP {
		w = append(w, "compositor.insecure_unguarded_rdp = true: every desktop's RDP port is open to every local user, and weston asks an RDP client for no password: any local user can use any desktop; remove it and install nftables")
	}
	kinds := []string{c.Session.Auth}
	for _, r := range c.Auth.Rules {
		kinds = append(kinds, r.Auth)
	}
	if slices.Contains(kinds, "kiosk") {
		w = append(w, "a kiosk policy is configured: every token it covers gets a desktop without a login (as the token's registered user, kiosk_user, or a pooled kiosk account)")
	}
	if c.Session.MaxSessions == 0 {
		w = append(w, "session.max_sessions = 0: no cap on desktops; every token can start one")
	}
	return w
}

// Host is what CheckHost asks of the machine the daemon runs on. A nil
// field takes the system's.
type Host struct {
	// LookupGroup returns an error when the group does not exist; default
	// os/user.LookupGroup (NSS), as the daemon resolves it.
	LookupGroup func(name string) error
	// PAMDirs are where libpam looks for a service's file when auth.pam_dir
	// is not set; default DefaultPAMDirs.
	PAMDirs []string
}

// DefaultPAMDirs are the system's PAM service directories: the
// administrator's, then the vendor's (Linux-PAM built with a vendordir).
var DefaultPAMDirs = []string{"/etc/pam.d", "/usr/lib/pam.d"}

func (h Host) lookupGroup(name string) error {
	if h.LookupGroup != nil {
		return h.LookupGroup(name)
	}
	_, err := user.LookupGroup(name)
	return err
}

// CheckHost checks what a valid configuration names on this host, so that
// hotdeskd -check (and a start, before anything is started) refuses what
// would fail later: admin_group and dashboard.readonly_group must exist,
// etcd.ca_file must hold a PEM certificate and etcd.cert_file and key_file
// must be a readable, matching key pair. Its error is an *Error whose
// problems carry the offending key's position when pos (from
// LoadWithPositions) knows it.
func (c *Config) CheckHost(pos *Positions, h Host) error {
	var rg ranges
	if pos != nil {
		rg = pos.rg
	}
	var diags hcl.Diagnostics
	group := func(key, name string) {
		if name == "" {
			return
		}
		if err := h.lookupGroup(name); err != nil {
			var unknown user.UnknownGroupError
			detail := fmt.Sprintf("%s: group %q does not exist on this host; create it (groupadd %s) or name another.", key, name, name)
			if !errors.As(err, &unknown) {
				detail = fmt.Sprintf("%s: group %q cannot be looked up: %v.", key, name, err)
			}
			diags = append(diags, &hcl.Diagnostic{Severity: hcl.DiagError, Summary: "Unknown group", Detail: detail, Subject: rg.ptr(key)})
		}
	}
	group("admin_group", c.AdminGroup)
	group("dashboard.readonly_group", c.Dashboard.ReadOnlyGroup)
	if e := c.Etcd; len(e.Endpoints) > 0 {
		if e.CAFile != "" {
			if err := checkCAFile(e.CAFile); err != nil {
				diags = append(diags, &hcl.Diagnostic{Severity: hcl.DiagError, Summary: "Unusable etcd CA file",
					Detail: fmt.Sprintf("etcd.ca_file: %v.", err), Subject: rg.ptr("etcd.ca_file")})
			}
		}
		if e.CertFile != "" {
			if _, err := tls.LoadX509KeyPair(e.CertFile, e.KeyFile); err != nil {
				diags = append(diags, &hcl.Diagnostic{Severity: hcl.DiagError, Summary: "Unusable etcd client certificate",
					Detail: fmt.Sprintf("etcd.cert_file and key_file (%s, %s): %v.", e.CertFile, e.KeyFile, err), Subject: rg.ptr("etcd.cert_file")})
			}
		}
	}
	if diags.HasErrors() {
		return &Error{Diagnostics: diags}
	}
	return nil
}

// checkCAFile reads a CA file as the daemon's etcd client does: it must
// hold at least one PEM certificate.
func checkCAFile(path string) error {
	pem, err := os.ReadFile(path)
	if err != nil {
		return err
	}
	if !x509.NewCertPool().AppendCertsFromPEM(pem) {
		return fmt.Errorf("%s holds no PEM certificate", path)
	}
	return nil
}

// PAMService is a PAM service the configuration uses, with the setting
// that names it.
type PAMService struct {
	Key, Service, UsedBy string
}

// PAMServices returns the PAM services the configured login policies and
// the dashboard use, each once (kiosk and card policies use none).
func (c *Config) PAMServices() []PAMService {
	var out []PAMService
	add := func(key, service, usedBy string) {
		for _, s := range out {
			if s.Service == service {
				return
			}
		}
		out = append(out, PAMService{Key: key, Service: service, UsedBy: usedBy})
	}
	policy := func(kind, service, usedBy string) {
		switch {
		case kind == "kiosk" || kind == "card":
		case service != "":
			add("auth.policy.service", service, usedBy)
		case kind == "card+pin":
			add("auth.pin_service", c.Auth.PINService, usedBy)
		default:
			add("auth.pam_service", c.Auth.PAMService, usedBy)
		}
	}
	policy(c.Session.Auth, "", "the "+c.Session.Auth+" login policy (session.auth)")
	for _, r := range c.Auth.Rules {
		policy(r.Auth, r.Service, "an auth.policy block ("+r.Auth+")")
	}
	if c.Dashboard.Listen != "" {
		add("dashboard.pam_service", c.Dashboard.PAMService, "the dashboard's logins")
	}
	return out
}

// HostWarnings returns what this host lacks for the configuration to work
// as meant: an etcd key file others may read, a PAM service without a
// file, which libpam silently replaces with the "other" service (on Debian
// the Unix password: a "PIN" would be the user's password). hotdeskd -check
// prints them and hotdeskd logs them at start.
func (c *Config) HostWarnings(h Host) []string {
	dirs := h.PAMDirs
	if dirs == nil {
		dirs = DefaultPAMDirs
	}
	if c.Auth.PAMDir != "" {
		dirs = []string{c.Auth.PAMDir} // pam_start_confdir reads only it
	}
	var w []string
	if k := c.Etcd.KeyFile; len(c.Etcd.Endpoints) > 0 && k != "" {
		if fi, err := os.Stat(k); err == nil && fi.Mode().Perm()&0o077 != 0 {
			w = append(w, fmt.Sprintf("etcd.key_file %s is readable or writable by others than its owner (mode %04o): whoever reads it is this broker to etcd; chmod 600 %s",
				k, fi.Mode().Perm(), k))
		}
	}
	for _, s := range c.PAMServices() {
		found := false
		for _, d := range dirs {
			if _, err := os.Stat(filepath.Join(d, s.Service)); err == nil {
				found = true
				break
			}
		}
		if !found {
			w = append(w, fmt.Sprintf("PAM service %q (%s, used by %s) has no file %s: libpam falls back to %s (on Debian the Unix password); install %s (hotdesk ships one) or name an existing service",
				s.Service, s.Key, s.UsedBy, filepath.Join(dirs[0], s.Service), filepath.Join(dirs[0], "other"), filepath.Join(dirs[0], s.Service)))
		}
	}
	return w
}
