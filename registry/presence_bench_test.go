package registry_test

import (
	"context"
	"fmt"
	"testing"

	"github.com/hotdesk/hotdesk/registry"
	"github.com/hotdesk/hotdesk/registry/etcdtest"
)

// BenchmarkPresenceHeartbeat measures what a broker's presence heartbeat
// (every 10 s) costs etcd with a thousand terminals connected to it: the
// records written one by one (PutTerminal: a revision and a disk sync
// each, as the heartbeat did) or 64 to a transaction (PutTerminals). The
// etcd is one embedded member with fsync on, as the one-machine default
// runs. Reported per heartbeat: the time and the etcd revisions. Run:
//
//	go test -run '^$' -bench PresenceHeartbeat -benchtime 5x ./registry
func BenchmarkPresenceHeartbeat(b *testing.B) {
	ctx := context.Background()
	e, err := registry.StartEmbedded(ctx, registry.EmbedConfig{Dir: b.TempDir()})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { e.Close() })
	cli := etcdtest.EmbeddedClient(b, e)
	reg := newReg(b, cli, "a")
	recs := make([]registry.TerminalRecord, 1000)
	for i := range recs {
		recs[i] = registry.TerminalRecord{ID: fmt.Sprintf("desk-%04d", i), Name: "Desk", Addr: "10.1.2.3:40000",
			Session: "s-abcdefghijklmn", User: "someone", ConnectedUnixMs: 1, SeenUnixMs: 2}
	}
	for _, mode := range []string{"one_by_one", "batched"} {
		b.Run(mode, func(b *testing.B) {
			before := etcdtest.Revision(b, cli)
			for range b.N {
				if mode == "batched" {
					if _, err := reg.PutTerminals(ctx, recs); err != nil {
						b.Fatal(err)
					}
					continue
				}
				for _, r := range recs {
					if err := reg.PutTerminal(ctx, r); err != nil {
						b.Fatal(err)
					}
				}
			}
			b.ReportMetric(float64(etcdtest.Revision(b, cli)-before)/float64(b.N), "revisions/op")
		})
	}
}
