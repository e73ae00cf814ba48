// Command hotdesk-chaos runs a real hotdesk server group as separate
// processes, injects faults one at a time, records what every terminal saw
// and the etcd history, checks the history and prints ONE JSON OBJECT PER
// FAULT on stdout (progress, violations in words, on stderr):
//
//	hotdesk-chaos [-bin bin] [-quick] [-faults a,b] [-duration 5m] [-seed N] [-keep] [-auth card|kiosk]
//	hotdesk-chaos -from PREVIOUS-BIN [-bin bin] [-faults broker_upgrade,broker_downgrade,…]
//
// The group: a 3-member etcd cluster (each member this binary re-executed
// as `hotdesk-chaos etcd-member`, go.etcd.io/etcd/server/v3/embed), 3
// `hotdeskd` (bin/hotdeskd, HCL configs written here) whose etcd traffic
// goes through a TCP proxy of the harness per member (so that a broker can
// be cut from etcd), desktops that are real processes speaking hotdesk's
// compositor control protocol (`hotdesk-chaos compositor`, compositor.type
// "wayray"), N terminals speaking the real protocol (package proto: TLS
// pinned, challenges signed with soft token keys enrolled by pairing codes
// from the admin API, redirects, reconnects) and M tokens inserted,
// removed and taken over at random. Logins take the card policy (-auth):
// each asks a PAM account stack in the brokers' PAM helpers. An
// administrator works beside them (-admin, admin.go): sessions killed,
// disconnected and locked, tokens disabled, new tokens paired, through any
// broker's admin socket, one broker at a time drained for a while.
//
// Faults (one at a time, each followed by a quiet period): broker_kill9,
// broker_sigstop (2 × lease TTL), broker_restart (SIGTERM, start again),
// lease_revoke (LeaseRevoke of the lease in the broker's server record),
// etcd_leader_kill (kill -9 of the raft leader, restarted after one TTL),
// etcd_quorum_loss (2 of 3 members stopped for 2 × TTL, then restarted),
// etcd_outage (every member stopped for 10 × TTL, then restarted),
// broker_partition (the broker's proxies cut for 2 × TTL), broker_flap (its
// link cut and restored at random for 4 × TTL), policy_reload (every
// broker's login policies and suspend timeout changed and reloaded,
// SIGHUP, one after the other, then a look at every member's server
// list). With -from (the previous
// release's bin directory) the brokers start on its hotdeskd and the faults
// are broker_upgrade (SIGTERM, started again on -bin's) and
// broker_downgrade (the last upgraded one back), each followed by a look at
// every member's server list.
//
// Checks (check.go): (a) no token or session shown at two terminals for
// longer than the takeover window; (b) no session replaced by a new one
// for its token unless it ended with a reason (Detached destroyed) or an
// admin listing shows it orphaned; (c) no failed operation outside fault
// windows; (d) recovery time per fault (injected → every broker ready, a
// probe hot-desk through each broker done, every terminal connected); (e)
// the administrator's actions honoured (checkAdmin).
// The exit status is 1 on any violation, 2 if the group could not be run.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/hotdesk/hotdesk/internal/version"
)

type options struct {
	bin            string
	faults         []string
	duration       time.Duration
	seed           int64
	quick          bool
	keep           bool
	terminals      int
	tokens         int
	quiet          time.Duration
	leaseTTL       time.Duration
	takeoverWindow time.Duration
	recoveryBound  time.Duration
	failover       bool
	returnHome     bool
	logLevel       string
	auth           string
	// admin adds an administrator to the workload (admin.go): sessions
	// killed, disconnected and locked, tokens disabled, new tokens
	// paired, brokers drained for a while.
	admin bool
	// from is the bin directory of the previous release (-from): the
	// brokers start from its hotdeskd and the broker_upgrade fault moves
	// them, one at a time, to bin's.
	from string
}

var allFaults = []string{"broker_kill9", "broker_sigstop", "broker_restart", "lease_revoke",
	"etcd_leader_kill", "etcd_quorum_loss", "etcd_outage", "broker_partition", "broker_flap", "policy_reload"}

// upgradeFaults is what -from runs by default: a rolling upgrade of the
// group, one broker after the other.
var upgradeFaults = []string{"broker_upgrade", "broker_upgrade", "broker_upgrade"}

// quickFaults is the bounded set of `make test` (TestChaosQuick): one fault
// of each kind that ends a broker's hold on its sessions (crash, freeze past
// the lease TTL, restart, revoked lease), the etcd faults and a reload of
// the login policies. The partitions (broker_partition, broker_flap) run
// in `make chaos`.
var quickFaults = []string{"broker_kill9", "broker_sigstop", "broker_restart", "lease_revoke", "etcd_leader_kill", "etcd_quorum_loss", "policy_reload"}

func main() {
	if len(os.Args) > 1 {
		switch os.Args[1] {
		case "etcd-member":
			os.Exit(etcdMemberMain(os.Args[2:]))
		case "compositor":
			os.Exit(compositorMain(os.Args[2:]))
		}
	}
	os.Exit(run())
}

func run() int {
	var o options
	var faults string
	flag.StringVar(&o.bin, "bin", "bin", "directory holding hotdeskd")
	flag.StringVar(&faults, "faults", "", "comma-separated faults to inject (default: all; -quick: "+strings.Join(quickFaults, ",")+"); one of "+strings.Join(allFaults, ","))
	flag.DurationVar(&o.duration, "duration", 0, "keep injecting the faults in turn until this much time has passed (0: each once)")
	flag.Int64Var(&o.seed, "seed", 0, "random seed (0: from the clock; printed)")
	flag.BoolVar(&o.quick, "quick", false, "the bounded variant: fewer faults, shorter quiet periods")
	flag.BoolVar(&o.keep, "keep", false, "keep the run directory (logs, history.jsonl, etcd.jsonl) even without violations")
	flag.IntVar(&o.terminals, "terminals", 6, "number of terminals (homes spread over the brokers)")
	flag.IntVar(&o.tokens, "tokens", 4, "number of tokens (fewer than terminals)")
	flag.DurationVar(&o.quiet, "quiet", 0, "quiet period after each recovery (default 8s, -quick 4s)")
	flag.DurationVar(&o.leaseTTL, "lease-ttl", 3*time.Second, "brokers' etcd lease TTL")
	flag.DurationVar(&o.takeoverWindow, "takeover-window", time.Second, "how long two terminals may both show one token or session")
	flag.DurationVar(&o.recoveryBound, "recovery-bound", 60*time.Second, "longest wait for the group to recover after a fault")
	flag.BoolVar(&o.failover, "failover", true, "terminals whose home broker is unreachable try the other brokers")
	flag.BoolVar(&o.returnHome, "return-home", true, "an idle terminal that a redirect led to another broker goes back to its home broker (PROTOCOL.md §7.5 SHOULD), and presents every insert there")
	flag.StringVar(&o.logLevel, "log-level", "info", "hotdeskd log level")
	flag.StringVar(&o.from, "from", "", "directory holding the previous release's hotdeskd: the brokers start from it and broker_upgrade (the default faults: one per broker) restarts them, one at a time, with -bin's (a rolling upgrade under the workload; broker_downgrade takes the last upgraded one back); each upgrade is also checked for group-wide settings and clocks told different (hotdeskctl server list) at any broker")
	flag.StringVar(&o.auth, "auth", "card", "brokers' login policy: card (each login and hot-desk asks a PAM account stack, pam_nologin + pam_permit, in the brokers' PAM helpers, as the card policies of a site do) or kiosk (no PAM)")
	flag.BoolVar(&o.admin, "admin", true, "an administrator at work beside the hot-desks: sessions killed, disconnected and locked, tokens disabled (and tried at a terminal) and enabled, new tokens paired (and tried at a terminal), through any broker's admin socket, one broker at a time drained for 5–15 s (checked: a killed session never shown again, a disconnected or locked one no longer shown, a disabled token refused, no new session placed on a drained server)")
	showVersion := flag.Bool("version", false, "print the version and exit")
	flag.Parse() // exits 2 on a bad flag, 0 on -help
	if flag.NArg() > 0 {
		// A stray word would otherwise start a whole group under faults.
		fmt.Fprintf(os.Stderr, "hotdesk-chaos: unexpected argument %q\n", flag.Arg(0))
		flag.Usage()
		return 2
	}
	if *showVersion {
		fmt.Println("hotdesk-chaos", version.String())
		return 0
	}
	if o.quiet == 0 {
		o.quiet = 8 * time.Second
		if o.quick {
			o.quiet = 4 * time.Second
		}
	}
	switch {
	case faults != "":
		o.faults = strings.Split(faults, ",")
	case o.from != "":
		o.faults = upgradeFaults
	case o.quick:
		o.faults = quickFaults
	default:
		o.faults = allFaults
	}
	for _, f := range o.faults {
		if (f == "broker_upgrade" || f == "broker_downgrade") && o.from == "" {
			fmt.Fprintf(os.Stderr, "hotdesk-chaos: %s needs -from (the previous release's bin directory)\n", f)
			return 2
		}
		if faultFunc(f) == nil {
			fmt.Fprintf(os.Stderr, "hotdesk-chaos: unknown fault %q (known: %s)\n", f, strings.Join(append(allFaults, "broker_upgrade", "broker_downgrade"), ","))
			return 2
		}
	}
	if o.auth != "kiosk" && o.auth != "card" {
		fmt.Fprintf(os.Stderr, "hotdesk-chaos: -auth %q: want kiosk or card\n", o.auth)
		return 2
	}
	if o.tokens < 1 || o.terminals <= o.tokens {
		fmt.Fprintln(os.Stderr, "hotdesk-chaos: need 1 ≤ tokens < terminals")
		return 2
	}
	if o.seed == 0 {
		o.seed = time.Now().UnixNano() % 1_000_000
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()

	dir, err := os.MkdirTemp("", "hotdesk-chaos-")
	if err != nil {
		fmt.Fprintln(os.Stderr, "hotdesk-chaos:", err)
		return 2
	}
	fmt.Fprintf(os.Stderr, "hotdesk-chaos: seed %d, faults %s, run directory %s\n", o.seed, strings.Join(o.faults, ","), dir)
	h := &harness{opts: o, dir: dir}
	rows, err := h.run(ctx)
	violated := false
	enc := json.NewEncoder(os.Stdout)
	for _, r := range rows {
		if r.Violated() {
			violated = true
			for i, v := range r.Violations {
				if i == maxPrinted {
					fmt.Fprintf(os.Stderr, "VIOLATION [%s]: … and %d more (rows.json in the run directory has them all)\n",
						r.Fault, len(r.Violations)-maxPrinted)
					break
				}
				fmt.Fprintf(os.Stderr, "VIOLATION [%s]: %s\n", r.Fault, v)
			}
		}
		r.Violations = nil
		_ = enc.Encode(r)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "hotdesk-chaos:", err)
	}
	switch {
	case err != nil || violated || o.keep:
		fmt.Fprintf(os.Stderr, "hotdesk-chaos: logs and histories kept in %s\n", dir)
	default:
		os.RemoveAll(dir)
	}
	switch {
	case err != nil && !errors.Is(err, errViolation):
		return 2
	case violated || err != nil:
		return 1
	}
	fmt.Fprintln(os.Stderr, "hotdesk-chaos: no violations")
	return 0
}

// maxPrinted bounds the violations printed per row.
const maxPrinted = 25

var errViolation = errors.New("chaos: violation")

func absBin(dir string) string {
	if a, err := filepath.Abs(dir); err == nil {
		return a
	}
	return dir
}
