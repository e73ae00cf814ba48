package main

import (
	"slices"
	"syscall"
	"testing"
	"time"

	"github.com/hotdesk/hotdesk/internal/testutil"
	"github.com/hotdesk/hotdesk/registry/etcdtest"
)

// BenchmarkFailover measures the failover a person at a terminal waits for
// when the server holding their desktop dies: a group of two brokers
// (hotdeskd processes, 1 s leases, on an etcd whose 500 ms election timeout
// lets etcd grant them), the terminal service (hotdesk-term agent) with a
// soft token inserted and attached at one broker. Each iteration kills that
// broker (SIGKILL) and its desktops, as a failed machine would, and times
// until the terminal's token is attached to a new desktop at the other
// broker; the dead broker is then restarted (not timed), so the next
// iteration fails over the other way.
//
// Reported per iteration set: failover_p50_ms, failover_p99_ms,
// failover_max_ms (death → Attached at the other broker, a real weston
// started there) and reconnect_p50_ms (death → the service connected to
// the other broker). The bound is the dead broker's lease: it expires
// between 2/3 of the TTL and the TTL after the last renewal, and etcd
// checks expiry every 500 ms. Run:
//
//	go test -run '^$' -bench Failover -benchtime 20x ./cmd/hotdesk-term
func BenchmarkFailover(b *testing.B) {
	testutil.NeedTools(b, "weston")
	bin := buildBinaries(b)
	etcd := etcdtest.Start(b)
	ba, bb := newGroupBroker(b, bin, "a", etcd), newGroupBroker(b, bin, "b", etcd)
	brokers := map[string]*groupBroker{"a": ba, "b": bb}
	ba.Start()
	bb.Start()
	ks, key := newKeystore(b)
	ba.pair("alice", ks, key)
	_, evs := startGroupService(b, bin, ks, ba, bb)
	owner, _ := evs.next("attached")["server"].(string)
	if brokers[owner] == nil {
		b.Fatalf("attached at %q; want a or b", owner)
	}

	var failovers, reconnects []time.Duration
	b.ResetTimer()
	for range b.N {
		dead := brokers[owner]
		desktops := dead.compositorPIDs()
		died := time.Now()
		dead.Stop(syscall.SIGKILL)
		for _, pid := range desktops {
			syscall.Kill(-pid, syscall.SIGKILL)
			syscall.Kill(pid, syscall.SIGKILL)
		}
		evs.next("connected")
		reconnects = append(reconnects, time.Since(died))
		ev := evs.next("attached")
		failovers = append(failovers, time.Since(died))
		next, _ := ev["server"].(string)
		if next == owner || brokers[next] == nil {
			b.Fatalf("after %s died: attached = %v; want at the other broker", owner, ev)
		}
		b.StopTimer()
		dead.Start()
		owner = next
		b.StartTimer()
	}
	b.StopTimer()
	for _, pid := range brokers[owner].compositorPIDs() {
		b.Cleanup(func() { syscall.Kill(-pid, syscall.SIGKILL); syscall.Kill(pid, syscall.SIGKILL) })
	}
	b.ReportMetric(percentileMs(failovers, 50), "failover_p50_ms")
	b.ReportMetric(percentileMs(failovers, 99), "failover_p99_ms")
	b.ReportMetric(percentileMs(failovers, 100), "failover_max_ms")
	b.ReportMetric(percentileMs(reconnects, 50), "reconnect_p50_ms")
	b.ReportMetric(0, "ns/op") // an iteration includes an untimed restart: ns/op means nothing
}

// percentileMs returns the p-th percentile (nearest rank) of ds in
// milliseconds.
func percentileMs(ds []time.Duration, p int) float64 {
	if len(ds) == 0 {
		return 0
	}
	s := slices.Clone(ds)
	slices.Sort(s)
	i := max((len(s)*p+99)/100-1, 0)
	return float64(s[i].Microseconds()) / 1000
}
