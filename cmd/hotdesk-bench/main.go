// Command hotdesk-bench measures the hot-desk path of hotdesk against the
// targets of the product brief, on one machine, and prints ONE JSON OBJECT
// PER SCENARIO on stdout (progress and logs go to stderr):
//
//	go run ./cmd/hotdesk-bench [-scenarios local,crossserver,crossserver_seq,race,storm,scale] [-n N] [-quick]
//	go run ./cmd/hotdesk-bench -scenarios card [-n N]
//	go run ./cmd/hotdesk-bench -scenarios pixels [-pixels-rounds N] [-pixels-size WxH] [-pixels-display CMD]
//
// It starts a real group: a 3-member etcd cluster on loopback
// (registry.StartEmbedded ×3, fsync on unless -nofsync; the members run in a
// child process of the bench, the same binary, so that the bench's heap is
// the brokers' — -etcd-inproc keeps them in this process), and 3 brokers
// (registry.New + broker.New + broker.Serve with TLS on 127.0.0.1:0), each
// with its own etcd client pointed at a different member. Simulated
// terminals speak the real protocol: TLS pinned to the broker's
// certificate, Hello/Welcome, TokenInserted, Proof signed with an enrolled
// soft token key, Redirect followed by a pinned dial to the owner with
// Hello{Hops, Fence}.
//
// THE COMPOSITOR IS A NULL BACKEND that starts no process: what is measured
// is the broker's part of the path; 10,000 westons cannot run on 2 cores.
// Every row says so in "notes". Authentication is the kiosk policy (no
// prompt, no check) unless -auth card: then every login and hot-desk asks
// a PAM account stack in a helper process, as hotdeskd's card policy does
// (-account-cache, -account-helper-uses, -spare-helper as hotdeskd's).
//
// Rows: first "etcd_txn", the claim-if-absent txn baseline measured in the
// same run; then each scenario with "n", "p50_ms", "p99_ms",
// "etcd_txn_p99_ms", "ratio_p99" (p99 ÷ the baseline's p99), "target_ok"
// where the brief sets a target, and scenario fields ("redirect_p99_ms",
// "trials", "duplicates", "ops_per_s", "sessions", "bytes_per_session", …).
// The "card" scenario (not in the default set: it needs pcscd with the vpcd
// driver, and every trial waits for pcscd's polls) puts a virtual UID card
// into a virtual reader of a private pcscd (tokens/pcsc/pcscdtest) watched
// by tokens/pcsc in this process and forwards the events as a terminal
// agent does. It reports the reader's part ("pcscd_detect_p50_ms"/p99: card
// connected → pcscd reports it; "identify_*": the APDUs; "reader_*": both,
// card connected → Inserted event) apart from the broker's part
// ("broker_p50_ms"/p99, also p50_ms/p99_ms: TokenInserted → Attached).
// Without pcscd its row says "skipped": true and why in "notes".
// The "pixels" scenario (not in the default set either: real desktops)
// adds a fourth broker with the weston RDP backend and an attach gateway
// (the other brokers drained meanwhile), and two real terminals: the
// hotdesk-term binary with its display client, each on its own Xvfb. It
// moves a token between them and reports card-to-pixels (token event → the
// terminal's X screen shows the session's current frame, read through
// MIT-SHM) with its breakdown, and the same measurement for FreeRDP
// started straight at weston ("baseline_*"); see pixels.go.
// Every loop is bounded in count and in time (a budget per scenario; a row
// that ran out of time says "truncated"); all traffic stays on loopback.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/hashicorp/go-hclog"

	"github.com/hotdesk/hotdesk/auth/pam"
	"github.com/hotdesk/hotdesk/cmd/internal/exitcode"
	"github.com/hotdesk/hotdesk/internal/version"
)

// allScenarios in the order they run by default.
var allScenarios = []string{"local", "crossserver", "crossserver_seq", "race", "storm", "scale"}

// extraScenarios run only when named: card needs pcscd with the vpcd driver
// and about a second per trial.
var extraScenarios = []string{"card", "pixels"}

// runTimeout bounds a whole run, whatever the flags say.
const runTimeout = 15 * time.Minute

func main() {
	if dir := os.Getenv(childDirEnv); dir != "" {
		os.Exit(etcdChildMain(dir))
	}
	if len(os.Args) == 2 && os.Args[1] == "pam-helper" { // -auth card
		os.Exit(pam.HelperMain())
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	exitcode.Exit("hotdesk-bench", run(ctx, os.Args[1:], os.Stdout, os.Stderr), flag.ErrHelp)
}

// errUsage marks command-line errors (exit status 2).
var errUsage = exitcode.ErrUsage

// run parses args, starts the group, runs the scenarios and writes one JSON
// row per scenario to stdout as soon as it is measured.
func run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("hotdesk-bench", flag.ContinueOnError)
	fs.SetOutput(stderr)
	scen := fs.String("scenarios", strings.Join(allScenarios, ","), "comma-separated scenarios to run")
	n := fs.Int("n", 0, "trials per latency scenario (local, crossserver, race) and operations for storm (0: mode default)")
	quick := fs.Bool("quick", false, "small sizes and budgets (a run of about 30 s)")
	terminals := fs.Int("terminals", 0, "storm: simultaneous terminals (0: mode default)")
	sessions := fs.Int("sessions", 0, "scale: suspended sessions to create (0: mode default)")
	baseline := fs.Int("baseline", 0, "etcd claim txns for the baseline (0: mode default)")
	budget := fs.Duration("budget", 0, "time budget per scenario, 3× for scale (0: mode default)")
	noFsync := fs.Bool("nofsync", false, "etcd UnsafeNoFsync (off by default: measure the real thing)")
	inproc := fs.Bool("etcd-inproc", false, "run the etcd members in this process (scale then counts etcd's heap too)")
	dir := fs.String("dir", "", "working directory (default: a new temporary directory, removed afterwards)")
	verbose := fs.Bool("v", false, "log brokers and registry at info level")
	showVersion := fs.Bool("version", false, "print the version and exit")
	pxRounds := fs.Int("pixels-rounds", 0, "pixels: token moves measured, and baseline connections (0: 20, 5 with -quick)")
	pxSize := fs.String("pixels-size", "1024x768", "pixels: `WxH` of the terminals' screens and the desktop")
	pxDisplay := fs.String("pixels-display", "", "pixels: the terminals' display `COMMAND` ({addr}, {size}; default: "+pixelsDisplayDefault+")")
	pxWake := fs.Bool("pixels-rdpwake", true, "pixels: preload hotdesk-rdpwake into FreeRDP (built with cc), as an installed hotdesk-term does")
	termBin := fs.String("term-bin", "", "pixels: the hotdesk-term binary (default: built from this module)")
	resume := fs.Bool("tls-resume", true, "simulated terminals resume TLS 1.3 sessions with brokers seen before, as hotdesk-term does (false: a full handshake on every redirect)")
	authKind := fs.String("auth", "kiosk", "brokers' login policy: kiosk (no check) or card (the card policy: each login and hot-desk consults a PAM account stack in a helper process, as hotdeskd does)")
	spareHelper := fs.Bool("spare-helper", true, "-auth card: keep a PAM helper started ahead, as hotdeskd does")
	accountTTL := fs.Duration("account-cache", time.Minute, "-auth card: how long a positive account check is reused (negative: never)")
	helperUses := fs.Int("account-helper-uses", 100, "-auth card: account checks one PAM helper runs before it exits, as hotdeskd (1: a process per check)")
	cpuProfile := fs.String("cpuprofile", "", "write a CPU profile of the scenarios (not the group's start) to `FILE` (go tool pprof)")
	traceFile := fs.String("trace", "", "write an execution trace of the scenarios to `FILE` (go tool trace)")
	if err := exitcode.Parse(fs, args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		fs.Usage()
		return fmt.Errorf("%w: unexpected arguments %q", errUsage, fs.Args())
	}
	if *showVersion {
		fmt.Fprintln(stdout, "hotdesk-bench", version.String())
		return nil
	}
	todo, err := parseScenarios(*scen)
	if err != nil {
		return fmt.Errorf("%w: %v", errUsage, err)
	}

	p := params{baseline: 2000, n: 2000, terminals: 200, sessions: 10000, workers: 8, budget: 40 * time.Second}
	if *quick {
		p = params{baseline: 200, n: 40, terminals: 24, sessions: 300, workers: 4, budget: 6 * time.Second}
	}
	for _, o := range []struct {
		flag int
		dst  *int
	}{{*n, &p.n}, {*terminals, &p.terminals}, {*sessions, &p.sessions}, {*baseline, &p.baseline}} {
		if o.flag < 0 {
			return errors.New("sizes must not be negative")
		}
		if o.flag > 0 {
			*o.dst = o.flag
		}
	}
	if *budget > 0 {
		p.budget = *budget
	}
	px := pixelsConfig{rounds: *pxRounds, display: *pxDisplay, termBin: *termBin, rdpwake: *pxWake}
	if px.rounds == 0 && *quick {
		px.rounds = 5
	}
	if _, err := fmt.Sscanf(*pxSize, "%dx%d", &px.width, &px.height); err != nil || px.width < 64 || px.height < 64 || px.width > 4096 || px.height > 4096 {
		return fmt.Errorf("-pixels-size %q: want WxH between 64 and 4096", *pxSize)
	}
	if px.rounds < 0 || px.rounds > maxPixelsRounds {
		return fmt.Errorf("-pixels-rounds: 1..%d", maxPixelsRounds)
	}
	const maxSize = 1_000_000
	if p.n > maxSize || p.sessions > maxSize || p.baseline > maxSize || p.terminals > 10_000 {
		return errors.New("sizes are bounded: n, sessions, baseline ≤ 1,000,000; terminals ≤ 10,000")
	}

	level := hclog.Warn
	if *verbose {
		level = hclog.Info
	}
	log := hclog.New(&hclog.LoggerOptions{Name: "bench", Level: level, Output: stderr})

	ctx, cancel := context.WithTimeout(ctx, runTimeout)
	defer cancel()
	if *dir == "" {
		d, err := os.MkdirTemp("", "hotdesk-bench-")
		if err != nil {
			return err
		}
		defer os.RemoveAll(d)
		*dir = d
	}

	if len(todo) != 1 || todo[0] != "pixels" {
		fmt.Fprintf(stderr, "hotdesk-bench: NOTE the compositor is a null backend (no process started): the broker path is what is measured (pixels: real weston desktops)\n")
	}
	fmt.Fprintf(stderr, "hotdesk-bench: starting 3 etcd members (fsync %v, %s) and 3 brokers in %s\n",
		!*noFsync, map[bool]string{true: "in this process", false: "in a child process"}[*inproc], *dir)
	t0 := time.Now()
	authn, err := brokerAuth(*authKind, *dir, *accountTTL, *spareHelper, *helperUses, log)
	if err != nil {
		return fmt.Errorf("%w: %v", errUsage, err)
	}
	g, err := startGroup(ctx, groupConfig{Dir: *dir, Brokers: 3, NoFsync: *noFsync, Inproc: *inproc, Log: log, Auth: authn})
	if err != nil {
		return err
	}
	defer func() {
		fmt.Fprintf(stderr, "hotdesk-bench: stopping the group\n")
		g.Close()
	}()
	fmt.Fprintf(stderr, "hotdesk-bench: group ready in %v\n", time.Since(t0).Round(time.Millisecond))

	b := &bench{g: g, p: p, log: log, fsync: !*noFsync, px: px, resume: *resume}
	enc := json.NewEncoder(stdout)
	emit := func(r row, d time.Duration) error {
		fmt.Fprintf(stderr, "hotdesk-bench: %s done in %v\n", r.Scenario, d.Round(time.Millisecond))
		return enc.Encode(r)
	}
	s0 := time.Now()
	r, err := b.baseline(ctx)
	if err != nil {
		return err
	}
	if err := emit(r, time.Since(s0)); err != nil {
		return err
	}
	if *cpuProfile != "" {
		stop, err := startCPUProfile(*cpuProfile)
		if err != nil {
			return err
		}
		defer stop()
	}
	if *traceFile != "" {
		stop, err := startTrace(*traceFile)
		if err != nil {
			return err
		}
		defer stop()
	}
	funcs := map[string]func(context.Context) (row, error){
		"local": b.local, "crossserver": b.crossserver, "crossserver_seq": b.crossserverSeq, "race": b.race, "storm": b.storm, "scale": b.scale,
		"card": b.card, "pixels": b.pixels,
	}
	for _, s := range todo {
		fmt.Fprintf(stderr, "hotdesk-bench: running %s\n", s)
		s0 := time.Now()
		r, err := funcs[s](ctx)
		if err != nil {
			return fmt.Errorf("%s: %w", s, err)
		}
		if err := emit(r, time.Since(s0)); err != nil {
			return err
		}
	}
	return nil
}

func parseScenarios(s string) ([]string, error) {
	var out []string
	seen := map[string]bool{}
	for _, f := range strings.Split(s, ",") {
		f = strings.TrimSpace(f)
		if f == "" || seen[f] {
			continue
		}
		known := false
		for _, k := range append(allScenarios, extraScenarios...) {
			known = known || k == f
		}
		if !known {
			return nil, fmt.Errorf("unknown scenario %q (known: %s)", f, strings.Join(append(allScenarios, extraScenarios...), ","))
		}
		seen[f] = true
		out = append(out, f)
	}
	return out, nil
}
