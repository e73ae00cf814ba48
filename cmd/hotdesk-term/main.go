// Command hotdesk-term is the reference terminal agent of hotdesk.
//
//	hotdesk-term [flags] pair CODE   enroll a new software token with a pairing code
//	hotdesk-term [flags] run         connect and report token events
//	hotdesk-term [flags] agent       the terminal service (boot into this)
//
// In run mode it keeps a TLS connection to a broker (-server, verified by
// -pin or -ca), reads commands from stdin, one per line ("insert NAME",
// "remove NAME", "login USER", "logout USER", "answer TEXT", "cancel",
// "status", "quit"; end of input is quit),
// proves possession of software tokens from its keystore, relays
// authentication prompts, follows redirects to the broker that holds a
// session (pinning the certificate fingerprint the redirect names, at most
// proto.MaxHops hops), and reconnects with backoff when the connection
// drops. Events are printed on stdout, one line each (JSON lines with
// -json); logs go to stderr. Answers to prompts are never printed. With
// -pcsc a card entering a reader is a "card_reading" event at once, ended
// by one "card" event at that reader (inserted, error, or removed with an
// empty token: pulled before it was identified); see cardEventOf.
//
// agent is run as a service: it never exits on its own (only on SIGINT or
// SIGTERM); it waits for its brokers however long they are away, fails
// over between the brokers of its group (-server, repeatable, the config
// file's servers, -srv, and the members each broker lists in its Welcome;
// trusted by -pin, repeatable, or -ca: PROTOCOL.md §11), presents inserted
// tokens again after every reconnect, and pings its broker every
// -keepalive. Commands on stdin still work; its end is ignored.
//
// -greeter shows the full-screen greeter (package greeter) on $DISPLAY or
// $WAYLAND_DISPLAY whenever no desktop is attached: prompts are answered
// there (PINs masked), F2 enters a pairing code (the pairing waits for the
// phone only while its screen is shown; Esc cancels it); what it draws is also
// reported as "greeter" events. Without a display the agent runs on
// without it.
//
// -config FILE reads settings from an HCL file (configs/hotdesk-term.hcl
// documents every key); flags given on the command line win.
//
// Exit status: 0 on quit, end of input or SIGINT/SIGTERM; 1 on failure
// (including a refused pairing, and a phone pairing stopped by SIGINT or
// SIGTERM: "pair: pairing cancelled"); 2 on a usage error.
package main

import (
	"bufio"
	"context"
	"crypto/x509"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/hashicorp/go-hclog"

	"github.com/hotdesk/hotdesk/cmd/internal/clidoc"
	"github.com/hotdesk/hotdesk/cmd/internal/exitcode"
	"github.com/hotdesk/hotdesk/internal/atomicfile"
	"github.com/hotdesk/hotdesk/internal/clock"
	"github.com/hotdesk/hotdesk/internal/version"
	"github.com/hotdesk/hotdesk/proto"
	"github.com/hotdesk/hotdesk/tokens/soft"
)

// errUsage marks command-line errors (exit status 2).
var errUsage = exitcode.ErrUsage

func main() {
	exitcode.Exit("hotdesk-term", run(os.Args[1:], os.Stdin, os.Stdout, os.Stderr), context.Canceled)
}

type stringList []string

func (s *stringList) String() string     { return strings.Join(*s, ",") }
func (s *stringList) Set(v string) error { *s = append(*s, v); return nil }

// options are the parsed command line.
type options struct {
	servers, pins                                   []string
	srv, config, stateDir                           string
	ca, id, name, keystore, token, insert, logLevel string
	answers                                         []string
	keepalive, minBackoff, maxBackoff               time.Duration
	greeter                                         bool
	json                                            bool
	timeout                                         time.Duration
	args                                            []string
	pcsc                                            bool
	readers                                         string
	removeGrace                                     time.Duration
	display                                         string
	version                                         bool
}

func parseFlags(args []string, stderr io.Writer) (options, error) {
	var o options
	var answers, servers, pins stringList
	fs, _ := newFlagSet(&o, &answers, &servers, &pins, stderr)
	if err := exitcode.Parse(fs, args); err != nil {
		return o, err
	}
	if o.version {
		if fs.NArg() > 0 {
			return o, fmt.Errorf("%w: -version takes no arguments", errUsage)
		}
		return o, nil
	}
	o.answers = answers
	o.servers, o.pins = servers, pins
	o.args = fs.Args()
	set := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { set[f.Name] = true })
	if o.config != "" {
		fc, err := loadConfigFile(o.config)
		if err != nil {
			return o, err // a bad file is not a usage error: exit status 1, as hotdeskd
		}
		fc.apply(&o, set)
	}
	if len(o.args) > 0 && o.args[0] == "agent" && o.keepalive == 0 {
		o.keepalive = defaultServiceKeepalive
	}
	switch {
	case len(o.args) == 0:
		return o, fmt.Errorf("%w: missing command (pair CODE, run or agent)", errUsage)
	case o.args[0] == "pair" && len(o.args) != 2:
		return o, fmt.Errorf("%w: pair takes one argument, the code", errUsage)
	case (o.args[0] == "run" || o.args[0] == "agent") && len(o.args) != 1:
		return o, fmt.Errorf("%w: %s takes no arguments", errUsage, o.args[0])
	case o.args[0] != "pair" && o.args[0] != "run" && o.args[0] != "agent":
		return o, fmt.Errorf("%w: unknown command %q (want pair, run or agent)", errUsage, o.args[0])
	case len(o.servers) == 0 && o.srv == "":
		return o, fmt.Errorf("%w: -server is required", errUsage)
	case (len(o.pins) == 0) == (o.ca == ""):
		return o, fmt.Errorf("%w: exactly one of -pin and -ca is required", errUsage)
	case o.timeout <= 0:
		return o, fmt.Errorf("%w: -timeout must be positive", errUsage)
	case o.keepalive < 0 || o.minBackoff <= 0 || o.maxBackoff < o.minBackoff:
		return o, fmt.Errorf("%w: -keepalive must not be negative, and 0 < -min-backoff <= -max-backoff", errUsage)
	}
	for _, s := range o.servers {
		if _, _, err := net.SplitHostPort(s); err != nil {
			return o, fmt.Errorf("%w: -server %q: %v", errUsage, s, err)
		}
	}
	return o, nil
}

// defaultServiceKeepalive is the agent's ping interval: a broker that
// vanished without closing the connection is noticed within about 2 s.
const defaultServiceKeepalive = 500 * time.Millisecond

// maxCAFile bounds the read of -ca (a bundle of a few hundred
// certificates; /dev/zero by mistake is an error, not an endless read).
const maxCAFile = 1 << 20

// groupOf builds the terminal's group (addresses and trust anchors) from
// -server, -srv and -pin or -ca; anchors identifies the trust anchors
// (anchorsID).
func groupOf(o options) (g *group, anchors string, err error) {
	var pins [][]byte
	var roots *x509.CertPool
	var caPEM []byte
	for _, p := range o.pins {
		pin, err := proto.ParseFingerprint(p)
		if err != nil {
			return nil, "", fmt.Errorf("%w: -pin: %v", errUsage, err)
		}
		pins = append(pins, pin)
	}
	if o.ca != "" {
		if caPEM, err = atomicfile.ReadLimited(o.ca, maxCAFile); err != nil {
			return nil, "", fmt.Errorf("-ca: %w", err)
		}
		roots = x509.NewCertPool()
		if !roots.AppendCertsFromPEM(caPEM) {
			return nil, "", fmt.Errorf("-ca: no certificate in %s", o.ca)
		}
	}
	if g, err = newGroup(o.servers, pins, roots, o.srv); err != nil {
		return nil, "", fmt.Errorf("%w: %v", errUsage, err)
	}
	return g, anchorsID(pins, caPEM), nil
}

// newFlagSet declares the flags and the page that --help, hotdesk-term(1)
// and the completion scripts are rendered from (cli.go).
func newFlagSet(o *options, answers, servers, pins *stringList, stderr io.Writer) (*flag.FlagSet, *clidoc.Page) {
	fs := flag.NewFlagSet("hotdesk-term", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Var(servers, "server", "broker address `host:port` (repeatable: brokers of one group; one is required, here, in -config or by -srv)")
	fs.Var(pins, "pin", "trust a broker certificate of the group: `sha256:HEX` (repeatable; this or -ca is required)")
	fs.StringVar(&o.srv, "srv", "", "DNS SRV `NAME` listing the group's brokers, e.g. _hotdesk._tcp.example.com")
	fs.StringVar(&o.config, "config", "", "read settings from the HCL config `FILE` (flags win)")
	fs.DurationVar(&o.keepalive, "keepalive", 0, "ping the broker this often; 3 unanswered pings mean it is gone (default: the broker's interval; agent: 500ms)")
	fs.DurationVar(&o.minBackoff, "min-backoff", defaultMinBackoff, "first reconnect delay")
	fs.DurationVar(&o.maxBackoff, "max-backoff", defaultMaxBackoff, "longest reconnect delay (at most 1s while the brokers refuse connections)")
	fs.BoolVar(&o.greeter, "greeter", false, "show the full-screen greeter on $DISPLAY / $WAYLAND_DISPLAY while no desktop is attached")
	fs.StringVar(&o.ca, "ca", "", "verify the broker certificate against the CA certificates in `FILE` (PEM)")
	fs.StringVar(&o.id, "id", "", "terminal id (default: the host name)")
	fs.StringVar(&o.name, "name", "", "terminal `LABEL` (location, desk); also the label of a paired token")
	fs.StringVar(&o.keystore, "keystore", "", "token keystore `PATH` (default $XDG_CONFIG_HOME/hotdesk/tokens.json)")
	fs.StringVar(&o.stateDir, "state-dir", "", "`DIR` where the agent keeps what it learned (the group's members; default: the keystore's directory)")
	fs.StringVar(&o.token, "token", "default", "`NAME` of the key to generate (pair)")
	fs.StringVar(&o.insert, "insert", "", "insert the key `NAME` right after connecting (run)")
	fs.Var(answers, "answer", "answer the next prompt with `TEXT` (repeatable, in order)")
	fs.BoolVar(&o.json, "json", false, "print events as JSON lines")
	fs.StringVar(&o.display, "display", "", "display client `COMMAND`, started ahead and handed each attached session; {addr} in it becomes the local relay to the session, e.g. \"xfreerdp /v:{addr} /cert:ignore\"; \"freerdp\" is the built-in FreeRDP command")
	fs.BoolVar(&o.pcsc, "pcsc", false, "watch the terminal's PC/SC card readers (smart cards, NFC badges and phones)")
	fs.StringVar(&o.readers, "readers", "", "with -pcsc: only readers whose name contains one of these comma-separated `NAMES`")
	fs.DurationVar(&o.removeGrace, "remove-grace", time.Second, "with -pcsc: a card must stay away this long before its removal is reported")
	fs.DurationVar(&o.timeout, "timeout", defaultTimeout, "bound on each dial and handshake")
	fs.StringVar(&o.logLevel, "log-level", "warn", "log level on stderr (trace, debug, info, warn, error, off)")
	fs.BoolVar(&o.version, "version", false, "print the version and exit")
	page := termPage(fs)
	fs.Usage = func() { page.Usage(fs.Output()) }
	return fs, page
}

func defaultKeystore() (string, error) {
	dir, err := os.UserConfigDir() // $XDG_CONFIG_HOME, else ~/.config
	if err != nil {
		return "", fmt.Errorf("keystore: %w; use -keystore", err)
	}
	return filepath.Join(dir, "hotdesk", "tokens.json"), nil
}

func run(args []string, stdin io.Reader, stdout, stderr io.Writer) error {
	_, page := newFlagSet(&options{}, &stringList{}, &stringList{}, &stringList{}, stderr)
	if ok, err := clidoc.Main(args, version.String(), page); ok {
		return err
	}
	o, err := parseFlags(args, stderr)
	if errors.Is(err, flag.ErrHelp) {
		return nil
	}
	if err != nil {
		return err
	}
	if o.version {
		fmt.Fprintln(stdout, "hotdesk-term", version.String())
		return nil
	}
	if o.pcsc {
		// A build without PC/SC hands over to its helper (no return on success).
		if err := execPCSC(args); err != nil {
			return err
		}
	}
	level := hclog.LevelFromString(o.logLevel)
	if level == hclog.NoLevel {
		return fmt.Errorf("%w: -log-level %q", errUsage, o.logLevel)
	}
	logger := hclog.New(&hclog.LoggerOptions{Name: "hotdesk-term", Level: level, Output: stderr})

	grp, anchors, err := groupOf(o)
	if err != nil {
		return err
	}
	if o.id == "" {
		if o.id, err = os.Hostname(); err != nil {
			return fmt.Errorf("terminal id: %w; use -id", err)
		}
	}
	if o.keystore == "" {
		if o.keystore, err = defaultKeystore(); err != nil {
			return err
		}
	}
	ks, err := soft.OpenKeystore(o.keystore)
	if err != nil {
		return err
	}
	if o.args[0] != "pair" {
		if o.stateDir == "" {
			o.stateDir = filepath.Dir(o.keystore)
		}
		// Members learned by an earlier run: reachable while the
		// configured brokers are down.
		n, err := grp.persist(o.stateDir, anchors)
		if err != nil {
			logger.Warn("learned members not loaded", "error", err)
		} else if n > 0 {
			logger.Info("learned members loaded", "members", n, "dir", o.stateDir)
		}
	}
	cfg := Config{
		Group: grp, TerminalID: o.id, Name: o.name, Keystore: ks,
		Answers: o.answers, Timeout: o.timeout, Clock: clock.Real{}, Logger: logger,
		Out: stdout, JSON: o.json, Keepalive: o.keepalive, Service: o.args[0] == "agent",
		MinBackoff: o.minBackoff, MaxBackoff: o.maxBackoff,
	}
	if o.insert != "" {
		if _, err := ks.Get(o.insert); err != nil {
			return fmt.Errorf("%w: -insert %q: %v", errUsage, o.insert, err)
		}
		cfg.Insert = []string{o.insert}
	}
	cfg.Display = displayCommand(o.display)
	ui := &greeterUI{scr: nopScreen{}}
	if o.greeter && o.args[0] != "pair" {
		cfg.UI = ui.event
	}
	if o.pcsc {
		var filters []string
		for _, r := range strings.Split(o.readers, ",") {
			if r = strings.TrimSpace(r); r != "" {
				filters = append(filters, r)
			}
		}
		cards, err := newCards(filters, o, logger)
		if err != nil {
			return err
		}
		cfg.Cards = cards
	}
	a, err := newAgent(cfg)
	if err != nil {
		return err
	}

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()

	if o.args[0] == "pair" {
		if o.pcsc { // pair the phone presented at a reader; the code's label names it
			_, err := a.PairPhone(ctx, o.args[1], "", time.Minute)
			return err
		}
		if _, err := a.Pair(ctx, o.args[1], o.token, o.name); err != nil {
			return err
		}
		return nil
	}
	if cfg.UI != nil {
		stopGreeter, err := startGreeter(ctx, a, ui)
		if err != nil {
			// The agent still works; scripts and the display client too.
			logger.Error("no greeter", "error", err)
		} else {
			defer stopGreeter()
		}
	}
	lines := make(chan string)
	go readLines(ctx, stdin, lines, logger)
	return a.Run(ctx, lines)
}

// readLines sends stdin's lines to lines and closes it at the end of input
// (or on a read error, which is logged, or a line longer than
// maxCommandLen).
func readLines(ctx context.Context, r io.Reader, lines chan<- string, log hclog.Logger) {
	defer close(lines)
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 0, 1024), maxCommandLen)
	for sc.Scan() {
		select {
		case lines <- sc.Text():
		case <-ctx.Done():
			return
		}
	}
	if err := sc.Err(); err != nil {
		log.Error("reading commands", "error", err)
	}
}
