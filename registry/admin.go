package registry

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"

	"go.etcd.io/etcd/api/v3/mvccpb"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// Group administration through etcd (proto/ADMIN.md):
//
//	commands/<server>/<id>  Command for server, under the sender's lease
//	results/<id>            CommandResult, under the same lease
//	events/<time>.<server>.<seq>  one event (JSON), under a rotating events lease
//
// A command is forwarded to the broker that owns what it is about; that
// broker watches its commands/ subtree, runs each command once, and in one
// transaction deletes it and writes the result. Both vanish with the
// sender's lease if the sender dies.

// Bounds of the admin channel.
const (
	// MaxCommandBytes bounds a stored command; MaxResultBytes a result.
	MaxCommandBytes = 16 << 10
	MaxResultBytes  = 1 << 20
	// EventTTL is how long an event stays readable in etcd (at least; an
	// events lease is rotated at half its TTL).
	EventTTL = 10 * time.Minute
	// MaxEventBytes bounds one stored event.
	MaxEventBytes = 8 << 10
	// maxConcurrentCommands bounds commands run at once by one server.
	maxConcurrentCommands = 8
)

// ErrNoAnswer means the target server did not answer a command in time.
var ErrNoAnswer = errors.New("registry: command: no answer from the server")

// Command is an administrative action for one server.
type Command struct {
	ID      string          `json:"id"`
	Op      string          `json:"op"` // e.g. "kill", "disconnect", "lock", "sessions"
	Session string          `json:"session,omitempty"`
	By      string          `json:"by,omitempty"` // who asked, for the owner's audit line
	From    string          `json:"from,omitempty"`
	Args    json.RawMessage `json:"args,omitempty"`
}

// CommandResult is a server's answer to a Command. Code is "" on success,
// else "not_found", "invalid" or "error".
type CommandResult struct {
	ID     string          `json:"id"`
	Server string          `json:"server"`
	Code   string          `json:"code,omitempty"`
	Error  string          `json:"error,omitempty"`
	Data   json.RawMessage `json:"data,omitempty"`
}

func (r *Store) commandKey(server, id string) string {
	return r.opts.prefix + "commands/" + server + "/" + id
}
func (r *Store) resultKey(id string) string { return r.opts.prefix + "results/" + id }

func randomID() string {
	var b [12]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

// SendCommand stores cmd for server and waits for its result, bounded by
// ctx (and by the call timeout when ctx has no deadline). It returns
// ErrNoAnswer if the server did not answer in time; the command is then
// withdrawn. cmd.ID and cmd.From are set here.
func (r *Registry) SendCommand(ctx context.Context, server string, cmd Command) (CommandResult, error) {
	if err := validateKey(server); err != nil {
		return CommandResult{}, fmt.Errorf("registry: command: %w", err)
	}
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, r.opts.callTimeout)
		defer cancel()
	}
	cmd.ID, cmd.From = randomID(), r.id
	v, err := json.Marshal(cmd)
	if err != nil {
		return CommandResult{}, fmt.Errorf("registry: command: %w", err)
	}
	if len(v) > MaxCommandBytes {
		return CommandResult{}, fmt.Errorf("registry: command: %d bytes over %d", len(v), MaxCommandBytes)
	}
	ck, rk := r.commandKey(server, cmd.ID), r.resultKey(cmd.ID)
	resp, err := r.kv.Put(ctx, ck, string(v), clientv3.WithLease(r.lease))
	if err != nil {
		return CommandResult{}, fmt.Errorf("registry: command %s to %s: %w", cmd.Op, server, r.leaseErr(err))
	}
	cleanup := func() {
		dctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), r.opts.callTimeout)
		defer cancel()
		_, _ = r.kv.Txn(dctx).Then(clientv3.OpDelete(ck), clientv3.OpDelete(rk)).Commit()
	}
	defer cleanup()
	wctx, wcancel := context.WithCancel(clientv3.WithRequireLeader(ctx))
	defer wcancel()
	for wr := range r.watcher.Watch(wctx, rk, clientv3.WithRev(resp.Header.Revision+1)) {
		if err := wr.Err(); err != nil {
			break
		}
		for _, ev := range wr.Events {
			if ev.Type != clientv3.EventTypePut {
				continue
			}
			var res CommandResult
			if err := json.Unmarshal(ev.Kv.Value, &res); err != nil {
				return CommandResult{}, fmt.Errorf("registry: command %s to %s: %w: %v", cmd.Op, server, ErrCorrupt, err)
			}
			return res, nil
		}
	}
	// The watch ended: ctx expired or the watch failed. One last look.
	lctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), r.opts.callTimeout)
	defer cancel()
	if g, err := r.kv.Get(lctx, rk); err == nil && len(g.Kvs) == 1 {
		var res CommandResult
		if json.Unmarshal(g.Kvs[0].Value, &res) == nil {
			return res, nil
		}
	}
	return CommandResult{}, fmt.Errorf("registry: command %s to %s: %w", cmd.Op, server, ErrNoAnswer)
}

// ServeCommands runs handle for every command addressed to this server,
// those already waiting and those stored later, until ctx ends; then it
// waits for the handlers it started. At most a few handlers run at once.
// Each command is answered once: its deletion and its result are one
// transaction, fenced on the command's revision. After a watch failure it
// re-lists what is waiting.
func (r *Store) ServeCommands(ctx context.Context, handle func(context.Context, Command) CommandResult) {
	dir := r.opts.prefix + "commands/" + r.id + "/"
	sem := make(chan struct{}, maxConcurrentCommands)
	var wg sync.WaitGroup
	defer wg.Wait()
	var mu sync.Mutex
	running := map[string]bool{} // command keys being handled
	run := func(kv *mvccpb.KeyValue) {
		key := string(kv.Key)
		mu.Lock()
		if running[key] {
			mu.Unlock()
			return
		}
		running[key] = true
		mu.Unlock()
		select {
		case sem <- struct{}{}:
		case <-ctx.Done():
			return
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer func() { <-sem; mu.Lock(); delete(running, key); mu.Unlock() }()
			r.answer(ctx, kv, handle)
		}()
	}
	r.listWatch(ctx, dir, "admin command",
		func(kv *mvccpb.KeyValue) bool { run(kv); return true },
		func(ev *clientv3.Event) bool {
			if ev.Type == clientv3.EventTypePut && ev.Kv.CreateRevision == ev.Kv.ModRevision {
				run(ev.Kv)
			}
			return true
		})
}

func (r *Store) answer(ctx context.Context, kv *mvccpb.KeyValue, handle func(context.Context, Command) CommandResult) {
	var cmd Command
	var res CommandResult
	if len(kv.Value) > MaxCommandBytes {
		res = CommandResult{Code: "invalid", Error: "command too large"}
	} else if err := json.Unmarshal(kv.Value, &cmd); err != nil || cmd.ID == "" || validateKey(cmd.ID) != nil {
		res = CommandResult{Code: "invalid", Error: "undecodable command"}
	} else {
		res = handle(ctx, cmd)
	}
	res.ID, res.Server = cmd.ID, r.id
	v, _ := json.Marshal(res)
	if len(v) > MaxResultBytes {
		v, _ = json.Marshal(CommandResult{ID: cmd.ID, Server: r.id, Code: "error",
			Error: fmt.Sprintf("result of %d bytes over %d; narrow the request", len(v), MaxResultBytes)})
	}
	key := string(kv.Key)
	wctx, cancel := r.callCtx(context.WithoutCancel(ctx))
	defer cancel()
	cmp := clientv3.Compare(clientv3.ModRevision(key), "=", kv.ModRevision)
	ops := []clientv3.Op{clientv3.OpDelete(key)}
	if cmd.ID != "" {
		ops = append(ops, clientv3.OpPut(r.resultKey(cmd.ID), string(v), clientv3.WithLease(clientv3.LeaseID(kv.Lease))))
	}
	if _, err := r.kv.Txn(wctx).If(cmp).Then(ops...).Commit(); err != nil {
		// The sender's lease is gone (it died or gave up): drop the command.
		_, _ = r.kv.Delete(wctx, key)
		r.log.Debug("command result not stored", "command", cmd.ID, "error", err)
	}
}

// EventLog stores this server's events in etcd for the group-wide stream and
// reads the group's. Events live under a lease of their own (EventTTL),
// replaced at half its TTL, so each is readable for between EventTTL/2 and
// EventTTL. Safe for concurrent use.
type EventLog struct {
	r *Store

	mu      sync.Mutex
	lease   clientv3.LeaseID
	granted time.Time
	seq     uint64
}

// NewEventLog returns the event log of r's server. The leases it grants
// outlive r's lease: events of a broker that died stay readable.
func (r *Store) NewEventLog() *EventLog { return &EventLog{r: r} }

// Append stores events (JSON values of at most MaxEventBytes each), in
// their order, eventsPerTxn to a transaction: one etcd write, not one per
// event (a stop, or a hundred terminals connecting, emits dozens at
// once). The events of one EventLog share a lease, granted again each
// EventTTL/2 (so each event lives between EventTTL/2 and EventTTL); a
// lease that etcd no longer knows is replaced and the transaction written
// again, any other failure keeps it for the next events. An event over
// MaxEventBytes is not stored; the others are, and the error says so.
func (l *EventLog) Append(ctx context.Context, events ...[]byte) error {
	var errs []error
	ok := make([][]byte, 0, len(events))
	for _, e := range events {
		if len(e) > MaxEventBytes {
			errs = append(errs, fmt.Errorf("registry: event: %d bytes over %d", len(e), MaxEventBytes))
			continue
		}
		ok = append(ok, e)
	}
	for len(ok) > 0 {
		n := min(len(ok), eventsPerTxn)
		if err := l.appendTxn(ctx, ok[:n]); err != nil {
			return errors.Join(append(errs, err)...)
		}
		ok = ok[n:]
	}
	return errors.Join(errs...)
}

// eventsPerTxn bounds the events of one transaction of Append: etcd
// refuses more than --max-txn-ops (default 128) operations in one, and
// 64 events at their bound are 512 KiB, within its request limit.
const eventsPerTxn = 64

// appendTxn stores events in one transaction (see Append).
func (l *EventLog) appendTxn(ctx context.Context, events [][]byte) error {
	r := l.r
	now := r.opts.clock.Now()
	l.mu.Lock()
	defer l.mu.Unlock()
	keys := make([]string, len(events))
	for i := range events {
		l.seq++
		keys[i] = fmt.Sprintf("%sevents/%019d.%s.%08d", r.opts.prefix, now.UnixNano(), r.id, l.seq)
	}
	for attempt := 0; ; attempt++ {
		if l.lease == 0 || now.Sub(l.granted) > EventTTL/2 {
			cctx, cancel := r.callCtx(ctx)
			g, err := r.leases.Grant(cctx, int64(EventTTL/time.Second))
			cancel()
			if err != nil {
				return fmt.Errorf("registry: event: grant lease: %w", err)
			}
			l.lease, l.granted = g.ID, now
		}
		ops := make([]clientv3.Op, len(events))
		for i, e := range events {
			ops[i] = clientv3.OpPut(keys[i], string(e), clientv3.WithLease(l.lease))
		}
		cctx, cancel := r.callCtx(ctx)
		_, err := r.kv.Txn(cctx).Then(ops...).Commit()
		cancel()
		switch {
		case err == nil:
			return nil
		case errors.Is(err, rpctypes.ErrLeaseNotFound):
			l.lease = 0 // revoked or expired early: grant another
			if attempt == 0 {
				continue
			}
		}
		return fmt.Errorf("registry: event: %w", err)
	}
}

// GroupChange is one item of WatchGroup: a stored event, or a change of
// the group's membership or drain flags.
type GroupChange struct {
	Event    []byte // a stored event (JSON), or nil
	ServerID string // for membership and drain changes
	Joined   bool   // a server record appeared
	Left     bool   // a server record vanished (clean stop or lease expiry)
	Draining *bool  // the drain flag was set (true) or cleared (false)
	At       time.Time
}

// RecentEvents returns up to limit of the newest stored events, oldest first.
func (r *Store) RecentEvents(ctx context.Context, limit int) ([][]byte, error) {
	if limit <= 0 {
		limit = 100
	}
	dir := r.opts.prefix + "events/"
	cctx, cancel := r.callCtx(ctx)
	defer cancel()
	resp, err := r.kv.Get(cctx, dir, clientv3.WithPrefix(), clientv3.WithSort(clientv3.SortByKey, clientv3.SortDescend),
		clientv3.WithLimit(int64(limit)))
	if err != nil {
		return nil, fmt.Errorf("registry: recent events: %w", err)
	}
	out := make([][]byte, 0, len(resp.Kvs))
	for i := len(resp.Kvs) - 1; i >= 0; i-- {
		out = append(out, resp.Kvs[i].Value)
	}
	return out, nil
}

// WatchGroup streams, from now on, every event stored by any server and
// every change of membership (servers/) and drain flags (drain/), in the
// order they were made: one watch over the keys from drain/ to servers/
// (events/ lies between; paired/, pairing/ and results/, also there, are
// skipped), so a server's server_left, stored before its record goes,
// always comes before the record's deletion. The channel is closed when ctx ends. A
// watch that fails (compaction, lost leader) resumes from now: changes in
// between are lost, which a live stream accepts. A slow consumer slows the
// watch.
func (r *Store) WatchGroup(ctx context.Context) <-chan GroupChange {
	out := make(chan GroupChange, 64)
	events, servers, drain := r.opts.prefix+"events/", r.opts.prefix+"servers/", r.opts.prefix+"drain/"
	conv := func(ev *clientv3.Event) (GroupChange, bool) {
		key := string(ev.Kv.Key)
		switch {
		case strings.HasPrefix(key, events):
			if ev.Type != clientv3.EventTypePut {
				return GroupChange{}, false
			}
			return GroupChange{Event: ev.Kv.Value}, true
		case strings.HasPrefix(key, servers):
			id := strings.TrimPrefix(key, servers)
			switch {
			case ev.Type == clientv3.EventTypeDelete:
				return GroupChange{ServerID: id, Left: true}, true
			case ev.IsCreate():
				return GroupChange{ServerID: id, Joined: true}, true
			}
		case strings.HasPrefix(key, drain):
			id := strings.TrimPrefix(key, drain)
			d := ev.Type == clientv3.EventTypePut
			if d && !ev.IsCreate() {
				return GroupChange{}, false // set again: no change
			}
			return GroupChange{ServerID: id, Draining: &d}, true
		}
		return GroupChange{}, false
	}
	go func() {
		defer close(out)
		for ctx.Err() == nil {
			wctx, cancel := r.watchCtx(ctx, r.rw.next(), "group")
			// [drain/, servers0): "0" is the byte after "/".
			for wr := range r.watcher.Watch(wctx, drain, clientv3.WithRange(r.opts.prefix+"servers0"), clientv3.WithPrevKV()) {
				if wr.Err() != nil {
					break
				}
				for _, ev := range wr.Events {
					gc, ok := conv(ev)
					if !ok {
						continue
					}
					gc.At = r.opts.clock.Now()
					if !sendCtx(ctx, out, gc) {
						cancel()
						return
					}
				}
			}
			cancel()
			select {
			case <-ctx.Done():
			case <-time.After(500 * time.Millisecond):
			}
		}
	}()
	return out
}

// Pairings lists the pending pairing codes (their ids, never secrets):
// codes past their ExpiresUnixMs by the store's clock are left out, as
// Pairing refuses them (their lease may outlive them by up to a TTL).
func (r *Store) Pairings(ctx context.Context) ([]Pairing, error) {
	var out []Pairing
	now := r.opts.clock.Now().UnixMilli()
	err := r.list(ctx, r.opts.prefix+"pairing/", func(name string, kv *mvccpb.KeyValue) {
		var p Pairing
		if json.Unmarshal(kv.Value, &p) != nil {
			return
		}
		if p.ExpiresUnixMs != 0 && now >= p.ExpiresUnixMs {
			return
		}
		p.ID = name
		p.SecretHash, p.SecretSalt = nil, nil
		out = append(out, p)
	})
	if err != nil {
		return nil, fmt.Errorf("registry: pairings: %w", err)
	}
	return out, nil
}

// RevokePairing deletes pending pairing code id; ErrNotFound if absent.
func (r *Store) RevokePairing(ctx context.Context, id string) error {
	if err := validateKey(id); err != nil {
		return fmt.Errorf("registry: revoke pairing: %w", err)
	}
	if err := r.remove(ctx, r.pairingKey(id)); err != nil {
		return fmt.Errorf("registry: revoke pairing %q: %w", id, err)
	}
	return nil
}
