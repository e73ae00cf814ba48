package main

import (
	"flag"

	"github.com/hotdesk/hotdesk/cmd/internal/clidoc"
)

// ctlPage describes hotdeskctl for --help, hotdeskctl(8) and the completion
// scripts (`hotdeskctl __gendocs man|bash|zsh DIR`, the packaging's
// contract).
func ctlPage(fs *flag.FlagSet) *clidoc.Page {
	return &clidoc.Page{
		Name:     "hotdeskctl",
		Section:  8,
		Short:    "administer hotdeskd, the hotdesk session broker",
		Synopsis: []string{"[-socket PATH] [-timeout D] COMMAND [ARGS]", "-version"},
		Flags:    fs,
		Commands: []clidoc.Command{
			{Name: "sessions", Args: "[-json]", Help: "list the sessions of the server group: state, user, terminal, server"},
			{Name: "session kill", Args: "ID", Help: "end a session (its desktop is destroyed)"},
			{Name: "token pair", Args: "-user USER [-label LABEL] [-ttl 10m] [-json]", Help: "create a single-use pairing code that enrolls the next software token or phone presented with it for USER"},
			{Name: "token list", Args: "[-json]", Help: "list the registered tokens"},
			{Name: "token register", Args: "ID -user USER [-label LABEL]", Help: "register a card by its UID (uid.HEX) or PIV CHUID (piv.GUID) to USER"},
			{Name: "token alias", Args: "ID -of TOKEN [-label LABEL]", Help: "register ID to the user of TOKEN"},
			{Name: "token disable", Args: "ID", Help: "disable a token; its session is locked wherever it runs"},
			{Name: "token enable", Args: "ID", Help: "enable a disabled token"},
			{Name: "token delete", Args: "ID", Help: "delete a token; its session is locked"},
			{Name: "server list", Args: "[-json]", Help: "list the servers of the group: address, version, sessions, capacity, state"},
			{Name: "server drain", Args: "[ID]", Help: "stop placing new sessions on a server (default: this one)"},
			{Name: "server undrain", Args: "[ID]", Help: "place new sessions on a drained server again"},
			{Name: "ready", Help: "exit 0 when the daemon is ready (registry lease held), else 1"},
		},
		Description: `hotdeskctl talks to hotdeskd's admin API over its local unix socket. The daemon checks the caller's credentials: root, the daemon's own user, and members of the admin_group of hotdesk.hcl(5) (the Debian package's hotdesk group, when configured) may use it.

Listings print a table, or JSON with -json for scripts.`,
		Sections: []clidoc.Section{
			{Title: "ENVIRONMENT", Body: "HOTDESK_ADMIN_SOCKET: the admin socket when -socket is not given."},
			{Title: "EXIT STATUS", Body: "0 on success, -version or -help; 1 when the command failed or the daemon refused it; 2 on a usage error."},
			{Title: "EXAMPLE", Body: "  hotdeskctl token pair -user alice\n  hotdeskctl sessions -json\n  hotdeskctl server drain broker-2"},
		},
		SeeAlso: []string{"hotdeskd(8)", "hotdesk.hcl(5)", "hotdesk-term(1)"},
	}
}
