package registry_test

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/hotdesk/hotdesk/internal/testutil"
	"github.com/hotdesk/hotdesk/registry"
	"github.com/hotdesk/hotdesk/registry/etcdtest"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// TestLockoutsShared: a lockout published by one server reaches another's
// WatchLockouts, whether it was published before the watch began (listed)
// or after (watched); a later lockout of the same key replaces it; the key
// is not stored in the etcd key's name, and a lockout already over is not
// stored at all.
func TestLockoutsShared(t *testing.T) {
	t.Parallel()
	eps, regs := newGroup(t, "la", "lb")
	a, b := regs[0], regs[1]
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	until := time.Now().Add(time.Minute).UnixMilli()
	if err := a.PublishLockout(ctx, registry.Lockout{Key: "user:alice", UntilUnixMs: until, Level: 1}); err != nil {
		t.Fatal(err)
	}
	if err := a.PublishLockout(ctx, registry.Lockout{Key: "user:old", UntilUnixMs: time.Now().Add(-time.Second).UnixMilli()}); err != nil {
		t.Fatal(err)
	}
	changes := b.WatchLockouts(ctx)
	got := testutil.Recv(t, changes, 10*time.Second, "the listed lockout")
	if got.Key != "user:alice" || got.UntilUnixMs != until || got.Level != 1 || got.Server != "la" {
		t.Fatalf("listed %+v; want user:alice until %d at level 1, from la", got, until)
	}
	until2 := time.Now().Add(2 * time.Minute).UnixMilli()
	if err := a.PublishLockout(ctx, registry.Lockout{Key: "user:alice", UntilUnixMs: until2, Level: 2}); err != nil {
		t.Fatal(err)
	}
	if got := testutil.Recv(t, changes, 10*time.Second, "the watched lockout"); got.Key != "user:alice" || got.UntilUnixMs != until2 || got.Level != 2 {
		t.Fatalf("watched %+v; want user:alice until %d at level 2", got, until2)
	}
	if ls, err := b.Lockouts(ctx); err != nil || len(ls) != 1 || ls[0].Key != "user:alice" || ls[0].Level != 2 {
		t.Fatalf("Lockouts = %+v, %v; want user:alice at level 2 only", ls, err)
	}
	resp, err := etcdtest.Client(t, eps).Get(ctx, "/hotdesk/lockouts/", clientv3.WithPrefix())
	if err != nil {
		t.Fatal(err)
	}
	if len(resp.Kvs) != 1 || strings.Contains(string(resp.Kvs[0].Key), "alice") || resp.Kvs[0].Lease == 0 {
		t.Fatalf("stored lockouts %v; want one, under a lease, its key not naming the user", resp.Kvs)
	}
	// An administrator clears it: every watcher hears, the listing empties.
	if err := b.ClearLockout(ctx, "user:alice"); err != nil {
		t.Fatal(err)
	}
	if got := testutil.Recv(t, changes, 10*time.Second, "the clearing"); got.Key != "user:alice" || !got.Cleared || got.Server != "lb" {
		t.Fatalf("after the clear: %+v; want user:alice cleared via lb", got)
	}
	if ls, err := a.Lockouts(ctx); err != nil || len(ls) != 0 {
		t.Fatalf("Lockouts after the clear = %+v, %v; want none", ls, err)
	}
	if err := a.ClearLockout(ctx, "user:alice"); !errors.Is(err, registry.ErrNotFound) {
		t.Fatalf("clearing it again = %v; want ErrNotFound", err)
	}
	if err := a.ClearLockout(ctx, "user:nobody"); !errors.Is(err, registry.ErrNotFound) {
		t.Fatalf("clearing a key never locked = %v; want ErrNotFound", err)
	}
}
