package main

import (
	"bufio"
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"flag"
	"fmt"
	"maps"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/hotdesk/hotdesk/cmd/internal/adminapi"
	"github.com/hotdesk/hotdesk/internal/testutil"
	"github.com/hotdesk/hotdesk/proto"
	"github.com/hotdesk/hotdesk/registry"
	"github.com/hotdesk/hotdesk/registry/etcdtest"
	"github.com/hotdesk/hotdesk/tokens/soft"
)

// The soak test: a long, ordinary day. One real hotdeskd (a real etcd
// member in the test process, real PAM through pam_matrix, desktops that
// are real processes speaking the compositor control protocol: the chaos
// harness's, which cost nothing to start) and terminals speaking the real
// protocol go through many hot-desk cycles: insert at one terminal,
// remove, insert at another, take over at a third, a terminal reconnecting
// (now and then as a terminal never seen before), a session killed and
// created again, a new software token paired now and then (the oldest
// deleted), a mistyped password login now and then (each with a user name
// never seen before, from a source of its own). After a warm-up it records
// a baseline of the daemon (goroutines, descriptors, threads, heap, RSS,
// the entries of its in-memory tables: hotdesk_internal_entries) and of the
// registry (keys by directory); after the cycles and a settling period,
// everything must be back near the baseline, or within its documented
// bound. The figures are printed. -soak.cycles sets the number of cycles
// (default: a short run for `go test`).

var soakCycles = flag.Int("soak.cycles", 100, "hot-desk cycles of TestSoak (a long run: 5000)")

// soakFailureWindow is the daemon's auth.failure_window in the soak: short,
// so that the failed logins' counts end within the test.
const soakFailureWindow = 2 * time.Second

// soakTerm is a terminal of the soak: it answers challenges with the key of
// the token challenged (keys), password prompts with a wrong password,
// pings, and hands everything else to its driver.
type soakTerm struct {
	id      string
	conn    *proto.Conn
	welcome proto.Welcome
	keys    *sync.Map // token → ed25519.PrivateKey
	inserts *sync.Map // terminal id → when it last presented a token (an account check), if set
	msgs    chan any
	done    chan struct{}
}

func dialSoakTerm(ctx context.Context, src, addr string, pin []byte, id string, keys *sync.Map) (*soakTerm, error) {
	c, w, err := helloConn(ctx, src, addr, pin, id)
	if err != nil {
		return nil, err
	}
	st := &soakTerm{id: id, conn: c, welcome: w, keys: keys, msgs: make(chan any, 256), done: make(chan struct{})}
	go st.read()
	go keepPinging(c, w, st.done)
	return st, nil
}

func (st *soakTerm) read() {
	defer close(st.done)
	defer close(st.msgs)
	for {
		m, err := st.conn.Recv()
		if err != nil {
			return
		}
		switch b := m.Body.(type) {
		case *proto.Challenge:
			if k, ok := st.keys.Load(b.Token); ok {
				msg, err := soft.ChallengeMessage(st.id, b.ServerID, st.welcome.Nonce, b.Nonce, b.Token)
				if err == nil {
					_ = st.conn.Send(&proto.Proof{ID: b.ID, Token: b.Token, Signature: ed25519.Sign(k.(ed25519.PrivateKey), msg)})
				}
			}
			continue
		case *proto.AuthPrompt:
			if b.Style == proto.PromptEchoOff || b.Style == proto.PromptEchoOn {
				_ = st.conn.Send(&proto.AuthAnswer{ID: b.ID, Text: "not-the-password"})
			}
			continue
		case *proto.Ping:
			_ = st.conn.Send(&proto.Pong{Seq: b.Seq})
			continue
		case *proto.Pong:
			continue
		}
		select {
		case st.msgs <- m.Body:
		default: // nobody waits: drop
		}
	}
}

// close ends the connection and waits for its reader.
func (st *soakTerm) close() {
	st.conn.Close()
	<-st.done
}

// await returns the first message match accepts, passing over the others.
func (st *soakTerm) await(ctx context.Context, what string, match func(any) bool) (any, error) {
	ctx, cancel := context.WithTimeout(ctx, advOpTimeout)
	defer cancel()
	for {
		select {
		case m, ok := <-st.msgs:
			if !ok {
				return nil, fmt.Errorf("%s: connection closed waiting for %s", st.id, what)
			}
			if match(m) {
				return m, nil
			}
		case <-ctx.Done():
			return nil, fmt.Errorf("%s: no %s: %w", st.id, what, ctx.Err())
		}
	}
}

// insert presents token and returns the Attached (an Error is a failure).
func (st *soakTerm) insert(ctx context.Context, token string) (*proto.Attached, error) {
	if st.inserts != nil {
		st.inserts.Store(st.id, time.Now())
	}
	if err := st.conn.Send(&proto.TokenInserted{Token: token, Reader: "soak"}); err != nil {
		return nil, err
	}
	m, err := st.await(ctx, "attached "+token, func(m any) bool {
		switch b := m.(type) {
		case *proto.Attached:
			return b.Token == token
		case *proto.Error:
			return true
		}
		return false
	})
	if err != nil {
		return nil, err
	}
	if e, ok := m.(*proto.Error); ok {
		return nil, fmt.Errorf("%s: insert %s: %v (%s)", st.id, token, e.Code, e.Detail)
	}
	return m.(*proto.Attached), nil
}

// detached waits for the Detached of session with reason.
func (st *soakTerm) detached(ctx context.Context, session string, reason proto.DetachReason) error {
	_, err := st.await(ctx, fmt.Sprintf("detached %s reason %d", session, reason), func(m any) bool {
		d, ok := m.(*proto.Detached)
		return ok && d.SessionID == session && d.Reason == reason
	})
	return err
}

// refused presents token (a password login: the terminal answers the
// prompt wrongly) and waits for the Error.
func (st *soakTerm) refused(ctx context.Context, token string) error {
	if err := st.conn.Send(&proto.TokenInserted{Token: token, Reader: "soak"}); err != nil {
		return err
	}
	m, err := st.await(ctx, "error for "+token, func(m any) bool {
		switch m.(type) {
		case *proto.Error, *proto.Attached:
			return true
		}
		return false
	})
	if err != nil {
		return err
	}
	if _, ok := m.(*proto.Error); !ok {
		return fmt.Errorf("%s: %s with a wrong password: %#v; want an error", st.id, token, m)
	}
	return nil
}

// pair enrols a new software token of user at st and returns its id.
func (st *soakTerm) pair(ctx context.Context, admin *adminapi.Client, user string) (string, error) {
	_, key, _ := ed25519.GenerateKey(rand.Reader)
	pr, err := admin.PairToken(ctx, adminapi.PairRequest{User: user})
	if err != nil {
		return "", err
	}
	pub := key.Public().(ed25519.PublicKey)
	if err := st.conn.Send(&proto.Pair{Code: pr.Code, Kind: soft.Kind, PublicKey: pub, Signature: pairSig(st.id, st.welcome, key, pr.Code)}); err != nil {
		return "", err
	}
	m, err := st.await(ctx, "paired", func(m any) bool {
		switch m.(type) {
		case *proto.Paired, *proto.Error:
			return true
		}
		return false
	})
	if err != nil {
		return "", err
	}
	p, ok := m.(*proto.Paired)
	if !ok {
		return "", fmt.Errorf("pair for %s: %#v", user, m)
	}
	st.keys.Store(p.Token, key)
	return p.Token, nil
}

// scrape reads the daemon's /metrics: every sample by its name with labels
// as exposed (`name{label="v"}`).
func soakScrape(url string) (map[string]float64, error) {
	resp, err := http.Get(url)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("%s: %s", url, resp.Status)
	}
	out := map[string]float64{}
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		l := sc.Text()
		if l == "" || l[0] == '#' {
			continue
		}
		i := strings.LastIndexByte(l, ' ')
		if i < 0 {
			continue
		}
		v, err := strconv.ParseFloat(l[i+1:], 64)
		if err != nil {
			continue
		}
		out[l[:i]] = v
	}
	return out, sc.Err()
}

// soakFigures is one sample of the daemon and the registry.
type soakFigures struct {
	Goroutines, Threads, FDs int
	HeapMiB, RSSMiB          float64
	Tables                   map[string]int // hotdesk_internal_entries by table
	Keys                     map[string]int // registry keys by directory under the prefix
	EventsTotal              int            // hotdesk_broker_events_total, all kinds
}

func soakSample(ctx context.Context, metricsURL string, pid int, cli *clientv3.Client) (soakFigures, error) {
	f := soakFigures{Tables: map[string]int{}, Keys: map[string]int{}}
	m, err := soakScrape(metricsURL)
	if err != nil {
		return f, err
	}
	f.Goroutines = int(m["go_goroutines"])
	f.HeapMiB = m["go_memstats_heap_alloc_bytes"] / (1 << 20)
	for k, v := range m {
		if t, ok := strings.CutPrefix(k, `hotdesk_internal_entries{table="`); ok {
			f.Tables[strings.TrimSuffix(t, `"}`)] = int(v)
		}
		if strings.HasPrefix(k, "hotdesk_broker_events_total{") {
			f.EventsTotal += int(v)
		}
	}
	p, err := readProc(pid)
	if err != nil {
		return f, err
	}
	f.Threads, f.FDs, f.RSSMiB = p.Threads, p.FDs, float64(p.RSSKiB)/1024
	resp, err := cli.Get(ctx, "/hotdesk/", clientv3.WithPrefix(), clientv3.WithKeysOnly())
	if err != nil {
		return f, err
	}
	for _, kv := range resp.Kvs {
		dir, _, _ := strings.Cut(strings.TrimPrefix(string(kv.Key), "/hotdesk/"), "/")
		f.Keys[dir]++
	}
	return f, nil
}

// soakBound is how far a figure may end above its baseline.
type soakBound struct {
	what  string
	base  int
	end   int
	slack int
}

// soakKeySlack holds, for the registry's directories that hold live state
// (sessions, connected terminals, tokens registered, counts and lockouts
// that end with their window, pairing codes, commands and their results),
// how many keys each may end above the baseline. The event log ("events")
// is bounded by time instead: checked apart.
var soakKeySlack = map[string]int{
	"sessions":     4, // one per live token
	"usersessions": 2,
	"terminals":    4, // the terminals connected at the end
	"tokens":       2, // the live tokens, and those retired but kept (added below)
	"failures":     2,
	"lockouts":     2,
	"pairing":      2,
	"paired":       2, // and the pairings of the last code TTL (added below)
	"commands":     2,
	"results":      2,
	"drain":        0,
	"servers":      0,
}

func TestSoak(t *testing.T) {
	t.Parallel() // its own daemon, etcd, data dir, ports and source addresses
	requireSecureE2E(t)
	cycles := *soakCycles
	warmup := max(20, cycles/10)
	bin := buildBinaries(t)
	chaosBin := testutil.Build(t, "../hotdesk-chaos")
	// The desktops run as the daemon's user (compositor.type "wayray"),
	// root here: insecure_allow_root.
	comp := filepath.Join(chaosBin, "hotdesk-chaos")
	lifeline := filepath.Join(t.TempDir(), "lifeline") // removed after the daemon's stop: ends stray desktops
	if err := os.WriteFile(lifeline, nil, 0o644); err != nil {
		t.Fatal(err)
	}

	eps := etcdtest.Start(t)
	cli := etcdtest.Client(t, eps)
	dir := t.TempDir()
	pamDir := testutil.MatrixServices(t, dir, "soakuser:pw:hotdesk\n", "", "hotdesk")
	addr := testutil.FreeAddr(t)
	metrics := testutil.FreeAddr(t)
	cfg := testutil.DaemonConfig(t, "soak", dir, addr, fmt.Sprintf("etcd {\n  endpoints = [%q]\n}\n", eps[0])) +
		fmt.Sprintf("metrics_listen = %q\n", metrics) +
		cardUserConfig(pamDir, "soakuser", fmt.Sprintf("  failure_window = %q\n  lockout        = \"1s\"\n  max_lockout    = \"2s\"\n", soakFailureWindow.String())) +
		fmt.Sprintf(`compositor {
  type          = "wayray"
  binary        = %q
  args          = ["compositor", "-lifeline", %q]
  start_timeout = "30s"
  stop_grace    = "2s"
  insecure_allow_root = true
}
`, comp, lifeline)
	e := newE2E(t, bin, dir, addr, cfg)
	pin := e.fingerprint()
	e.start()
	pid := e.d.PID()
	metricsURL := "http://" + metrics + "/metrics"
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	admin := adminapi.NewClient(e.socket)
	defer admin.Close()

	keys, inserts := &sync.Map{}, &sync.Map{}
	dial := func(src, id string) *soakTerm {
		t.Helper()
		st, err := dialSoakTerm(ctx, src, e.addr, pin, id, keys)
		if err != nil {
			t.Fatalf("terminal %s: %v", id, err)
		}
		st.inserts = inserts
		return st
	}
	// a, b, c hot-desk; c is now and then replaced by a terminal never
	// seen before; bad types wrong passwords from 127.0.0.2 (its own
	// source: the source's failure count must not lock the others out).
	terms := []*soakTerm{dial("127.0.0.1", "soak-a"), dial("127.0.0.1", "soak-b"), dial("127.0.0.1", "soak-c")}
	bad := dial("127.0.0.2", "soak-bad")
	defer func() {
		for _, st := range append(terms, bad) {
			st.close()
		}
	}()
	// Live tokens: a new one is paired every 10 cycles and the oldest
	// deleted, so the day sees cycles/10 distinct tokens, 3 at a time.
	var live []string
	for range 3 {
		tok, err := terms[0].pair(ctx, admin, "soakuser")
		if err != nil {
			t.Fatal(err)
		}
		live = append(live, tok)
	}

	var (
		base                    soakFigures
		heapMin                 []float64 // the smallest heap sample of each window
		windowMin               = -1.0
		ops                     = map[string]int{}
		tokensSeen, termsSeen   = 3, 4
		failedLogins, reconnect int
		kept                    int                      // old tokens left registered
		lastUsed                = map[string]time.Time{} // token → last presented
		deleted                 = map[string]bool{}      // tokens deleted
		paired                  []time.Time              // when each token of the cycles was paired
	)
	sample := func() soakFigures {
		t.Helper()
		f, err := soakSample(ctx, metricsURL, pid, cli)
		if err != nil {
			t.Fatalf("sample: %v", err)
		}
		return f
	}
	fail := func(i int, err error) {
		t.Helper()
		t.Fatalf("cycle %d: %v", i, err)
	}
	start := time.Now()
	var cyclesStart time.Time
	for i := range cycles + warmup {
		if i == warmup {
			base = sample()
			cyclesStart = time.Now()
		}
		// The heap between two collections: the smallest sample of a
		// window of cycles is the live heap, give or take a cycle's
		// garbage.
		if i > warmup {
			f, err := soakScrape(metricsURL)
			if err != nil {
				t.Fatal(err)
			}
			h := f["go_memstats_heap_alloc_bytes"] / (1 << 20)
			if windowMin < 0 || h < windowMin {
				windowMin = h
			}
			if (i-warmup)%25 == 0 {
				heapMin = append(heapMin, windowMin)
				windowMin = -1
			}
		}
		tok := live[i%len(live)]
		lastUsed[tok] = time.Now()
		a, b, c := terms[0], terms[1], terms[2]
		// Insert at a, remove, insert at b (a hot-desk), c takes it over.
		att, err := a.insert(ctx, tok)
		if err != nil {
			fail(i, err)
		}
		if err := a.conn.Send(&proto.TokenRemoved{Token: tok, Reader: "soak"}); err != nil {
			fail(i, err)
		}
		if err := a.detached(ctx, att.SessionID, proto.DetachTokenRemoved); err != nil {
			fail(i, err)
		}
		if _, err := b.insert(ctx, tok); err != nil {
			fail(i, err)
		}
		att, err = c.insert(ctx, tok)
		if err != nil {
			fail(i, err)
		}
		if err := b.detached(ctx, att.SessionID, proto.DetachTakeover); err != nil {
			fail(i, err)
		}
		ops["hotdesk"] += 3
		ops["takeover"]++
		// Now and then: the session ends (an administrator kills it;
		// the next insert creates another).
		if i%6 == 5 {
			if err := admin.KillSession(ctx, att.SessionID); err != nil {
				fail(i, err)
			}
			if err := c.detached(ctx, att.SessionID, proto.DetachDestroyed); err != nil {
				fail(i, err)
			}
			ops["kill"]++
		}
		// c goes away and comes back; every other time it is a terminal
		// never seen before.
		if i%5 == 4 {
			c.close()
			id := c.id
			if reconnect%2 == 1 {
				id = fmt.Sprintf("soak-c%d", i)
				termsSeen++
			}
			reconnect++
			terms[2] = dial("127.0.0.1", id)
			ops["reconnect"]++
		}
		// A mistyped password, with a user name never seen before.
		if i%4 == 3 {
			if err := bad.refused(ctx, fmt.Sprintf("user.soaktypo%d", i)); err != nil {
				fail(i, err)
			}
			failedLogins++
			ops["failed_login"]++
			if failedLogins%8 == 0 { // its terminal comes back as another
				bad.close()
				bad = dial("127.0.0.2", fmt.Sprintf("soak-bad%d", i))
				termsSeen++
			}
		}
		// A new token replaces the oldest.
		if i%10 == 9 {
			tok, err := a.pair(ctx, admin, "soakuser")
			if err != nil {
				fail(i, err)
			}
			old := live[0]
			live = append(live[1:], tok)
			tokensSeen++
			ops["pair"]++
			paired = append(paired, time.Now())
			// Its session ends; every other old token is deleted, the
			// others stay registered, unused, as a phone replaced by a
			// new one.
			for _, s := range mustSessions(ctx, t, admin) {
				if s.Token == old {
					if err := admin.KillSession(ctx, s.ID); err != nil {
						fail(i, err)
					}
				}
			}
			if tokensSeen%2 == 1 {
				kept++
				continue
			}
			if err := admin.DeleteToken(ctx, old); err != nil {
				fail(i, err)
			}
			keys.Delete(old)
			deleted[old] = true
			ops["token_deleted"]++
		}
	}
	if windowMin >= 0 {
		heapMin = append(heapMin, windowMin)
	}
	cyclesTook := time.Since(cyclesStart)
	settleStart := time.Now()
	// Settle: the failure counts' window passes, the terminals and
	// sessions of the day are what is live. Then one more mistyped
	// password (the limiter forgets what it no longer needs as it
	// works) and one more hot-desk.
	time.Sleep(soakFailureWindow + time.Second)
	if err := bad.refused(ctx, "user.soaktypo-last"); err != nil {
		t.Fatal(err)
	}
	if _, err := terms[0].insert(ctx, live[0]); err != nil {
		t.Fatal(err)
	}
	// Keys under leases (failure counts, lockouts) leave with their
	// lease: wait for that, within a bound.
	keySlack := maps.Clone(soakKeySlack)
	keySlack["tokens"] += kept
	// A redemption's record (paired/) lives as long as its code would
	// have (pairing.code_ttl, 10 min): the pairings of the last code TTL.
	for _, at := range paired {
		if time.Since(at) < 10*time.Minute+5*time.Second {
			keySlack["paired"]++
		}
	}
	var end soakFigures
	settled := func() bool {
		end = sample()
		for d, slack := range keySlack {
			if end.Keys[d] > base.Keys[d]+slack {
				return false
			}
		}
		return end.Goroutines <= base.Goroutines+16 && end.FDs <= base.FDs+8
	}
	deadline := time.Now().Add(60 * time.Second)
	for !settled() && time.Now().Before(deadline) {
		time.Sleep(250 * time.Millisecond)
	}

	// The figures.
	var opl []string
	for _, k := range slices.Sorted(maps.Keys(ops)) {
		opl = append(opl, fmt.Sprintf("%s=%d", k, ops[k]))
	}
	fmt.Printf("soak: %d cycles after %d of warm-up (%s); distinct tokens %d, terminal ids %d, failed-login user names %d; warm-up %s, cycles %s, settling %s\n",
		cycles, warmup, strings.Join(opl, " "), tokensSeen, termsSeen, failedLogins,
		cyclesStart.Sub(start).Round(time.Millisecond), cyclesTook.Round(time.Millisecond), time.Since(settleStart).Round(time.Millisecond))
	fmt.Printf("soak: daemon goroutines %d → %d, threads %d → %d, fds %d → %d, rss %.1f → %.1f MiB, heap (smallest per 25 cycles) %s MiB\n",
		base.Goroutines, end.Goroutines, base.Threads, end.Threads, base.FDs, end.FDs, base.RSSMiB, end.RSSMiB, fmtFloats(heapMin))
	var tl []string
	for _, k := range slices.Sorted(maps.Keys(end.Tables)) {
		tl = append(tl, fmt.Sprintf("%s %d→%d", k, base.Tables[k], end.Tables[k]))
	}
	fmt.Printf("soak: tables %s\n", strings.Join(tl, ", "))
	var kl []string
	for _, k := range slices.Sorted(maps.Keys(mergeKeys(base.Keys, end.Keys))) {
		kl = append(kl, fmt.Sprintf("%s %d→%d", k, base.Keys[k], end.Keys[k]))
	}
	fmt.Printf("soak: registry keys %s; events emitted %d → %d\n", strings.Join(kl, ", "), base.EventsTotal, end.EventsTotal)

	// An ordinary day logs nothing an administrator would have to look
	// into: no error line (an administrator's kill said "control channel
	// broken" at error level); warn lines other than the start's
	// configuration warnings are printed with the figures.
	for _, l := range e.d.LogLines("WARN") {
		if !strings.Contains(l, "configuration: ") {
			fmt.Printf("soak: warn line: %s\n", l)
		}
	}
	errLines := e.d.LogLines("ERROR")
	if len(errLines) > 0 {
		t.Errorf("an ordinary day logged %d error lines:\n%s", len(errLines), strings.Join(errLines, "\n"))
	}
	// The checks.
	var bounds []soakBound
	bounds = append(bounds,
		soakBound{"goroutines", base.Goroutines, end.Goroutines, 16},
		soakBound{"descriptors", base.FDs, end.FDs, 8},
		soakBound{"threads", base.Threads, end.Threads, 16},
	)
	for d, slack := range keySlack {
		bounds = append(bounds, soakBound{"registry keys " + d + "/", base.Keys[d], end.Keys[d], slack})
	}
	// Tables hold what is live (3 tokens and their sessions, 4 terminals
	// and the addresses they come from, the one failed login just made:
	// its 4 limiter keys), never what the day saw: a table growing by a
	// few entries per distinct token, terminal or user seen would end
	// tens (hundreds in a long run) above its baseline. The claim view is
	// bounded by design instead (broker maxClaimsSeen, 65536): it keeps
	// the last change of every session key it saw, ended ones included,
	// until it starts over.
	recent := 0 // registered tokens presented within two token cache TTLs (broker tokenCacheTTL, 30 s)
	for tok, at := range lastUsed {
		if !deleted[tok] && time.Since(at) < 2*30*time.Second+5*time.Second {
			recent++
		}
	}
	recentTerms := 0 // terminal ids that presented a token within two account cache TTLs (60 s)
	inserts.Range(func(_, at any) bool {
		if time.Since(at.(time.Time)) < 2*60*time.Second+5*time.Second {
			recentTerms++
		}
		return true
	})
	for k, n := range end.Tables {
		if k == "auth_account_cache" {
			// The answers given within the last two TTLs: one per terminal id.
			bounds = append(bounds, soakBound{"table " + k + " (terminal ids that presented a token in the last 125 s: " + strconv.Itoa(recentTerms) + ")", base.Tables[k], n, recentTerms + 2})
			continue
		}
		if k == "broker_token_cache" {
			// The records read within the last two TTLs.
			bounds = append(bounds, soakBound{"table " + k + " (registered tokens presented in the last 65 s: " + strconv.Itoa(recent) + ")", base.Tables[k], n, recent + 2})
			continue
		}
		if k == "broker_claims_seen" {
			if n > 1<<16 {
				t.Errorf("table %s: %d entries; bounded by 65536", k, n)
			}
			continue
		}
		bounds = append(bounds, soakBound{"table " + k, base.Tables[k], n, 8})
	}
	if len(end.Tables) == 0 {
		t.Errorf("no hotdesk_internal_entries in the daemon's metrics")
	}
	for _, b := range bounds {
		if b.end > b.base+b.slack {
			t.Errorf("%s grew from %d to %d over %d cycles (%d allowed)", b.what, b.base, b.end, cycles, b.slack)
		}
	}
	if len(heapMin) >= 2 && heapMin[len(heapMin)-1] > 2*heapMin[0]+16 {
		t.Errorf("live heap grew from %.1f to %.1f MiB over the cycles", heapMin[0], heapMin[len(heapMin)-1])
	}
	if end.RSSMiB > 2*base.RSSMiB+64 {
		t.Errorf("rss grew from %.1f to %.1f MiB", base.RSSMiB, end.RSSMiB)
	}
	// The event log is bounded by time: every stored event is under a
	// lease of at most registry.EventTTL, and there are no more of them
	// than the daemon emitted.
	if err := checkEventLeases(ctx, cli); err != nil {
		t.Error(err)
	}
	if stored, emitted, err := eventCounts(ctx, cli, metricsURL); err != nil {
		t.Error(err)
	} else if stored > emitted {
		t.Errorf("registry holds %d events; the daemon emitted %d", stored, emitted)
	}
}

// eventCounts returns the events stored in the registry and then those the
// daemon emitted (hotdesk_broker_events_total): read in that order, the
// second is never below the first.
func eventCounts(ctx context.Context, cli *clientv3.Client, metricsURL string) (stored, emitted int, err error) {
	resp, err := cli.Get(ctx, "/hotdesk/events/", clientv3.WithPrefix(), clientv3.WithCountOnly())
	if err != nil {
		return 0, 0, err
	}
	m, err := soakScrape(metricsURL)
	if err != nil {
		return 0, 0, err
	}
	for k, v := range m {
		if strings.HasPrefix(k, "hotdesk_broker_events_total{") {
			emitted += int(v)
		}
	}
	return int(resp.Count), emitted, nil
}

// checkEventLeases checks that every key of the event log lives under a
// lease granted for at most registry.EventTTL.
func checkEventLeases(ctx context.Context, cli *clientv3.Client) error {
	resp, err := cli.Get(ctx, "/hotdesk/events/", clientv3.WithPrefix())
	if err != nil {
		return err
	}
	leases := map[clientv3.LeaseID]bool{}
	for _, kv := range resp.Kvs {
		if kv.Lease == 0 {
			return fmt.Errorf("event %s has no lease: the event log would grow for ever", kv.Key)
		}
		leases[clientv3.LeaseID(kv.Lease)] = true
	}
	for id := range leases {
		ttl, err := cli.TimeToLive(ctx, id)
		if err != nil {
			return err
		}
		if ttl.GrantedTTL > int64(registry.EventTTL/time.Second) {
			return fmt.Errorf("event lease %x granted for %d s; over the event TTL %v", id, ttl.GrantedTTL, registry.EventTTL)
		}
	}
	return nil
}

func mustSessions(ctx context.Context, t *testing.T, admin *adminapi.Client) []adminapi.SessionInfo {
	t.Helper()
	ss, err := admin.Sessions(ctx)
	if err != nil {
		t.Fatal(err)
	}
	return ss
}

func mergeKeys(a, b map[string]int) map[string]int {
	out := map[string]int{}
	for k := range a {
		out[k] = 0
	}
	for k := range b {
		out[k] = 0
	}
	return out
}

// fmtFloats formats v, the first and last four only (and the largest) of
// a long one.
func fmtFloats(v []float64) string {
	f := func(v []float64) string {
		var s []string
		for _, x := range v {
			s = append(s, strconv.FormatFloat(x, 'f', 1, 64))
		}
		return strings.Join(s, " ")
	}
	if len(v) <= 10 {
		return f(v)
	}
	return fmt.Sprintf("%s … %s (largest %.1f)", f(v[:4]), f(v[len(v)-4:]), slices.Max(v))
}
