package registry_test

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/hotdesk/hotdesk/internal/testutil"
	"github.com/hotdesk/hotdesk/registry"
	"github.com/hotdesk/hotdesk/registry/etcdtest"
)

// claimRetry claims key, retrying a bounded number of times on errors (an
// etcd member dying under the request); it returns the last error.
func claimRetry(ctx context.Context, r *registry.Registry, key string, s registry.Session) (registry.Claim, bool, int, error) {
	var err error
	for attempt := range 10 {
		cctx, cancel := context.WithTimeout(ctx, 3*time.Second)
		c, won, e := r.Claim(cctx, key, s)
		cancel()
		if e == nil {
			return c, won, attempt, nil
		}
		err = e
		time.Sleep(100 * time.Millisecond)
	}
	return registry.Claim{}, false, 10, err
}

// TestClusterMemberDown: with clients configured with all three endpoints,
// the group keeps claiming and looking up while the etcd leader is stopped,
// no lease is lost, every key has exactly one owner both claimants agree on,
// and the restarted member catches up.
func TestClusterMemberDown(t *testing.T) {
	t.Parallel()
	eps, members := etcdtest.StartCluster(t, 3)
	ctx := tctx(t)
	// The leases must outlast the failover, which takes longer on a loaded
	// machine than the election timeout: no broker dies here.
	regs := []*registry.Registry{
		newReg(t, etcdtest.Client(t, eps), "s1", registry.WithLeaseTTL(2*leaseTTL)),
		newReg(t, etcdtest.Client(t, eps), "s2", registry.WithLeaseTTL(2*leaseTTL)),
	}

	leader := -1
	probe := etcdtest.Client(t, eps[0:1])
	for i, ep := range eps {
		st, err := probe.Status(ctx, ep)
		if err != nil {
			t.Fatal(err)
		}
		if st.Leader == st.Header.MemberId {
			leader = i
		}
	}
	if leader < 0 {
		t.Fatal("no leader among the members")
	}

	t0 := time.Now()
	killed := make(chan struct{})
	const rounds = 30
	type result struct {
		c   registry.Claim
		won bool
	}
	results := make([][2]result, rounds)
	retries := 0
	var mu sync.Mutex
	for i := range rounds {
		if i == rounds/3 {
			// Kill the leader while the claims go on.
			t.Cleanup(func() { <-killed })
			go func() {
				defer close(killed)
				start := time.Now()
				etcdtest.StopMember(t, members[leader])
				t.Logf("killed leader %s at round %d (stop took %v)", members[leader].Name(), i, time.Since(start))
			}()
		}
		key := fmt.Sprintf("soft.down-%d", i)
		var wg sync.WaitGroup
		errs := make([]error, 2)
		for j, r := range regs {
			wg.Add(1)
			go func() {
				defer wg.Done()
				c, won, n, err := claimRetry(ctx, r, key, registry.Session{ID: fmt.Sprintf("sess-%d-%d", i, j)})
				mu.Lock()
				retries += n
				mu.Unlock()
				results[i][j], errs[j] = result{c, won}, err
			}()
		}
		wg.Wait()
		for j, err := range errs {
			if err != nil {
				t.Fatalf("round %d: server %d: Claim err = %v; want nil", i, j, err)
			}
		}
	}
	<-killed
	t.Logf("claims retried %d times during the failover (%v since start)", retries, time.Since(t0))

	for i := range rounds {
		key := fmt.Sprintf("soft.down-%d", i)
		got, err := regs[i%2].Lookup(ctx, key)
		if err != nil {
			t.Fatalf("Lookup(%s) err = %v; want nil", key, err)
		}
		owners := 0
		for j, res := range results[i] {
			// Both claimants were told about the one current owner; a
			// retried claim may see its own earlier success as "taken".
			if res.c.Fence != got.Fence || res.c.Session != got.Session {
				t.Errorf("round %d: server %d saw %+v; want current %+v", i, j, res.c, got)
			}
			if got.Session.ServerID == fmt.Sprintf("s%d", j+1) {
				owners++
			}
		}
		if owners != 1 {
			t.Errorf("round %d: owners = %d; want 1", i, owners)
		}
	}
	for _, r := range regs {
		if !isOpen(r.Done()) {
			t.Errorf("%s: Done closed; want the lease kept through the failover", r.ServerID())
		}
	}
	testutil.WaitFor(t, waitBound, "healthy after the failover", func() bool { return regs[0].Healthy() && regs[1].Healthy() })

	t.Logf("healthy at %v", time.Since(t0))
	restarted := etcdtest.RestartMember(t, members[leader])
	only := etcdtest.Client(t, restarted.Endpoints())
	last := fmt.Sprintf("/hotdesk/sessions/soft.down-%d", rounds-1)
	testutil.WaitFor(t, waitBound, "restarted member serves the new keys", func() bool {
		cctx, cancel := context.WithTimeout(ctx, time.Second)
		defer cancel()
		resp, err := only.Get(cctx, last, clientv3.WithSerializable())
		return err == nil && len(resp.Kvs) == 1
	})
}
