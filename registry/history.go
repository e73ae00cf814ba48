package registry

import (
	"context"
	"errors"
	"fmt"

	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// History. etcd keeps every revision of every key until the cluster
// compacts its history (the embedded etcd every hour; a cluster only when
// its administrator runs it with --auto-compaction-retention). A group
// writes steadily even when nobody hot-desks (each terminal's record is
// refreshed every 10 s, each broker's clock every 15 s), so a cluster that
// never compacts grows its database until its quota (2 GiB by default)
// and then refuses every write: no claim, no login. Revision and Compacted
// let a broker tell.

// Revision returns etcd's current revision (the header of a read of this
// group's server records).
func (r *Store) Revision(ctx context.Context) (int64, error) {
	m := r.rw.mark()
	cctx, cancel := r.callCtx(ctx)
	defer cancel()
	resp, err := r.kv.Get(cctx, r.opts.prefix+"servers/", clientv3.WithPrefix(), clientv3.WithKeysOnly(), clientv3.WithLimit(1))
	if err != nil {
		return 0, fmt.Errorf("registry: revision: %w", err)
	}
	r.rw.answered(m, resp.Header.Revision)
	return resp.Header.Revision, nil
}

// Compacted reports whether etcd's history before rev is gone (compacted):
// a read at rev is refused as compacted. Every put (a terminal record's
// refresh, a claim, an event) keeps a revision until the cluster compacts
// its history; one that never does grows its database until its quota and
// then refuses every write.
func (r *Store) Compacted(ctx context.Context, rev int64) (bool, error) {
	cctx, cancel := r.callCtx(ctx)
	defer cancel()
	_, err := r.kv.Get(cctx, r.opts.prefix+"servers/", clientv3.WithPrefix(), clientv3.WithKeysOnly(), clientv3.WithLimit(1), clientv3.WithRev(rev))
	switch {
	case errors.Is(err, rpctypes.ErrCompacted):
		return true, nil
	case err != nil:
		return false, fmt.Errorf("registry: read at revision %d: %w", rev, err)
	}
	return false, nil
}
