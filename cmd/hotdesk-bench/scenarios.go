package main

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/go-hclog"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/hotdesk/hotdesk/proto"
	"github.com/hotdesk/hotdesk/registry"
)

// notes goes into every row.
const notes = "NULL COMPOSITOR: no compositor process is started (broker path only: protocol, proof, registry, redirect); " +
	"3 brokers + 3 etcd members on loopback"

// maxConsecutiveErrors aborts a scenario whose operations keep failing.
const maxConsecutiveErrors = 20

// params sizes the scenarios.
type params struct {
	baseline  int           // etcd claim txns
	n         int           // trials: local, crossserver, race; operations: storm
	terminals int           // storm
	sessions  int           // scale
	workers   int           // scale: terminals creating sessions concurrently
	budget    time.Duration // per scenario (scale: 3×)
}

// bench runs scenarios against one group.
type bench struct {
	g       *group
	p       params
	log     hclog.Logger
	fsync   bool
	etcdP99 float64 // ms, from the baseline
	px      pixelsConfig
	// resume: simulated terminals resume TLS sessions with brokers they
	// connected to before, as hotdesk-term does (-tls-resume).
	resume bool
}

func (b *bench) newRow(scenario string) row {
	return row{Scenario: scenario, EtcdFsync: b.fsync, Notes: notes}
}

// errCounter aborts after maxConsecutiveErrors failures in a row.
type errCounter struct {
	total, run int
	last       error
}

func (e *errCounter) add(err error) error {
	if err == nil {
		e.run = 0
		return nil
	}
	e.total++
	e.run++
	e.last = err
	if e.run >= maxConsecutiveErrors {
		return fmt.Errorf("%d failures in a row, last: %w", e.run, err)
	}
	return nil
}

// runTrials calls trial for i = 0, 1, …, n-1, until budget has passed since
// the first call (then r is marked truncated). It counts failed trials in
// r.Errors and gives up, with an error, after maxConsecutiveErrors failures
// in a row.
func runTrials(r *row, n int, budget time.Duration, trial func(i int) error) error {
	var ec errCounter
	defer func() { r.Errors = ec.total }()
	start := time.Now()
	for i := range n {
		if time.Since(start) > budget {
			r.Truncated = true
			return nil
		}
		if err := ec.add(trial(i)); err != nil {
			return err
		}
	}
	return nil
}

// baseline measures the etcd claim-if-absent txn the registry uses,
// Txn(If(CreateRevision(k)==0)).Then(Put(k, v, WithLease)), on fresh keys,
// sequentially, round-robin through the brokers' clients (so leader and
// follower members are mixed as they are for the brokers).
func (b *bench) baseline(ctx context.Context) (row, error) {
	r := b.newRow("etcd_txn")
	leases := make([]clientv3.LeaseID, len(b.g.nodes))
	for i, n := range b.g.nodes {
		lctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		l, err := n.cli.Grant(lctx, 60)
		cancel()
		if err != nil {
			return r, fmt.Errorf("bench: baseline: grant: %w", err)
		}
		leases[i] = l.ID
	}
	defer func() {
		for i, n := range b.g.nodes {
			rctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			_, _ = n.cli.Revoke(rctx, leases[i])
			cancel()
		}
	}()
	// A value the size of a session record.
	val := `{"id":"s-aaaaaaaaaaaaaaaa","key":"soft.` + strings.Repeat("a", 32) +
		`","server_id":"b0","user":"bench","terminal":"t","state":"creating","created_unix_ms":1,"updated_unix_ms":1}`
	prefix := fmt.Sprintf("/hotdesk-bench/baseline/%d/", time.Now().UnixNano())
	const warmup = 20
	samples := make([]time.Duration, 0, b.p.baseline)
	err := runTrials(&r, b.p.baseline+warmup, b.p.budget, func(i int) error {
		j := i % len(b.g.nodes)
		k := prefix + strconv.Itoa(i)
		cctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		t0 := time.Now()
		resp, err := b.g.nodes[j].cli.Txn(cctx).
			If(clientv3.Compare(clientv3.CreateRevision(k), "=", 0)).
			Then(clientv3.OpPut(k, val, clientv3.WithLease(leases[j]))).
			Commit()
		d := time.Since(t0)
		cancel()
		if err == nil && !resp.Succeeded {
			err = errors.New("claim of a fresh key lost")
		}
		if err == nil && i >= warmup {
			samples = append(samples, d)
		}
		return err
	})
	if err != nil {
		return r, fmt.Errorf("bench: baseline: %w", err)
	}
	r.fill(samples, 0)
	r.EtcdP99, r.Ratio = r.P99, 1
	if r.N == 0 || r.P99 <= 0 {
		return r, errors.New("bench: baseline: no successful txn")
	}
	b.etcdP99 = r.P99
	return r, nil
}

// prepareOn creates one session per token on broker a, from terminal t
// connected to a, and suspends it.
func (b *bench) prepareOn(ctx context.Context, a *node, t *terminal, toks []string) error {
	restore, err := b.g.placeOn(ctx, a)
	if err != nil {
		return err
	}
	defer restore()
	if err := prepare(ctx, t, toks); err != nil {
		return err
	}
	for _, tok := range toks {
		if _, err := b.g.settled(ctx, tok); err != nil {
			return fmt.Errorf("bench: prepare: %w", err)
		}
	}
	return nil
}

// prepare creates one session per token at terminal t (wherever the
// group places it) and suspends it.
func prepare(ctx context.Context, t *terminal, toks []string) error {
	for _, tok := range toks {
		o, err := hotdesk(ctx, t, tok)
		if err != nil {
			return fmt.Errorf("bench: prepare: %w", err)
		}
		if err := o.leave(ctx, t, tok); err != nil {
			return fmt.Errorf("bench: prepare: %w", err)
		}
	}
	return nil
}

// suspendedOn enrolls n tokens and suspends a session for each on broker
// a, made from a new terminal connected to a as id. It returns the tokens
// and that terminal, which the caller closes.
func (b *bench) suspendedOn(ctx context.Context, a *node, n int, id string) ([]string, *terminal, error) {
	toks, err := b.g.enroll(ctx, n)
	if err != nil {
		return nil, nil, err
	}
	t, err := b.dial(ctx, a, id)
	if err != nil {
		return nil, nil, err
	}
	if err := b.prepareOn(ctx, a, t, toks); err != nil {
		t.close()
		return nil, nil, err
	}
	return toks, t, nil
}

// settle waits, between two trials of a sequential scenario, until the
// registry shows token's session suspended (group.settled) and records the
// wait in waits.
func (b *bench) settle(ctx context.Context, token string, waits *[]time.Duration) error {
	d, err := b.g.settled(ctx, token)
	if err != nil {
		return err
	}
	*waits = append(*waits, d)
	return nil
}

func (b *bench) dial(ctx context.Context, n *node, id string) (*terminal, error) {
	var cache tls.ClientSessionCache
	if b.resume {
		cache = tls.NewLRUClientSessionCache(8)
	}
	return dialTerminal(ctx, n.addr, n.pin, proto.Hello{TerminalID: id, Name: "bench " + id}, b.g.keys, cache)
}

// dialEach dials n terminals, terminal i as prefix-i to node at(i). On an
// error it closes those it dialed; otherwise the caller closes them
// (closeAll).
func (b *bench) dialEach(ctx context.Context, n int, prefix string, at func(i int) *node) ([]*terminal, error) {
	terms := make([]*terminal, 0, n)
	for i := range n {
		t, err := b.dial(ctx, at(i), fmt.Sprintf("%s-%d", prefix, i))
		if err != nil {
			closeAll(terms)
			return nil, err
		}
		terms = append(terms, t)
	}
	return terms, nil
}

func closeAll(terms []*terminal) {
	for _, t := range terms {
		t.close()
	}
}

// local: sessions suspended on broker A, inserted again at a terminal
// connected to A. Measured: TokenInserted sent → Attached received, which
// includes the proof-of-possession round trip (the product path).
func (b *bench) local(ctx context.Context) (row, error) {
	r := b.newRow("local")
	r.Target = "p99 <= 2 ms"
	a := b.g.nodes[0]
	toks, t, err := b.suspendedOn(ctx, a, min(8, b.p.n), "local-a")
	if err != nil {
		return r, err
	}
	defer t.close()
	samples := make([]time.Duration, 0, b.p.n)
	var settle []time.Duration
	err = runTrials(&r, b.p.n, b.p.budget, func(i int) error {
		tok := toks[i%len(toks)]
		o, err := hotdesk(ctx, t, tok)
		if err == nil && (o.redirected || !o.resumed || o.server != a.id) {
			err = fmt.Errorf("bench: local: got redirected=%v resumed=%v server=%s; want a resume on %s", o.redirected, o.resumed, o.server, a.id)
		}
		if err == nil {
			samples = append(samples, o.total)
			err = park(ctx, t, tok)
		}
		if err == nil {
			err = b.settle(ctx, tok, &settle)
		}
		return err
	})
	if err != nil {
		return r, fmt.Errorf("bench: local: %w", err)
	}
	r.fill(samples, b.etcdP99)
	r.fillSettle(settle)
	r.TargetOK = ptr(r.N > 0 && r.P99 <= 2)
	return r, nil
}

// crossserver: sessions suspended on A, inserted at a terminal connected
// to B. Measured: TokenInserted at B → Attached from A, including B's
// proof and lookup, the Redirect, the pinned TLS dial to A, Hello/Welcome,
// and A's proof and resume. Parts: redirect (B's answer), dial, owner (A).
func (b *bench) crossserver(ctx context.Context) (row, error) {
	r := b.newRow("crossserver")
	r.Target = "p99 <= 10 ms and ratio_p99 <= 10"
	a, bb := b.g.nodes[0], b.g.nodes[1]
	toks, ta, err := b.suspendedOn(ctx, a, min(8, b.p.n), "cross-a")
	if err != nil {
		return r, err
	}
	ta.close()
	tb, err := b.dial(ctx, bb, "cross-b")
	if err != nil {
		return r, err
	}
	defer tb.close()
	var total, redirect, dial, owner, settle []time.Duration
	var tlsResumed int
	err = runTrials(&r, b.p.n, b.p.budget, func(i int) error {
		tok := toks[i%len(toks)]
		o, err := hotdesk(ctx, tb, tok)
		if err != nil {
			return err
		}
		if !o.redirected || o.server != a.id {
			err = fmt.Errorf("bench: crossserver: got redirected=%v server=%s; want a redirect to %s", o.redirected, o.server, a.id)
		} else {
			total, redirect = append(total, o.total), append(redirect, o.first)
			dial, owner = append(dial, o.dial), append(owner, o.owner)
			if o.tlsResumed {
				tlsResumed++
			}
		}
		if lerr := o.leave(ctx, tb, tok); err == nil {
			err = lerr
		}
		if err == nil {
			err = b.settle(ctx, tok, &settle)
		}
		return err
	})
	if err != nil {
		return r, fmt.Errorf("bench: crossserver: %w", err)
	}
	r.fill(total, b.etcdP99)
	r.fillSettle(settle)
	r.RedirectP50, r.RedirectP99 = p50p99(redirect)
	r.DialP50, r.DialP99 = p50p99(dial)
	r.OwnerP50, r.OwnerP99 = p50p99(owner)
	r.TLSResumed = ptr(tlsResumed)
	r.TargetOK = ptr(r.N > 0 && r.P99 <= 10 && r.Ratio <= 10)
	return r, nil
}

// crossserverSeqMin is the fewest consecutive cross-server hot-desks the
// crossserver_seq scenario makes on one terminal connection.
const crossserverSeqMin = 20

// crossserverSeq: one terminal, like a real one, stays on the broker it
// was last redirected to and presents the next token there; every token is
// owned by another broker than the one the terminal is connected to, so
// each hot-desk is a cross-server one that starts a new redirect chain.
// All of them must attach (a hop count that grew over the connection's
// life used to refuse the 3rd). Measured like crossserver.
func (b *bench) crossserverSeq(ctx context.Context) (row, error) {
	r := b.newRow("crossserver_seq")
	n := max(crossserverSeqMin, min(b.p.n, 200))
	r.Target = fmt.Sprintf("all of >= %d consecutive cross-server hot-desks on one connection attach", crossserverSeqMin)
	nodes := b.g.nodes
	owned := make([][]string, len(nodes))
	for i, a := range nodes {
		toks, t, err := b.suspendedOn(ctx, a, 2, fmt.Sprintf("seq-prep-%d", i))
		if err != nil {
			return r, err
		}
		t.close()
		owned[i] = toks
	}
	cur, err := b.dial(ctx, nodes[0], "seq-term")
	if err != nil {
		return r, err
	}
	at := 0 // index of the node cur is connected to
	defer func() { cur.close() }()
	var total, settle []time.Duration
	start := time.Now()
	for i := 0; i < n; i++ {
		if time.Since(start) > b.p.budget {
			r.Truncated = true
			break
		}
		owner := (at + 1 + i%(len(nodes)-1)) % len(nodes)
		tok := owned[owner][i%len(owned[owner])]
		o, err := hotdesk(ctx, cur, tok)
		if err == nil && (!o.redirected || o.server != nodes[owner].id) {
			err = fmt.Errorf("got redirected=%v server=%s; want a redirect to %s", o.redirected, o.server, nodes[owner].id)
		}
		if err != nil {
			// Every hot-desk must attach: one failure fails the scenario.
			r.Errors++
			r.fill(total, b.etcdP99)
			r.TargetOK = ptr(false)
			return r, fmt.Errorf("bench: crossserver_seq: hot-desk %d: %w", i+1, err)
		}
		total = append(total, o.total)
		if err := park(ctx, o.at, tok); err != nil {
			return r, fmt.Errorf("bench: crossserver_seq: %w", err)
		}
		if o.at != cur {
			cur.close()
			cur, at = o.at, owner
		}
		if err := b.settle(ctx, tok, &settle); err != nil {
			return r, fmt.Errorf("bench: crossserver_seq: %w", err)
		}
	}
	r.fill(total, b.etcdP99)
	r.fillSettle(settle)
	r.TargetOK = ptr(r.N >= crossserverSeqMin && r.Errors == 0)
	return r, nil
}

// history counts, from etcd's own history (a watch from a start revision),
// how many times each session key was created (a PUT with Version 1).
type history struct {
	mu       sync.Mutex
	creates  map[string]int
	err      error
	sentinel string
	seen     chan struct{} // closed when the sentinel key's event arrives
	done     chan struct{}
	cancel   context.CancelFunc
}

func watchHistory(ctx context.Context, cli *clientv3.Client, fromRev int64) *history {
	wctx, cancel := context.WithCancel(clientv3.WithRequireLeader(ctx))
	h := &history{
		creates: make(map[string]int), sentinel: registry.DefaultPrefix + "bench-sentinel/" + strconv.FormatInt(time.Now().UnixNano(), 10),
		seen: make(chan struct{}), done: make(chan struct{}), cancel: cancel,
	}
	sessions := registry.DefaultPrefix + "sessions/"
	go func() {
		defer close(h.done)
		seen := false
		for resp := range cli.Watch(wctx, registry.DefaultPrefix, clientv3.WithPrefix(), clientv3.WithRev(fromRev)) {
			if err := resp.Err(); err != nil {
				h.mu.Lock()
				h.err = err
				h.mu.Unlock()
				return
			}
			for _, ev := range resp.Events {
				k := string(ev.Kv.Key)
				switch {
				case k == h.sentinel && !seen:
					seen = true
					close(h.seen)
				case ev.Type == clientv3.EventTypePut && ev.Kv.Version == 1 && strings.HasPrefix(k, sessions):
					h.mu.Lock()
					h.creates[strings.TrimPrefix(k, sessions)]++
					h.mu.Unlock()
				}
			}
		}
	}()
	return h
}

// settle writes the sentinel and waits until the watch has seen it, so
// every earlier event has been counted; then the watch is stopped.
func (h *history) settle(ctx context.Context, cli *clientv3.Client) error {
	defer func() { h.cancel(); <-h.done }()
	pctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	_, err := cli.Put(pctx, h.sentinel, "x")
	cancel()
	if err != nil {
		return fmt.Errorf("bench: history: %w", err)
	}
	defer func() {
		dctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		_, _ = cli.Delete(dctx, h.sentinel)
		cancel()
	}()
	select {
	case <-h.seen:
		return nil
	case <-h.done:
		h.mu.Lock()
		defer h.mu.Unlock()
		return fmt.Errorf("bench: history: watch ended: %v", h.err)
	case <-time.After(10 * time.Second):
		return errors.New("bench: history: watch did not catch up in 10 s")
	}
}

// race: the same fresh token inserted at the same instant at one terminal
// on each broker. Every terminal must end Attached (directly, or after a
// Redirect); the token must have been claimed exactly once, as seen both
// in etcd's history and in the brokers' Creating transitions.
func (b *bench) race(ctx context.Context) (row, error) {
	r := b.newRow("race")
	r.Target = "duplicates == 0 and every terminal attached"
	toks, err := b.g.enroll(ctx, b.p.n)
	if err != nil {
		return r, err
	}
	terms, err := b.dialEach(ctx, len(b.g.nodes), "race", func(i int) *node { return b.g.nodes[i] })
	if err != nil {
		return r, err
	}
	defer closeAll(terms)
	gctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	resp, err := b.g.observer.Get(gctx, registry.DefaultPrefix+"sessions/", clientv3.WithCountOnly())
	cancel()
	if err != nil {
		return r, fmt.Errorf("bench: race: %w", err)
	}
	hist := watchHistory(ctx, b.g.observer, resp.Header.Revision+1)

	var (
		samples                        []time.Duration
		trials, definite, hookDup, red int
	)
	type result struct {
		o   outcome
		err error
	}
	err = runTrials(&r, len(toks), b.p.budget, func(i int) error {
		tok := toks[i]
		before := b.g.creations()
		res := make([]result, len(terms))
		gate := make(chan struct{})
		var wg sync.WaitGroup
		for j, t := range terms {
			wg.Add(1)
			go func() {
				defer wg.Done()
				<-gate
				res[j].o, res[j].err = hotdesk(ctx, t, tok)
			}()
		}
		close(gate)
		wg.Wait()
		trials++
		if created := b.g.creations() - before; created > 1 {
			hookDup += int(created - 1)
		}
		ok := true
		var trialErr error
		for j := range res {
			if res[j].err != nil {
				ok = false
				trialErr = res[j].err
				b.log.Warn("race: no definite outcome", "trial", i, "terminal", terms[j].id, "error", res[j].err)
				continue
			}
			samples = append(samples, res[j].o.total)
			if res[j].o.redirected {
				red++
			}
		}
		if ok {
			definite++
		}
		// Suspend the session wherever it ended up, then drop the extra connections.
		for j := range res {
			if res[j].o.at != nil {
				if err := res[j].o.leave(ctx, terms[j], tok); err != nil && trialErr == nil {
					trialErr = err
				}
			}
		}
		return trialErr
	})
	if err != nil {
		hist.cancel()
		<-hist.done
		return r, fmt.Errorf("bench: race: %w", err)
	}
	if err := hist.settle(ctx, b.g.observer); err != nil {
		return r, err
	}
	dup, missing := 0, 0
	for _, tok := range toks[:trials] {
		switch c := hist.creates[tok]; {
		case c > 1:
			dup += c - 1
		case c == 0:
			missing++
		}
	}
	if missing > 0 {
		b.log.Warn("race: tokens never claimed in etcd history", "count", missing)
	}
	r.fill(samples, b.etcdP99)
	r.Trials, r.Definite = ptr(trials), ptr(definite)
	r.Duplicates, r.DuplicatesHooks, r.Redirected = ptr(dup), ptr(hookDup), ptr(red)
	r.TargetOK = ptr(trials > 0 && dup == 0 && hookDup == 0 && definite == trials && missing == 0)
	return r, nil
}

// storm: many terminals spread over the brokers hot-desk at once, round
// after round; in round r terminal i takes token i+r+1, whose session was
// created at terminal i+r+1's broker, so most hot-desks cross servers.
func (b *bench) storm(ctx context.Context) (row, error) {
	r := b.newRow("storm")
	nt := max(2, b.p.terminals)
	toks, err := b.g.enroll(ctx, nt)
	if err != nil {
		return r, err
	}
	terms, err := b.dialEach(ctx, nt, "storm", func(i int) *node { return b.g.nodes[i%len(b.g.nodes)] })
	if err != nil {
		return r, err
	}
	defer closeAll(terms)
	// Every terminal creates its own token's session at once, and suspends it.
	errs := make([]error, nt)
	var wg sync.WaitGroup
	for i, t := range terms {
		wg.Add(1)
		go func() { defer wg.Done(); errs[i] = prepare(ctx, t, toks[i:i+1]) }()
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		return r, fmt.Errorf("bench: storm: %w", err)
	}

	rounds := max(1, (b.p.n+nt-1)/nt)
	var (
		mu      sync.Mutex
		samples []time.Duration
		failed  atomic.Int64
		red     atomic.Int64
		elapsed time.Duration
		ops     int
	)
	start := time.Now()
	for round := range rounds {
		if time.Since(start) > b.p.budget {
			r.Truncated = true
			break
		}
		shift := 1 + round%(nt-1)
		gate := make(chan struct{})
		for i, t := range terms {
			wg.Add(1)
			go func() {
				defer wg.Done()
				tok := toks[(i+shift)%nt]
				<-gate
				o, err := hotdesk(ctx, t, tok)
				if err == nil {
					mu.Lock()
					samples = append(samples, o.total)
					mu.Unlock()
					if o.redirected {
						red.Add(1)
					}
					err = o.leave(ctx, t, tok)
				}
				if err != nil {
					failed.Add(1)
					b.log.Warn("storm: hot-desk failed", "terminal", t.id, "error", err)
				}
			}()
		}
		r0 := time.Now()
		close(gate)
		wg.Wait()
		elapsed += time.Since(r0)
		ops += nt
		if failed.Load() > int64(ops/10) {
			return r, fmt.Errorf("bench: storm: %d of %d hot-desks failed", failed.Load(), ops)
		}
	}
	r.Errors = int(failed.Load())
	r.fill(samples, b.etcdP99)
	r.Terminals, r.Redirected = ptr(nt), ptr(int(red.Load()))
	if elapsed > 0 {
		r.OpsPerSec = ptr(round3(float64(len(samples)) / elapsed.Seconds()))
	}
	return r, nil
}

// heapAlloc returns the live heap after two full collections.
func heapAlloc() uint64 {
	var ms runtime.MemStats
	runtime.GC()
	runtime.GC()
	runtime.ReadMemStats(&ms)
	return ms.HeapAlloc
}

// scale: many sessions created on broker A through the real protocol path
// (insert, proof, claim, attach) and suspended by TokenRemoved; reported:
// the bench process's live heap growth per suspended session. With etcd in
// its child process (the default), that heap is the brokers' (plus the
// bench's fixed terminals).
func (b *bench) scale(ctx context.Context) (row, error) {
	r := b.newRow("scale")
	r.Target = "bytes_per_session <= 10240 with all sessions created"
	a := b.g.nodes[0]
	toks, err := b.g.enroll(ctx, b.p.sessions)
	if err != nil {
		return r, err
	}
	restore, err := b.g.placeOn(ctx, a)
	if err != nil {
		return r, err
	}
	defer restore()
	terms, err := b.dialEach(ctx, max(1, b.p.workers), "scale", func(int) *node { return a })
	if err != nil {
		return r, err
	}
	defer closeAll(terms)
	samples := make([]time.Duration, len(toks)) // allocated before the first heap reading
	ok := make([]bool, len(toks))
	created0, suspended0 := a.creating.Load(), a.suspended.Load()
	before := heapAlloc()

	var (
		next      atomic.Int64
		failed    atomic.Int64
		truncated atomic.Bool
		wg        sync.WaitGroup
	)
	deadline := time.Now().Add(3 * b.p.budget)
	for _, t := range terms {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := int(next.Add(1) - 1)
				if i >= len(toks) || ctx.Err() != nil || failed.Load() > maxConsecutiveErrors {
					return
				}
				if time.Now().After(deadline) {
					truncated.Store(true)
					return
				}
				o, err := hotdesk(ctx, t, toks[i])
				if err == nil && (o.redirected || o.resumed) {
					err = errors.New("bench: scale: expected a new session on this broker")
				}
				if err == nil {
					samples[i], ok[i] = o.total, true
					err = t.send(&proto.TokenRemoved{Token: toks[i], Reader: "bench"})
				}
				if err != nil {
					failed.Add(1)
					b.log.Warn("scale: session not created", "terminal", t.id, "error", err)
				}
			}
		}()
	}
	wg.Wait()
	for _, t := range terms {
		if err := t.barrier(ctx); err != nil {
			return r, fmt.Errorf("bench: scale: %w", err)
		}
	}
	created := int(a.creating.Load() - created0)
	suspended := int(a.suspended.Load() - suspended0)
	after := heapAlloc()

	var got []time.Duration
	for i, d := range samples {
		if ok[i] {
			got = append(got, d)
		}
	}
	r.Errors, r.Truncated = int(failed.Load()), truncated.Load()
	r.fill(got, b.etcdP99)
	r.Sessions = ptr(created)
	if created != suspended {
		return r, fmt.Errorf("bench: scale: %d sessions created but %d suspended", created, suspended)
	}
	if created > 0 {
		r.BytesPerSession = ptr(round3((float64(after) - float64(before)) / float64(created)))
	}
	r.HeapBeforeMB, r.HeapAfterMB = ptr(round3(float64(before)/(1<<20))), ptr(round3(float64(after)/(1<<20)))
	r.TargetOK = ptr(created == len(toks) && r.BytesPerSession != nil && *r.BytesPerSession <= 10240)
	return r, nil
}
