package registry

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
)

// drainFlag is the value stored under drain/<id>. Only the key's presence
// matters; the value is for people reading etcd.
type drainFlag struct {
	ServerID  string `json:"server_id"`
	SetUnixMs int64  `json:"set_unix_ms"`
	SetBy     string `json:"set_by,omitempty"` // server id of the Registry that set it
}

func (r *Store) drainKey(id string) string { return r.opts.prefix + "drain/" + id }

// SetDraining sets (draining=true) or clears (false) the drain flag of server
// serverID, which need not be this server nor be registered. The flag is
// stored under drain/<id> without a lease, so a drained server stays drained
// across restarts until the flag is cleared. A drained server takes no new
// sessions and keeps its existing ones; the broker enforces that, the
// registry only records it. Clearing an absent flag is not an error. It does
// not depend on this Registry's lease health.
func (r *Store) SetDraining(ctx context.Context, serverID string, draining bool) error {
	if err := validateKey(serverID); err != nil {
		return fmt.Errorf("registry: set draining: %w", err)
	}
	k := r.drainKey(serverID)
	cctx, cancel := r.callCtx(ctx)
	defer cancel()
	if !draining {
		if _, err := r.kv.Delete(cctx, k); err != nil {
			return fmt.Errorf("registry: set draining %q: %w", serverID, err)
		}
		return nil
	}
	v, err := json.Marshal(drainFlag{ServerID: serverID, SetUnixMs: r.opts.clock.Now().UnixMilli(), SetBy: r.id})
	if err != nil {
		return fmt.Errorf("registry: set draining %q: %w", serverID, err)
	}
	if _, err := r.kv.Put(cctx, k, string(v)); err != nil {
		return fmt.Errorf("registry: set draining %q: %w", serverID, err)
	}
	return nil
}

// Draining reports whether server serverID's drain flag is set.
func (r *Store) Draining(ctx context.Context, serverID string) (bool, error) {
	if err := validateKey(serverID); err != nil {
		return false, fmt.Errorf("registry: draining: %w", err)
	}
	_, err := r.get(ctx, r.drainKey(serverID))
	switch {
	case errors.Is(err, ErrNotFound):
		return false, nil
	case err != nil:
		return false, fmt.Errorf("registry: draining %q: %w", serverID, err)
	}
	return true, nil
}

// SetSessionCount writes n into this server's record (ServerRecord.Sessions),
// so that Servers shows how many sessions a server (a drained one, say)
// still runs. It is UpdateServer with one field: ErrLeaseLost if the lease or
// the record is gone. Like UpdateServer it is fenced on the lease holding
// the record and is not refused while the lease is merely unhealthy.
func (r *Registry) SetSessionCount(ctx context.Context, n int) error {
	if n < 0 {
		return fmt.Errorf("registry: set session count: negative count %d", n)
	}
	if err := r.UpdateServer(ctx, func(s *ServerRecord) { s.Sessions = n }); err != nil {
		return fmt.Errorf("registry: set session count: %w", err)
	}
	return nil
}
