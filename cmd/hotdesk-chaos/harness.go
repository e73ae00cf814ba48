package main

import (
	"context"
	"encoding/json"
	"fmt"
	"math/rand"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/hotdesk/hotdesk/cmd/internal/adminapi"
)

// registryPrefix is hotdeskd's default etcd prefix.
const registryPrefix = "/hotdesk/"

// harness owns every process, proxy, terminal and goroutine of a run.
type harness struct {
	opts    options
	dir     string
	rec     *recorder
	members []*member
	brokers []*hotdeskd
	etcd    *clientv3.Client
	keys    keyring
	serials atomic.Int64
	paired  atomic.Int64 // tokens the administrator had paired (admin.go)

	tokens      []string
	terms       []*terminal
	probes      []*terminal
	probeTokens []string

	rngMu sync.Mutex // guards rng
	rng   *rand.Rand

	mu     sync.Mutex // guards the workload state below
	holder map[string]*terminal
	holds  map[*terminal]string
	busyT  map[*terminal]bool
	busyK  map[string]string // token → the kind of the operation on it
	paused bool

	groupChecks []groupCheck // guarded by mu (upgrade.go)

	reloads int // policy_reload's so far (the fault loop's)
}

func (h *harness) logf(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "%8.1fs  %s\n", secs(h.rec.now()), fmt.Sprintf(format, args...))
}

func (h *harness) intn(n int) int {
	h.rngMu.Lock()
	defer h.rngMu.Unlock()
	return h.rng.Intn(n)
}

func (h *harness) jitter(from, to time.Duration) time.Duration {
	return from + time.Duration(h.intn(int(to-from)+1))
}

// run starts the group, runs the workload and the faults, stops everything
// and returns the checker's rows.
func (h *harness) run(ctx context.Context) ([]Row, error) {
	o := h.opts
	h.rng = rand.New(rand.NewSource(o.seed))
	hist, err := os.Create(filepath.Join(h.dir, "history.jsonl"))
	if err != nil {
		return nil, err
	}
	defer hist.Close()
	h.rec = newRecorder(time.Now(), hist)
	self, err := os.Executable()
	if err != nil {
		return nil, err
	}
	lifeline := filepath.Join(h.dir, "lifeline")
	if err := os.WriteFile(lifeline, nil, 0o600); err != nil {
		return nil, err
	}
	var createdUser bool
	defer func() {
		h.shutdown(lifeline)
		if createdUser {
			removeBrokerUser(h.logf)
		}
	}()

	h.logf("starting a 3-member etcd cluster (3 processes)")
	if h.members, err = startCluster(ctx, self, h.dir, 3); err != nil {
		return nil, err
	}
	if h.etcd, err = etcdClient(h.members); err != nil {
		return nil, err
	}
	wctx, wcancel := context.WithCancel(ctx)
	watchDone := make(chan struct{})
	go func() { defer close(watchDone); h.watchHistory(wctx) }()
	defer func() { wcancel(); <-watchDone }()

	cred, bbin, bself, createdUser, err := unprivileged(h.dir, absBin(o.bin), self)
	if err != nil {
		return nil, err
	}
	gc := groupConfig{bin: bbin, self: bself, cred: cred, dir: h.dir, lifeline: lifeline, leaseTTL: o.leaseTTL, logLevel: o.logLevel, auth: o.auth}
	if o.from != "" {
		if gc.from, err = previousRelease(h.dir, absBin(o.from), cred); err != nil {
			return nil, err
		}
	}
	for i := range 3 {
		b, err := newBroker(ctx, gc, i, h.members)
		if err != nil {
			return nil, err
		}
		h.brokers = append(h.brokers, b)
		if err := b.start(); err != nil {
			return nil, err
		}
	}
	for _, b := range h.brokers {
		if err := b.waitReady(ctx, 60*time.Second); err != nil {
			return nil, err
		}
	}
	h.logf("3 hotdeskd ready: %s %s %s", h.brokers[0].addr, h.brokers[1].addr, h.brokers[2].addr)

	// Tokens: pairing codes from the admin API, enrolled over the protocol.
	enroll := func(user string) (string, error) {
		b := h.brokers[h.intn(len(h.brokers))]
		pr, err := b.admin.PairToken(ctx, adminapi.PairRequest{User: user, Label: "chaos " + user})
		if err != nil {
			return "", fmt.Errorf("chaos: pairing code for %s: %w", user, err)
		}
		tok, key, err := pair(ctx, b.brokerAddr(), pr.Code)
		if err != nil {
			return "", fmt.Errorf("chaos: pairing %s at %s: %w", user, b.id, err)
		}
		h.keys.add(tok, key)
		return tok, nil
	}
	for i := range o.tokens {
		tok, err := enroll(fmt.Sprintf("user%d", i))
		if err != nil {
			return nil, err
		}
		h.tokens = append(h.tokens, tok)
	}
	for i := range h.brokers {
		tok, err := enroll(fmt.Sprintf("probe%d", i))
		if err != nil {
			return nil, err
		}
		h.probeTokens = append(h.probeTokens, tok)
	}

	tctx, tcancel := context.WithCancel(ctx)
	var twg sync.WaitGroup
	defer func() { tcancel(); twg.Wait() }()
	startTerm := func(t *terminal) {
		twg.Add(1)
		go func() { defer twg.Done(); t.run(tctx) }()
	}
	for i := range o.terminals {
		t := newTerminal(fmt.Sprintf("term-%d", i+1), h.targets(i%len(h.brokers)), o.failover, &h.keys, h.rec, &h.serials)
		t.returnHome = o.returnHome
		h.terms = append(h.terms, t)
		startTerm(t)
	}
	for i := range h.brokers {
		t := newTerminal(fmt.Sprintf("probe-%s", h.brokers[i].id), h.targets(i), false, &h.keys, h.rec, &h.serials)
		t.returnHome = true
		h.probes = append(h.probes, t)
		startTerm(t)
	}
	h.holder, h.holds = map[string]*terminal{}, map[*terminal]string{}
	h.busyT, h.busyK = map[*terminal]bool{}, map[string]string{}
	if _, ok := h.recovered(ctx, 30*time.Second); !ok {
		return nil, fmt.Errorf("chaos: the group did not start working (terminals, probes)")
	}
	h.logf("%d terminals, %d tokens, %d probe terminals connected; workload starts", len(h.terms), len(h.tokens), len(h.probes))

	// The workload: one worker per token.
	h.rec.setBegin()
	wlctx, wlcancel := context.WithCancel(ctx)
	var wwg sync.WaitGroup
	for i := range h.tokens {
		wwg.Add(1)
		go func() { defer wwg.Done(); h.worker(wlctx, int64(i)) }()
	}
	if o.admin {
		wwg.Add(1)
		go func() { defer wwg.Done(); h.drainer(wlctx) }()
	}
	stopWorkload := func() { wlcancel(); wwg.Wait() }
	defer stopWorkload()

	h.sleep(ctx, o.quiet)
	h.sweep(ctx)
	startAll := time.Now()
	for round := 0; ctx.Err() == nil; round++ {
		for _, name := range o.faults {
			if ctx.Err() != nil {
				break
			}
			h.inject(ctx, name)
		}
		if o.duration == 0 || time.Since(startAll) >= o.duration {
			break
		}
	}
	stopWorkload()
	if ctx.Err() != nil {
		return check(h.rec.history(), h.checkConfig()), ctx.Err()
	}
	rows := check(h.rec.history(), h.checkConfig())
	h.addGroupViolations(rows)
	h.writeSummary(rows)
	return rows, nil
}

func (h *harness) checkConfig() checkConfig {
	return checkConfig{TakeoverWindow: h.opts.takeoverWindow, ClaimGrace: 2 * time.Second, DrainGrace: time.Second,
		DisableGrace: h.opts.leaseTTL + time.Second}
}

// targets lists the brokers for a terminal at home: home first.
func (h *harness) targets(home int) []brokerAddr {
	var ts []brokerAddr
	for i := range h.brokers {
		ts = append(ts, h.brokers[(home+i)%len(h.brokers)].brokerAddr())
	}
	return ts
}

func (h *harness) sleep(ctx context.Context, d time.Duration) {
	select {
	case <-ctx.Done():
	case <-time.After(d):
	}
}

// inject runs one fault: inject, hold, heal, wait for recovery, quiet
// period, sweep.
func (h *harness) inject(ctx context.Context, name string) {
	f := Fault{Name: name, Start: h.rec.now()}
	fn := faultFunc(name)
	f.Target = fn(ctx, h, &f)
	f.Healed = h.rec.now()
	h.rec.fault(f)
	h.logf("%s %s: injected at %.1fs, healed at %.1fs", name, f.Target, secs(f.Start), secs(f.Healed))
	if at, ok := h.recovered(ctx, h.opts.recoveryBound); ok {
		f.Recovered = at
		h.logf("%s %s: recovered in %d ms", name, f.Target, (at - f.Start).Milliseconds())
	} else {
		h.logf("%s %s: NOT recovered within %v", name, f.Target, h.opts.recoveryBound)
		h.heal(ctx)
	}
	h.rec.fault(f)
	h.sleep(ctx, h.opts.quiet)
	if h.opts.from != "" || name == "policy_reload" {
		h.checkGroupView(ctx, f)
	}
	h.sweep(ctx)
}

// heal restores everything after a fault that did not recover: processes
// running, links up.
func (h *harness) heal(ctx context.Context) {
	for _, m := range h.members {
		if !m.running() {
			_ = m.start()
		}
	}
	for _, b := range h.brokers {
		b.setCut(false)
		b.signal(syscall.SIGCONT)
		if !b.running() {
			_ = b.start()
		}
	}
	_, _ = h.recovered(ctx, h.opts.recoveryBound)
}

// recovered waits until every broker is ready and has its server record in
// etcd, every terminal is connected (or has connected since the wait
// began: with many terminals, one is always between two connections of a
// redirect) and a probe hot-desk (insert, remove) through each broker
// succeeds, at most bound. It returns when that was first seen.
func (h *harness) recovered(ctx context.Context, bound time.Duration) (time.Duration, bool) {
	deadline := time.Now().Add(bound)
	since := h.rec.now()
	for ctx.Err() == nil && time.Now().Before(deadline) {
		if h.allUp(ctx, since) && h.probe(ctx) {
			return h.rec.now(), true
		}
		h.sleep(ctx, 200*time.Millisecond)
	}
	return 0, false
}

// allUp reports whether every broker is ready with its server record, and
// every terminal connected now or since since.
func (h *harness) allUp(ctx context.Context, since time.Duration) bool {
	for _, b := range h.brokers {
		if !b.ready(ctx) {
			return false
		}
	}
	// Every broker's server record is in the registry (under a live lease:
	// a revoked or expired lease takes it away).
	cctx, cancel := context.WithTimeout(ctx, time.Second)
	resp, err := h.etcd.Get(cctx, registryPrefix+"servers/", clientv3.WithPrefix(), clientv3.WithKeysOnly())
	cancel()
	if err != nil || len(resp.Kvs) < len(h.brokers) {
		return false
	}
	for _, t := range append(append([]*terminal(nil), h.terms...), h.probes...) {
		if !t.up.Load() && time.Duration(t.upAt.Load()) < since {
			return false
		}
	}
	return true
}

// probe hot-desks each probe token at its probe terminal, all at once.
func (h *harness) probe(ctx context.Context) bool {
	var ok atomic.Bool
	ok.Store(true)
	var wg sync.WaitGroup
	for i, t := range h.probes {
		wg.Add(1)
		go func() {
			defer wg.Done()
			tok := h.probeTokens[i]
			start := h.rec.now()
			sess, err := t.insert(ctx, tok)
			if err == nil {
				err = t.remove(ctx, tok)
			}
			o := Op{Kind: "probe", Term: t.id, Token: tok, Start: start, End: h.rec.now(), OK: err == nil, Session: sess, Probe: true}
			if err != nil {
				o.Err = err.Error()
				ok.Store(false)
				_, _ = t.do(ctx, "remove", tok)
			}
			h.rec.op(o)
		}()
	}
	wg.Wait()
	return ok.Load()
}

// opPlan is one workload operation.
type opPlan struct {
	kind     string // insert, takeover, remove; kill, disconnect, lock, disable, pair (admin.go)
	token    string
	from, to *terminal
}

func (h *harness) worker(ctx context.Context, seed int64) {
	for ctx.Err() == nil {
		p := h.pick()
		if p == nil {
			h.sleep(ctx, 20*time.Millisecond)
			continue
		}
		h.perform(ctx, p)
		h.release(p)
		h.sleep(ctx, h.jitter(50*time.Millisecond, 300*time.Millisecond))
	}
}

// pick chooses a token no one is working on and what to do with it.
func (h *harness) pick() *opPlan {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.paused {
		return nil
	}
	var free []string
	for _, k := range h.tokens {
		if h.busyK[k] == "" {
			free = append(free, k)
		}
	}
	if len(free) == 0 {
		return nil
	}
	k := free[h.intn(len(free))]
	var idle []*terminal
	for _, t := range h.terms {
		if !h.busyT[t] && h.holds[t] == "" {
			idle = append(idle, t)
		}
	}
	p := &opPlan{token: k}
	if at := h.holder[k]; h.opts.admin && h.intn(adminEvery) == 0 {
		if at != nil && h.busyT[at] {
			return nil
		}
		p.kind = adminKinds[h.intn(len(adminKinds))]
		if p.kind == "disable" || p.kind == "pair" {
			if len(idle) == 0 {
				return nil
			}
			p.to = idle[h.intn(len(idle))] // where the person tries it
		}
	} else if at != nil {
		if h.busyT[at] {
			return nil
		}
		if h.intn(2) == 0 || len(idle) == 0 {
			p.kind, p.from = "remove", at
		} else {
			p.kind, p.from, p.to = "takeover", at, idle[h.intn(len(idle))]
		}
	} else {
		if len(idle) == 0 {
			return nil
		}
		p.kind, p.to = "insert", idle[h.intn(len(idle))]
	}
	h.busyK[k] = p.kind
	for _, t := range []*terminal{p.from, p.to} {
		if t != nil {
			h.busyT[t] = true
		}
	}
	return p
}

func (h *harness) release(p *opPlan) {
	h.mu.Lock()
	defer h.mu.Unlock()
	delete(h.busyK, p.token)
	for _, t := range []*terminal{p.from, p.to} {
		if t != nil {
			delete(h.busyT, t)
		}
	}
}

// perform runs p and records it. A failed insert or takeover is cleaned
// up as a person would: the token is pulled at both terminals.
func (h *harness) perform(ctx context.Context, p *opPlan) {
	if isAdmin(p.kind) {
		h.performAdmin(ctx, p)
		return
	}
	o := Op{Kind: p.kind, Token: p.token, Start: h.rec.now()}
	var err error
	switch p.kind {
	case "remove":
		o.Term = p.from.id
		err = p.from.remove(ctx, p.token)
		h.setHolder(p.token, nil)
	default:
		o.Term = p.to.id
		if p.from != nil {
			p.from.forget(ctx, p.token) // the person walks to the other terminal
			h.setHolder(p.token, nil)
		}
		o.Session, err = p.to.insert(ctx, p.token)
		if err == nil {
			h.setHolder(p.token, p.to)
		}
	}
	if !h.done(ctx, o, err) {
		return
	}
	if err != nil && p.kind != "remove" {
		for _, t := range []*terminal{p.from, p.to} {
			if t != nil {
				_ = t.remove(ctx, p.token)
			}
		}
	}
}

// done records operation o, which ended now with err, unless ctx ended
// (the workload stopped: not an outcome); it reports whether o was
// recorded.
func (h *harness) done(ctx context.Context, o Op, err error) bool {
	o.End, o.OK = h.rec.now(), err == nil
	if err != nil {
		o.Err = err.Error()
	}
	if ctx.Err() != nil {
		return false
	}
	h.rec.op(o)
	return true
}

func (h *harness) setHolder(k string, t *terminal) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if old := h.holder[k]; old != nil {
		delete(h.holds, old)
	}
	delete(h.holder, k)
	if t != nil {
		h.holder[k], h.holds[t] = t, k
	}
}

// sweep pauses the workload and presents every token once more (pulled
// first where it is shown), so that every session's continuity is
// checked after every fault; admin listings record orphans. A token an
// administrator's action is busy with (a disable holds its token for
// seconds) is left to it, with the terminal it uses.
func (h *harness) sweep(ctx context.Context) {
	h.mu.Lock()
	h.paused = true
	h.mu.Unlock()
	defer func() {
		h.mu.Lock()
		h.paused = false
		h.mu.Unlock()
	}()
	for ctx.Err() == nil {
		h.mu.Lock()
		busy := 0
		for _, kind := range h.busyK {
			if !isAdmin(kind) {
				busy++
			}
		}
		h.mu.Unlock()
		if busy == 0 {
			break
		}
		h.sleep(ctx, 20*time.Millisecond)
	}
	h.listOrphans(ctx)
	for _, k := range h.tokens {
		h.mu.Lock()
		if h.busyK[k] != "" {
			h.mu.Unlock()
			continue
		}
		at := h.holder[k]
		var idle []*terminal
		for _, t := range h.terms {
			if h.holds[t] == "" && t != at && !h.busyT[t] {
				idle = append(idle, t)
			}
		}
		h.mu.Unlock()
		if at != nil {
			h.perform(ctx, &opPlan{kind: "remove", token: k, from: at})
		}
		if len(idle) > 0 {
			h.perform(ctx, &opPlan{kind: "insert", token: k, to: idle[h.intn(len(idle))]})
		}
	}
	h.probe(ctx) // the probe tokens' sessions too
	h.listOrphans(ctx)
}

// listOrphans records every session an admin listing shows as orphaned.
func (h *harness) listOrphans(ctx context.Context) {
	for _, b := range h.brokers {
		if !b.running() {
			continue
		}
		lctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		ss, err := b.admin.Sessions(lctx)
		cancel()
		if err != nil {
			continue
		}
		for _, s := range ss {
			if s.Orphaned {
				h.rec.orphan(Orphan{Server: b.id, Session: s.ID, Token: s.Token, Owner: s.OrphanOwner})
			}
		}
	}
}

// watchHistory records every change under the registry prefix from
// revision 1 into etcd.jsonl.
func (h *harness) watchHistory(ctx context.Context) {
	f, err := os.Create(filepath.Join(h.dir, "etcd.jsonl"))
	if err != nil {
		return
	}
	defer f.Close()
	enc := json.NewEncoder(f)
	rev := int64(1)
	for ctx.Err() == nil {
		wch := h.etcd.Watch(ctx, registryPrefix, clientv3.WithPrefix(), clientv3.WithRev(rev), clientv3.WithPrevKV())
		for resp := range wch {
			for _, ev := range resp.Events {
				val := string(ev.Kv.Value)
				if len(val) > 400 {
					val = val[:400]
				}
				_ = enc.Encode(map[string]any{"at": h.rec.now(), "rev": ev.Kv.ModRevision, "type": ev.Type.String(),
					"key": string(ev.Kv.Key), "lease": ev.Kv.Lease, "value": val})
				if tok, ok := strings.CutPrefix(string(ev.Kv.Key), registryPrefix+"sessions/"); ok {
					c := ClaimEvent{Rev: ev.Kv.ModRevision, Token: tok, Deleted: ev.Type == clientv3.EventTypeDelete, At: h.rec.now()}
					v := ev.Kv.Value
					if c.Deleted && ev.PrevKv != nil {
						v = ev.PrevKv.Value
					}
					var rs struct {
						ID        string `json:"id"`
						ServerID  string `json:"server_id"`
						UpdatedMs int64  `json:"updated_unix_ms"`
					}
					_ = json.Unmarshal(v, &rs)
					c.Server, c.Session = rs.ServerID, rs.ID
					// A watch that lagged (its member was killed) delivers
					// late: a claim may be as old as its writer's stamp.
					c.Received = c.At
					if !c.Deleted && rs.UpdatedMs > 0 {
						c.At = min(c.At, time.UnixMilli(rs.UpdatedMs).Sub(h.rec.start))
					}
					h.rec.claim(c)
				}
				rev = ev.Kv.ModRevision + 1
			}
		}
		h.sleep(ctx, 200*time.Millisecond)
	}
}

// writeSummary stores the rows with their violations next to the logs.
func (h *harness) writeSummary(rows []Row) {
	b, err := json.MarshalIndent(rows, "", "  ")
	if err == nil {
		_ = os.WriteFile(filepath.Join(h.dir, "rows.json"), b, 0o600)
	}
}

// shutdown stops every process the run started.
func (h *harness) shutdown(lifeline string) {
	os.Remove(lifeline) // the compositors exit within a second
	compositorsGone := time.Now().Add(1200 * time.Millisecond)
	var wg sync.WaitGroup
	for _, b := range h.brokers {
		wg.Add(1)
		go func() { defer wg.Done(); b.stop(syscall.SIGTERM, 25*time.Second) }()
	}
	wg.Wait()
	for _, b := range h.brokers {
		for _, p := range b.proxies {
			p.close()
		}
		b.admin.Close()
	}
	if h.etcd != nil {
		h.etcd.Close()
	}
	// One member at a time: a leader that stops hands its leadership to a
	// peer that is up (at once), and the last member has none to hand it
	// to. Stopped all at once, a leader waits for a transfer to members
	// that are stopping too, until its request timeout (about 7 s).
	for _, m := range h.members {
		m.stop(syscall.SIGTERM, 10*time.Second)
	}
	time.Sleep(time.Until(compositorsGone)) // compositors notice the lifeline
}
