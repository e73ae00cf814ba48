package main

import (
	"flag"
	"io"

	"github.com/hotdesk/hotdesk/cmd/internal/clidoc"
	"github.com/hotdesk/hotdesk/configs"
)

// options are hotdeskd's command line.
type options struct {
	configPath  string
	check       bool
	fingerprint bool
	version     bool
}

// newFlagSet declares hotdeskd's flags and its page: --help, the man page
// and the completion scripts all come from here.
func newFlagSet(o *options, stderr io.Writer) (*flag.FlagSet, *clidoc.Page) {
	fs := flag.NewFlagSet("hotdeskd", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.StringVar(&o.configPath, "config", "", "configuration `FILE` (default "+defaultConfigPath+" if it exists, else the built-in defaults)")
	fs.BoolVar(&o.check, "check", false, "validate the configuration as a start would (groups it names must exist, the etcd CA and client key pair must load, no two listeners on one address), print its warnings and \"FILE: ok\" and exit")
	fs.BoolVar(&o.fingerprint, "fingerprint", false, "print the terminal listener's certificate fingerprint (creating the certificate if needed) and exit")
	fs.BoolVar(&o.version, "version", false, "print the version and exit")
	page := &clidoc.Page{
		Name:     "hotdeskd",
		Section:  8,
		Short:    "hotdesk session broker daemon for thin-client hot-desking",
		Synopsis: []string{"[-config FILE] [-check | -fingerprint | -version]"},
		Flags:    fs,
		Description: `hotdeskd is the session broker of hotdesk. Terminals (hotdesk-term) connect to it over TLS and report token events: a smart card, NFC badge, phone or software key inserted or removed. hotdeskd looks the token up in the group registry (etcd), authenticates the user through PAM when the login policy asks, and creates, suspends, resumes and destroys the user's desktop session (a compositor such as weston), wherever the person presents the token. A token presented at a terminal of another broker of the group is redirected to the broker that holds its session.

With no etcd endpoints configured hotdeskd runs an embedded single-member etcd in its data directory (a single-server install); a server group points every broker at the same etcd cluster.

hotdeskd runs as root: it starts each desktop as its user and runs PAM logins for other users. The desktops outlive a restart of hotdeskd and are adopted by the next one.

On first start hotdeskd generates the terminal listener's TLS certificate; terminals pin its fingerprint:

  hotdeskd -config /etc/hotdesk/hotdesk.hcl -fingerprint`,
		Sections: []clidoc.Section{
			{Title: "SIGNALS", Body: `SIGINT and SIGTERM stop hotdeskd gracefully; a second signal forces exit. SIGHUP re-reads the configuration: the log level, the login policies (session.auth and kiosk_user; auth's pam_service, pin_service, reauth_on_hotdesk, self_register, max_sessions_per_user and policy blocks) and session.suspend_timeout apply at once (the policies to every login decided from then on, the timeout to every suspended desktop, from its suspension), and the server's record publishes the group settings they change; other changes after a restart, named in a warning; a file with an error is logged and the running configuration kept. Under systemd (Type=notify) hotdeskd reports READY, RELOADING and STOPPING; a start that waits for etcd to answer (its members down or without a quorum) says so in its STATUS and keeps extending its start timeout until etcd answers. The admin socket, the metrics listener and the dashboard are served from early in the start: until the start is done, hotdeskctl ready (and every other command) is answered with what it is doing, e.g. "hotdeskd is starting: waiting for etcd to answer: " and how each endpoint is reached, and the metrics listener's /readyz and the dashboard's every page (if it is configured) with the same words less how etcd is reached.`},
			{Title: "EXIT STATUS", Body: `0 after a clean stop, -check of a valid file, -fingerprint, -version or -help; 1 on a failure (a configuration error names file:line:column); 2 on a usage error (an unknown flag or any argument).`},
			{Title: "FILES", Body: `/etc/hotdesk/hotdesk.hcl: the configuration (hotdesk.hcl(5)).

/var/lib/hotdesk: the data directory: TLS key pair, embedded etcd, session state.

/run/hotdesk/admin.sock: the admin API used by hotdeskctl(8).

/etc/pam.d/hotdesk, /etc/pam.d/hotdesk-pin, /etc/pam.d/hotdesk-admin: the PAM services for passwords (and the account checks of card logins), PINs and the dashboard's logins. A service the configuration uses without a file there is a warning of -check and of the start: libpam would use /etc/pam.d/other instead.`},
		},
		SeeAlso: []string{"hotdesk.hcl(5)", "hotdeskctl(8)", "hotdesk-term(1)", "systemd.service(5)", "pam(8)"},
	}
	fs.Usage = func() { page.Usage(fs.Output()) }
	return fs, page
}

// configPage is hotdesk.hcl(5), rendered from the shipped sample.
func configPage() *clidoc.Page {
	return clidoc.ConfigPage("hotdesk.hcl", 5, "configuration file of hotdeskd, the hotdesk session broker", configs.HotdeskHCL,
		[]clidoc.Section{
			{Title: "EXAMPLE", Body: "A broker of a server group, with mutual TLS to the group's etcd cluster:\n\n" + indent(configs.GroupHCL)},
			{Title: "FILES", Body: "/etc/hotdesk/hotdesk.hcl"},
		},
		[]string{"hotdeskd(8)", "hotdeskctl(8)", "pam.d(5)"})
}

// indent makes every line of s literal in clidoc's markup.
func indent(s string) string {
	out := ""
	for _, l := range splitLines(s) {
		out += "  " + l + "\n"
	}
	return out
}

func splitLines(s string) []string {
	var out []string
	start := 0
	for i := 0; i < len(s); i++ {
		if s[i] == '\n' {
			out = append(out, s[start:i])
			start = i + 1
		}
	}
	if start < len(s) {
		out = append(out, s[start:])
	}
	return out
}
