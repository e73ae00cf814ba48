package registry_test

import (
	"context"
	"path/filepath"
	"testing"
	"time"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/hotdesk/hotdesk/registry"
	"github.com/hotdesk/hotdesk/registry/etcdtest"
)

// TestRestoredEtcd plays an administrator's disaster recovery: the group's
// etcd is restored from a snapshot (as etcdutl snapshot restore does: the
// keys and leases of the snapshot, its revision, a member with a new data
// directory on the same URLs), quicker than the broker's lease TTL, so its
// lease is back and renewed as before. The claims made since the snapshot
// are gone and those released since are back: the registry must give its
// lease up (the broker then re-claims what it runs), and the watches,
// which the client resumes at the revision they had reached, must start
// again from what the restored etcd holds (a token disabled after the
// restore reaches every broker; the claim stream resyncs).
func TestRestoredEtcd(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), waitBound)
	defer cancel()
	dir := t.TempDir()
	cu, err := registry.FreeLoopbackURL()
	if err != nil {
		t.Fatal(err)
	}
	pu, err := registry.FreeLoopbackURL()
	if err != nil {
		t.Fatal(err)
	}
	start := func(name string) *registry.Embedded {
		m, err := registry.StartEmbedded(ctx, registry.EmbedConfig{Dir: filepath.Join(dir, name), ClientURL: cu, PeerURL: pu,
			UnsafeNoFsync: true, ElectionTimeout: 500 * time.Millisecond, Logger: testLogger(t)})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { m.Close() })
		return m
	}
	old := start("old")
	cli := etcdtest.Client(t, []string{cu})
	reg := newReg(t, cli, "s1")
	if err := reg.EnrollToken(ctx, registry.TokenRecord{ID: "tok", Kind: "soft", User: "alice"}); err != nil {
		t.Fatal(err)
	}
	ka, _, err := reg.Claim(ctx, "ka", registry.Session{ID: "sa"})
	if err != nil {
		t.Fatal(err)
	}
	tokens := reg.WatchTokens(ctx)
	claims := reg.WatchClaims(ctx)

	// The snapshot: every key as it is now, and the lease.
	snap, err := cli.Get(ctx, "/", clientv3.WithPrefix())
	if err != nil {
		t.Fatal(err)
	}
	// Since the snapshot: a claim made, one released, the group's writes.
	if _, _, err := reg.Claim(ctx, "kb", registry.Session{ID: "sb"}); err != nil {
		t.Fatal(err)
	}
	if err := reg.Release(ctx, ka); err != nil {
		t.Fatal(err)
	}
	for range 50 {
		if _, err := cli.Put(ctx, "/other/filler", "x"); err != nil {
			t.Fatal(err)
		}
	}
	// The broker has read etcd since (its lease's record poll reads it
	// every 500 ms).
	if _, err := reg.Revision(ctx); err != nil {
		t.Fatal(err)
	}
	drain(tokens)
	drain(claims)

	// The restore: a new member on the same URLs with the snapshot's
	// keys and lease (at lower revisions than the client has seen).
	old.Close()
	start("restored")
	conn := etcdtest.Client(t, []string{cu})
	if _, err := pb.NewLeaseClient(conn.ActiveConnection()).LeaseGrant(ctx, &pb.LeaseGrantRequest{ID: int64(reg.LeaseID()), TTL: int64(leaseTTL / time.Second)}); err != nil {
		t.Fatal(err)
	}
	for _, kv := range snap.Kvs {
		if _, err := conn.Put(ctx, string(kv.Key), string(kv.Value), clientv3.WithLease(clientv3.LeaseID(kv.Lease))); err != nil {
			t.Fatal(err)
		}
	}

	// The registry gives its lease up (if the restore did not take longer
	// than its TTL): its claims are not what it wrote. The broker makes a
	// new one (on the restored etcd).
	select {
	case <-reg.Done():
	case <-ctx.Done():
		t.Fatal("the registry kept its lease on a restored etcd: the claim made since the snapshot is gone, the one released is back")
	}
	newReg(t, cli, "s1", registry.WithPreviousLease(reg.LeaseID()))
	// The claim stream starts again from the restored revision.
	cur, err := conn.Get(ctx, "/", clientv3.WithCountOnly())
	if err != nil {
		t.Fatal(err)
	}
	for resynced := false; !resynced; {
		select {
		case ch := <-claims:
			resynced = ch.Resync && ch.Rev <= cur.Header.Revision+1
		case <-ctx.Done():
			t.Fatalf("the claim stream did not start again on the restored etcd (revision %d)", cur.Header.Revision)
		}
	}
	// A token disabled now reaches the watch.
	st := newStore(t, conn, "s2")
	if err := st.UpdateToken(ctx, "tok", func(r *registry.TokenRecord) { r.Disabled = true }); err != nil {
		t.Fatal(err)
	}
	for {
		select {
		case ch := <-tokens:
			if ch.ID == "tok" && ch.Record.Disabled {
				return
			}
		case <-ctx.Done():
			t.Fatal("a token disabled on the restored etcd never reached the token watch")
		}
	}
}

// drain empties ch of what is queued in it now.
func drain[T any](ch <-chan T) {
	for {
		select {
		case <-ch:
		default:
			return
		}
	}
}

// TestReclaimRestoredFence: etcd restored from a snapshot taken before a
// broker's session key was last re-created (a lease lost and re-claimed
// since) holds the key with its fence of then, under the broker's lease of
// then: the broker's Reclaim, with the fence it holds now, must take it as
// its own, not report its own session orphaned (whose token its next
// insert would give a new desktop).
func TestReclaimRestoredFence(t *testing.T) {
	t.Parallel()
	eps := etcdtest.Start(t)
	ctx := tctx(t)
	r1 := newReg(t, etcdtest.Client(t, eps), "s1")
	snap, _, err := r1.Claim(ctx, "soft.t", registry.Session{ID: "sess", User: "alice"})
	if err != nil {
		t.Fatal(err)
	}
	// What the broker holds: the claim it re-created after the snapshot
	// (a later create revision), which the restore took away.
	held := snap
	held.Fence, held.ModRev = snap.Fence+7, snap.Fence+7
	r2 := newReg(t, etcdtest.Client(t, eps), "s1", registry.WithPreviousLease(r1.LeaseID()))
	c, ok, err := r2.Reclaim(ctx, held, registry.Session{ID: "sess", User: "alice"})
	if err != nil || !ok || c.Fence != snap.Fence || c.Session.ServerID != "s1" {
		t.Fatalf("Reclaim = %+v, %v, %v; want ok, the restored key's fence %d", c, ok, err, snap.Fence)
	}
	got, err := r2.Lookup(ctx, "soft.t")
	if err != nil || got.Fence != snap.Fence || got.Session.ID != "sess" {
		t.Fatalf("Lookup = %+v, %v; want session sess, fence %d", got, err, snap.Fence)
	}
	// Under the new lease: revoking the previous one leaves it.
	if err := r2.RevokeLease(ctx, r1.LeaseID()); err != nil {
		t.Fatal(err)
	}
	if _, err := r2.Lookup(ctx, "soft.t"); err != nil {
		t.Fatalf("Lookup after the previous lease was revoked = %v; want the key kept", err)
	}
}
