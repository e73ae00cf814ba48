// Command hotdesk-term is the reference terminal agent of hotdesk.
//
//	hotdesk-term [flags] pair CODE   enroll a new software token with a pairing code
//	hotdesk-term [flags] run         connect and report token events
//
// In run mode it keeps a TLS connection to a broker (-server, verified by
// -pin or -ca), reads commands from stdin, one per line ("insert NAME",
// "remove NAME", "answer TEXT", "status", "quit"; end of input is quit),
// proves possession of software tokens from its keystore, relays
// authentication prompts, follows redirects to the broker that holds a
// session (pinning the certificate fingerprint the redirect names, at most
// proto.MaxHops hops), and reconnects with backoff when the connection
// drops. Events are printed on stdout, one line each (JSON lines with
// -json); logs go to stderr. Answers to prompts are never printed.
//
// Exit status: 0 on quit, end of input or SIGINT/SIGTERM; 1 on failure
// (including a refused pairing); 2 on a usage error.
package main

import (
	"bufio"
	"context"
	"crypto/tls"
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

	"github.com/hotdesk/hotdesk/internal/clock"
	"github.com/hotdesk/hotdesk/proto"
	"github.com/hotdesk/hotdesk/tokens/pcsc"
	"github.com/hotdesk/hotdesk/tokens/soft"
)

// errUsage marks command-line errors (exit status 2).
var errUsage = errors.New("usage error")

func main() {
	err := run(os.Args[1:], os.Stdin, os.Stdout, os.Stderr)
	switch {
	case err == nil || errors.Is(err, context.Canceled):
	case errors.Is(err, errUsage):
		fmt.Fprintf(os.Stderr, "hotdesk-term: %v\n", err)
		os.Exit(2)
	default:
		fmt.Fprintf(os.Stderr, "hotdesk-term: %v\n", err)
		os.Exit(1)
	}
}

type stringList []string

func (s *stringList) String() string     { return strings.Join(*s, ",") }
func (s *stringList) Set(v string) error { *s = append(*s, v); return nil }

// options are the parsed command line.
type options struct {
	server, pin, ca, id, name, keystore, token, insert, logLevel string
	answers                                                      []string
	json                                                         bool
	timeout                                                      time.Duration
	args                                                         []string
	pcsc                                                         bool
	readers                                                      string
	removeGrace                                                  time.Duration
	display                                                      string
}

func parseFlags(args []string, stderr io.Writer) (options, error) {
	var o options
	var answers stringList
	fs := flag.NewFlagSet("hotdesk-term", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprintf(stderr, "usage: hotdesk-term [flags] pair CODE\n       hotdesk-term [flags] run\n\nflags:\n")
		fs.PrintDefaults()
	}
	fs.StringVar(&o.server, "server", "", "broker address `host:port` (required)")
	fs.StringVar(&o.pin, "pin", "", "pin the broker certificate: `sha256:HEX` (this or -ca is required)")
	fs.StringVar(&o.ca, "ca", "", "verify the broker certificate against the CA certificates in `FILE` (PEM)")
	fs.StringVar(&o.id, "id", "", "terminal id (default: the host name)")
	fs.StringVar(&o.name, "name", "", "terminal `LABEL` (location, desk); also the label of a paired token")
	fs.StringVar(&o.keystore, "keystore", "", "token keystore `PATH` (default $XDG_CONFIG_HOME/hotdesk/tokens.json)")
	fs.StringVar(&o.token, "token", "default", "`NAME` of the key to generate (pair)")
	fs.StringVar(&o.insert, "insert", "", "insert the key `NAME` right after connecting (run)")
	fs.Var(&answers, "answer", "answer the next prompt with `TEXT` (repeatable, in order)")
	fs.BoolVar(&o.json, "json", false, "print events as JSON lines")
	fs.StringVar(&o.display, "display", "", "display client `COMMAND`, started ahead and handed each attached session; {addr} in it becomes the local relay to the session, e.g. \"xfreerdp /v:{addr} /cert:ignore\"; \"freerdp\" is the built-in FreeRDP command")
	fs.BoolVar(&o.pcsc, "pcsc", false, "watch the terminal's PC/SC card readers (smart cards, NFC badges and phones)")
	fs.StringVar(&o.readers, "readers", "", "with -pcsc: only readers whose name contains one of these comma-separated `NAMES`")
	fs.DurationVar(&o.removeGrace, "remove-grace", time.Second, "with -pcsc: a card must stay away this long before its removal is reported")
	fs.DurationVar(&o.timeout, "timeout", defaultTimeout, "bound on each dial and handshake")
	fs.StringVar(&o.logLevel, "log-level", "warn", "log level on stderr (trace, debug, info, warn, error, off)")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return o, err
		}
		return o, fmt.Errorf("%w: %v", errUsage, err)
	}
	o.answers = answers
	o.args = fs.Args()
	switch {
	case len(o.args) == 0:
		return o, fmt.Errorf("%w: missing command (pair CODE or run)", errUsage)
	case o.args[0] == "pair" && len(o.args) != 2:
		return o, fmt.Errorf("%w: pair takes one argument, the code", errUsage)
	case o.args[0] == "run" && len(o.args) != 1:
		return o, fmt.Errorf("%w: run takes no arguments", errUsage)
	case o.args[0] != "pair" && o.args[0] != "run":
		return o, fmt.Errorf("%w: unknown command %q (want pair or run)", errUsage, o.args[0])
	case o.server == "":
		return o, fmt.Errorf("%w: -server is required", errUsage)
	case (o.pin == "") == (o.ca == ""):
		return o, fmt.Errorf("%w: exactly one of -pin and -ca is required", errUsage)
	case o.timeout <= 0:
		return o, fmt.Errorf("%w: -timeout must be positive", errUsage)
	}
	if _, _, err := net.SplitHostPort(o.server); err != nil {
		return o, fmt.Errorf("%w: -server: %v", errUsage, err)
	}
	return o, nil
}

// tlsConfig builds the home broker's TLS configuration from -pin or -ca.
func tlsConfig(o options) (*tls.Config, error) {
	host, _, _ := net.SplitHostPort(o.server)
	if o.pin != "" {
		pin, err := proto.ParseFingerprint(o.pin)
		if err != nil {
			return nil, fmt.Errorf("%w: -pin: %v", errUsage, err)
		}
		return proto.ClientTLSConfig(host, pin, nil)
	}
	pem, err := os.ReadFile(o.ca)
	if err != nil {
		return nil, fmt.Errorf("-ca: %w", err)
	}
	roots := x509.NewCertPool()
	if !roots.AppendCertsFromPEM(pem) {
		return nil, fmt.Errorf("-ca: no certificate in %s", o.ca)
	}
	return proto.ClientTLSConfig(host, nil, roots)
}

func defaultKeystore() (string, error) {
	dir, err := os.UserConfigDir() // $XDG_CONFIG_HOME, else ~/.config
	if err != nil {
		return "", fmt.Errorf("keystore: %w; use -keystore", err)
	}
	return filepath.Join(dir, "hotdesk", "tokens.json"), nil
}

func run(args []string, stdin io.Reader, stdout, stderr io.Writer) error {
	o, err := parseFlags(args, stderr)
	if errors.Is(err, flag.ErrHelp) {
		return nil
	}
	if err != nil {
		return err
	}
	level := hclog.LevelFromString(o.logLevel)
	if level == hclog.NoLevel {
		return fmt.Errorf("%w: -log-level %q", errUsage, o.logLevel)
	}
	logger := hclog.New(&hclog.LoggerOptions{Name: "hotdesk-term", Level: level, Output: stderr})

	tcfg, err := tlsConfig(o)
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
	cfg := Config{
		Server: o.server, TLS: tcfg, TerminalID: o.id, Name: o.name, Keystore: ks,
		Answers: o.answers, Timeout: o.timeout, Clock: clock.Real{}, Logger: logger,
		Out: stdout, JSON: o.json,
	}
	if o.insert != "" {
		cfg.Insert = []string{o.insert}
	}
	cfg.Display = displayCommand(o.display)
	if o.pcsc {
		var filters []string
		for _, r := range strings.Split(o.readers, ",") {
			if r = strings.TrimSpace(r); r != "" {
				filters = append(filters, r)
			}
		}
		cards, err := pcsc.New(pcsc.Config{Readers: filters, RemoveGrace: o.removeGrace, Logger: logger.Named("pcsc")})
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
		if o.pcsc { // pair the phone presented at a reader
			_, err := a.PairPhone(ctx, o.args[1], o.name, time.Minute)
			return err
		}
		if _, err := a.Pair(ctx, o.args[1], o.token, o.name); err != nil {
			return err
		}
		return nil
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
