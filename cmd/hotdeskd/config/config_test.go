package config

import (
	"bufio"
	"bytes"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/user"
	"path/filepath"
	"reflect"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/hotdesk/hotdesk/internal/pki"
	"github.com/hotdesk/hotdesk/internal/testutil"
)

func mustHostname(t *testing.T) string {
	t.Helper()
	h, err := os.Hostname()
	if err != nil || h == "" {
		return "localhost"
	}
	return h
}

func TestLoadGolden(t *testing.T) {
	t.Parallel()
	host := mustHostname(t)
	testdata, err := filepath.Abs("testdata")
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		file string
		want func() *Config
	}{
		{"full.hcl", func() *Config {
			return &Config{
				ServerID:      "broker-7",
				DataDir:       "/srv/hotdesk",
				Listen:        "10.0.0.7:4600",
				Advertise:     "broker-7.example.org:4600",
				AdminSocket:   "/run/hd/admin.sock",
				AdminGroup:    "hotdesk-admin",
				MetricsListen: "127.0.0.1:9555", EventHook: "/usr/local/lib/hotdesk/on-event", EventHookTimeout: 5 * time.Second,
				Dashboard: Dashboard{Listen: "0.0.0.0:4443", ReadOnlyGroup: "helpdesk", PAMService: "hd-admin", SessionTTL: time.Hour},
				LogLevel:  "debug",
				LogJSON:   true,
				TLS: TLS{
					CertFile: "/etc/hotdesk/tls/broker.crt",
					KeyFile:  "/etc/hotdesk/tls/broker.key",
				},
				Etcd: Etcd{
					Endpoints:   []string{"https://etcd-1:2379", "https://etcd-2:2379", "etcd-3:2379"},
					LeaseTTL:    3 * time.Second,
					DialTimeout: 1500 * time.Millisecond,
					Prefix:      "/hd/prod/",
					CAFile:      "/etc/hotdesk/etcd/ca.crt",
					CertFile:    "/etc/hotdesk/etcd/client.crt",
					KeyFile:     "/etc/hotdesk/etcd/client.key",
					Embedded: EmbeddedEtcd{
						ClientURL: "http://127.0.0.1:12379",
						PeerURL:   "http://127.0.0.1:12380",
					},
				},
				Session: Session{
					SuspendTimeout: 8*time.Hour + 30*time.Minute,
					ReconnectGrace: 2 * time.Minute,
					Auth:           "kiosk",
					KioskUser:      "guest",
					MaxSessions:    50,
					Weight:         3,
					KeepOnStop:     true,
				},
				Compositor: Compositor{
					Type:         "weston",
					Binary:       "/opt/weston/bin/weston",
					Backend:      "rdp",
					Args:         []string{"--idle-time=0", "--width=1920"},
					StateDir:     "/srv/hotdesk/state",
					StartTimeout: 20 * time.Second,
					StopGrace:    0,
					RunAsUser:    true,

					KioskAccountPrefix: "hdkiosk",
					KioskAccounts:      256,
					MaxUserTasks:       4096,
				},
				Limits: DefaultLimits(),
				Pairing: Pairing{
					CodeTTL:       2 * time.Minute,
					MaxFailures:   3,
					FailureWindow: time.Hour,
					Lockout:       30 * time.Minute,
				},
				Auth: Auth{
					PAMService: "hd-login", PINService: "hd-pin", PAMDir: "/etc/hotdesk/pam.d",
					OpenSession: false, Timeout: 45 * time.Second, PromptTimeout: 45 * time.Second, ReauthOnHotdesk: false, SelfRegister: true,
					MaxSessionsPerUser: 2, MaxFailures: 4, FailureWindow: 10 * time.Minute,
					Lockout: time.Minute, MaxLockout: time.Hour,
					Rules: []PolicyRule{
						{Groups: []string{"staff"}, Auth: "card+pin"},
						{Users: []string{"alice", "bob"}, Tokens: []string{"uid.04a1b2c3"}, Auth: "card+password",
							Service: "hd-strict", ReauthOnHotdesk: ptrBool(true), MaxSessions: 1},
					},
				},
			}
		}},
		{"empty.hcl", Default},
		{"partial.hcl", func() *Config {
			c := Default()
			c.DataDir = "/data"
			c.Listen = "127.0.0.1:0"
			c.Advertise = "127.0.0.1:0"
			c.TLS = TLS{CertFile: "/data/tls/server.crt", KeyFile: "/data/tls/server.key"}
			c.Compositor.StateDir = "/data/sessions"
			c.Etcd.LeaseTTL = 10 * time.Second
			c.Session.MaxSessions = 10
			return c
		}},
		{"relative.hcl", func() *Config {
			c := Default()
			c.DataDir = filepath.Join(testdata, "state")
			c.AdminSocket = filepath.Join(testdata, "run/admin.sock")
			c.Listen = "[::]:4500"
			c.Advertise = host + ":4500"
			c.TLS = TLS{CertFile: filepath.Join(testdata, "tls/a.crt"), KeyFile: filepath.Join(filepath.Dir(testdata), "keys/a.key")}
			c.Compositor.Binary = filepath.Join(testdata, "bin/weston")
			c.Compositor.StateDir = filepath.Join(testdata, "state/sessions")
			return c
		}},
	}
	for _, tt := range tests {
		t.Run(tt.file, func(t *testing.T) {
			got, err := Load(filepath.Join("testdata", tt.file))
			if err != nil {
				t.Fatalf("Load: %v", err)
			}
			if want := tt.want(); !reflect.DeepEqual(got, want) {
				t.Errorf("got = %+v; want %+v", got, want)
			}
			if err := got.Validate(); err != nil {
				t.Errorf("Validate() of a loaded config = %v; want nil", err)
			}
		})
	}
}

// The shipped example documents every default: it must load to exactly
// the defaults.
func TestShippedExample(t *testing.T) {
	t.Parallel()
	got, err := Load("../../../configs/hotdesk.hcl")
	if err != nil {
		t.Fatalf("Load: %v", err)
	}
	if want := Default(); !reflect.DeepEqual(got, want) {
		t.Errorf("got = %+v; want %+v", got, want)
	}
}

func TestDefault(t *testing.T) {
	t.Parallel()
	c := Default()
	if err := c.Validate(); err != nil {
		t.Fatalf("Default().Validate() = %v; want nil", err)
	}
	host := mustHostname(t)
	checks := []struct {
		name      string
		got, want any
	}{
		{"server_id", c.ServerID, host},
		{"advertise", c.Advertise, host + ":4500"},
		{"listen", c.Listen, "0.0.0.0:4500"},
		{"data_dir", c.DataDir, "/var/lib/hotdesk"},
		{"admin_socket", c.AdminSocket, "/run/hotdesk/admin.sock"},
		{"tls.cert_file", c.TLS.CertFile, "/var/lib/hotdesk/tls/server.crt"},
		{"tls.key_file", c.TLS.KeyFile, "/var/lib/hotdesk/tls/server.key"},
		{"compositor.state_dir", c.Compositor.StateDir, "/var/lib/hotdesk/sessions"},
		{"etcd.lease_ttl", c.Etcd.LeaseTTL, 5 * time.Second},
		{"session.suspend_timeout", c.Session.SuspendTimeout, 24 * time.Hour},
		{"session.reconnect_grace", c.Session.ReconnectGrace, 30 * time.Second},
		{"pairing.code_ttl", c.Pairing.CodeTTL, 10 * time.Minute},
		{"embedded", c.UsesEmbeddedEtcd(), true},
	}
	for _, ch := range checks {
		if ch.got != ch.want {
			t.Errorf("%s: got = %v; want %v", ch.name, ch.got, ch.want)
		}
	}
	// Default returns a fresh value every time.
	c.Etcd.Endpoints = append(c.Etcd.Endpoints, "x:1")
	if d := Default(); !d.UsesEmbeddedEtcd() {
		t.Errorf("Default() shares state with an earlier result")
	}
}

// Two files with the same settings in a different layout give equal configs.
func TestLayoutIndependent(t *testing.T) {
	t.Parallel()
	a := mustParse(t, "listen = \"127.0.0.1:1\"\netcd {\n  lease_ttl = \"3s\"\n}\n", "a.hcl")
	b := mustParse(t, "# comment\n\n\netcd { lease_ttl = \"3000ms\" }\n  listen =   \"127.0.0.1:1\"\n", "b.hcl")
	if !reflect.DeepEqual(a, b) {
		t.Errorf("got = %+v; want %+v", b, a)
	}
}

func TestParseErrors(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name       string
		src        string
		wantPrefix string // exact "file:line:col: " of the first line
		wantIn     string // part of the message
	}{
		{"unknown attribute", "listen = \"127.0.0.1:1\"\n\netcd {\n  bogus = 1\n}\n",
			"hotdesk.hcl:4:3: ", `unsupported argument: An argument named "bogus" is not expected here.`},
		{"unknown top-level attribute", "log_levle = \"info\"\n",
			"hotdesk.hcl:1:1: ", `Did you mean "log_level"?`},
		{"unknown block", "session {\n}\nfrobnicate {\n}\n",
			"hotdesk.hcl:3:1: ", `unsupported block type: Blocks of type "frobnicate" are not expected here.`},
		{"unknown nested block", "etcd {\n  embedded {}\n  cluster {}\n}\n",
			"hotdesk.hcl:3:3: ", "unsupported block type"},
		{"block with a label", "tls \"main\" {\n}\n",
			"hotdesk.hcl:1:5: ", "extraneous label"},
		{"wrong type", "session {\n  max_sessions = \"many\"\n}\n",
			"hotdesk.hcl:2:19: ", "unsuitable value type: Unsuitable value: a number is required"},
		{"wrong type list", "etcd {\n  endpoints = \"a:1\"\n}\n",
			"hotdesk.hcl:2:16: ", "unsuitable value type"},
		{"wrong type bool", "log_json = \"yes please\"\n",
			"hotdesk.hcl:1:13: ", "unsuitable value type"},
		{"bad duration", "session {\n  suspend_timeout = \"1 day\"\n}\n",
			"hotdesk.hcl:2:21: ", `invalid duration: session.suspend_timeout = "1 day" is not a duration`},
		{"duration without unit", "pairing {\n  lockout = \"15\"\n}\n",
			"hotdesk.hcl:2:13: ", "invalid duration"},
		{"duplicate block", "etcd {\n  lease_ttl = \"5s\"\n}\n\netcd {\n}\n",
			"hotdesk.hcl:5:1: ", "duplicate etcd block: Only one etcd block is allowed. Another was defined at hotdesk.hcl:1,1-5."},
		{"duplicate nested block", "etcd {\n  embedded {}\n  embedded {}\n}\n",
			"hotdesk.hcl:3:3: ", "duplicate embedded block"},
		{"invalid listen address", "log_level = \"info\"\nlisten = \"0.0.0.0\"\n",
			"hotdesk.hcl:2:10: ", `invalid listen address: listen: "0.0.0.0": missing port in address.`},
		{"invalid listen port", "listen = \"0.0.0.0:http\"\n",
			"hotdesk.hcl:1:10: ", "invalid listen address"},
		{"bad log level", "\n  log_level = \"verbose\"\n",
			"hotdesk.hcl:2:15: ", `invalid log level: log_level: "verbose" is not one of trace, debug, info, warn, error.`},
		{"log level is case sensitive", "log_level = \"INFO\"\n",
			"hotdesk.hcl:1:13: ", "invalid log level"},
		{"lease ttl too small", "etcd {\n  lease_ttl = \"900ms\"\n}\n",
			"hotdesk.hcl:2:15: ", "must be between 1s and 10m0s"},
		{"unknown auth policy", "session {\n  auth = \"pam\"\n}\n",
			"hotdesk.hcl:2:10: ", "unknown auth policy"},
		{"user names differing in case", "auth {\n  policy {\n    users = [\"alice\"]\n    auth = \"card\"\n  }\n  policy {\n    users = [\"Alice\"]\n    auth = \"card+pin\"\n  }\n}\n",
			"hotdesk.hcl:7:13: ", `ambiguous user names: auth.policy.users: "alice" and "Alice" differ only in case`},
		{"unknown compositor type", "compositor {\n  type = \"sway\"\n}\n",
			"hotdesk.hcl:2:10: ", "unknown compositor type"},
		{"unknown backend", "compositor {\n  backend = \"drm\"\n}\n",
			"hotdesk.hcl:2:13: ", "unknown compositor backend"},
		{"prompt timeout over the login's", "auth {\n  timeout = \"30s\"\n  prompt_timeout = \"1m\"\n}\n",
			"hotdesk.hcl:3:20: ", "auth.prompt_timeout: must be at most timeout (30s), got 1m0s"},
		{"zero suspend timeout", "session {\n  suspend_timeout = \"0s\"\n}\n",
			"hotdesk.hcl:2:21: ", "must be greater than zero"},
		{"negative max sessions", "session {\n  max_sessions = -1\n}\n",
			"hotdesk.hcl:2:18: ", "invalid session limit"},
		{"bad etcd endpoint", "etcd {\n  endpoints = [\"ftp://x:1\"]\n}\n",
			"hotdesk.hcl:2:15: ", "scheme must be http or https"},
		{"bad prefix", "etcd {\n  prefix = \"hotdesk\"\n}\n",
			"hotdesk.hcl:2:12: ", "invalid etcd prefix"},
		{"etcd cert without key", "etcd {\n  endpoints = [\"a:1\"]\n  cert_file = \"/c\"\n}\n",
			"hotdesk.hcl:3:15: ", "incomplete etcd TLS settings"},
		// No attribute to point at: the enclosing block.
		{"etcd tls without endpoints", "\netcd {\n  ca_file = \"/ca\"\n}\n",
			"hotdesk.hcl:2:1: ", "etcd TLS without endpoints"},
		{"bad embedded url", "etcd {\n  embedded {\n    peer_url = \"127.0.0.1:2380\"\n  }\n}\n",
			"hotdesk.hcl:3:16: ", "invalid embedded etcd URL"},
		{"bad server id", "server_id = \"a/b\"\n",
			"hotdesk.hcl:1:13: ", "invalid server id"},
		{"variables are not allowed", "data_dir = env.HOME\n",
			"hotdesk.hcl:1:12: ", "variables not allowed"},
		{"syntax error", "listen = \n",
			"hotdesk.hcl:1:10: ", "invalid expression"},
		{"null value", "listen = null\n",
			"hotdesk.hcl:1:10: ", "unsuitable value type"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, err := Parse([]byte(tt.src), "hotdesk.hcl")
			if err == nil {
				t.Fatalf("Parse() = %+v, nil; want an error", c)
			}
			if c != nil {
				t.Errorf("Parse() config = %+v; want nil on error", c)
			}
			if !errors.Is(err, ErrInvalid) {
				t.Errorf("errors.Is(%v, ErrInvalid) = false; want true", err)
			}
			var ce *Error
			if !errors.As(err, &ce) || len(ce.Diagnostics) == 0 {
				t.Errorf("error %T has no diagnostics", err)
			}
			msg := err.Error()
			first, _, _ := strings.Cut(msg, "\n")
			if !strings.HasPrefix(first, tt.wantPrefix) {
				t.Errorf("got = %q; want prefix %q", first, tt.wantPrefix)
			}
			if !strings.Contains(msg, tt.wantIn) {
				t.Errorf("got = %q; want it to contain %q", msg, tt.wantIn)
			}
		})
	}
}

// Several problems are all reported, one per line, each with its position.
func TestParseSeveralErrors(t *testing.T) {
	t.Parallel()
	src := "log_level = \"loud\"\nlisten = \"nope\"\n"
	_, err := Parse([]byte(src), "x.hcl")
	if err == nil {
		t.Fatal("Parse() = nil error; want an error")
	}
	lines := strings.Split(err.Error(), "\n")
	want := []string{"x.hcl:2:10: invalid listen address", "x.hcl:1:13: invalid log level"}
	if len(lines) != len(want) {
		t.Fatalf("got = %q; want %d lines", err.Error(), len(want))
	}
	for i := range want {
		if !strings.HasPrefix(lines[i], want[i]) {
			t.Errorf("line %d: got = %q; want prefix %q", i, lines[i], want[i])
		}
	}
}

// TestParseErrorsOnlyForKeysSet: a bad data_dir or listen is reported
// once, not again as errors of keys the file never set but whose defaults
// derive from it (server id, advertise, state directory).
func TestParseErrorsOnlyForKeysSet(t *testing.T) {
	t.Parallel()
	for _, tt := range []struct{ src, want string }{
		{"data_dir = \"\"\n", "x.hcl:1:12: missing data directory"},
		{"listen = \"0.0.0.0:99999\"\n", "x.hcl:1:10: invalid listen address"},
	} {
		_, err := Parse([]byte(tt.src), "x.hcl")
		if err == nil {
			t.Fatalf("Parse(%q) = nil error", tt.src)
		}
		if lines := strings.Split(err.Error(), "\n"); len(lines) != 1 || !strings.HasPrefix(lines[0], tt.want) {
			t.Errorf("Parse(%q):\n%s\nwant one error: %s…", tt.src, err, tt.want)
		}
	}
}

func TestValidate(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name   string
		mutate func(c *Config)
		wantIn string // "" = valid
	}{
		{"defaults", func(c *Config) {}, ""},
		{"listen port 0", func(c *Config) { c.Listen = "127.0.0.1:0" }, ""},
		{"listen without host", func(c *Config) { c.Listen = ":4500" }, ""},
		{"listen without port", func(c *Config) { c.Listen = "localhost" }, "invalid listen address"},
		{"listen port out of range", func(c *Config) { c.Listen = "localhost:70000" }, "invalid port"},
		{"advertise without host", func(c *Config) { c.Advertise = ":4500" }, "missing host"},
		{"empty server id", func(c *Config) { c.ServerID = "" }, "invalid server id"},
		{"empty data dir", func(c *Config) { c.DataDir = "" }, "missing data directory"},
		{"empty admin socket", func(c *Config) { c.AdminSocket = "" }, "missing admin socket"},
		{"admin group with a colon", func(c *Config) { c.AdminGroup = "a:b" }, "invalid admin group"},
		{"log level", func(c *Config) { c.LogLevel = "" }, "invalid log level"},
		{"tls key without cert", func(c *Config) { c.TLS.CertFile = "" }, "incomplete TLS settings"},
		{"lease ttl 1s", func(c *Config) { c.Etcd.LeaseTTL = time.Second }, ""},
		{"lease ttl below 1s", func(c *Config) { c.Etcd.LeaseTTL = 999 * time.Millisecond }, "must be between 1s and 10m0s"},
		{"dial timeout", func(c *Config) { c.Etcd.DialTimeout = 0 }, "etcd.dial_timeout"},
		{"prefix root", func(c *Config) { c.Etcd.Prefix = "/" }, "invalid etcd prefix"},
		{"endpoints", func(c *Config) { c.Etcd.Endpoints = []string{"http://a:2379", "b:2379"} }, ""},
		{"endpoint with path", func(c *Config) { c.Etcd.Endpoints = []string{"http://a:2379/x"} }, "only scheme://host:port"},
		{"endpoint without port", func(c *Config) { c.Etcd.Endpoints = []string{"a"} }, "invalid etcd endpoint"},
		{"mtls", func(c *Config) {
			c.Etcd.Endpoints = []string{"https://a:2379"}
			c.Etcd.CAFile, c.Etcd.CertFile, c.Etcd.KeyFile = "/ca", "/c", "/k"
		}, ""},
		{"embedded url ignored with endpoints", func(c *Config) {
			c.Etcd.Endpoints = []string{"https://a:2379"}
			c.Etcd.Embedded.ClientURL = ""
		}, ""},
		{"embedded client url", func(c *Config) { c.Etcd.Embedded.ClientURL = "" }, "invalid embedded etcd URL"},
		{"suspend timeout", func(c *Config) { c.Session.SuspendTimeout = -time.Second }, "session.suspend_timeout"},
		{"negative reconnect grace", func(c *Config) { c.Session.ReconnectGrace = -time.Second }, "session.reconnect_grace"},
		{"long reconnect grace", func(c *Config) { c.Session.ReconnectGrace = time.Hour }, "session.reconnect_grace"},
		{"max lockout over a month", func(c *Config) { c.Auth.MaxLockout = 31 * 24 * time.Hour }, "auth.max_lockout"},
		{"auth", func(c *Config) { c.Session.Auth = "" }, "unknown auth policy"},
		{"max sessions", func(c *Config) { c.Session.MaxSessions = -5 }, "invalid session limit"},
		{"compositor type", func(c *Config) { c.Compositor.Type = "mutter" }, "unknown compositor type"},
		{"compositor backend", func(c *Config) { c.Compositor.Backend = "x11" }, "unknown compositor backend"},
		{"rdp backend", func(c *Config) { c.Compositor.Backend = "rdp" }, ""},
		{"compositor binary", func(c *Config) { c.Compositor.Binary = "" }, "missing compositor binary"},
		{"state dir", func(c *Config) { c.Compositor.StateDir = "" }, "missing compositor state directory"},
		{"start timeout", func(c *Config) { c.Compositor.StartTimeout = 0 }, "compositor.start_timeout"},
		{"stop grace", func(c *Config) { c.Compositor.StopGrace = -1 }, "must not be negative"},
		{"max user tasks", func(c *Config) { c.Compositor.MaxUserTasks = 10 }, "invalid task limit"},
		{"no task limit", func(c *Config) { c.Compositor.MaxUserTasks = 0 }, ""},
		{"code ttl", func(c *Config) { c.Pairing.CodeTTL = 0 }, "pairing.code_ttl"},
		{"max failures", func(c *Config) { c.Pairing.MaxFailures = 0 }, "invalid failure limit"},
		{"failure window", func(c *Config) { c.Pairing.FailureWindow = 0 }, "pairing.failure_window"},
		{"lockout", func(c *Config) { c.Pairing.Lockout = 0 }, "pairing.lockout"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := Default()
			tt.mutate(c)
			err := c.Validate()
			if tt.wantIn == "" {
				if err != nil {
					t.Fatalf("Validate() = %v; want nil", err)
				}
				return
			}
			if err == nil {
				t.Fatalf("Validate() = nil; want an error containing %q", tt.wantIn)
			}
			if !errors.Is(err, ErrInvalid) {
				t.Errorf("errors.Is(%v, ErrInvalid) = false; want true", err)
			}
			if !strings.Contains(err.Error(), tt.wantIn) {
				t.Errorf("got = %q; want it to contain %q", err.Error(), tt.wantIn)
			}
		})
	}
}

func TestLoadFileErrors(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()

	_, err := Load(filepath.Join(dir, "missing.hcl"))
	if !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("missing file: got = %v; want fs.ErrNotExist", err)
	}
	if errors.Is(err, ErrInvalid) {
		t.Errorf("missing file: errors.Is(%v, ErrInvalid) = true; want false", err)
	}

	big := filepath.Join(dir, "big.hcl")
	if err := os.WriteFile(big, []byte(strings.Repeat("# padding\n", MaxFileSize/10+1)), 0o644); err != nil {
		t.Fatal(err)
	}
	_, err = Load(big)
	if !errors.Is(err, ErrInvalid) {
		t.Errorf("big file: errors.Is(%v, ErrInvalid) = false; want true", err)
	}
	if want := big + ":1:1: configuration file too large"; err == nil || !strings.HasPrefix(err.Error(), want) {
		t.Errorf("big file: got = %v; want prefix %q", err, want)
	}

	// Load reports positions with the path as given.
	bad := filepath.Join(dir, "bad.hcl")
	if err := os.WriteFile(bad, []byte("pairing {\n  max_failures = 0\n}\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	_, err = Load(bad)
	if want := bad + ":2:18: invalid failure limit"; err == nil || !strings.HasPrefix(err.Error(), want) {
		t.Errorf("bad file: got = %v; want prefix %q", err, want)
	}
}

func TestUsesEmbeddedEtcd(t *testing.T) {
	t.Parallel()
	tests := []struct {
		src  string
		want bool
	}{
		{"", true},
		{"etcd {\n  endpoints = []\n}\n", true},
		{"etcd {\n  endpoints = [\"127.0.0.1:2379\"]\n}\n", false},
	}
	for _, tt := range tests {
		c := mustParse(t, tt.src, "t.hcl")
		if got := c.UsesEmbeddedEtcd(); got != tt.want {
			t.Errorf("UsesEmbeddedEtcd() for %q: got = %v; want %v", tt.src, got, tt.want)
		}
	}
}

func TestDeriveAdvertise(t *testing.T) {
	t.Parallel()
	host := mustHostname(t)
	tests := []struct{ listen, want string }{
		{"0.0.0.0:4500", host + ":4500"},
		{"[::]:4501", host + ":4501"},
		{":4502", host + ":4502"},
		{"10.1.2.3:4500", "10.1.2.3:4500"},
		{"[fd00::1]:4500", "[fd00::1]:4500"},
		{"broker.example.org:1", "broker.example.org:1"},
		{"garbage", "garbage"},
	}
	for _, tt := range tests {
		if got := deriveAdvertise(tt.listen); got != tt.want {
			t.Errorf("deriveAdvertise(%q): got = %q; want %q", tt.listen, got, tt.want)
		}
	}
}

// The shipped systemd unit keeps the properties the daemon relies on.
func TestShippedSystemdUnit(t *testing.T) {
	t.Parallel()
	f, err := os.Open("../../../configs/hotdeskd.service")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	got := map[string]string{}
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") || strings.HasPrefix(line, "[") {
			continue
		}
		k, v, ok := strings.Cut(line, "=")
		if !ok {
			t.Errorf("line %q is not key=value", line)
			continue
		}
		if _, dup := got[k]; dup {
			t.Errorf("%s set twice", k)
		}
		got[k] = v
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	want := map[string]string{
		"Type":                 "notify",
		"ExecStart":            "/usr/local/bin/hotdeskd -config /etc/hotdesk/hotdesk.hcl",
		"ExecReload":           "/bin/kill -HUP $MAINPID",
		"KillMode":             "process",
		"Restart":              "on-failure",
		"RuntimeDirectory":     "hotdesk",
		"RuntimeDirectoryMode": "0750",
		"StateDirectory":       "hotdesk",
		"TimeoutStopSec":       "30",
	}
	for k, v := range want {
		if got[k] != v {
			t.Errorf("%s: got = %q; want %q", k, got[k], v)
		}
	}
	// Settings that would break the desktop sessions hotdeskd spawns.
	for _, k := range []string{"NoNewPrivileges", "PrivateTmp", "ProtectHome", "ProtectSystem", "PrivateDevices", "DeviceAllow", "ProtectClock", "MemoryDenyWriteExecute", "User"} {
		if v, ok := got[k]; ok {
			t.Errorf("%s=%s is set; it breaks spawning compositors", k, v)
		}
	}
	// The unit's paths match the defaults.
	d := Default()
	if !strings.HasPrefix(d.AdminSocket, "/run/"+got["RuntimeDirectory"]+"/") {
		t.Errorf("admin socket %s is not in RuntimeDirectory %s", d.AdminSocket, got["RuntimeDirectory"])
	}
	if want := fmt.Sprintf("/var/lib/%s", got["StateDirectory"]); d.DataDir != want {
		t.Errorf("data_dir: got = %s; want %s", d.DataDir, want)
	}
}

func ptrBool(b bool) *bool { return &b }

func TestSeats(t *testing.T) {
	t.Parallel()
	c := mustParse(t, `
seat_agent = "/opt/hotdesk/hotdesk-term"
seat "console" {
  readers      = ["Virtual PCD 00 01"]
  remove_grace = "500ms"
}
seat "kiosk-2" {}
`, "/etc/hotdesk/seats.hcl")
	want := []Seat{{Name: "console", Readers: []string{"Virtual PCD 00 01"}, RemoveGrace: 500 * time.Millisecond},
		{Name: "kiosk-2", RemoveGrace: time.Second}}
	if !reflect.DeepEqual(c.Seats, want) || c.SeatAgent != "/opt/hotdesk/hotdesk-term" {
		t.Fatalf("seats = %+v, agent %q; want %+v", c.Seats, c.SeatAgent, want)
	}
	_, err := Parse([]byte("seat \"a b\" {}\n"), "bad.hcl")
	if err == nil || !strings.HasPrefix(err.Error(), "bad.hcl:1:") {
		t.Fatalf("bad seat name: %v; want an error at bad.hcl:1", err)
	}
}

// mustParse parses src as the file filename (relative paths in it are
// relative to filename's directory) and fails the test on an error.
func mustParse(t *testing.T, src, filename string) *Config {
	t.Helper()
	c, err := Parse([]byte(src), filename)
	if err != nil {
		t.Fatalf("Parse(%q, %s): %v", src, filename, err)
	}
	return c
}

// parseErrorCase is a configuration, src, that Parse refuses with an error
// containing want.
type parseErrorCase struct{ name, src, want string }

// checkParseErrors checks each case in a subtest of its own.
func checkParseErrors(t *testing.T, cases []parseErrorCase) {
	t.Helper()
	for _, tt := range cases {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Parse([]byte(tt.src), "h.hcl")
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("err = %v; want it to contain %q", err, tt.want)
			}
		})
	}
}

// TestSecureDefaults: the defaults a fresh install runs with expose nothing
// without a login, and the checks a security reviewer asks for bite.
func TestSecureDefaults(t *testing.T) {
	t.Parallel()
	c := Default()
	if c.Session.Auth != "card+pin" || !c.Compositor.RunAsUser || c.Compositor.InsecureAllowRoot || c.Session.MaxSessions == 0 {
		t.Fatalf("defaults auth=%s run_as_user=%v insecure_allow_root=%v max_sessions=%d; want card+pin, true, false, a cap",
			c.Session.Auth, c.Compositor.RunAsUser, c.Compositor.InsecureAllowRoot, c.Session.MaxSessions)
	}
	if w := c.Warnings(); len(w) != 0 {
		t.Errorf("default config warnings = %q; want none", w)
	}
	bad := []parseErrorCase{
		{"embedded client on every address", "etcd {\n  embedded {\n    client_url = \"http://0.0.0.0:4501\"\n  }\n}\n", "not on loopback"},
		{"embedded peer on a LAN address", "etcd {\n  embedded {\n    peer_url = \"http://10.1.2.3:4502\"\n  }\n}\n", "not on loopback"},
		{"huge lease ttl", "etcd {\n  lease_ttl = \"2562047h\"\n}\n", "must be between"},
		{"zero connection cap", "limits {\n  max_connections = 0\n}\n", "limits.max_connections: must be at least 1"},
		{"absurd token event rate", "limits {\n  token_events_per_second = 9223372036854775807\n}\n", "limits.token_events_per_second: must be at most 10000"},
		{"zero weight", "session {\n  weight = 0\n}\n", "session.weight: must be between 1 and 1000"},
		{"no token events", "limits {\n  token_events_per_second = 0\n}\n", "limits.token_events_per_second: must be at least 1"},
		{"bad kiosk prefix", "compositor {\n  kiosk_account_prefix = \"Root\"\n}\n", "invalid account prefix"},
	}
	checkParseErrors(t, bad)
	warn := []struct{ name, src, want string }{
		{"plaintext group etcd", "etcd {\n  endpoints = [\"http://etcd-1:2379\"]\n}\n", "plaintext"},
		{"no client cert", "etcd {\n  endpoints = [\"https://etcd-1:2379\"]\n}\n", "no client certificate"},
		{"desktops as root", "compositor {\n  run_as_user = false\n  insecure_allow_root = true\n}\n", "root shell"},
		{"unguarded rdp", "compositor {\n  backend = \"rdp\"\n  insecure_unguarded_rdp = true\n}\n", "any local user can use any desktop"},
		{"kiosk", "session {\n  auth = \"kiosk\"\n}\n", "without a login"},
		{"no cap", "session {\n  max_sessions = 0\n}\n", "no cap"},
		// run_as_user (default true) was silently ignored, and hotdeskd as
		// root refused to start although -check said ok.
		{"wayray ignores run_as_user", "compositor {\n  type = \"wayray\"\n  binary = \"/usr/bin/true\"\n}\n", "runs every desktop as hotdeskd's user"},
	}
	for _, tt := range warn {
		t.Run(tt.name, func(t *testing.T) {
			c := mustParse(t, tt.src, "h.hcl")
			if w := strings.Join(c.Warnings(), "\n"); !strings.Contains(w, tt.want) {
				t.Fatalf("warnings = %q; want one containing %q", w, tt.want)
			}
		})
	}
	c = mustParse(t, "limits {\n  max_connections_per_source = 3\n  handshake_timeout = \"2s\"\n}\n", "h.hcl")
	if c.Limits.MaxConnectionsPerSource != 3 || c.Limits.HandshakeTimeout != 2*time.Second || c.Limits.MaxConnections != 1024 {
		t.Fatalf("limits = %+v; want per source 3, handshake 2s, the rest defaults", c.Limits)
	}
}

// TestListenerConflicts: two listeners on one address are an error at the
// second one's position (the daemon would fail with "address already in
// use" after starting etcd); distinct addresses, port 0 and the two IP
// families apart are fine.
func TestListenerConflicts(t *testing.T) {
	t.Parallel()
	bad := []parseErrorCase{
		{"attach on listen", "listen = \"127.0.0.1:4600\"\nattach_listen = \"127.0.0.1:4600\"\n",
			`h.hcl:2:17: address already used: attach_listen: "127.0.0.1:4600" is also listen`},
		{"metrics on listen", "listen = \"0.0.0.0:4600\"\n\nmetrics_listen = \"127.0.0.1:4600\"\n",
			`h.hcl:3:18: address already used: metrics_listen: "127.0.0.1:4600" is also listen`},
		{"dashboard on attach", "admin_group = \"root\"\nattach_listen = \"[::]:4700\"\ndashboard {\n  listen = \"10.0.0.1:4700\"\n}\n",
			`h.hcl:4:12: address already used: dashboard.listen: "10.0.0.1:4700" is also attach_listen`},
		{"localhost", "listen = \"localhost:4600\"\nattach_listen = \"127.0.0.1:4600\"\n", "attach_listen"},
		{"metrics on embedded etcd", "metrics_listen = \"127.0.0.1:4501\"\n",
			`h.hcl:1:18: address already used: metrics_listen: "127.0.0.1:4501" is also etcd.embedded.client_url`},
	}
	checkParseErrors(t, bad)
	for _, src := range []string{
		"listen = \"127.0.0.1:4600\"\nattach_listen = \"127.0.0.1:4601\"\nmetrics_listen = \"127.0.0.1:4602\"\n",
		"listen = \"127.0.0.1:0\"\nattach_listen = \"127.0.0.1:0\"\n",
		"listen = \"127.0.0.1:4600\"\nattach_listen = \"127.0.0.2:4600\"\n",
		"listen = \"0.0.0.0:4600\"\nattach_listen = \"[::1]:4600\"\n",
		"listen = \"127.0.0.1:9450\"\n", // the default metrics address being taken is only a warning
		"metrics_listen = \"127.0.0.1:4501\"\netcd {\n  endpoints = [\"https://etcd-1:2379\"]\n}\n",
	} {
		if _, err := Parse([]byte(src), "h.hcl"); err != nil {
			t.Errorf("Parse(%q) = %v; want no error", src, err)
		}
	}
}

// TestCheckHost: a group the host does not know is an error at its key's
// position (the daemon looked admin_group up only after etcd had started,
// and never looked readonly_group up).
func TestCheckHost(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	c, pos, path := loadFile(t, dir, "log_level = \"info\"\nadmin_group = \"nosuchgroup-hd7\"\ndashboard {\n  listen = \"127.0.0.1:0\"\n  readonly_group = \"nosuchgrp-hd7\"\n}\n")
	checkHostErrors(t, c, pos,
		path+`:2:15: unknown group: admin_group: group "nosuchgroup-hd7" does not exist on this host`,
		path+`:5:20: unknown group: dashboard.readonly_group: group "nosuchgrp-hd7" does not exist on this host`)
	// Groups every Debian host has; none at all.
	c.AdminGroup, c.Dashboard.ReadOnlyGroup = "root", "bin"
	checkHost(t, c, pos, "root and bin", "")
	checkHost(t, Default(), nil, "the defaults", "")
}

// TestCheckHostEtcdTLSFiles: an etcd CA file or client key pair the daemon
// could not load is an error at its key's position (-check said ok and the
// start failed after the terminal listener was up: found by QA with a
// mistyped path and a key that was not the certificate's).
func TestCheckHostEtcdTLSFiles(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	write := func(name string, data []byte) string {
		t.Helper()
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, data, 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	issue := func(cn string) *pki.Issued {
		t.Helper()
		iss, err := pki.Issue(&x509.Certificate{Subject: pkix.Name{CommonName: cn}, NotBefore: time.Now().Add(-time.Hour),
			NotAfter: time.Now().Add(time.Hour), IsCA: true, BasicConstraintsValid: true}, nil, nil)
		if err != nil {
			t.Fatal(err)
		}
		return iss
	}
	ca, b1, b2 := issue("ca"), issue("broker-1"), issue("broker-2")
	caFile, crt1, key1 := write("ca.crt", ca.CertPEM), write("b1.crt", b1.CertPEM), write("b1.key", b1.KeyPEM)
	key2, notPEM := write("b2.key", b2.KeyPEM), write("empty.crt", []byte("not a certificate\n"))
	missing := filepath.Join(dir, "missing.crt")
	huge := write("huge.crt", bytes.Repeat(ca.CertPEM, (1<<20)/len(ca.CertPEM)+1))
	check := func(ca, cert, key string) error {
		t.Helper()
		c, pos, _ := loadFile(t, dir, fmt.Sprintf("etcd {\n  endpoints = [\"https://etcd-1:2379\"]\n  ca_file = %q\n  cert_file = %q\n  key_file = %q\n}\n", ca, cert, key))
		return c.CheckHost(pos, Host{})
	}
	if err := check(caFile, crt1, key1); err != nil {
		t.Fatalf("CheckHost with a CA and a matching key pair = %v; want nil", err)
	}
	for _, tt := range []struct{ name, ca, cert, key, want string }{
		{"missing CA", missing, crt1, key1, ":3:13: unusable etcd CA file: etcd.ca_file: open " + missing},
		{"CA without a certificate", notPEM, crt1, key1, ":3:13: unusable etcd CA file: etcd.ca_file: " + notPEM + " holds no PEM certificate"},
		// Named by mistake: a clear error, not a read that never ends.
		{"CA a device", "/dev/zero", crt1, key1, ":3:13: unusable etcd CA file: etcd.ca_file: /dev/zero is not a regular file"},
		{"CA too large", huge, crt1, key1, ":3:13: unusable etcd CA file: etcd.ca_file: " + huge + " is larger than 1048576 bytes"},
		{"missing key", caFile, crt1, missing, ":4:15: unusable etcd client certificate: etcd.cert_file and key_file"},
		{"key of another certificate", caFile, crt1, key2, "private key does not match public key"},
	} {
		err := check(tt.ca, tt.cert, tt.key)
		if !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("%s: CheckHost = %v; want an *Error containing %q", tt.name, err, tt.want)
		}
	}
}

// TestHostWarningsEtcdKeyMode: an etcd client key others may read is a
// warning naming the file and the fix; a 0600 key is not.
func TestHostWarningsEtcdKeyMode(t *testing.T) {
	t.Parallel()
	key := filepath.Join(t.TempDir(), "broker-1.key")
	if err := os.WriteFile(key, []byte("key\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	src := fmt.Sprintf("etcd {\n  endpoints = [\"https://etcd-1:2379\"]\n  cert_file = \"/x.crt\"\n  key_file = %q\n}\n", key)
	c := mustParse(t, src, "h.hcl")
	want := fmt.Sprintf("etcd.key_file %s is readable or writable by others than its owner (mode 0644): whoever reads it is this broker to etcd; chmod 600 %s", key, key)
	if w := strings.Join(c.HostWarnings(Host{}), "\n"); !strings.Contains(w, want) {
		t.Errorf("warnings = %q; want one containing %q", w, want)
	}
	if err := os.Chmod(key, 0o600); err != nil {
		t.Fatal(err)
	}
	if w := strings.Join(c.HostWarnings(Host{}), "\n"); strings.Contains(w, "etcd.key_file") {
		t.Errorf("warnings with mode 0600 = %q; want none about the key", w)
	}
}

// TestHostWarningsClock: a broker of a group (etcd endpoints) on a host
// whose clock no NTP client keeps is warned: the group compares times its
// brokers' clocks wrote. A single server (the embedded etcd) is not.
func TestHostWarningsClock(t *testing.T) {
	t.Parallel()
	group := mustParse(t, "etcd {\n  endpoints = [\"http://etcd-1:2379\"]\n}\n", "g.hcl")
	single := mustParse(t, "", "s.hcl")
	for _, tc := range []struct {
		c        *Config
		unsynced bool
		want     bool
	}{
		{group, true, true},
		{group, false, false},
		{single, true, false},
	} {
		w := strings.Join(tc.c.HostWarnings(Host{ClockUnsynced: func() bool { return tc.unsynced }}), "\n")
		if got := strings.Contains(w, "clock is not synchronised"); got != tc.want {
			t.Errorf("group %v, clock unsynchronised %v: warnings %q; want the clock's %v", len(tc.c.Etcd.Endpoints) > 0, tc.unsynced, w, tc.want)
		}
	}
}

// TestHostWarnings: a PAM service the configuration uses with no file in
// the PAM directory is a warning naming the service and the missing file
// (libpam would silently use "other"); services with a file, and the
// policies that use no PAM (kiosk), are not. The card policy uses the
// account stack of pam_service.
func TestHostWarnings(t *testing.T) {
	t.Parallel()
	pamDir := t.TempDir()
	const stack = "auth required pam_deny.so\nsession required pam_permit.so\n"
	if err := os.WriteFile(filepath.Join(pamDir, "hotdesk"), []byte(stack), 0o644); err != nil {
		t.Fatal(err)
	}
	src := fmt.Sprintf(`admin_group = "root"
auth {
  pam_dir = %q
  policy {
    users = ["carol"]
    auth  = "password"
  }
  policy {
    users   = ["dave"]
    auth    = "card+password"
    service = "hd-strict"
  }
}
dashboard {
  listen = "127.0.0.1:0"
}
`, pamDir)
	c := mustParse(t, src, "h.hcl")
	w := strings.Join(c.HostWarnings(Host{}), "\n")
	for _, want := range []string{
		`PAM service "hotdesk-pin" (auth.pin_service, used by the card+pin login policy (session.auth)) has no file ` + filepath.Join(pamDir, "hotdesk-pin") + ": libpam falls back to " + filepath.Join(pamDir, "other"),
		`PAM service "hd-strict" (auth.policy.service`,
		`PAM service "hotdesk-admin" (dashboard.pam_service, used by the dashboard's logins) has no file ` + filepath.Join(pamDir, "hotdesk-admin"),
	} {
		if !strings.Contains(w, want) {
			t.Errorf("warnings = %q; want one containing %q", w, want)
		}
	}
	if strings.Contains(w, `"hotdesk"`) {
		t.Errorf("warnings = %q; want none about hotdesk, whose file exists", w)
	}
	for _, name := range []string{"hotdesk-pin", "hd-strict", "hotdesk-admin"} {
		if err := os.WriteFile(filepath.Join(pamDir, name), []byte(stack), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	if w := c.HostWarnings(Host{}); len(w) != 0 {
		t.Errorf("warnings with every file = %q; want none", w)
	}
	// With open_session (the default) a login service needs session
	// rules (or an @include that may give them); the dashboard's does not.
	for name, text := range map[string]string{
		"hd-strict":     "auth required pam_deny.so\naccount required pam_permit.so\n",
		"hotdesk-pin":   "auth required pam_deny.so\n@include common-session\n",
		"hotdesk-admin": "auth required pam_deny.so\n",
	} {
		if err := os.WriteFile(filepath.Join(pamDir, name), []byte(text), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	if w := c.HostWarnings(Host{}); len(w) != 1 || !strings.Contains(w[0], `PAM service "hd-strict" (auth.policy.service, used by an auth.policy block (card+password)) has no session rules in `+filepath.Join(pamDir, "hd-strict")) {
		t.Errorf("warnings with hd-strict lacking session rules = %q; want one, about hd-strict", w)
	}
	c.Auth.OpenSession = false
	if w := c.HostWarnings(Host{}); len(w) != 0 {
		t.Errorf("warnings without open_session = %q; want none", w)
	}
	c.Auth.OpenSession = true
	// Without pam_dir: the system's directories (here the test's own).
	d := Default()
	if w := strings.Join(d.HostWarnings(Host{PAMDirs: []string{t.TempDir(), pamDir}}), "\n"); w != "" {
		t.Errorf("warnings with hotdesk-pin in the second directory = %q; want none", w)
	}
	empty := t.TempDir()
	if w := strings.Join(d.HostWarnings(Host{PAMDirs: []string{empty}}), "\n"); !strings.Contains(w, filepath.Join(empty, "hotdesk-pin")) {
		t.Errorf("warnings = %q; want one naming %s", w, filepath.Join(empty, "hotdesk-pin"))
	}
	d.Session.Auth = "kiosk"
	if w := d.HostWarnings(Host{PAMDirs: []string{empty}}); len(w) != 0 {
		t.Errorf("kiosk warnings = %q; want none (no PAM)", w)
	}
	// The card policy consults the account stack of pam_service.
	d.Session.Auth = "card"
	if w := strings.Join(d.HostWarnings(Host{PAMDirs: []string{empty}}), "\n"); !strings.Contains(w, `PAM service "hotdesk" (auth.pam_service, used by the card login policy`) {
		t.Errorf("card warnings = %q; want one naming hotdesk", w)
	}
}

// loadFile writes src to dir/h.hcl and loads it with its positions.
func loadFile(t *testing.T, dir, src string) (c *Config, pos *Positions, path string) {
	t.Helper()
	path = filepath.Join(dir, "h.hcl")
	if err := os.WriteFile(path, []byte(src), 0o600); err != nil {
		t.Fatal(err)
	}
	c, pos, err := LoadWithPositions(path)
	if err != nil {
		t.Fatal(err)
	}
	return c, pos, path
}

// checkHostErrors checks that c.CheckHost(pos, Host{}) is an *Error that
// contains each of wants.
func checkHostErrors(t *testing.T, c *Config, pos *Positions, wants ...string) {
	t.Helper()
	err := c.CheckHost(pos, Host{})
	if !errors.Is(err, ErrInvalid) {
		t.Fatalf("CheckHost = %v; want an *Error", err)
	}
	for _, want := range wants {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("CheckHost = %v; want it to contain %q", err, want)
		}
	}
}

// checkHost checks c.CheckHost(pos, Host{}): it must be nil when want is
// "", else an error that contains want. what names the case.
func checkHost(t *testing.T, c *Config, pos *Positions, what, want string) {
	t.Helper()
	err := c.CheckHost(pos, Host{})
	switch {
	case want == "" && err != nil:
		t.Errorf("CheckHost with %s = %v; want nil", what, err)
	case want != "" && (err == nil || !strings.Contains(err.Error(), want)):
		t.Errorf("CheckHost with %s = %v; want refused (%q)", what, err, want)
	}
}

// TestCheckHostUntrustedPaths: an event hook, a seat agent, a PAM
// configuration directory or a compositor binary that another user may
// change (their file, their directory above it, their link on the way) is
// an error at its key: hotdeskd runs the hook and the agent as root, libpam
// runs what the stacks name as root, and the compositor runs as every
// desktop's user. As the admin socket's directory, they get root's.
func TestCheckHostUntrustedPaths(t *testing.T) {
	t.Parallel()
	testutil.NeedRoot(t, "needs root (files of another uid)")
	const other = 65534
	dir := t.TempDir()
	theirs := filepath.Join(dir, "theirs")
	if err := os.Mkdir(theirs, 0o755); err != nil {
		t.Fatal(err)
	}
	hook := filepath.Join(theirs, "hook.sh")
	if err := os.WriteFile(hook, []byte("#!/bin/sh\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	pamDir := filepath.Join(dir, "pam.d")
	if err := os.Mkdir(pamDir, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(pamDir, "hotdesk"), []byte("auth required pam_permit.so\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	// A link of theirs to a directory of root's.
	if err := os.Symlink(pamDir, filepath.Join(dir, "pamlink")); err != nil {
		t.Fatal(err)
	}
	for _, p := range []string{theirs, filepath.Join(dir, "pamlink")} {
		if err := os.Lchown(p, other, other); err != nil {
			t.Fatal(err)
		}
	}
	c, pos, path := loadFile(t, dir, fmt.Sprintf("event_hook = %q\nauth {\n  pam_dir = %q\n  open_session = false\n}\nsession {\n  auth = \"card+password\"\n}\n", hook, filepath.Join(dir, "pamlink")))
	checkHostErrors(t, c, pos,
		path+`:1:14: path others may change: event_hook: `+theirs+` belongs to uid 65534`,
		path+`:3:13: path others may change: auth.pam_dir: a link on the way to`)
	// Root's own: accepted.
	if err := os.Lchown(theirs, 0, 0); err != nil {
		t.Fatal(err)
	}
	c.Auth.PAMDir = pamDir
	checkHost(t, c, pos, "root's hook and PAM directory", "")
	// Their PAM service file in root's directory.
	if err := os.Lchown(filepath.Join(pamDir, "hotdesk"), other, other); err != nil {
		t.Fatal(err)
	}
	checkHost(t, c, pos, "their PAM service file", "hotdesk belongs to uid 65534")
}

// TestCheckHostDataDirInTmp: a data_dir (or compositor.state_dir) that
// does not exist yet in a directory anyone may write (/tmp) is refused:
// another user could create it first, and hotdeskd (MkdirAll) would write
// its TLS key there and chmod what they put in it; so is one they created.
func TestCheckHostDataDirInTmp(t *testing.T) {
	t.Parallel()
	testutil.NeedRoot(t, "needs root (files of another uid)")
	dir := t.TempDir()
	tmp := testutil.StickyDir(t, filepath.Join(dir, "tmp"))
	c := Default()
	c.DataDir, c.Compositor.StateDir = filepath.Join(tmp, "hotdesk"), filepath.Join(dir, "sessions")
	checkHost(t, c, nil, "data_dir in a sticky world-writable directory", "data_dir: "+tmp)
	their := testutil.NobodysDir(t, filepath.Join(tmp, "theirs"), 0o700)
	c.DataDir, c.Compositor.StateDir = filepath.Join(dir, "data"), filepath.Join(their, "sessions")
	checkHost(t, c, nil, "state_dir in another user's directory", "compositor.state_dir: "+their+" belongs to uid 65534")
	c.Compositor.StateDir = filepath.Join(dir, "data", "sessions")
	checkHost(t, c, nil, "root's directories", "")
}

// TestCheckHostServiceUsersDataDir: checked as root, a data_dir that
// belongs to another user is refused (a root hotdeskd must not keep keys
// where they may change them), and the refusal says how to check the
// layout of a daemon that runs as that user (the unprivileged drop-in's
// /var/lib/hotdesk, owned by hotdesk): as that user — a system account
// only (no daemon runs as a person's account).
func TestCheckHostServiceUsersDataDir(t *testing.T) {
	t.Parallel()
	testutil.NeedRoot(t, "needs root (files of another uid)")
	const regular = "hdregchk"
	testutil.AddAccount(t, regular)
	dir := t.TempDir()
	for _, tc := range []struct {
		owner string
		hint  bool
	}{
		{"daemon", true}, // a system account, as the packaged hotdesk user is
		{regular, false}, // a person's: no daemon runs as it
	} {
		u, err := user.Lookup(tc.owner)
		if err != nil {
			t.Fatal(err)
		}
		theirs := filepath.Join(dir, tc.owner)
		if err := os.Mkdir(theirs, 0o700); err != nil {
			t.Fatal(err)
		}
		uid, _ := strconv.Atoi(u.Uid)
		gid, _ := strconv.Atoi(u.Gid)
		if err := os.Chown(theirs, uid, gid); err != nil {
			t.Fatal(err)
		}
		c := Default()
		c.DataDir, c.Compositor.StateDir = theirs, filepath.Join(dir, "sessions")
		err = c.CheckHost(nil, Host{})
		if err == nil || !strings.Contains(err.Error(), "data_dir: "+theirs+" belongs to uid "+u.Uid) {
			t.Fatalf("CheckHost with data_dir of %s = %v; want refused", tc.owner, err)
		}
		if want := "runuser -u " + tc.owner + " -- hotdeskd -check"; strings.Contains(err.Error(), want) != tc.hint {
			t.Errorf("CheckHost refusal for %s's data_dir = %v; want %q in it: %v", tc.owner, err, want, tc.hint)
		}
	}
}

// TestCheckHostUntrustedKeys: a TLS key another user may replace (their
// file, or their directory where hotdeskd would create it) is refused:
// terminals would talk to whoever knows that key.
func TestCheckHostUntrustedKeys(t *testing.T) {
	t.Parallel()
	testutil.NeedRoot(t, "needs root (files of another uid)")
	dir := t.TempDir()
	their := testutil.NobodysDir(t, filepath.Join(dir, "theirs"), 0o755)
	c := Default()
	c.DataDir = filepath.Join(dir, "data")
	c.Compositor.StateDir = filepath.Join(dir, "data", "sessions")
	c.TLS.CertFile, c.TLS.KeyFile = filepath.Join(dir, "tls", "server.crt"), filepath.Join(their, "server.key")
	checkHost(t, c, nil, "tls.key_file to be created in their directory", "tls.key_file: "+their+" belongs to uid 65534")
	key := filepath.Join(dir, "server.key")
	if err := os.WriteFile(key, []byte("k"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Chown(key, 65534, 65534); err != nil {
		t.Fatal(err)
	}
	c.TLS.KeyFile = key
	checkHost(t, c, nil, "their tls.key_file", "tls.key_file: "+key+" belongs to uid 65534")
	if err := os.Chown(key, 0, 0); err != nil {
		t.Fatal(err)
	}
	checkHost(t, c, nil, "root's key", "")
}

// TestHostWarningsSharedKioskUser: a kiosk policy whose sessions would
// all run as one regular local account (kiosk_user, or "kiosk" when a
// real account has that name) is a warning: different people's desktops
// would be one uid. A system account (or none) gets pooled accounts, and
// no warning.
func TestHostWarningsSharedKioskUser(t *testing.T) {
	t.Parallel()
	users := map[string]string{"alice": "1001", "kiosk": "1002", "svc": "998"}
	h := Host{PAMDirs: []string{t.TempDir()}, LookupUser: func(name string) (*user.User, error) {
		if uid, ok := users[name]; ok {
			return &user.User{Username: name, Uid: uid, Gid: uid}, nil
		}
		return nil, user.UnknownUserError(name)
	}}
	tests := []struct {
		name, session string
		want          string // "" = no warning
	}{
		{"kiosk_user regular", "auth = \"kiosk\"\n  kiosk_user = \"alice\"", "alice"},
		{"default kiosk account regular", "auth = \"kiosk\"", "kiosk"},
		{"kiosk_user system account", "auth = \"kiosk\"\n  kiosk_user = \"svc\"", ""},
		{"kiosk_user unknown", "auth = \"kiosk\"\n  kiosk_user = \"ghost\"", ""},
		{"no kiosk policy", "auth = \"card\"\n  kiosk_user = \"alice\"", ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := mustParse(t, "session {\n  "+tt.session+"\n}\n", "h.hcl")
			w := strings.Join(c.HostWarnings(h), "\n")
			got := strings.Contains(w, "kiosk sessions run as the local account")
			if tt.want == "" && got {
				t.Errorf("warnings = %q; want none about a shared kiosk account", w)
			}
			if tt.want != "" && !strings.Contains(w, "kiosk sessions run as the local account "+tt.want+" ") {
				t.Errorf("warnings = %q; want one saying kiosk sessions run as %s", w, tt.want)
			}
		})
	}
}

// TestCheckHostUntrustedPrlimit: every desktop run as its user starts as
// prlimit(1) (max_user_tasks, the PAM session's limits), found in hotdeskd's PATH, which then execs
// weston: one another user may replace (theirs, in a directory of theirs)
// runs as every desktop's user, as an untrusted compositor binary would.
// Not parallel: it sets PATH.
func TestCheckHostUntrustedPrlimit(t *testing.T) {
	testutil.NeedRoot(t, "needs root (files of another uid)")
	testutil.NeedTools(t, "weston")
	const other = 65534
	dir := t.TempDir()
	state := filepath.Join(dir, "state")
	bin := filepath.Join(dir, "bin")
	if err := os.Mkdir(bin, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(bin, "prlimit"), []byte("#!/bin/sh\nexec /usr/bin/prlimit \"$@\"\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	t.Setenv("PATH", bin+":"+os.Getenv("PATH"))
	c := Default()
	c.DataDir, c.Compositor.StateDir = filepath.Join(dir, "data"), state
	c.Compositor.Type, c.Compositor.RunAsUser, c.Compositor.MaxUserTasks = "weston", true, 4096
	checkHost(t, c, nil, "root's prlimit", "")
	if err := os.Chown(bin, other, other); err != nil {
		t.Fatal(err)
	}
	checkHost(t, c, nil, "prlimit in another user's directory", "compositor.run_as_user: "+bin+" belongs to uid 65534")
	c.Compositor.MaxUserTasks = 0 // prlimit still applies the PAM session's limits
	checkHost(t, c, nil, "prlimit in another user's directory, no task limit", "compositor.run_as_user: "+bin+" belongs to uid 65534")
	c.Compositor.RunAsUser = false // not run
	checkHost(t, c, nil, "desktops run as the daemon's user (prlimit is not run)", "")
	c.Compositor.RunAsUser = true
	if err := os.Remove(filepath.Join(bin, "prlimit")); err != nil {
		t.Fatal(err)
	}
	// What it runs as root from the PATH for the pooled accounts.
	if err := os.WriteFile(filepath.Join(bin, "crontab"), []byte("#!/bin/sh\nexit 1\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	checkHost(t, c, nil, "crontab in another user's directory", "compositor.run_as_user: "+bin+" belongs to uid 65534")
}

// TestGroupSettings: the settings every member must share are published
// as canonical text: a duration however it is written, host-specific
// settings not at all, and the policy blocks as a digest that changes
// with any block's settings or their order (the first match applies).
func TestGroupSettings(t *testing.T) {
	t.Parallel()
	parse := func(src string) map[string]string {
		t.Helper()
		c := mustParse(t, src, "g.hcl")
		return c.GroupSettings()
	}
	const carol = "  policy {\n    users = [\"carol\"]\n    auth = \"password\"\n  }\n"
	const dave = "  policy {\n    users = [\"dave\"]\n    auth = \"card\"\n  }\n"
	base := parse("auth {\n  max_lockout = \"15m\"\n" + carol + dave + "}\n")
	if got := parse("listen = \"127.0.0.1:1\"\ndata_dir = \"/srv/hd\"\nauth {\n  max_lockout = \"900s\"\n" + carol + dave + "}\n"); !reflect.DeepEqual(got, base) {
		t.Errorf("the same group settings written otherwise, other host settings: %v; want %v", got, base)
	}
	if base["auth.max_lockout"] != "15m0s" || base["etcd.lease_ttl"] != "5s" || base["session.auth"] != "card+pin" {
		t.Errorf("group settings %v; want max_lockout 15m0s, lease_ttl 5s, auth card+pin", base)
	}
	for name, src := range map[string]string{
		"blocks in another order": "auth {\n" + dave + carol + "}\n",
		"a block changed":         "auth {\n" + carol + strings.Replace(dave, `"card"`, `"card+pin"`, 1) + "}\n",
		"a block fewer":           "auth {\n" + carol + "}\n",
	} {
		if got := parse(src)["auth.policy"]; got == base["auth.policy"] || !strings.HasPrefix(got, "sha256:") {
			t.Errorf("%s: auth.policy = %q; want another digest than %q", name, got, base["auth.policy"])
		}
	}
	// What decides the same is the same: a list in another order, a
	// block's reauth_on_hotdesk spelt out as the auth block's.
	carolTwice := "  policy {\n    users = [\"carol\", \"cara\"]\n    auth = \"password\"\n  }\n"
	same := parse("auth {\n" + carolTwice + dave + "}\n")["auth.policy"]
	if got := parse("auth {\n" + strings.Replace(carolTwice, `"carol", "cara"`, `"cara", "carol"`, 1) + strings.Replace(dave, "auth =", "reauth_on_hotdesk = true\n    auth =", 1) + "}\n")["auth.policy"]; got != same {
		t.Errorf("the same policies written otherwise: auth.policy = %q; want %q", got, same)
	}
	if got := parse("auth {\n  reauth_on_hotdesk = false\n" + carolTwice + dave + "}\n")["auth.policy"]; got == same {
		t.Errorf("blocks that inherit another reauth_on_hotdesk: auth.policy = %q; want another digest", got)
	}
	if got := parse("")["auth.policy"]; got != "none" {
		t.Errorf("no policy blocks: auth.policy = %q; want none", got)
	}
}

// TestPreviousReleaseLockouts: a configuration the previous release
// (f477c10) accepts still loads after an upgrade (a daemon that refused
// it would not start again, its desktops left without a broker): an
// auth.max_lockout over MaxLockoutBound, which that release allowed, is
// taken as the bound, and so is an auth.lockout over it; each is said
// (hotdeskd -check and the start's log), naming the line. Set in code
// (validate) it is still refused.
func TestPreviousReleaseLockouts(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		file              string
		lockout, max      time.Duration
		wantLines, noLine []string
	}{
		{"long-lockout.hcl", time.Hour, MaxLockoutBound, []string{"line 5: auth.max_lockout = 8760h0m0s"}, []string{"auth.lockout"}},
		{"long-base-lockout.hcl", MaxLockoutBound, MaxLockoutBound, []string{"line 5: auth.lockout = 1000h0m0s", "line 6: auth.max_lockout = 2000h0m0s"}, nil},
	} {
		c, err := Load(filepath.Join("testdata/f477c10", tc.file))
		if err != nil {
			t.Errorf("%s: Load = %v; want it loaded as the previous release did", tc.file, err)
			continue
		}
		if c.Auth.Lockout != tc.lockout || c.Auth.MaxLockout != tc.max {
			t.Errorf("%s: lockout %v, max_lockout %v; want %v, %v", tc.file, c.Auth.Lockout, c.Auth.MaxLockout, tc.lockout, tc.max)
		}
		w := strings.Join(c.HostWarnings(Host{}), "\n")
		for _, want := range append(tc.wantLines, "auth.max_lockout", MaxLockoutBound.String()) {
			if !strings.Contains(w, want) {
				t.Errorf("%s: warnings %q; want %q in them", tc.file, w, want)
			}
		}
		for _, not := range tc.noLine {
			if strings.Contains(w, not) {
				t.Errorf("%s: warnings %q; want no %q", tc.file, w, not)
			}
		}
	}
}
