package config

import (
	"errors"
	"fmt"
	"net"
	"net/url"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/hashicorp/hcl/v2"
)

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
	if g := c.Session.ReconnectGrace; g < 0 || g > MaxReconnectGrace {
		bad("session.reconnect_grace", "Invalid reconnect grace", "must be between 0s (none) and %v, got %v.", MaxReconnectGrace, g)
	}
	oneOf("session.auth", "Unknown auth policy", c.Session.Auth, authPolicies)
	if c.Session.MaxSessions < 0 {
		bad("session.max_sessions", "Invalid session limit", "must be 0 (unlimited) or more, got %d.", c.Session.MaxSessions)
	}
	if c.Session.Weight < 1 || c.Session.Weight > MaxWeight {
		bad("session.weight", "Invalid weight", "must be between 1 and %d, got %d.", MaxWeight, c.Session.Weight)
	}

	a := c.Auth
	if a.PAMService == "" || strings.ContainsAny(a.PAMService, "/ ") {
		bad("auth.pam_service", "Invalid PAM service", "%q is not a service name.", a.PAMService)
	}
	if a.PINService == "" || strings.ContainsAny(a.PINService, "/ ") {
		bad("auth.pin_service", "Invalid PAM service", "%q is not a service name.", a.PINService)
	}
	positive("auth.timeout", a.Timeout)
	positive("auth.prompt_timeout", a.PromptTimeout)
	if a.PromptTimeout > a.Timeout {
		bad("auth.prompt_timeout", "Invalid duration", "must be at most timeout (%s), got %s.", a.Timeout, a.PromptTimeout)
	}
	positive("auth.failure_window", a.FailureWindow)
	positive("auth.lockout", a.Lockout)
	if a.MaxLockout < a.Lockout {
		bad("auth.max_lockout", "Invalid duration", "must be at least lockout (%s), got %s.", a.Lockout, a.MaxLockout)
	} else if a.MaxLockout > MaxLockoutBound {
		bad("auth.max_lockout", "Invalid duration", "must be at most %s (a longer lockout is an account disabled: do that in the account stack), got %s.", MaxLockoutBound, a.MaxLockout)
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
	if a, b, ok := namesDifferingInCase(a.Rules); ok {
		bad("auth.policy.users", "Ambiguous user names", "%q and %q differ only in case, and user names match case-insensitively: write one spelling.", a, b)
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
	if n := c.Compositor.MaxUserTasks; n != 0 && n < 64 {
		bad("compositor.max_user_tasks", "Invalid task limit", "must be 0 (no limit) or at least 64 (a desktop alone runs dozens of threads), got %d.", n)
	}
	if !kioskPrefixRe.MatchString(c.Compositor.KioskAccountPrefix) {
		bad("compositor.kiosk_account_prefix", "Invalid account prefix", "%q must be 1-20 lower-case letters, digits, '_' or '-', starting with a letter.", c.Compositor.KioskAccountPrefix)
	}

	l := c.Limits
	for key, v := range map[string]int{
		"limits.max_connections": l.MaxConnections, "limits.max_connections_per_source": l.MaxConnectionsPerSource,
		"limits.max_unauthenticated": l.MaxUnauthenticated, "limits.max_unauthenticated_per_source": l.MaxUnauthenticatedPerSource,
		"limits.max_pending_logins":            l.MaxPendingLogins,
		"limits.max_pending_logins_per_source": l.MaxPendingLoginsPerSource, "limits.max_pending_logins_per_user": l.MaxPendingLoginsPerUser,
		"limits.max_pending_logins_per_terminal": l.MaxPendingLoginsPerTerminal, "limits.max_tickets_per_session": l.MaxTicketsPerSession,
		"limits.token_events_per_second": l.TokenEventsPerSecond,
	} {
		if v < 1 {
			bad(key, "Invalid limit", "must be at least 1, got %d.", v)
		}
	}
	if l.TokenEventsPerSecond > MaxTokenEventsPerSecond {
		bad("limits.token_events_per_second", "Invalid limit", "must be at most %d, got %d.", MaxTokenEventsPerSecond, l.TokenEventsPerSecond)
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
	if c.Compositor.Type == "wayray" && c.Compositor.RunAsUser {
		w = append(w, "compositor.type = \"wayray\" runs every desktop as hotdeskd's user: run_as_user and the kiosk accounts do not apply (hotdeskd refuses to start as root unless insecure_allow_root)")
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
	if c.usesKiosk() {
		w = append(w, "a kiosk policy is configured: every token it covers gets a desktop without a login (as the token's registered user, kiosk_user, or a pooled kiosk account)")
	}
	if c.Session.MaxSessions == 0 {
		w = append(w, "session.max_sessions = 0: no cap on desktops; every token can start one")
	}
	return w
}

// usesKiosk reports whether session.auth or an auth.policy block is the
// kiosk policy.
func (c *Config) usesKiosk() bool {
	if c.Session.Auth == "kiosk" {
		return true
	}
	return slices.ContainsFunc(c.Auth.Rules, func(r PolicyRule) bool { return r.Auth == "kiosk" })
}

// namesDifferingInCase returns two user names of the policy blocks that
// differ only in case (a user logs in with either spelling, so which
// block applies would be left to chance), if there are.
func namesDifferingInCase(rules []PolicyRule) (a, b string, ok bool) {
	var names []string
	for _, r := range rules {
		for _, u := range r.Users {
			for _, v := range names {
				if u != v && strings.EqualFold(u, v) {
					return v, u, true
				}
			}
			names = append(names, u)
		}
	}
	return "", "", false
}
