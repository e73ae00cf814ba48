package registry

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"strings"

	"go.etcd.io/etcd/api/v3/mvccpb"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// Terminal presence.
//
// Each broker writes one record per terminal connected to it under
// terminals/<server>/<terminal>, attached to its lease: a broker's subtree
// is its own, so two brokers never race on a key. The broker puts the record
// when the terminal connects (and when what it shows changes), refreshes
// SeenUnixMs on its heartbeat, and deletes the record as soon as the
// connection ends. A dead broker's records leave with its lease (within the
// lease TTL); a record whose SeenUnixMs is older than the reader's staleness
// bound (a broker that stopped refreshing but still holds its lease) is for
// the reader to hide.

// TerminalRecord is one terminal connected to one broker.
type TerminalRecord struct {
	ID              string   `json:"id"`
	Name            string   `json:"name,omitempty"`
	Addr            string   `json:"addr,omitempty"`
	ServerID        string   `json:"server_id"`
	Tokens          []string `json:"tokens,omitempty"` // tokens presented there now
	Session         string   `json:"session,omitempty"`
	User            string   `json:"user,omitempty"`
	ConnectedUnixMs int64    `json:"connected_unix_ms"`
	SeenUnixMs      int64    `json:"seen_unix_ms"`
}

// MaxTerminalRecordBytes bounds one stored terminal record.
const MaxTerminalRecordBytes = 8 << 10

// terminalKey names terminal id's record of server. An id that is a valid
// key without a "%" is its own name; any other (a terminal may name itself
// "desk 5" or "room 4/desk 2", PROTOCOL.md §5) is named by a hash of it
// behind a "%", which no name of the first kind has: the id itself is in
// the record.
func (r *Store) terminalKey(server, id string) string {
	name := id
	if validateKey(id) != nil || strings.Contains(id, "%") {
		sum := sha256.Sum256([]byte(id))
		name = "%" + hex.EncodeToString(sum[:16])
	}
	return r.opts.prefix + "terminals/" + server + "/" + name
}

// PutTerminal writes t (its ServerID forced to this server's) under this
// server's lease. It is refused while the lease is lost or unhealthy, and
// without a call to etcd when t has no id (ErrInvalidKey) or is over
// MaxTerminalRecordBytes (ErrTooLarge): errors of that record alone.
func (r *Registry) PutTerminal(ctx context.Context, t TerminalRecord) error {
	if t.ID == "" {
		return fmt.Errorf("registry: put terminal: %w: empty id", ErrInvalidKey)
	}
	if err := r.writable(); err != nil {
		return fmt.Errorf("registry: put terminal %q: %w", t.ID, err)
	}
	put, err := r.putTerminalOp(t)
	if err != nil {
		return fmt.Errorf("registry: put terminal %q: %w", t.ID, err)
	}
	cctx, cancel := r.callCtx(ctx)
	defer cancel()
	if _, err := r.kv.Do(cctx, put); err != nil {
		return fmt.Errorf("registry: put terminal %q: %w", t.ID, r.leaseErr(err))
	}
	return nil
}

// PutTerminals writes ts as PutTerminal writes each, in transactions of at
// most terminalsPerTxn records: one etcd revision and one disk write per
// transaction, not per record (a broker's presence heartbeat refreshes
// every terminal connected to it). A record PutTerminal would refuse for
// itself (no id, too large) is not written and is returned in bad, for
// the caller to handle alone; err is the first other error, after which
// nothing more is written.
func (r *Registry) PutTerminals(ctx context.Context, ts []TerminalRecord) (bad []TerminalRecord, err error) {
	if err := r.writable(); err != nil {
		return nil, fmt.Errorf("registry: put terminals: %w", err)
	}
	ops := make([]clientv3.Op, 0, min(len(ts), terminalsPerTxn))
	flush := func() error {
		if len(ops) == 0 {
			return nil
		}
		cctx, cancel := r.callCtx(ctx)
		defer cancel()
		if _, err := r.kv.Txn(cctx).Then(ops...).Commit(); err != nil {
			return fmt.Errorf("registry: put terminals: %w", r.leaseErr(err))
		}
		ops = ops[:0]
		return nil
	}
	for _, t := range ts {
		op, err := r.putTerminalOp(t)
		if err != nil || t.ID == "" {
			bad = append(bad, t)
			continue
		}
		if ops = append(ops, op); len(ops) == terminalsPerTxn {
			if err := flush(); err != nil {
				return bad, err
			}
		}
	}
	return bad, flush()
}

// terminalsPerTxn bounds the records of one PutTerminals transaction: etcd
// refuses more than --max-txn-ops (default 128) operations in one, and
// 64 records at their bound are 512 KiB, within its request limit.
const terminalsPerTxn = 64

// putTerminalOp is the put of t (its ServerID forced to this server's)
// under this server's lease; ErrTooLarge over MaxTerminalRecordBytes.
func (r *Registry) putTerminalOp(t TerminalRecord) (clientv3.Op, error) {
	t.ServerID = r.id
	v, err := json.Marshal(t)
	if err != nil {
		return clientv3.Op{}, err
	}
	if len(v) > MaxTerminalRecordBytes {
		return clientv3.Op{}, fmt.Errorf("%w: %d bytes, more than %d", ErrTooLarge, len(v), MaxTerminalRecordBytes)
	}
	return clientv3.OpPut(r.terminalKey(r.id, t.ID), string(v), clientv3.WithLease(r.lease)), nil
}

// DeleteTerminal removes this server's record of terminal id; an absent
// record is not an error.
func (r *Registry) DeleteTerminal(ctx context.Context, id string) error {
	if id == "" {
		return fmt.Errorf("registry: delete terminal: %w: empty id", ErrInvalidKey)
	}
	cctx, cancel := r.callCtx(ctx)
	defer cancel()
	if _, err := r.kv.Delete(cctx, r.terminalKey(r.id, id)); err != nil {
		return fmt.Errorf("registry: delete terminal %q: %w", id, err)
	}
	return nil
}

// Terminals lists every terminal record of the group, in key order (server,
// then terminal). Undecodable records are skipped.
func (r *Store) Terminals(ctx context.Context) ([]TerminalRecord, error) {
	var out []TerminalRecord
	err := r.scan(ctx, r.opts.prefix+"terminals/", func(key string, kv *mvccpb.KeyValue) {
		t, err := decodeTerminal(kv.Value)
		if err != nil {
			r.log.Warn("skipping undecodable terminal record", "key", key, "error", err)
			return
		}
		out = append(out, t)
	})
	if err != nil {
		return nil, fmt.Errorf("registry: terminals: %w", err)
	}
	return out, nil
}

// decodeTerminal decodes a terminal record: ErrCorrupt unless it is JSON
// naming the terminal.
func decodeTerminal(val []byte) (TerminalRecord, error) {
	var t TerminalRecord
	if err := json.Unmarshal(val, &t); err != nil {
		return TerminalRecord{}, fmt.Errorf("%w: %v", ErrCorrupt, err)
	}
	if t.ID == "" {
		return TerminalRecord{}, fmt.Errorf("%w: terminal record without an id", ErrCorrupt)
	}
	return t, nil
}
