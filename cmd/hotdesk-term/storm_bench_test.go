package main

import (
	"context"
	"fmt"
	"os"
	"slices"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/hotdesk/hotdesk/proto"
	"github.com/hotdesk/hotdesk/proto/prototest"
	"github.com/hotdesk/hotdesk/registry/etcdtest"
)

// BenchmarkReconnectStorm measures what a site's terminals wait for when
// their broker restarts (an upgrade of a one-server site): every terminal
// service (hotdesk-term agents, in this process) is connected to one real
// hotdeskd; each iteration stops it (SIGTERM), keeps it down for a
// while, starts it again and times until every terminal is connected
// again. Its listener then takes every terminal's handshake within a
// second or so: at most max_unauthenticated (128) at a time; the rest are
// refused and come back later. All terminals dial from one address here:
// the broker's per-source limits are raised to their number, as a site's
// terminals come from as many addresses.
//
// Reported: ready_ms (the broker launched → ready), and, from the broker's
// launch to each terminal connected again, storm_p50_ms, storm_p99_ms and
// storm_max_ms. HOTDESK_STORM_TERMINALS sets the number of terminals
// (default 300), HOTDESK_STORM_DOWN the time the broker stays down
// (default 3s). Run:
//
//	go test -run '^$' -bench ReconnectStorm -benchtime 3x ./cmd/hotdesk-term
func BenchmarkReconnectStorm(b *testing.B) {
	n := envInt(b, "HOTDESK_STORM_TERMINALS", 300)
	down := 3 * time.Second
	if s := os.Getenv("HOTDESK_STORM_DOWN"); s != "" {
		d, err := time.ParseDuration(s)
		if err != nil {
			b.Fatalf("HOTDESK_STORM_DOWN: %v", err)
		}
		down = d
	}
	bin := buildBinaries(b)
	etcd := etcdtest.Start(b)
	br := newBroker(b, bin, "a", fmt.Sprintf("etcd {\n  endpoints = [%q]\n}\nlimits {\n  max_connections_per_source = %d\n  max_unauthenticated_per_source = %d\n}\n",
		etcd[0], n+16, n+16))
	br.Start()
	pin, err := proto.ParseFingerprint(br.Pin)
	if err != nil {
		b.Fatal(err)
	}
	ks, _ := newKeystore(b)

	// connected[i] is when terminal i last connected.
	var mu sync.Mutex
	connected := make([]time.Time, n)
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	b.Cleanup(func() {
		cancel()
		wg.Wait()
	})
	for i := range n {
		a, err := newAgent(Config{
			Server: br.addr, TLS: prototest.PinnedTLS(b, pin), TerminalID: "storm-" + strconv.Itoa(i), Keystore: ks,
			Service: true,
			UI: func(ev event) {
				if ev.name != "connected" {
					return
				}
				mu.Lock()
				connected[i] = time.Now()
				mu.Unlock()
			},
		})
		if err != nil {
			b.Fatal(err)
		}
		wg.Go(func() { _ = a.Run(ctx, nil) })
	}
	// awaitUp waits until every terminal has connected after since (a
	// terminal that connects twice, or at the stop, counts once, at its
	// last connection).
	awaitUp := func(what string, since time.Time) {
		b.Helper()
		deadline := time.Now().Add(2 * time.Minute)
		for {
			mu.Lock()
			all := !slices.ContainsFunc(connected, func(at time.Time) bool { return !at.After(since) })
			mu.Unlock()
			if all {
				return
			}
			if time.Now().After(deadline) {
				b.Fatalf("%s: not every terminal connected within 2 min", what)
			}
			time.Sleep(5 * time.Millisecond)
		}
	}
	awaitUp("first connection", time.Time{})

	var storm []time.Duration
	var ready time.Duration
	b.ResetTimer()
	for range b.N {
		br.Stop(os.Interrupt)
		time.Sleep(down)
		launched := time.Now()
		br.Launch()
		br.WaitReady()
		ready += time.Since(launched)
		awaitUp("after the restart", launched)
		mu.Lock()
		for _, at := range connected {
			storm = append(storm, at.Sub(launched))
		}
		mu.Unlock()
	}
	b.StopTimer()
	slices.Sort(storm)
	pct := func(p float64) float64 {
		return float64(storm[int(p*float64(len(storm)-1))]) / float64(time.Millisecond)
	}
	b.ReportMetric(float64(ready)/float64(b.N)/float64(time.Millisecond), "ready_ms")
	b.ReportMetric(pct(0.5), "storm_p50_ms")
	b.ReportMetric(pct(0.99), "storm_p99_ms")
	b.ReportMetric(pct(1), "storm_max_ms")
}

// envInt is the whole number in the environment variable name, or def.
func envInt(tb testing.TB, name string, def int) int {
	s := os.Getenv(name)
	if s == "" {
		return def
	}
	v, err := strconv.Atoi(s)
	if err != nil || v <= 0 {
		tb.Fatalf("%s=%q: want a positive whole number", name, s)
	}
	return v
}
