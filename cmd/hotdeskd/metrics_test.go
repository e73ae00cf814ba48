package main

import (
	"testing"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/hotdesk/hotdesk/broker"
)

// TestLimitSeriesDeclared: every limit the broker reports has its refusal
// series from the start, at 0, so that a rate of it is defined before the
// first refusal (the connection limits once per listener, the others once).
func TestLimitSeriesDeclared(t *testing.T) {
	reg := prometheus.NewRegistry()
	reg.MustRegister(newLimitCounters().broker)
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	have := map[[2]string]bool{}
	for _, mf := range mfs {
		for _, m := range mf.GetMetric() {
			var k [2]string
			for _, lp := range m.GetLabel() {
				switch lp.GetName() {
				case "limit":
					k[0] = lp.GetValue()
				case "listener":
					k[1] = lp.GetValue()
				}
			}
			have[k] = true
		}
	}
	var want [][2]string
	for _, l := range []broker.Limit{broker.LimitConnections, broker.LimitConnectionsPerSource, broker.LimitUnauthenticated} {
		want = append(want, [2]string{string(l), "terminal"}, [2]string{string(l), "attach"})
	}
	for _, l := range []broker.Limit{broker.LimitSessions, broker.LimitSessionsPerUser, broker.LimitTicketsPerSession,
		broker.LimitPairing, broker.LimitTokenEvents} {
		want = append(want, [2]string{string(l), ""})
	}
	for _, k := range want {
		if !have[k] {
			t.Errorf("no series {limit=%q, listener=%q} before any refusal; want it declared at 0", k[0], k[1])
		}
	}
}
