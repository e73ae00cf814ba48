package registry

import (
	"context"
	"encoding/json"
	"fmt"

	"go.etcd.io/etcd/api/v3/mvccpb"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// Orphan index.
//
// A broker keeps a session whose token another server claimed while it was
// cut off as an orphan (PROTOCOL.md §12) and writes where it is under
// orphans/<token>/<server>/<session>, attached to its lease: when the
// token has no session any more, the broker it is presented at sends it
// to the orphan's server, which gives the orphan back instead of starting
// an empty desktop. A broker's records leave with its lease; it writes
// them again under the next one.

// OrphanRecord is one orphan of one broker.
type OrphanRecord struct {
	Token           string `json:"token"`
	SessionID       string `json:"session_id"`
	ServerID        string `json:"server_id"`
	User            string `json:"user,omitempty"`
	CreatedUnixMs   int64  `json:"created_unix_ms"`
	SuspendedUnixMs int64  `json:"suspended_unix_ms,omitempty"`
}

// orphanDir is the directory of token's orphan records.
func (r *Store) orphanDir(token string) string {
	return r.opts.prefix + "orphans/" + token + "/"
}

// orphanKey names this server's record of orphan session of token.
func (r *Registry) orphanKey(token, session string) string {
	return r.orphanDir(token) + r.id + "/" + session
}

// PutOrphan writes o (its ServerID forced to this server's) under this
// server's lease. It is refused while the lease is lost or unhealthy, and
// without a call to etcd when o's token or session id is not a valid key
// (ErrInvalidKey).
func (r *Registry) PutOrphan(ctx context.Context, o OrphanRecord) error {
	o.ServerID = r.id
	if err := validateOrphanKey(o.Token, o.SessionID); err != nil {
		return fmt.Errorf("registry: put orphan: %w", err)
	}
	if err := r.putLeased(ctx, r.orphanKey(o.Token, o.SessionID), o); err != nil {
		return fmt.Errorf("registry: put orphan %s: %w", o.SessionID, err)
	}
	return nil
}

// DeleteOrphan removes this server's record of orphan session of token; an
// absent record is not an error.
func (r *Registry) DeleteOrphan(ctx context.Context, token, session string) error {
	if err := validateOrphanKey(token, session); err != nil {
		return fmt.Errorf("registry: delete orphan: %w", err)
	}
	cctx, cancel := r.callCtx(ctx)
	defer cancel()
	if _, err := r.kv.Delete(cctx, r.orphanKey(token, session)); err != nil {
		return fmt.Errorf("registry: delete orphan %s: %w", session, err)
	}
	return nil
}

// Orphans lists the orphans of token in the group, read from the etcd
// member this client talks to (it may lag the cluster by a moment: an
// orphan missed is a new desktop, as before the index). Undecodable
// records are skipped.
func (r *Store) Orphans(ctx context.Context, token string) ([]OrphanRecord, error) {
	if err := validateKey(token); err != nil {
		return nil, fmt.Errorf("registry: orphans: %w", err)
	}
	var out []OrphanRecord
	cctx, cancel := r.callCtx(ctx)
	defer cancel()
	resp, err := r.kv.Get(cctx, r.orphanDir(token), clientv3.WithPrefix(), clientv3.WithSerializable(), clientv3.WithLimit(maxOrphansListed))
	if err != nil {
		return nil, fmt.Errorf("registry: orphans of %s: %w", token, err)
	}
	for _, kv := range resp.Kvs {
		o, err := decodeOrphan(kv)
		if err != nil {
			r.log.Warn("skipping undecodable orphan record", "key", string(kv.Key), "error", err)
			continue
		}
		out = append(out, o)
	}
	return out, nil
}

// maxOrphansListed bounds one token's listing: a token has an orphan per
// cut-off it outlived, a handful at most.
const maxOrphansListed = 64

func validateOrphanKey(token, session string) error {
	if err := validateKey(token); err != nil {
		return err
	}
	return validateKey(session)
}

// decodeOrphan decodes an orphan record: ErrCorrupt unless it is JSON
// naming its session and server.
func decodeOrphan(kv *mvccpb.KeyValue) (OrphanRecord, error) {
	var o OrphanRecord
	if err := json.Unmarshal(kv.Value, &o); err != nil {
		return OrphanRecord{}, fmt.Errorf("%w: %v", ErrCorrupt, err)
	}
	if o.SessionID == "" || o.ServerID == "" {
		return OrphanRecord{}, fmt.Errorf("%w: orphan record without a session or server", ErrCorrupt)
	}
	return o, nil
}
