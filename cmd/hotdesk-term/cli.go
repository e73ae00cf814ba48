package main

import (
	"flag"

	"github.com/hotdesk/hotdesk/cmd/internal/clidoc"
)

// termPage describes hotdesk-term for --help, hotdesk-term(1) and the
// completion scripts (`hotdesk-term __gendocs man|bash|zsh DIR`).
func termPage(fs *flag.FlagSet) *clidoc.Page {
	return &clidoc.Page{
		Name:     "hotdesk-term",
		Section:  1,
		Short:    "the hotdesk terminal agent",
		Synopsis: []string{"[flags] pair CODE", "[flags] run", "[flags] agent", "-version"},
		Flags:    fs,
		Commands: []clidoc.Command{
			{Name: "pair", Args: "CODE", Help: "enroll a new software token (or, with -pcsc, the phone at the reader) with a pairing code from hotdeskctl token pair"},
			{Name: "run", Help: "connect to the broker and report token events until quit, end of input or a signal"},
			{Name: "agent", Help: "the terminal service: never exits on its own, waits for its brokers, fails over between the brokers of its group, shows the greeter with -greeter"},
		},
		Description: `hotdesk-term is the terminal agent of hotdesk. It keeps a TLS connection to a broker (hotdeskd), verified by the certificate fingerprint given with -pin or by a CA with -ca, and reports token events: software tokens from its keystore, and with -pcsc the smart cards, NFC badges and phones at the terminal's PC/SC readers. It relays authentication prompts, follows redirects to the broker that holds a session (pinning the fingerprint the group published, at most 3 hops) and reconnects with backoff when the connection drops.

In run mode it reads commands from standard input, one per line:

  insert NAME    present the software token NAME
  remove NAME    pull it
  login USER     log in as USER with a password, without a token (the password policy)
  logout USER    end that login at this terminal (the session is suspended)
  answer TEXT    answer the pending prompt
  cancel         cancel the pending prompt
  status         print the connection and session state
  quit           disconnect and exit

Events are printed on standard output, one line each (JSON lines with -json); logs go to standard error. Answers to prompts are never printed. With -pcsc, a card entering a reader is a card_reading event at once ({"event":"card_reading","reader":…}; text "Reading card…"), before it is identified; exactly one card event at that reader ends it: kind inserted (identified), error (unreadable, or no answer within 5 s), or removed with an empty token (pulled before it was identified). A card back within the removal grace reports nothing, not even card_reading.

-config FILE reads the settings from an HCL file (/etc/hotdesk/hotdesk-term.hcl documents every key); flags on the command line win.

A hotdesk-term built without PC/SC (go build -tags nopcsc, as the Debian package's /usr/bin/hotdesk-term) does not load libpcsclite; given -pcsc it runs hotdesk-term-pcsc, the same agent built with PC/SC, installed next to it or in ../libexec/hotdesk.`,
		Sections: []clidoc.Section{
			{Title: "EXIT STATUS", Body: "0 on quit, end of input, SIGINT or SIGTERM, -version or -help; 1 on failure (including a refused pairing, and a phone pairing stopped by SIGINT or SIGTERM: \"pair: pairing cancelled\"); 2 on a usage error."},
			{Title: "EXAMPLE", Body: "  hotdesk-term -server broker:4500 -pin sha256:3f1c... pair 7K2M-QX4D-9HTR\n  hotdesk-term -server broker:4500 -pin sha256:3f1c... -pcsc run"},
			{Title: "FILES", Body: "/etc/hotdesk/hotdesk-term.hcl: the service's configuration (-config).\n\n$XDG_CONFIG_HOME/hotdesk/tokens.json: the software token keystore (default of -keystore).\n\nmembers.json in the state directory (-state-dir, default the keystore's directory): the group's members learned from the last broker, kept so that the agent can reach them at boot while its configured brokers are down."},
		},
		SeeAlso: []string{"hotdeskd(8)", "hotdeskctl(8)", "pcscd(8)", "xfreerdp(1)"},
	}
}
