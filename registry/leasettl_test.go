package registry_test

import (
	"context"
	"testing"
	"time"

	"github.com/hotdesk/hotdesk/registry"
	"github.com/hotdesk/hotdesk/registry/etcdtest"
)

// TestLeaseTTLAsGranted: a 1 s lease is granted as asked by an etcd whose
// election timeout allows it (500 ms) and fenced at 2/3 of it; an etcd with
// its default 1 s election timeout raises it to 2 s, and the registry then
// fences on the lease etcd keeps, not on the one it asked for.
func TestLeaseTTLAsGranted(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name     string
		election time.Duration
		want     time.Duration
	}{
		{"election timeout 500ms", 500 * time.Millisecond, time.Second},
		{"etcd's default election timeout", 0, 2 * time.Second},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
			defer cancel()
			e, err := registry.StartEmbedded(ctx, registry.EmbedConfig{Dir: t.TempDir(), UnsafeNoFsync: true, ElectionTimeout: tt.election})
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { e.Close() })
			cli := etcdtest.Client(t, e.Endpoints())
			r := newReg(t, cli, "s1", registry.WithLeaseTTL(time.Second))
			ttl, err := cli.TimeToLive(ctx, r.LeaseID())
			if err != nil {
				t.Fatal(err)
			}
			if got := time.Duration(ttl.GrantedTTL) * time.Second; got != tt.want {
				t.Errorf("granted TTL = %v; want %v", got, tt.want)
			}
			if got := r.SafeWindow(); got != tt.want*2/3 {
				t.Errorf("safe window = %v; want %v (2/3 of the granted TTL)", got, tt.want*2/3)
			}
		})
	}
}

// TestShortLeaseSlowLink: a 2 s lease over a link with a 400 ms round trip
// stays renewed within its safe window (1.33 s) the whole time. The etcd
// client's own KeepAlive looks only every 500 ms and renews a third of the
// TTL after each answer: over such a link its renewals came up to 1.57 s
// apart, beyond the safe window, and the broker fenced itself on a healthy
// lease. (A 1 s lease over 200 ms, the same ratios, left the registry's
// own renewals about 200 ms of margin, which a machine loaded with the race
// detector and other tests took now and then: twice in a day of CI runs.)
//
// Not parallel: it holds a lease to its safe window in real time.
func TestShortLeaseSlowLink(t *testing.T) {
	eps := etcdtest.Start(t) // 500 ms election timeout: short leases as asked
	proxy := etcdtest.NewProxy(t, eps[0])
	r := newReg(t, etcdtest.Client(t, []string{proxy.URL()}), "s1", registry.WithLeaseTTL(2*time.Second))
	proxy.SetDelay(200 * time.Millisecond) // each way
	deadline := time.Now().Add(6 * time.Second)
	for time.Now().Before(deadline) {
		if !r.Healthy() {
			t.Fatal("over a 400 ms round trip: not healthy; want the 2 s lease renewed within its safe window")
		}
		select {
		case <-r.Done():
			t.Fatal("lease lost over a slow link")
		case <-time.After(20 * time.Millisecond):
		}
	}
}
