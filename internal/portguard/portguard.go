// Package portguard keeps new TCP connections to chosen loopback ports to
// one uid, with an nftables table of its own. hotdesk uses it for weston's
// RDP listeners: weston 10 authenticates no RDP client, so whoever opens a
// connection to a desktop's port gets the desktop; only the broker (its
// attach gateway) may.
//
// The table (family inet, Config.Table, default "hotdesk"; TableName gives
// one per owner) holds a set of
// ports (ports, type inet_service) and a filter chain on the output hook
// (priority 0, policy accept) with two rules: a TCP SYN without ACK leaving
// through lo to a port of the set is accepted when its socket belongs to
// Config.UID and answered with a TCP reset otherwise, including packets
// with no socket at all. connect(2) of anyone else fails at once with
// ECONNREFUSED. Replies (SYN-ACK), established connections and traffic to
// other interfaces are never touched, and neither are other tables'
// verdicts (an accept here ends only this chain).
//
// Every change is one nft transaction (nft -f -): atomic, and idempotent
// (removing a port that is absent is not an error). A Guard counts its
// Adds: a port added twice (a port freed by one listener and picked again
// by the next before the first was removed) leaves the set at the second
// Remove. New creates the table or takes over the one a previous process
// left, keeping its ports: processes listening on them (desktops that
// outlive their daemon) stay guarded. One table should have one owner at a
// time (two processes sharing one would remove each other's ports); the
// table is deleted only by Retire (when its set is empty) and Delete.
//
// Requirements: the nft binary (Debian package nftables) and CAP_NET_ADMIN
// (root). Without them New fails with an error wrapping ErrUnavailable that
// names the cause and the fix.
//
// A Guard is safe for concurrent use. It starts no goroutines; every call
// runs nft once or twice, bounded by its context and by CallTimeout.
package portguard

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"os"
	"os/exec"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/hashicorp/go-hclog"
)

// DefaultTable is the nftables table hotdeskd guards its RDP ports with.
const DefaultTable = "hotdesk"

// CallTimeout bounds one nft call when the caller's context has no
// earlier deadline.
const CallTimeout = 10 * time.Second

const (
	setName   = "ports"
	chainName = "output"
	// ruleTag marks the chain's rules, so Ensure can tell them from rules
	// someone else put there.
	ruleTag = "hotdesk portguard v1"
	// maxOutput bounds what of nft's output is kept (errors, listings).
	maxOutput = 1 << 20
	// maxErrOutput bounds what of nft's stderr goes into an error.
	maxErrOutput = 512
)

var (
	// ErrUnavailable: the guard cannot be set up here (no nft binary, not
	// allowed to change nftables, the kernel refused the table).
	ErrUnavailable = errors.New("portguard: unavailable")
	// ErrInvalid: a port outside 1..65535 or an unusable table name.
	ErrInvalid = errors.New("portguard: invalid")
)

var tableRe = regexp.MustCompile(`^[A-Za-z][A-Za-z0-9_]{0,31}$`)

// Config configures a Guard. Every field has a default.
type Config struct {
	// Table is the nftables table (family inet); default DefaultTable.
	// Letters, digits and _, at most 32.
	Table string
	// UID is the only uid whose sockets may connect to a guarded port;
	// default the process's effective uid.
	UID *int
	// NFT is the nft binary; default "nft" in $PATH, else /usr/sbin/nft
	// or /sbin/nft.
	NFT string
	// Logger is the guard's logger; default a null logger.
	Logger hclog.Logger
}

// Guard manages one nftables table. Its zero value is not usable; use New.
type Guard struct {
	table string
	uid   int
	nft   string
	log   hclog.Logger

	mu sync.Mutex
	// ports counts, per port, Adds not yet matched by a Remove: what
	// Ensure puts back.
	ports map[int]int
}

// TableName is a table name of the owner named by key (e.g. a state
// directory): "hotdesk_" and 12 hex digits of its SHA-256.
func TableName(key string) string {
	sum := sha256.Sum256([]byte(key))
	return DefaultTable + "_" + hex.EncodeToString(sum[:6])
}

// LookNFT returns the nft binary: name (default "nft") in $PATH, else, for
// a bare "nft", /usr/sbin/nft or /sbin/nft (a daemon's $PATH may lack
// sbin). The error wraps ErrUnavailable and says how to get nft.
func LookNFT(name string) (string, error) {
	if name == "" {
		name = "nft"
	}
	p, err := exec.LookPath(name)
	if err == nil {
		return p, nil
	}
	if name == "nft" {
		for _, c := range []string{"/usr/sbin/nft", "/sbin/nft"} {
			if p, err2 := exec.LookPath(c); err2 == nil {
				return p, nil
			}
		}
	}
	return "", fmt.Errorf("%w: %w (install the nftables package)", ErrUnavailable, err)
}

// New sets up the table: creates it, or takes over an existing one and
// replaces its chain's rules with this Guard's, keeping the set's ports.
// The error wraps ErrUnavailable (nft missing, not root, nft failed) or
// ErrInvalid (Config).
func New(ctx context.Context, cfg Config) (*Guard, error) {
	if cfg.Table == "" {
		cfg.Table = DefaultTable
	}
	if !tableRe.MatchString(cfg.Table) {
		return nil, fmt.Errorf("%w: table name %q", ErrInvalid, cfg.Table)
	}
	uid := os.Geteuid()
	if cfg.UID != nil {
		uid = *cfg.UID
	}
	if uid < 0 {
		return nil, fmt.Errorf("%w: uid %d", ErrInvalid, uid)
	}
	if cfg.Logger == nil {
		cfg.Logger = hclog.NewNullLogger()
	}
	nft, err := LookNFT(cfg.NFT)
	if err != nil {
		return nil, err
	}
	g := &Guard{table: cfg.Table, uid: uid, nft: nft, log: cfg.Logger, ports: make(map[int]int)}
	if err := g.run(ctx, g.setupScript(nil)); err != nil {
		hint := "run hotdeskd as root"
		if os.Geteuid() == 0 {
			hint = "check that the kernel has nf_tables"
		}
		return nil, fmt.Errorf("%w: create table inet %s: %w (%s)", ErrUnavailable, g.table, err, hint)
	}
	g.log.Debug("port guard ready", "table", g.table, "uid", g.uid)
	return g, nil
}

// Table returns the nftables table's name.
func (g *Guard) Table() string { return g.table }

// UID returns the uid allowed to connect.
func (g *Guard) UID() int { return g.uid }

// Add puts port in the set: from the moment Add returns, only UID can
// open a connection to it. Adding a port that is in the set is not an
// error; it takes one more Remove to take it out.
func (g *Guard) Add(ctx context.Context, port int) error {
	if err := checkPort(port); err != nil {
		return fmt.Errorf("portguard: add: %w", err)
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	if err := g.run(ctx, fmt.Sprintf("add element inet %s %s { %d }\n", g.table, setName, port)); err != nil {
		return fmt.Errorf("portguard: add %d: %w", port, err)
	}
	g.ports[port]++
	return nil
}

// Remove takes port out of the set when it matches the last Add of it
// (else it only counts); removing a port that is not in it is not an
// error. Call it only once nothing of the guarded process listens on the
// port any more.
func (g *Guard) Remove(ctx context.Context, port int) error {
	if err := checkPort(port); err != nil {
		return fmt.Errorf("portguard: remove: %w", err)
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.ports[port] > 1 {
		g.ports[port]--
		return nil
	}
	// nft 1.0.6 has no "destroy element": add, then delete, in one
	// transaction, deletes it whether or not it was there.
	script := fmt.Sprintf("add element inet %[1]s %[2]s { %[3]d }\ndelete element inet %[1]s %[2]s { %[3]d }\n", g.table, setName, port)
	if err := g.run(ctx, script); err != nil {
		return fmt.Errorf("portguard: remove %d: %w", port, err)
	}
	delete(g.ports, port)
	return nil
}

// Ports lists the set's ports, sorted (all of them: also those a previous
// process added).
func (g *Guard) Ports(ctx context.Context) ([]int, error) {
	st, err := g.state(ctx)
	if err != nil {
		return nil, fmt.Errorf("portguard: ports: %w", err)
	}
	if !st.table {
		return nil, fmt.Errorf("portguard: ports: table inet %s is gone", g.table)
	}
	return st.ports, nil
}

// Ensure checks that the table, its chain, its rules and every port Add
// put in the set are still there (a firewall reload, e.g. "flush ruleset",
// removes them) and, if not, restores them in one transaction; restored
// reports that it had to.
func (g *Guard) Ensure(ctx context.Context) (restored bool, err error) {
	g.mu.Lock()
	defer g.mu.Unlock()
	st, err := g.state(ctx)
	if err != nil {
		return false, fmt.Errorf("portguard: ensure: %w", err)
	}
	missing := 0
	for p := range g.ports {
		if !slices.Contains(st.ports, p) {
			missing++
		}
	}
	if st.table && st.chainOK && st.rules == 2 && missing == 0 {
		return false, nil
	}
	g.log.Warn("port guard table was changed; restoring it", "table", g.table,
		"table_present", st.table, "chain_ok", st.chainOK, "rules", st.rules, "ports_missing", missing)
	if err := g.run(ctx, g.setupScript(slices.Sorted(maps.Keys(g.ports)))); err != nil {
		return false, fmt.Errorf("portguard: ensure: %w", err)
	}
	return true, nil
}

// Retire deletes the table if its set is empty, for an owner that stops
// with nothing left to guard; deleted reports whether it did. Do not use
// the Guard afterwards.
func (g *Guard) Retire(ctx context.Context) (deleted bool, err error) {
	g.mu.Lock()
	defer g.mu.Unlock()
	st, err := g.state(ctx)
	if err != nil {
		return false, fmt.Errorf("portguard: retire: %w", err)
	}
	if !st.table || len(st.ports) > 0 || len(g.ports) > 0 {
		return false, nil
	}
	if err := g.run(ctx, fmt.Sprintf("delete table inet %s\n", g.table)); err != nil {
		return false, fmt.Errorf("portguard: retire: %w", err)
	}
	return true, nil
}

// Delete removes table (family inet) if it exists, with nft (default
// LookNFT("")). For tests: hotdeskd never deletes its table.
func Delete(ctx context.Context, nft, table string) error {
	if !tableRe.MatchString(table) {
		return fmt.Errorf("portguard: delete: %w: table name %q", ErrInvalid, table)
	}
	bin, err := LookNFT(nft)
	if err != nil {
		return fmt.Errorf("portguard: delete: %w", err)
	}
	g := &Guard{table: table, nft: bin}
	// Creating it first makes the delete succeed when it is absent.
	if err := g.run(ctx, fmt.Sprintf("add table inet %[1]s\ndelete table inet %[1]s\n", table)); err != nil {
		return fmt.Errorf("portguard: delete: %w", err)
	}
	return nil
}

// setupScript creates the table (or keeps it), replaces the chain's rules
// and adds ports.
func (g *Guard) setupScript(ports []int) string {
	var b strings.Builder
	match := fmt.Sprintf(`oifname "lo" tcp dport @%s tcp flags & (syn | ack) == syn`, setName)
	fmt.Fprintf(&b, "table inet %s {\n", g.table)
	fmt.Fprintf(&b, "\tset %s { type inet_service; }\n", setName)
	fmt.Fprintf(&b, "\tchain %s { type filter hook output priority 0; policy accept; }\n}\n", chainName)
	fmt.Fprintf(&b, "flush chain inet %s %s\n", g.table, chainName)
	fmt.Fprintf(&b, "add rule inet %s %s %s meta skuid %d accept comment %q\n", g.table, chainName, match, g.uid, ruleTag+" allow")
	fmt.Fprintf(&b, "add rule inet %s %s %s reject with tcp reset comment %q\n", g.table, chainName, match, ruleTag+" refuse")
	if len(ports) > 0 {
		ss := make([]string, len(ports))
		for i, p := range ports {
			ss[i] = strconv.Itoa(p)
		}
		fmt.Fprintf(&b, "add element inet %s %s { %s }\n", g.table, setName, strings.Join(ss, ", "))
	}
	return b.String()
}

// tableState is what state found of the table.
type tableState struct {
	table   bool  // the table exists
	chainOK bool  // its chain is the base chain New made
	rules   int   // rules of ours in the chain (others make it not ok)
	ports   []int // the set's ports, sorted
}

// state reads the table with nft -j.
func (g *Guard) state(ctx context.Context) (tableState, error) {
	out, stderr, err := g.exec(ctx, "", "-j", "list", "table", "inet", g.table)
	if err != nil {
		if bytes.Contains(stderr, []byte("No such file or directory")) {
			return tableState{}, nil
		}
		return tableState{}, fmt.Errorf("list table: %w", errWithStderr(err, stderr))
	}
	var doc struct {
		Nftables []struct {
			Set *struct {
				Name  string            `json:"name"`
				Table string            `json:"table"`
				Elem  []json.RawMessage `json:"elem"`
			} `json:"set"`
			Chain *struct {
				Name   string `json:"name"`
				Table  string `json:"table"`
				Type   string `json:"type"`
				Hook   string `json:"hook"`
				Prio   int    `json:"prio"`
				Policy string `json:"policy"`
			} `json:"chain"`
			Rule *struct {
				Chain   string `json:"chain"`
				Table   string `json:"table"`
				Comment string `json:"comment"`
			} `json:"rule"`
		} `json:"nftables"`
	}
	if err := json.Unmarshal(out, &doc); err != nil {
		return tableState{}, fmt.Errorf("list table: %w", err)
	}
	st := tableState{table: true}
	others := 0
	for _, o := range doc.Nftables {
		switch {
		case o.Set != nil && o.Set.Table == g.table && o.Set.Name == setName:
			for _, e := range o.Set.Elem {
				var p int
				if err := json.Unmarshal(e, &p); err != nil {
					others++ // not a plain port: someone else's doing
					continue
				}
				st.ports = append(st.ports, p)
			}
		case o.Chain != nil && o.Chain.Table == g.table && o.Chain.Name == chainName:
			c := o.Chain
			st.chainOK = c.Type == "filter" && c.Hook == "output" && c.Prio == 0 && c.Policy == "accept"
		case o.Rule != nil && o.Rule.Table == g.table && o.Rule.Chain == chainName:
			if strings.HasPrefix(o.Rule.Comment, ruleTag) {
				st.rules++
			} else {
				others++
			}
		}
	}
	if others > 0 {
		st.chainOK = false
	}
	slices.Sort(st.ports)
	return st, nil
}

// run applies script as one transaction (nft -f -).
func (g *Guard) run(ctx context.Context, script string) error {
	_, stderr, err := g.exec(ctx, script, "-f", "-")
	if err != nil {
		return errWithStderr(err, stderr)
	}
	return nil
}

// exec runs nft with args, script on stdin, bounded by ctx and
// CallTimeout; its output is bounded by maxOutput.
func (g *Guard) exec(ctx context.Context, script string, args ...string) (stdout, stderr []byte, err error) {
	ctx, cancel := context.WithTimeout(ctx, CallTimeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, g.nft, args...)
	cmd.Stdin = strings.NewReader(script)
	cmd.Env = []string{"PATH=/usr/sbin:/usr/bin:/sbin:/bin", "LANG=C"}
	var out, errb boundedBuffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err = cmd.Run()
	if out.over {
		return nil, errb.b.Bytes(), fmt.Errorf("nft output longer than %d bytes", maxOutput)
	}
	return out.b.Bytes(), errb.b.Bytes(), err
}

// errWithStderr adds nft's first stderr line (bounded) to err.
func errWithStderr(err error, stderr []byte) error {
	line, _, _ := bytes.Cut(bytes.TrimSpace(stderr), []byte("\n"))
	if len(line) > maxErrOutput {
		line = line[:maxErrOutput]
	}
	if len(line) == 0 {
		return fmt.Errorf("nft: %w", err)
	}
	return fmt.Errorf("nft: %w: %s", err, strconv.QuoteToGraphic(string(line)))
}

func checkPort(port int) error {
	if port < 1 || port > 65535 {
		return fmt.Errorf("%w: port %d", ErrInvalid, port)
	}
	return nil
}

// boundedBuffer keeps the first maxOutput bytes written to it.
type boundedBuffer struct {
	b    bytes.Buffer
	over bool
}

func (w *boundedBuffer) Write(p []byte) (int, error) {
	if room := maxOutput - w.b.Len(); len(p) > room {
		w.b.Write(p[:max(room, 0)])
		w.over = true
		return len(p), nil
	}
	return w.b.Write(p)
}
