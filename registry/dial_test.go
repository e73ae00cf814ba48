package registry_test

import (
	"context"
	"errors"
	"fmt"
	"net"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/hotdesk/hotdesk/registry"
	"github.com/hotdesk/hotdesk/registry/etcdtest"
)

// TestReconnectsWhileEtcdDown: while etcd is down (here: a port that
// closes every connection at once), the client dials it again about every
// registry.ReconnectEvery, not ever more rarely as gRPC's default backoff
// does (1 s, then 1.6 times longer each time, up to two minutes): a broker
// must see its etcd back soon after a whole cluster's restart. Told
// without timing anything against a bound: the gap between the fifth and
// sixth attempts against the gap between the first and second (about 1
// with the fix; 1.6⁴ ≈ 6.5, at least 4.4 with gRPC's jitter, without).
func TestReconnectsWhileEtcdDown(t *testing.T) {
	t.Parallel()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	const attempts = 6
	at := make(chan time.Time, attempts)
	go func() {
		for n := 0; ; n++ {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			c.Close()
			if n < attempts {
				at <- time.Now()
			}
		}
	}()
	cli, err := clientv3.New(clientv3.Config{Endpoints: []string{ln.Addr().String()}, Logger: zap.NewNop(),
		DialOptions: registry.DialOptions(5 * time.Second)})
	if err != nil {
		t.Fatal(err)
	}
	defer cli.Close()
	ctx, cancel := context.WithTimeout(context.Background(), waitBound)
	defer cancel()
	go cli.Get(ctx, "k") // the client connects on first use
	var times []time.Time
	for len(times) < attempts {
		select {
		case tm := <-at:
			times = append(times, tm)
		case <-ctx.Done():
			t.Fatalf("%d connection attempts in %v; want %d", len(times), waitBound, attempts)
		}
	}
	first, last := times[1].Sub(times[0]), times[attempts-1].Sub(times[attempts-2])
	if last > 3*first {
		t.Fatalf("gaps between attempts grew from %v to %v: the client backs off ever longer while etcd is down", first, last)
	}
}

// TestWaitAnswering: Store.WaitAnswering returns at once while etcd
// answers, waits while it is down, and returns when it is back.
func TestWaitAnswering(t *testing.T) {
	t.Parallel()
	endpoints, members := etcdtest.StartCluster(t, 1)
	store, err := registry.NewStore(etcdtest.BrokerClient(t, endpoints), "s1")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	defer cancel()
	if !store.WaitAnswering(ctx) {
		t.Fatal("WaitAnswering false with etcd up")
	}
	etcdtest.StopMember(t, members[0])
	back := make(chan bool, 1)
	go func() { back <- store.WaitAnswering(ctx) }()
	select {
	case got := <-back:
		t.Fatalf("WaitAnswering returned %v with etcd down", got)
	case <-time.After(3 * registry.ReconnectEvery):
	}
	etcdtest.RestartMember(t, members[0])
	if !<-back {
		t.Fatal("WaitAnswering false with etcd back")
	}
}

// TestUnanswered: the errors of a request etcd did not answer, wrapped as
// the registry wraps them, and only those.
func TestUnanswered(t *testing.T) {
	t.Parallel()
	for _, c := range []struct {
		err  error
		want bool
	}{
		{fmt.Errorf("registry: new: grant lease: %w", context.DeadlineExceeded), true},
		{fmt.Errorf("registry: claim: %w", rpctypes.ErrTimeout), true},
		{rpctypes.ErrTimeoutDueToLeaderFail, true},
		{rpctypes.ErrNoLeader, true},
		{fmt.Errorf("registry: revision: %w", status.Error(codes.Unavailable, "connection refused")), true},
		{fmt.Errorf("registry: new: %w", registry.ErrServerIDInUse), false},
		{fmt.Errorf("registry: revision: %w", rpctypes.ErrPermissionDenied), false},
		{context.Canceled, false},
		{rpctypes.ErrNoSpace, false},
		{errors.New("etcd refused"), false},
		{nil, false},
	} {
		if got := registry.Unanswered(c.err); got != c.want {
			t.Errorf("Unanswered(%v) = %v; want %v", c.err, got, c.want)
		}
	}
}

// TestReach: an endpoint that takes connections is "ok", one that refuses
// them says so; each line names its endpoint.
func TestReach(t *testing.T) {
	t.Parallel()
	up := etcdtest.Start(t)[0]
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	down := "http://" + ln.Addr().String()
	ln.Close()
	sock := filepath.Join(t.TempDir(), "etcd.sock")
	uln, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	defer uln.Close()
	unix := "unix://" + sock
	// An etcd serving TLS only, named http:// (its TCP connection
	// succeeds: before, "ok").
	e, err := registry.StartEmbedded(t.Context(), registry.EmbedConfig{Dir: t.TempDir(), TLSDir: filepath.Join(t.TempDir(), "tls"), UnsafeNoFsync: true})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { e.Close() })
	plain := strings.Replace(e.Endpoints()[0], "https://", "http://", 1)
	got := registry.Reach(t.Context(), []string{up, down, unix, plain}, nil, 2*time.Second)
	if len(got) != 4 || got[0] != up+": ok" || !strings.HasPrefix(got[1], down+": dial tcp") || !strings.Contains(got[1], "connection refused") ||
		got[2] != unix+": ok" || got[3] != plain+": TLS: the endpoint serves TLS only: name it https:// (with etcd.ca_file)" {
		t.Fatalf("Reach = %q; want %q ok, %q refused, %q ok and %q TLS only", got, up, down, unix, plain)
	}
}
