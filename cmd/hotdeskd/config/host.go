package config

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"

	"github.com/hashicorp/hcl/v2"
	"golang.org/x/sys/unix"

	"github.com/hotdesk/hotdesk/internal/atomicfile"
	"github.com/hotdesk/hotdesk/internal/trustpath"
)

// Host is what CheckHost asks of the machine the daemon runs on. A nil
// field takes the system's.
type Host struct {
	// LookupGroup returns an error when the group does not exist; default
	// os/user.LookupGroup (NSS), as the daemon resolves it.
	LookupGroup func(name string) error
	// PAMDirs are where libpam looks for a service's file when auth.pam_dir
	// is not set; default DefaultPAMDirs.
	PAMDirs []string
	// LookupUser returns a local account; default os/user.Lookup (NSS),
	// as the compositor backend resolves a session's user.
	LookupUser func(name string) (*user.User, error)
	// ClockUnsynced reports whether the host's clock is known not to be
	// kept synchronised; default clockUnsynced (the kernel's adjtimex
	// status, which an NTP client clears while it keeps the clock in step).
	ClockUnsynced func() bool
}

func (h Host) clockUnsynced() bool {
	if h.ClockUnsynced != nil {
		return h.ClockUnsynced()
	}
	return clockUnsynced()
}

// clockUnsynced reports whether the kernel says the clock is not
// synchronised: adjtimex (read only, any user may) answers TIME_ERROR,
// which it does until an NTP client (systemd-timesyncd, chrony, ntpd)
// has set the clock and while none keeps it. A failed call says nothing.
func clockUnsynced() bool {
	var tx unix.Timex
	state, err := unix.Adjtimex(&tx)
	return err == nil && state == unix.TIME_ERROR
}

func (h Host) lookupUser(name string) (*user.User, error) {
	if h.LookupUser != nil {
		return h.LookupUser(name)
	}
	return user.Lookup(name)
}

// regularMinUID is compositor/weston.DefaultMinUID: a session's user
// with a uid at least this (not nobody) runs its desktop as itself, any
// other a pooled kiosk account of its own.
const regularMinUID = 1000

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
// must be a readable, matching key pair, and what the daemon runs or reads
// its PAM stacks from (event_hook, seat_agent, auth.pam_dir and its
// services, the weston binary of desktops run as their users and the
// prlimit they start through) and where it
// keeps keys and desktops (data_dir, compositor.state_dir, the TLS, etcd
// and dashboard key pairs and CA) must be
// changeable by root and the daemon's user alone (trustpath.Check). Its error is an *Error whose
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
	// What hotdeskd runs as root, or reads its PAM stacks from, or starts
	// as every desktop's user: whoever else may change such a file (or a
	// directory above it, or a link on the way) gets root, or every
	// user's desktop.
	trusted := func(key, path, use string) {
		if err := trustpath.Check(path); err != nil {
			diags = append(diags, &hcl.Diagnostic{Severity: hcl.DiagError, Summary: "Path others may change",
				Detail:  fmt.Sprintf("%s: %v: %s, so only root (or hotdeskd's user) may be able to change it, a directory above it or a link on the way.", key, err, use),
				Subject: rg.ptr(key)})
		}
	}
	// Where it keeps its keys and the desktops' directories, which it
	// creates, chmods and chowns (a directory that does not exist yet
	// included: in one others may write, they could create it first).
	for _, d := range []struct{ key, path string }{{"data_dir", c.DataDir}, {"compositor.state_dir", c.Compositor.StateDir}} {
		if err := trustpath.CheckDir(d.path); err != nil {
			diags = append(diags, &hcl.Diagnostic{Severity: hcl.DiagError, Summary: "Path others may change",
				Detail:  fmt.Sprintf("%s: %v: hotdeskd keeps keys and desktops there, as root, so only root (or hotdeskd's user) may be able to change it, a directory above it or a link on the way.%s", d.key, err, ownerHint(err)),
				Subject: rg.ptr(d.key)})
		}
	}
	// Keys and certificates: whoever may replace one has hotdeskd use
	// their key (terminals, the dashboard's browsers and etcd then talk to
	// them) or trust their CA. One that does not exist yet (the broker's
	// own, created at the first start) may not be created by them first.
	for _, f := range []struct{ key, path string }{
		{"tls.cert_file", c.TLS.CertFile}, {"tls.key_file", c.TLS.KeyFile},
		{"dashboard.cert_file", c.Dashboard.CertFile}, {"dashboard.key_file", c.Dashboard.KeyFile},
		{"etcd.ca_file", c.Etcd.CAFile}, {"etcd.cert_file", c.Etcd.CertFile}, {"etcd.key_file", c.Etcd.KeyFile},
	} {
		switch {
		case f.path == "":
		case fileExists(f.path):
			trusted(f.key, f.path, "hotdeskd trusts what it holds")
		default:
			if err := trustpath.CheckDir(filepath.Dir(f.path)); err != nil {
				diags = append(diags, &hcl.Diagnostic{Severity: hcl.DiagError, Summary: "Path others may change",
					Detail:  fmt.Sprintf("%s: %v: hotdeskd creates its key there, so only root (or hotdeskd's user) may be able to change it, a directory above it or a link on the way.%s", f.key, err, ownerHint(err)),
					Subject: rg.ptr(f.key)})
			}
		}
	}
	if c.EventHook != "" {
		trusted("event_hook", c.EventHook, "hotdeskd runs it for every event, as its own user (root)")
	}
	if len(c.Seats) > 0 && strings.Contains(c.SeatAgent, "/") {
		trusted("seat_agent", c.SeatAgent, "hotdeskd runs it for every seat, as its own user (root)")
	}
	if d := c.Auth.PAMDir; d != "" {
		trusted("auth.pam_dir", d, "libpam reads the login stacks from it (pam_exec runs what they name, as root)")
		for _, s := range c.PAMServices() {
			if p := filepath.Join(d, s.Service); fileExists(p) {
				trusted("auth.pam_dir", p, "libpam reads the "+s.Service+" stack from it")
			}
		}
	}
	if c.Compositor.Type == "weston" && c.Compositor.RunAsUser {
		if bin, err := exec.LookPath(c.Compositor.Binary); err == nil {
			trusted("compositor.binary", bin, "every desktop runs it, as the desktop's user")
		}
		// weston is started through prlimit(1) (max_user_tasks, the PAM
		// session's limits), found in the PATH as the weston backend
		// does, which runs as the desktop's user first.
		if bin, err := exec.LookPath("prlimit"); err == nil {
			trusted("compositor.run_as_user", bin, "every desktop starts as prlimit (util-linux), as the desktop's user")
		}
		// What the weston backend runs as root, found in the PATH, for
		// the pooled kiosk accounts: creating one, and clearing what a
		// session of one left (its cron table, IPC objects).
		for _, name := range []string{"useradd", "crontab", "ipcrm"} {
			if bin, err := exec.LookPath(name); err == nil {
				trusted("compositor.run_as_user", bin, "hotdeskd runs "+name+" as root for the desktops' pooled accounts")
			}
		}
	}
	if diags.HasErrors() {
		return &Error{Diagnostics: diags}
	}
	return nil
}

func fileExists(path string) bool {
	_, err := os.Stat(path)
	return err == nil
}

// Bounds of the reads of files the configuration names: a CA file (as
// the daemon's, registry.MaxCAFile) and a PAM service file.
const (
	maxCAFile  = 1 << 20
	maxPAMFile = 1 << 20
)

// checkCAFile reads a CA file as the daemon's etcd client does: it must
// hold at least one PEM certificate.
func checkCAFile(path string) error {
	pem, err := atomicfile.ReadLimited(path, maxCAFile)
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
// the dashboard use, each once (kiosk policies use none; card policies
// consult the account stack of theirs, pam_service unless they name one).
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
		case kind == "kiosk":
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
// the Unix password: a "PIN" would be the user's password), and the values
// of the file taken otherwise than written (a configuration of an earlier
// release). hotdeskd -check prints them and hotdeskd logs them at start.
func (c *Config) HostWarnings(h Host) []string {
	dirs := h.PAMDirs
	if dirs == nil {
		dirs = DefaultPAMDirs
	}
	if c.Auth.PAMDir != "" {
		dirs = []string{c.Auth.PAMDir} // pam_start_confdir reads only it
	}
	w := slices.Clone(c.notes)
	if k := c.Etcd.KeyFile; len(c.Etcd.Endpoints) > 0 && k != "" {
		if fi, err := os.Stat(k); err == nil && fi.Mode().Perm()&0o077 != 0 {
			w = append(w, fmt.Sprintf("etcd.key_file %s is readable or writable by others than its owner (mode %04o): whoever reads it is this broker to etcd; chmod 600 %s",
				k, fi.Mode().Perm(), k))
		}
	}
	if len(c.Etcd.Endpoints) > 0 && h.clockUnsynced() {
		w = append(w, "this host's clock is not synchronised (the kernel's adjtimex reports TIME_ERROR: no NTP client keeps it): the brokers of a group compare times written by each other's clocks (lockouts, pairing codes' expiry, terminal listings), which go wrong once the clocks are a second apart; run one (systemd-timesyncd, chrony) on every broker")
	}
	if u := c.sharedKioskUser(h); u != nil {
		w = append(w, fmt.Sprintf("kiosk sessions run as the local account %s (uid %s, session.kiosk_user or the default \"kiosk\"): every kiosk desktop, whoever uses it, is that one user, and one person's session can read another's files and reach their desktop; unset kiosk_user (or name no regular account) for a pooled account per session (compositor.kiosk_accounts)",
			u.Username, u.Uid))
	}
	for _, s := range c.PAMServices() {
		file := ""
		for _, d := range dirs {
			if _, err := os.Stat(filepath.Join(d, s.Service)); err == nil {
				file = filepath.Join(d, s.Service)
				break
			}
		}
		switch {
		case file == "":
			w = append(w, fmt.Sprintf("PAM service %q (%s, used by %s) has no file %s: libpam falls back to %s (on Debian the Unix password); install %s (hotdesk ships one) or name an existing service",
				s.Service, s.Key, s.UsedBy, filepath.Join(dirs[0], s.Service), filepath.Join(dirs[0], "other"), filepath.Join(dirs[0], s.Service)))
		case c.Auth.OpenSession && s.Key != "dashboard.pam_service" && !mayHaveSessionStack(file):
			w = append(w, fmt.Sprintf("PAM service %q (%s, used by %s) has no session rules in %s: with auth.open_session every login of it (a card's too) opens a PAM session, which libpam refuses without one, and the terminal is told the account is disabled; add \"session required pam_permit.so\" or the site's session modules",
				s.Service, s.Key, s.UsedBy, file))
		}
	}
	return w
}

// mayHaveSessionStack reports whether the PAM service file may give its
// service session rules: a "session" (or "-session") line, or an
// @include, whose file is not looked into. An unreadable file may.
func mayHaveSessionStack(file string) bool {
	b, err := atomicfile.ReadLimited(file, maxPAMFile)
	if err != nil {
		return true
	}
	for _, l := range strings.Split(string(b), "\n") {
		f := strings.Fields(l)
		if len(f) > 0 && (f[0] == "session" || f[0] == "-session" || f[0] == "@include") {
			return true
		}
	}
	return false
}

// sharedKioskUser returns the regular local account every kiosk session
// runs as, if a kiosk policy is configured and weston runs desktops as
// their users: kiosk_user when set (else "kiosk", what a token registered
// to nobody gets) names an account with a uid of at least regularMinUID,
// so the backend runs each such session as it instead of a pooled
// account of the session's own. Nil otherwise.
func (c *Config) sharedKioskUser(h Host) *user.User {
	if !c.usesKiosk() || c.Compositor.Type != "weston" || !c.Compositor.RunAsUser {
		return nil
	}
	name := c.Session.KioskUser
	if name == "" {
		name = "kiosk"
	}
	u, err := h.lookupUser(name)
	if err != nil {
		return nil
	}
	uid, err := strconv.Atoi(u.Uid)
	if err != nil || uid < regularMinUID || uid == 65534 {
		return nil
	}
	return u
}

// ownerHint completes the refusal of a path that belongs to another user,
// made by a check run as root: hotdeskd may run as that very user (the
// packaged unprivileged drop-in runs it as hotdesk), whose check would
// accept it, and an administrator checking as root must be told so.
//
// Only for where such a daemon keeps its state and keys (data_dir,
// state_dir, where it creates a key), only for a system account (a
// service runs as one; a person's account is no daemon's), and only for
// a name that is safe to paste into a shell.
func ownerHint(err error) string {
	var oe *trustpath.OwnerError
	if os.Geteuid() != 0 || !errors.As(err, &oe) || oe.UID >= 1000 {
		return ""
	}
	u, lerr := user.LookupId(strconv.FormatUint(uint64(oe.UID), 10))
	if lerr != nil || !safeName.MatchString(u.Username) {
		return ""
	}
	return fmt.Sprintf(" If hotdeskd runs as %[1]s (as the unprivileged drop-in runs it as hotdesk), check as that user: runuser -u %[1]s -- hotdeskd -check; otherwise a root hotdeskd must not trust it: chown it to root.", u.Username)
}

// safeName is a user name that needs no quoting in a shell.
var safeName = regexp.MustCompile(`^[a-z_][a-z0-9_-]*$`)
