package registry_test

import (
	"context"
	"net"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"
	"google.golang.org/grpc/connectivity"

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

// TestReconnected: registry.Reconnected reports a connection that comes
// back, and only that: called while etcd is reachable it waits for the
// connection to be lost and come back (a caller whose request failed on a
// healthy etcd must not be woken at once, over and over); called while
// etcd is down it returns when etcd is back.
func TestReconnected(t *testing.T) {
	t.Parallel()
	endpoints, members := etcdtest.StartCluster(t, 1)
	cli := etcdtest.BrokerClient(t, endpoints)
	if _, err := cli.Get(t.Context(), "x"); err != nil {
		t.Fatal(err)
	}
	back := func() chan bool {
		ch := make(chan bool, 1)
		go func() {
			ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
			defer cancel()
			ch <- registry.Reconnected(ctx, cli)
		}()
		return ch
	}
	// etcd up all along: no return while its context lasts.
	ctx, cancel := context.WithTimeout(t.Context(), 2*time.Second)
	defer cancel()
	if registry.Reconnected(ctx, cli) {
		t.Fatal("Reconnected reported true with etcd up all along")
	}
	// Called while etcd is up; etcd goes down and comes back.
	whileUp := back()
	etcdtest.StopMember(t, members[0])
	// Called while etcd is down.
	for cli.ActiveConnection().GetState() == connectivity.Ready {
		time.Sleep(10 * time.Millisecond)
	}
	whileDown := back()
	select {
	case got := <-whileUp:
		t.Fatalf("called with etcd up: returned %v with etcd down; want it to wait", got)
	case got := <-whileDown:
		t.Fatalf("called with etcd down: returned %v with etcd still down", got)
	case <-time.After(2 * time.Second):
	}
	members[0] = etcdtest.RestartMember(t, members[0])
	for name, ch := range map[string]chan bool{"called with etcd up": whileUp, "called with etcd down": whileDown} {
		if !<-ch {
			t.Errorf("%s: Reconnected false with etcd back; want true", name)
		}
	}
}
