package registry_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"
	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/hotdesk/hotdesk/internal/testutil"
	"github.com/hotdesk/hotdesk/registry"
	"github.com/hotdesk/hotdesk/registry/etcdtest"
)

// TestEtcdOutOfSpace: the group's etcd reaches its quota (the NOSPACE
// alarm): every write is refused while the lease is renewed as before, so
// the broker stays ready. The registry must say so in its log, with what
// to do, and say when etcd accepts writes again after the administrator
// compacted, defragmented and disarmed it; the claims work again by
// themselves.
func TestEtcdOutOfSpace(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(context.Background(), waitBound)
	defer cancel()
	m, err := registry.StartEmbedded(ctx, registry.EmbedConfig{Dir: t.TempDir(), UnsafeNoFsync: true,
		ElectionTimeout: 500 * time.Millisecond, QuotaBackendBytes: 4 << 20, Logger: testLogger(t)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { m.Close() })
	cli := etcdtest.Client(t, m.Endpoints())
	var out testutil.LockedBuffer
	log := hclog.New(&hclog.LoggerOptions{Output: &out, Level: hclog.Info})
	reg := newReg(t, cli, "s1", registry.WithLogger(log))

	// Something else fills the database up to its quota.
	big := strings.Repeat("x", 256<<10)
	var last int64
	for {
		resp, err := cli.Put(ctx, "/other/big", big)
		if err != nil {
			break
		}
		last = resp.Header.Revision
		if ctx.Err() != nil {
			t.Fatal("the database never filled up")
		}
	}
	if _, _, err := reg.Claim(ctx, "soft.t", registry.Session{ID: "s"}); err == nil {
		t.Fatal("Claim on a full etcd succeeded")
	}
	if !reg.Healthy() {
		t.Fatal("the lease went unhealthy on a full etcd; the test is about a healthy one")
	}
	if !strings.Contains(out.String(), "NOSPACE alarm") || !strings.Contains(out.String(), "etcdctl alarm disarm") {
		t.Fatalf("a write refused for space was not logged as such, with what to do:\n%s", out.String())
	}

	// The administrator: compact, defragment, disarm.
	if _, err := cli.Delete(ctx, "/other/big"); err != nil {
		t.Fatal(err)
	}
	// Physical: the compaction applied before the defragmentation runs
	// (without it, etcd compacts in the background and a defragmentation
	// that runs first frees nothing: a disarmed alarm comes straight back).
	if _, err := cli.Compact(ctx, last, clientv3.WithCompactPhysical()); err != nil {
		t.Fatal(err)
	}
	if _, err := cli.Defragment(ctx, m.Endpoints()[0]); err != nil {
		t.Fatal(err)
	}
	alarms, err := cli.AlarmList(ctx)
	if err != nil || len(alarms.Alarms) == 0 {
		t.Fatalf("alarms = %v, %v; want NOSPACE", alarms, err)
	}
	if _, err := cli.AlarmDisarm(ctx, &clientv3.AlarmMember{MemberID: alarms.Alarms[0].MemberID, Alarm: pb.AlarmType_NOSPACE}); err != nil {
		t.Fatal(err)
	}
	if _, _, err := reg.Claim(ctx, "soft.t", registry.Session{ID: "s"}); err != nil {
		t.Fatalf("Claim after the alarm was disarmed = %v", err)
	}
	if !strings.Contains(out.String(), "etcd accepts writes again") {
		t.Fatalf("the end of the refusals was not logged:\n%s", out.String())
	}
}
