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
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"time"

	"github.com/hashicorp/hcl/v2"
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

// MaxLockoutBound bounds auth.max_lockout: lockouts are stored under
// leases that long, and the back-off doubles up to it.
const MaxLockoutBound = 30 * 24 * time.Hour

// DefaultReconnectGrace is session.reconnect_grace by default: a link
// that drops, a terminal that restarts, comes back well within it.
// MaxReconnectGrace bounds it.
const (
	DefaultReconnectGrace = 30 * time.Second
	MaxReconnectGrace     = 10 * time.Minute
)

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
	// notes are the values of the file taken otherwise than written, so
	// that a configuration of an earlier release still loads
	// (boundLockouts); HostWarnings says them.
	notes []string
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
	// MaxUnauthenticatedPerSource bounds them per source address (an IPv6
	// /64 counts as one); default 16.
	MaxUnauthenticatedPerSource int // max_unauthenticated_per_source
	// HandshakeTimeout bounds the TLS handshake plus the first message.
	HandshakeTimeout time.Duration // handshake_timeout; default 10s
	// Logins waiting in PAM (prompts included): in all, per source address
	// (an IPv6 /64 counts as one), per user and per terminal.
	MaxPendingLogins            int // max_pending_logins; default 64
	MaxPendingLoginsPerSource   int // max_pending_logins_per_source; default 8
	MaxPendingLoginsPerUser     int // max_pending_logins_per_user; default 2
	MaxPendingLoginsPerTerminal int // max_pending_logins_per_terminal; default 1
	// MaxTicketsPerSession bounds outstanding attach tickets of a session
	// (the oldest is revoked first); default 4.
	MaxTicketsPerSession int // max_tickets_per_session
	// TokenEventsPerSecond bounds the token insertions and pairings one
	// terminal connection may send per second (bursts of twice as many);
	// default 50.
	TokenEventsPerSecond int // token_events_per_second
}

// MaxWeight bounds session.weight.
const MaxWeight = 1000

// MaxTokenEventsPerSecond bounds limits.token_events_per_second: far above
// what any terminal sends, and small enough that its bursts (twice as many)
// stay a sane integer.
const MaxTokenEventsPerSecond = 10000

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
	// ReconnectGrace (reconnect_grace; default 30s, "0s": none) is how
	// long a terminal whose connection was lost while it showed a session
	// may come back (its id and the session's resume key) and resume it
	// with the token alone, whatever reauth_on_hotdesk says.
	ReconnectGrace time.Duration
	Auth           string // auth: default login policy: kiosk|card|card+pin|card+password|password
	KioskUser      string // kiosk_user: local user of kiosk sessions; "" = the token's user
	MaxSessions    int    // max_sessions on this server; 0 = unlimited
	// Weight is this server's share of new sessions in its group: the
	// group places a new session on the member with the fewest sessions
	// per unit of weight (a server of weight 2 takes twice as many as one
	// of weight 1). Default 1.
	Weight int // weight
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
	// MaxUserTasks is the RLIMIT_NPROC of each desktop run as its user:
	// the tasks (processes and threads) that user may have in all; 0: no
	// limit. One user's fork bomb then cannot take every task of
	// hotdeskd's service, which all desktops share.
	MaxUserTasks int // max_user_tasks; default 4096
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
	PromptTimeout      time.Duration // prompt_timeout: for the answer to one prompt; default 1m (Timeout if shorter), at most Timeout
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
			ReconnectGrace: DefaultReconnectGrace,
			Auth:           "card+pin",
			MaxSessions:    DefaultMaxSessions,
			Weight:         1,
			KeepOnStop:     true,
		},
		Auth: Auth{
			PAMService:      "hotdesk",
			PINService:      "hotdesk-pin",
			OpenSession:     true,
			Timeout:         2 * time.Minute,
			PromptTimeout:   time.Minute,
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
			MaxUserTasks:       4096,
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
		MaxUnauthenticatedPerSource: 16,
		HandshakeTimeout:            10 * time.Second,
		MaxPendingLogins:            64,
		MaxPendingLoginsPerSource:   8,
		MaxPendingLoginsPerUser:     2,
		MaxPendingLoginsPerTerminal: 1,
		MaxTicketsPerSession:        4,
		TokenEventsPerSecond:        50,
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

// Validate checks the settings and their combinations. Its error is an
// *Error; for a Config that did not come from a file the problems carry no
// position. Load and Parse validate already.
func (c *Config) Validate() error { return c.validate(nil) }

// DefaultPAMDirs are the system's PAM service directories: the
// administrator's, then the vendor's (Linux-PAM built with a vendordir).
var DefaultPAMDirs = []string{"/etc/pam.d", "/usr/lib/pam.d"}
