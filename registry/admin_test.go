package registry_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/hotdesk/hotdesk/registry"
	"github.com/hotdesk/hotdesk/registry/etcdtest"
)

// TestCommands: a command sent by one server is run once by its target,
// and the sender gets the result; an unanswered command times out with
// ErrNoAnswer and is withdrawn.
func TestCommands(t *testing.T) {
	t.Parallel()
	eps, regs := newGroup(t, "a", "b")
	a, b := regs[0], regs[1]
	ctx, cancel := context.WithCancel(context.Background())
	var mu sync.Mutex
	runs := map[string]int{}
	done := make(chan struct{})
	go func() {
		defer close(done)
		b.ServeCommands(ctx, func(_ context.Context, c registry.Command) registry.CommandResult {
			mu.Lock()
			runs[c.Session]++
			mu.Unlock()
			if c.Session == "missing" {
				return registry.CommandResult{Code: "not_found", Error: "no such session"}
			}
			d, _ := json.Marshal(c.Op + ":" + c.Session + ":" + c.From)
			return registry.CommandResult{Data: d}
		})
	}()
	t.Cleanup(func() { cancel(); <-done })

	for i := 0; i < 5; i++ {
		res, err := a.SendCommand(tctx(t), "b", registry.Command{Op: "kill", Session: "s1"})
		if err != nil {
			t.Fatal(err)
		}
		var got string
		if err := json.Unmarshal(res.Data, &got); err != nil || got != "kill:s1:a" || res.Server != "b" || res.Code != "" {
			t.Fatalf("result = %+v (%q); want kill:s1:a from b", res, got)
		}
	}
	res, err := a.SendCommand(tctx(t), "b", registry.Command{Op: "kill", Session: "missing"})
	if err != nil || res.Code != "not_found" {
		t.Fatalf("missing: %+v, %v; want code not_found", res, err)
	}
	mu.Lock()
	if runs["s1"] != 5 || runs["missing"] != 1 {
		t.Errorf("runs = %v; want each command run exactly once", runs)
	}
	mu.Unlock()

	// Nobody serves "c": no answer, and nothing left behind. The timeout
	// leaves a loaded machine room to store the command first (a Put cut
	// short by it would fail with the deadline, not ErrNoAnswer).
	sctx, scancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer scancel()
	if _, err := a.SendCommand(sctx, "c", registry.Command{Op: "kill", Session: "s1"}); !errors.Is(err, registry.ErrNoAnswer) {
		t.Fatalf("unserved: %v; want ErrNoAnswer", err)
	}
	cli := etcdtest.Client(t, eps)
	resp, err := cli.Get(tctx(t), "/hotdesk/commands/", clientOpts()...)
	if err != nil || resp.Count != 0 {
		t.Fatalf("commands left: %v, %v", resp.Count, err)
	}
}

// TestEventLogAndWatchGroup: events appended by one server reach another's
// WatchGroup and RecentEvents; a server joining and leaving is seen too.
func TestEventLogAndWatchGroup(t *testing.T) {
	t.Parallel()
	eps := etcdtest.Start(t)
	a := newReg(t, etcdtest.Client(t, eps), "a")
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	ch := a.WatchGroup(ctx)
	// Only later changes are streamed: wait until the event and membership
	// watches report a probe before the changes under test.
	awaitWatch(t, ch, etcdtest.Client(t, eps))
	b := newReg(t, etcdtest.Client(t, eps), "b")
	log := b.NewEventLog()
	for _, ev := range []string{`{"kind":"one"}`, `{"kind":"two"}`} {
		if err := log.Append(tctx(t), []byte(ev)); err != nil {
			t.Fatal(err)
		}
	}
	if err := log.Append(tctx(t), make([]byte, registry.MaxEventBytes+1)); err == nil {
		t.Error("oversized event accepted")
	}
	if err := b.Close(tctx(t)); err != nil {
		t.Fatal(err)
	}
	var joined, left bool
	var got []string
	timeout := time.After(20 * time.Second)
	for !(joined && left && len(got) == 2) {
		select {
		case gc := <-ch:
			switch {
			case string(gc.Event) == probeEvent:
			case gc.Event != nil:
				got = append(got, string(gc.Event))
			case gc.Joined && gc.ServerID == "b":
				joined = true
			case gc.Left && gc.ServerID == "b":
				left = true
			}
		case <-timeout:
			t.Fatalf("joined=%v left=%v events=%q", joined, left, got)
		}
	}
	if got[0] != `{"kind":"one"}` || got[1] != `{"kind":"two"}` {
		t.Errorf("events = %q", got)
	}
	recent, err := a.RecentEvents(tctx(t), 1)
	if err != nil || len(recent) != 1 || string(recent[0]) != `{"kind":"two"}` {
		t.Errorf("recent = %q, %v; want the last one", recent, err)
	}
}

// TestTerminals: records live under the writer's lease and leave with it.
// Any terminal id has its record, one that is no valid key name too
// (PROTOCOL.md §5 allows "desk 5"), and no two ids share one.
func TestTerminals(t *testing.T) {
	t.Parallel()
	_, regs := newGroup(t, "a", "b")
	a, b := regs[0], regs[1]
	for _, r := range []*registry.Registry{a, b} {
		if err := r.PutTerminal(tctx(t), registry.TerminalRecord{ID: "t-" + r.ServerID(), ServerID: "forged"}); err != nil {
			t.Fatal(err)
		}
	}
	odd := []string{"room 4/desk 2", "desk 5", "..", "%", "a%b"}
	for _, id := range odd {
		if err := a.PutTerminal(tctx(t), registry.TerminalRecord{ID: id}); err != nil {
			t.Errorf("terminal %q: %v", id, err)
		}
	}
	if err := a.PutTerminal(tctx(t), registry.TerminalRecord{}); !errors.Is(err, registry.ErrInvalidKey) {
		t.Errorf("no id: %v; want ErrInvalidKey", err)
	}
	ts, err := a.Terminals(tctx(t))
	ids := map[string]string{}
	for _, tr := range ts {
		ids[tr.ID] = tr.ServerID
	}
	if err != nil || len(ts) != 2+len(odd) || ids["t-a"] != "a" || ids["t-b"] != "b" || ids["desk 5"] != "a" || ids["room 4/desk 2"] != "a" || ids["a%b"] != "a" {
		t.Fatalf("terminals = %+v, %v; want t-a, t-b and %q", ts, err, odd)
	}
	if err := b.Close(tctx(t)); err != nil {
		t.Fatal(err)
	}
	for _, id := range append(odd, "t-a") {
		if err := a.DeleteTerminal(tctx(t), id); err != nil {
			t.Fatal(err)
		}
	}
	if ts, err := a.Terminals(tctx(t)); err != nil || len(ts) != 0 {
		t.Fatalf("after close and delete: %+v, %v", ts, err)
	}
}

// TestPutTerminals: a heartbeat's records are written 64 to a
// transaction: 150 records cost 3 etcd revisions, not 150, and are all
// listed, under the writer's id and lease. A record PutTerminal refuses for
// itself (no id, too large) is returned, not written, and writes the rest.
func TestPutTerminals(t *testing.T) {
	t.Parallel()
	eps, regs := newGroup(t, "a")
	a := regs[0]
	cli := etcdtest.Client(t, eps)
	var recs []registry.TerminalRecord
	for i := range 150 {
		recs = append(recs, registry.TerminalRecord{ID: fmt.Sprintf("desk %d", i), ServerID: "forged", SeenUnixMs: int64(i)})
	}
	tooLarge := registry.TerminalRecord{ID: "big", Name: strings.Repeat("x", registry.MaxTerminalRecordBytes)}
	withBad := append(slices.Clone(recs[:100]), registry.TerminalRecord{}, tooLarge)
	withBad = append(withBad, recs[100:]...)
	before := etcdtest.Revision(t, cli)
	bad, err := a.PutTerminals(tctx(t), withBad)
	if err != nil {
		t.Fatal(err)
	}
	if len(bad) != 2 || bad[0].ID != "" || bad[1].ID != "big" {
		t.Errorf("bad = %+v; want the record without an id and the one too large", bad)
	}
	if n := etcdtest.Revision(t, cli) - before; n != 3 {
		t.Errorf("150 records took %d revisions; want 3 (64 to a transaction)", n)
	}
	ts, err := a.Terminals(tctx(t))
	if err != nil || len(ts) != len(recs) {
		t.Fatalf("terminals: %d, %v; want %d", len(ts), err, len(recs))
	}
	for _, tr := range ts {
		if tr.ServerID != "a" || !strings.HasPrefix(tr.ID, "desk ") {
			t.Fatalf("record %+v; want a desk of server a", tr)
		}
	}
	if err := a.Close(tctx(t)); err != nil {
		t.Fatal(err)
	}
	if ts, err := regs[0].Terminals(tctx(t)); err != nil || len(ts) != 0 {
		t.Fatalf("after the writer closed (its lease revoked): %d records, %v; want none", len(ts), err)
	}
}

// TestEventLogAppendBatch: events appended together are written 64 to a
// transaction (150 cost 3 etcd revisions, not 150) and read back in
// their order; one over MaxEventBytes is not stored, the others are, and
// the error says so.
func TestEventLogAppendBatch(t *testing.T) {
	t.Parallel()
	eps := etcdtest.Start(t)
	cli := etcdtest.Client(t, eps)
	s := newStore(t, etcdtest.Client(t, eps), "ev")
	ctx := tctx(t)
	var events [][]byte
	for i := range 150 {
		events = append(events, fmt.Appendf(nil, `{"n":%d}`, i))
	}
	big := []byte(`"` + strings.Repeat("x", registry.MaxEventBytes) + `"`)
	before := etcdtest.Revision(t, cli)
	err := s.NewEventLog().Append(ctx, append(slices.Clone(events[:70]), append([][]byte{big}, events[70:]...)...)...)
	if err == nil || !strings.Contains(err.Error(), "bytes over") {
		t.Errorf("Append with an event over the bound = %v; want it said", err)
	}
	if n := etcdtest.Revision(t, cli) - before; n != 3 {
		t.Errorf("150 events took %d revisions; want 3 (64 to a transaction)", n)
	}
	recent, err := s.RecentEvents(ctx, 200)
	if err != nil || len(recent) != len(events) {
		t.Fatalf("RecentEvents = %d events, %v; want %d", len(recent), err, len(events))
	}
	for i, e := range recent {
		if string(e) != string(events[i]) {
			t.Fatalf("event %d = %s; want %s (in their order)", i, e, events[i])
		}
	}
}

// probeEvent is the event awaitWatch stores.
const probeEvent = `{"kind":"probe"}`

// awaitWatch returns once the WatchGroup stream ch has reported both a
// stored event and a server joining, written with cli under the default
// prefix until each is seen: the watches are then established. Late
// copies of the probe event may follow; the probe server's comings and
// goings do too.
func awaitWatch(t *testing.T, ch <-chan registry.GroupChange, cli *clientv3.Client) {
	t.Helper()
	ctx := tctx(t)
	probe := func(what string, write func() error, seen func(registry.GroupChange) bool) {
		deadline := time.After(waitBound)
		for {
			if err := write(); err != nil {
				t.Fatalf("probe %s: %v", what, err)
			}
			retry := time.After(200 * time.Millisecond)
			for wait := true; wait; {
				select {
				case gc := <-ch:
					if seen(gc) {
						return
					}
				case <-retry:
					wait = false
				case <-deadline:
					t.Fatalf("WatchGroup reported no %s within %v", what, waitBound)
				}
			}
		}
	}
	events := registry.DefaultPrefix + "events/probe"
	probe("event", func() error {
		_, err := cli.Put(ctx, events, probeEvent)
		return err
	}, func(gc registry.GroupChange) bool { return string(gc.Event) == probeEvent })
	if _, err := cli.Delete(ctx, events); err != nil {
		t.Fatal(err)
	}
	server := registry.DefaultPrefix + "servers/probe"
	probe("server joining", func() error {
		// Delete first: only a creation is a join.
		if _, err := cli.Delete(ctx, server); err != nil {
			return err
		}
		_, err := cli.Put(ctx, server, `{"id":"probe"}`)
		return err
	}, func(gc registry.GroupChange) bool { return gc.Joined && gc.ServerID == "probe" })
	if _, err := cli.Delete(ctx, server); err != nil {
		t.Fatal(err)
	}
}

func clientOpts() []clientv3.OpOption {
	return []clientv3.OpOption{clientv3.WithPrefix(), clientv3.WithCountOnly()}
}

// TestWatchGroupInOrder: WatchGroup streams the group's changes in the
// order they were made, across events, membership and drain flags. A
// follower relies on it: a server stores its server_left before its record
// goes, and a record that vanishes without it is reported as a death. With
// a watch per kind, the record's deletion could come first and hotdeskctl
// events -f reported a server that stopped as leaving twice (found by the
// QA run of the daemon's group test under load). The consumer here reads
// only after every change is made: the stream is full and its writers wait,
// which is when separate watches interleave.
func TestWatchGroupInOrder(t *testing.T) {
	t.Parallel()
	eps := etcdtest.Start(t)
	cli := etcdtest.Client(t, eps)
	a := newReg(t, cli, "a")
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	ch := a.WatchGroup(ctx)
	awaitWatch(t, ch, cli)
	const rounds = 40
	p := registry.DefaultPrefix
	var want []string
	for i := range rounds {
		for _, op := range []struct {
			put  bool
			key  string
			seen string
		}{
			{true, fmt.Sprintf("%sevents/e%03d", p, i), fmt.Sprintf("event %d", i)},
			{true, fmt.Sprintf("%sservers/s%03d", p, i), fmt.Sprintf("joined s%03d", i)},
			{true, fmt.Sprintf("%sdrain/s%03d", p, i), fmt.Sprintf("draining s%03d", i)},
			{false, fmt.Sprintf("%sservers/s%03d", p, i), fmt.Sprintf("left s%03d", i)},
		} {
			var err error
			if op.put {
				_, err = cli.Put(tctx(t), op.key, fmt.Sprintf(`{"kind":"e%03d"}`, i))
			} else {
				_, err = cli.Delete(tctx(t), op.key)
			}
			if err != nil {
				t.Fatal(err)
			}
			want = append(want, op.seen)
		}
	}
	var got []string
	timeout := time.After(waitBound)
	for len(got) < len(want) {
		select {
		case gc := <-ch:
			switch {
			case string(gc.Event) == probeEvent || gc.ServerID == "probe" || gc.ServerID == "a":
			case gc.Event != nil:
				var e struct{ Kind string }
				if err := json.Unmarshal(gc.Event, &e); err != nil {
					t.Fatalf("event %q: %v", gc.Event, err)
				}
				var n int
				fmt.Sscanf(e.Kind, "e%03d", &n)
				got = append(got, fmt.Sprintf("event %d", n))
			case gc.Joined:
				got = append(got, "joined "+gc.ServerID)
			case gc.Left:
				got = append(got, "left "+gc.ServerID)
			case gc.Draining != nil && *gc.Draining:
				got = append(got, "draining "+gc.ServerID)
			}
		case <-timeout:
			t.Fatalf("WatchGroup streamed %d of %d changes within %v", len(got), len(want), waitBound)
		}
	}
	for i := range want {
		if got[i] != want[i] {
			t.Fatalf("change %d streamed as %q; want %q (streamed %q)", i, got[i], want[i], got[max(0, i-3):min(len(got), i+4)])
		}
	}
}

// failPutsKV fails the next n Puts with err before they reach etcd.
type failPutsKV struct {
	clientv3.KV
	n   *atomic.Int32
	err error
}

func (k failPutsKV) Put(ctx context.Context, key, val string, opts ...clientv3.OpOption) (*clientv3.PutResponse, error) {
	if k.n.Add(-1) >= 0 {
		return nil, k.err
	}
	return k.KV.Put(ctx, key, val, opts...)
}

// Txn fails the transaction's Commit as Put fails (the event log writes
// its events in transactions).
func (k failPutsKV) Txn(ctx context.Context) clientv3.Txn { return failTxn{k.KV.Txn(ctx), k} }

type failTxn struct {
	clientv3.Txn
	k failPutsKV
}

func (t failTxn) If(cs ...clientv3.Cmp) clientv3.Txn   { return failTxn{t.Txn.If(cs...), t.k} }
func (t failTxn) Then(ops ...clientv3.Op) clientv3.Txn { return failTxn{t.Txn.Then(ops...), t.k} }
func (t failTxn) Else(ops ...clientv3.Op) clientv3.Txn { return failTxn{t.Txn.Else(ops...), t.k} }

func (t failTxn) Commit() (*clientv3.TxnResponse, error) {
	if t.k.n.Add(-1) >= 0 {
		return nil, t.k.err
	}
	return t.Txn.Commit()
}

// grantCounter counts the leases granted.
type grantCounter struct {
	clientv3.Lease
	n    *atomic.Int32
	last *atomic.Int64
}

func (l grantCounter) Grant(ctx context.Context, ttl int64) (*clientv3.LeaseGrantResponse, error) {
	g, err := l.Lease.Grant(ctx, ttl)
	if err == nil {
		l.n.Add(1)
		l.last.Store(int64(g.ID))
	}
	return g, err
}

// TestEventLogLease: the events of a log share one lease. A failed write
// keeps it (no lease per failure); a lease etcd no longer knows (revoked
// or expired early) is replaced and the event written, not lost.
func TestEventLogLease(t *testing.T) {
	t.Parallel()
	eps := etcdtest.Start(t)
	cli := etcdtest.Client(t, eps)
	ctx := tctx(t)
	s := newStore(t, etcdtest.Client(t, eps), "ev")
	var fail, grants atomic.Int32
	var last atomic.Int64
	registry.InjectFaults(s,
		func(kv clientv3.KV) clientv3.KV { return failPutsKV{kv, &fail, errors.New("etcd unreachable")} },
		func(l clientv3.Lease) clientv3.Lease { return grantCounter{l, &grants, &last} })
	log := s.NewEventLog()
	if err := log.Append(ctx, []byte(`{"n":1}`)); err != nil {
		t.Fatal(err)
	}
	fail.Store(1)
	if err := log.Append(ctx, []byte(`{"n":2}`)); err == nil {
		t.Fatal("Append with etcd failing succeeded")
	}
	if err := log.Append(ctx, []byte(`{"n":3}`)); err != nil {
		t.Fatal(err)
	}
	if n := grants.Load(); n != 1 {
		t.Errorf("leases granted for 3 events, one failed: %d; want 1", n)
	}
	if _, err := cli.Revoke(ctx, clientv3.LeaseID(last.Load())); err != nil {
		t.Fatal(err)
	}
	if err := log.Append(ctx, []byte(`{"n":4}`)); err != nil {
		t.Fatalf("Append after its lease was revoked = %v; want it written under a new lease", err)
	}
	if n := grants.Load(); n != 2 {
		t.Errorf("leases granted after the revocation: %d; want 2", n)
	}
	recent, err := s.RecentEvents(ctx, 10)
	if err != nil || len(recent) != 1 || string(recent[0]) != `{"n":4}` {
		t.Errorf("RecentEvents = %q, %v; want the event written after the revocation only", recent, err)
	}
}
