package registry

import (
	"context"
	"encoding/json"
	"fmt"

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

func (r *Store) terminalKey(server, id string) string {
	return r.opts.prefix + "terminals/" + server + "/" + id
}

// PutTerminal writes t (its ServerID forced to this server's) under this
// server's lease. It is refused while the lease is lost or unhealthy, and
// without a call to etcd when t's id is not a valid key (ErrInvalidKey) or
// t is over MaxTerminalRecordBytes (ErrTooLarge): errors of that record
// alone.
func (r *Registry) PutTerminal(ctx context.Context, t TerminalRecord) error {
	if err := validateKey(t.ID); err != nil {
		return fmt.Errorf("registry: put terminal: %w", err)
	}
	if err := r.writable(); err != nil {
		return fmt.Errorf("registry: put terminal %q: %w", t.ID, err)
	}
	t.ServerID = r.id
	v, err := json.Marshal(t)
	if err != nil {
		return fmt.Errorf("registry: put terminal %q: %w", t.ID, err)
	}
	if len(v) > MaxTerminalRecordBytes {
		return fmt.Errorf("registry: put terminal %q: %w: %d bytes, more than %d", t.ID, ErrTooLarge, len(v), MaxTerminalRecordBytes)
	}
	cctx, cancel := r.callCtx(ctx)
	defer cancel()
	if _, err := r.kv.Put(cctx, r.terminalKey(r.id, t.ID), string(v), clientv3.WithLease(r.lease)); err != nil {
		return fmt.Errorf("registry: put terminal %q: %w", t.ID, r.leaseErr(err))
	}
	return nil
}

// DeleteTerminal removes this server's record of terminal id; an absent
// record is not an error.
func (r *Registry) DeleteTerminal(ctx context.Context, id string) error {
	if err := validateKey(id); err != nil {
		return fmt.Errorf("registry: delete terminal: %w", err)
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
		var t TerminalRecord
		if err := json.Unmarshal(kv.Value, &t); err != nil || t.ID == "" {
			r.log.Warn("skipping undecodable terminal record", "key", key)
			return
		}
		out = append(out, t)
	})
	if err != nil {
		return nil, fmt.Errorf("registry: terminals: %w", err)
	}
	return out, nil
}
