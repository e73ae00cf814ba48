package registry_test

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/hashicorp/go-hclog"
	"github.com/hotdesk/hotdesk/internal/clock"
	"github.com/hotdesk/hotdesk/internal/testutil"
	"github.com/hotdesk/hotdesk/registry"
	"github.com/hotdesk/hotdesk/registry/etcdtest"
)

// TestClaimRace has two servers (own clients, own leases) claim the same key
// at the same moment, round after round: exactly one wins each round and the
// loser is handed the winner's claim.
func TestClaimRace(t *testing.T) {
	t.Parallel()
	_, regs := newGroup(t, "s1", "s2")
	ctx := tctx(t)
	const rounds = 200
	wins := map[string]int{}
	for i := range rounds {
		key := fmt.Sprintf("soft.race-%d", i)
		type result struct {
			c   registry.Claim
			won bool
			err error
		}
		res := make([]result, len(regs))
		together(len(regs), func(j int) {
			c, won, err := regs[j].Claim(ctx, key, registry.Session{ID: fmt.Sprintf("sess-%d-%d", i, j), User: "alice"})
			res[j] = result{c, won, err}
		})
		var winner, loser result
		n := 0
		for j, x := range res {
			if x.err != nil {
				t.Fatalf("round %d: server %d: Claim err = %v; want nil", i, j, x.err)
			}
			if x.won {
				n++
				winner = x
			} else {
				loser = x
			}
		}
		if n != 1 {
			t.Fatalf("round %d: winners = %d; want 1", i, n)
		}
		wins[winner.c.Session.ServerID]++
		if loser.c.Fence != winner.c.Fence || loser.c.Session != winner.c.Session {
			t.Fatalf("round %d: loser saw %+v; want winner's %+v", i, loser.c, winner.c)
		}
		got, err := regs[0].Lookup(ctx, key)
		if err != nil || got.Fence != winner.c.Fence || got.Session.ID != winner.c.Session.ID {
			t.Fatalf("round %d: Lookup = %+v, %v; want %+v", i, got, err, winner.c)
		}
	}
	t.Logf("wins per server: %v", wins)
}

// newPair is newGroup of two servers, s1 and s2.
func newPair(t testing.TB) (eps []string, a, b *registry.Registry) {
	t.Helper()
	eps, regs := newGroup(t, "s1", "s2")
	return eps, regs[0], regs[1]
}

// together runs f(0) to f(n-1), each in its own goroutine, all released at
// the same moment, and returns when every one has returned.
func together(n int, f func(i int)) {
	start := make(chan struct{})
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			<-start
			f(i)
		})
	}
	close(start)
	wg.Wait()
}

func TestClaimFields(t *testing.T) {
	t.Parallel()
	eps := etcdtest.Start(t)
	cli := etcdtest.Client(t, eps)
	clk := clock.NewFake(time.UnixMilli(1_700_000_000_000))
	r := newReg(t, cli, "s1", registry.WithPrefix("/custom"), registry.WithClock(clk))
	ctx := tctx(t)

	c, won, err := r.Claim(ctx, "soft.a", registry.Session{ID: "x", Key: "ignored", ServerID: "spoofed", State: "creating"})
	if err != nil || !won {
		t.Fatalf("Claim = %v, %v; want won", won, err)
	}
	want := registry.Session{ID: "x", Key: "soft.a", ServerID: "s1", State: "creating",
		CreatedUnixMs: 1_700_000_000_000, UpdatedUnixMs: 1_700_000_000_000}
	if c.Session != want {
		t.Errorf("claim session = %+v; want %+v", c.Session, want)
	}
	if c.Fence <= 0 || c.ModRev != c.Fence {
		t.Errorf("claim fence, modrev = %d, %d; want equal and > 0", c.Fence, c.ModRev)
	}
	// The value is small human-readable JSON under the configured prefix,
	// attached to the server's lease.
	resp, err := cli.Get(ctx, "/custom/sessions/soft.a")
	if err != nil || len(resp.Kvs) != 1 {
		t.Fatalf("raw get = %v, %v", resp, err)
	}
	kv := resp.Kvs[0]
	if v := string(kv.Value); !strings.Contains(v, `"server_id":"s1"`) || len(v) > 256 {
		t.Errorf("raw value = %s; want small JSON with server_id", v)
	}
	if got := clientv3.LeaseID(kv.Lease); got != r.LeaseID() {
		t.Errorf("key lease = %x; want %x", got, r.LeaseID())
	}
	if resp, _ := cli.Get(ctx, "/custom/servers/s1"); len(resp.Kvs) != 1 || clientv3.LeaseID(resp.Kvs[0].Lease) != r.LeaseID() {
		t.Errorf("server record under lease: %v", resp.Kvs)
	}

	// A second claim by the same server on the same key loses to itself.
	c2, won, err := r.Claim(ctx, "soft.a", registry.Session{ID: "y"})
	if err != nil || won || c2.Session.ID != "x" {
		t.Errorf("second Claim = %+v, %v, %v; want existing claim, not won", c2, won, err)
	}

	for _, k := range []string{"", "a/b", "../x", ".", "..", "a b", "a\x00b", "\xff", strings.Repeat("k", 257)} {
		if _, _, err := r.Claim(ctx, k, registry.Session{ID: "z"}); !errors.Is(err, registry.ErrInvalidKey) {
			t.Errorf("Claim(%q) err = %v; want ErrInvalidKey", k, err)
		}
		if _, err := r.Lookup(ctx, k); !errors.Is(err, registry.ErrInvalidKey) {
			t.Errorf("Lookup(%q) err = %v; want ErrInvalidKey", k, err)
		}
	}
	if _, _, err := r.Claim(ctx, strings.Repeat("k", 256), registry.Session{ID: "z"}); err != nil {
		t.Errorf("Claim(256-byte key) err = %v; want nil", err)
	}
	if _, _, err := r.Claim(ctx, "soft.b", registry.Session{}); !errors.Is(err, registry.ErrInvalidKey) {
		t.Errorf("Claim(empty session id) err = %v; want ErrInvalidKey", err)
	}
	if _, err := r.Lookup(ctx, "soft.none"); !errors.Is(err, registry.ErrNotFound) {
		t.Errorf("Lookup(absent) err = %v; want ErrNotFound", err)
	}
}

// TestClaimUnknownOutcome: a claim whose context is done before the txn
// returns is resolved by re-reading the key.
func TestClaimUnknownOutcome(t *testing.T) {
	t.Parallel()
	_, a, b := newPair(t)
	ctx := tctx(t)
	mine, _, err := a.Claim(ctx, "soft.mine", registry.Session{ID: "m1"})
	if err != nil {
		t.Fatal(err)
	}
	theirs, _, err := b.Claim(ctx, "soft.theirs", registry.Session{ID: "t1"})
	if err != nil {
		t.Fatal(err)
	}
	cancelled, cancel := context.WithCancel(context.Background())
	cancel()

	tests := []struct {
		name      string
		key       string
		sessionID string
		wantWon   bool
		wantFence int64
		wantErr   error
	}{
		{"applied: our lease and session", "soft.mine", "m1", true, mine.Fence, nil},
		{"ours but another session id", "soft.mine", "m2", false, mine.Fence, nil},
		{"held by another server", "soft.theirs", "m1", false, theirs.Fence, nil},
		{"not applied: absent", "soft.absent", "m1", false, 0, context.Canceled},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, won, err := a.Claim(cancelled, tt.key, registry.Session{ID: tt.sessionID})
			if tt.wantErr != nil {
				if !errors.Is(err, tt.wantErr) {
					t.Fatalf("err = %v; want %v", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatalf("err = %v; want nil", err)
			}
			if won != tt.wantWon || c.Fence != tt.wantFence {
				t.Errorf("won, fence = %v, %d; want %v, %d", won, c.Fence, tt.wantWon, tt.wantFence)
			}
		})
	}
	if _, err := a.Lookup(ctx, "soft.absent"); !errors.Is(err, registry.ErrNotFound) {
		t.Errorf("Lookup(absent) after cancelled claim = %v; want ErrNotFound", err)
	}
}

// TestFencing: Update and Release with a claim whose key is gone or was
// re-created (by another server or by the same one) are refused.
func TestFencing(t *testing.T) {
	t.Parallel()
	_, a, b := newPair(t)
	ctx := tctx(t)

	tests := []struct {
		name  string
		setup func(t *testing.T, old registry.Claim) // after a claimed key with claim old
	}{
		{"released", func(t *testing.T, old registry.Claim) {
			if err := a.Release(ctx, old); err != nil {
				t.Fatal(err)
			}
		}},
		{"recreated by another server", func(t *testing.T, old registry.Claim) {
			if err := b.Release(ctx, old); err != nil { // an admin may release any fence
				t.Fatal(err)
			}
			if _, won, err := b.Claim(ctx, old.Key, registry.Session{ID: "other"}); err != nil || !won {
				t.Fatalf("b.Claim = %v, %v", won, err)
			}
		}},
		{"recreated by the same server", func(t *testing.T, old registry.Claim) {
			if err := a.Release(ctx, old); err != nil {
				t.Fatal(err)
			}
			if _, won, err := a.Claim(ctx, old.Key, registry.Session{ID: "again"}); err != nil || !won {
				t.Fatalf("a.Claim = %v, %v", won, err)
			}
		}},
	}
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			key := fmt.Sprintf("soft.fence-%d", i)
			old, won, err := a.Claim(ctx, key, registry.Session{ID: "first"})
			if err != nil || !won {
				t.Fatalf("Claim = %v, %v", won, err)
			}
			tt.setup(t, old)
			before, beforeErr := a.Lookup(ctx, key)
			if _, err := a.Update(ctx, old, registry.Session{ID: "first", State: "active"}); !errors.Is(err, registry.ErrFenced) {
				t.Errorf("Update(old) err = %v; want ErrFenced", err)
			}
			if err := a.Release(ctx, old); !errors.Is(err, registry.ErrFenced) {
				t.Errorf("Release(old) err = %v; want ErrFenced", err)
			}
			after, afterErr := a.Lookup(ctx, key)
			if after != before || (afterErr == nil) != (beforeErr == nil) ||
				errors.Is(afterErr, registry.ErrNotFound) != errors.Is(beforeErr, registry.ErrNotFound) {
				t.Errorf("key changed by refused writes: %+v, %v; want %+v, %v", after, afterErr, before, beforeErr)
			}
		})
	}

	t.Run("update of another server's claim", func(t *testing.T) {
		c, won, err := b.Claim(ctx, "soft.b-owned", registry.Session{ID: "b1"})
		if err != nil || !won {
			t.Fatalf("Claim = %v, %v", won, err)
		}
		if _, err := a.Update(ctx, c, registry.Session{ID: "stolen"}); !errors.Is(err, registry.ErrFenced) {
			t.Errorf("a.Update(b's claim) err = %v; want ErrFenced", err)
		}
		if got, _ := a.Lookup(ctx, c.Key); got.Session.ServerID != "s2" || got.Session.ID != "b1" {
			t.Errorf("after refused update: %+v; want b's session", got.Session)
		}
	})

	t.Run("valid fence", func(t *testing.T) {
		c, _, err := a.Claim(ctx, "soft.ok", registry.Session{ID: "ok", State: "creating", CreatedUnixMs: 5, UpdatedUnixMs: 5})
		if err != nil {
			t.Fatal(err)
		}
		c2, err := a.Update(ctx, c, registry.Session{ID: "ok", State: "active", UpdatedUnixMs: 9})
		if err != nil {
			t.Fatalf("Update err = %v; want nil", err)
		}
		if c2.Fence != c.Fence || c2.ModRev <= c.ModRev {
			t.Errorf("updated fence, modrev = %d, %d; want %d, > %d", c2.Fence, c2.ModRev, c.Fence, c.ModRev)
		}
		got, err := a.Lookup(ctx, "soft.ok")
		if err != nil || got != c2 {
			t.Errorf("Lookup = %+v, %v; want %+v", got, err, c2)
		}
		if got.Session.CreatedUnixMs != 5 || got.Session.State != "active" {
			t.Errorf("stored session = %+v; want created 5 kept, state active", got.Session)
		}
		// An old copy of the same ownership still passes the fence.
		if _, err := a.Update(ctx, c, registry.Session{ID: "ok", State: "suspended"}); err != nil {
			t.Errorf("Update(same fence, older modrev) err = %v; want nil", err)
		}
		if err := a.Release(ctx, c); err != nil {
			t.Errorf("Release err = %v; want nil", err)
		}
		if err := a.Release(ctx, c); !errors.Is(err, registry.ErrFenced) {
			t.Errorf("second Release err = %v; want ErrFenced", err)
		}
		if _, err := a.Update(ctx, registry.Claim{Key: "soft.ok"}, registry.Session{ID: "ok"}); !errors.Is(err, registry.ErrFenced) {
			t.Errorf("Update(zero fence) err = %v; want ErrFenced", err)
		}
	})
}

// TestLeaseLoss: when a server's lease goes (Close, or revoked by someone
// else), Done closes, its record and claims vanish at once, it can no longer
// write, and other servers are untouched.
func TestLeaseLoss(t *testing.T) {
	t.Parallel()
	eps := etcdtest.Start(t)
	admin := etcdtest.Client(t, eps)
	other := newReg(t, etcdtest.Client(t, eps), "bystander")
	ctx := tctx(t)
	if _, _, err := other.Claim(ctx, "soft.bystander", registry.Session{ID: "b"}); err != nil {
		t.Fatal(err)
	}

	tests := []struct {
		name string
		lose func(t *testing.T, r *registry.Registry)
		why  []string // the reasons "registry lease lost" may be logged with; none: not logged
	}{
		{"close", func(t *testing.T, r *registry.Registry) {
			if err := r.Close(ctx); err != nil {
				t.Fatalf("Close err = %v; want nil", err)
			}
			if err := r.Close(ctx); err != nil {
				t.Fatalf("second Close err = %v; want nil", err)
			}
		}, nil},
		{"revoked by another client", func(t *testing.T, r *registry.Registry) {
			if _, err := admin.Revoke(ctx, r.LeaseID()); err != nil {
				t.Fatal(err)
			}
			// Writes fail at once, even before the keepalive notices.
			if _, _, err := r.Claim(ctx, "soft.after", registry.Session{ID: "x"}); !errors.Is(err, registry.ErrLeaseLost) {
				t.Errorf("Claim after revoke err = %v; want ErrLeaseLost", err)
			}
			// The record poll may notice first.
		}, []string{"lease not found by a write", "server record deleted"}},
	}
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			id := fmt.Sprintf("victim-%d", i)
			var logs testutil.LockedBuffer
			r := newReg(t, etcdtest.Client(t, eps), id, registry.WithLogger(hclog.New(&hclog.LoggerOptions{Output: &logs, Level: hclog.Info})))
			var claims []registry.Claim
			for j := range 3 {
				c, _, err := r.Claim(ctx, fmt.Sprintf("soft.v%d-%d", i, j), registry.Session{ID: "v"})
				if err != nil {
					t.Fatal(err)
				}
				claims = append(claims, c)
			}
			select {
			case <-r.Done():
				t.Fatal("Done closed before the lease was lost")
			default:
			}
			tt.lose(t, r)
			waitClosed(t, r.Done(), "Done")
			// The loss is logged once, with what noticed it (keepAlive logs
			// before Done closes).
			lost := 0
			for _, l := range strings.Split(logs.String(), "\n") {
				if strings.Contains(l, "registry lease lost") {
					lost++
					if !slices.ContainsFunc(tt.why, func(w string) bool { return strings.Contains(l, "reason=\""+w+"\"") }) {
						t.Errorf("logged %q; want a reason of %q", l, tt.why)
					}
				}
			}
			if want := min(len(tt.why), 1); lost != want {
				t.Errorf("%d lines log the lease lost; want %d:\n%s", lost, want, logs.String())
			}

			if _, err := other.Server(ctx, id); !errors.Is(err, registry.ErrNotFound) {
				t.Errorf("Server(%s) err = %v; want ErrNotFound", id, err)
			}
			for _, c := range claims {
				if _, err := other.Lookup(ctx, c.Key); !errors.Is(err, registry.ErrNotFound) {
					t.Errorf("Lookup(%s) err = %v; want ErrNotFound", c.Key, err)
				}
			}
			if _, _, err := r.Claim(ctx, "soft.late", registry.Session{ID: "x"}); !errors.Is(err, registry.ErrLeaseLost) {
				t.Errorf("Claim err = %v; want ErrLeaseLost", err)
			}
			if _, err := r.Update(ctx, claims[0], registry.Session{ID: "v"}); !errors.Is(err, registry.ErrLeaseLost) {
				t.Errorf("Update err = %v; want ErrLeaseLost", err)
			}
			if err := r.UpdateServer(ctx, func(s *registry.ServerRecord) { s.Draining = true }); !errors.Is(err, registry.ErrLeaseLost) {
				t.Errorf("UpdateServer err = %v; want ErrLeaseLost", err)
			}
			if _, err := other.Lookup(ctx, "soft.bystander"); err != nil {
				t.Errorf("bystander's claim: %v; want present", err)
			}
			select {
			case <-other.Done():
				t.Error("bystander's Done closed")
			default:
			}
		})
	}
}

// TestServerIDCollision: a second process cannot register a server id whose
// record is held by a live lease; a failed New leaves no lease behind; once
// the holder is gone the id is free.
func TestServerIDCollision(t *testing.T) {
	t.Parallel()
	eps := etcdtest.Start(t)
	cli := etcdtest.Client(t, eps)
	ctx := tctx(t)
	first, err := registry.New(ctx, etcdtest.Client(t, eps), registry.ServerRecord{ID: "s1", Addr: "a:1"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { first.Close(context.Background()) })
	leases := func() int { return leaseCount(t, ctx, cli) }
	before := leases()
	_, err = registry.New(ctx, cli, registry.ServerRecord{ID: "s1", Addr: "b:1"})
	if !errors.Is(err, registry.ErrServerIDInUse) {
		t.Fatalf("second New err = %v; want ErrServerIDInUse", err)
	}
	if got := leases(); got != before {
		t.Errorf("leases after failed New = %d; want %d", got, before)
	}
	if rec, err := first.Server(ctx, "s1"); err != nil || rec.Addr != "a:1" {
		t.Errorf("Server(s1) = %+v, %v; want the first record", rec, err)
	}
	if err := first.Close(ctx); err != nil {
		t.Fatal(err)
	}
	second, err := registry.New(ctx, cli, registry.ServerRecord{ID: "s1", Addr: "b:1"})
	if err != nil {
		t.Fatalf("New after Close err = %v; want nil", err)
	}
	if err := second.Close(ctx); err != nil {
		t.Fatal(err)
	}

	for _, id := range []string{"", "a/b", ".."} {
		if _, err := registry.New(ctx, cli, registry.ServerRecord{ID: id}); !errors.Is(err, registry.ErrInvalidKey) {
			t.Errorf("New(%q) err = %v; want ErrInvalidKey", id, err)
		}
	}
}

// TestListings: Servers and Sessions list every server's entries (more than
// one page), skip garbage, and UpdateServer is visible to others.
func TestListings(t *testing.T) {
	t.Parallel()
	eps := etcdtest.Start(t)
	cli := etcdtest.Client(t, eps)
	// 1200 claims are about listing, not lease health: a lease whose safe
	// window outlasts a slow machine's (or the race detector's) renewal
	// delays, so no claim is refused as overdue.
	a := newReg(t, etcdtest.Client(t, eps), "s1", registry.WithLeaseTTL(30*time.Second))
	b := newReg(t, etcdtest.Client(t, eps), "s2", registry.WithLeaseTTL(30*time.Second))
	ctx := tctx(t)

	const perServer = 600 // 1200 in all: more than two list pages
	var wg sync.WaitGroup
	errc := make(chan error, 8)
	for w := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := w; i < 2*perServer; i += 8 {
				r := a
				if i%2 == 1 {
					r = b
				}
				if _, won, err := r.Claim(ctx, fmt.Sprintf("soft.list-%04d", i), registry.Session{ID: fmt.Sprint(i)}); err != nil || !won {
					errc <- fmt.Errorf("claim %d: won %v, err %v", i, won, err)
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errc)
	for err := range errc {
		t.Fatal(err)
	}
	// Garbage written by hand is skipped, not fatal.
	if _, err := cli.Put(ctx, "/hotdesk/sessions/soft.garbage", "{not json"); err != nil {
		t.Fatal(err)
	}
	if _, err := cli.Put(ctx, "/hotdesk/sessions/deeper/path", `{"id":"x"}`); err != nil {
		t.Fatal(err)
	}

	claims, err := a.Sessions(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if got, want := len(claims), 2*perServer; got != want {
		t.Fatalf("len(Sessions) = %d; want %d", got, want)
	}
	perOwner := map[string]int{}
	for i, c := range claims {
		if want := fmt.Sprintf("soft.list-%04d", i); c.Key != want {
			t.Fatalf("Sessions[%d].Key = %q; want %q", i, c.Key, want)
		}
		perOwner[c.Session.ServerID]++
	}
	if perOwner["s1"] != perServer || perOwner["s2"] != perServer {
		t.Errorf("claims per server = %v; want %d each", perOwner, perServer)
	}
	if _, err := a.Lookup(ctx, "soft.garbage"); !errors.Is(err, registry.ErrCorrupt) {
		t.Errorf("Lookup(garbage) err = %v; want ErrCorrupt", err)
	}

	if err := b.UpdateServer(ctx, func(s *registry.ServerRecord) {
		s.Draining = true
		s.Sessions = perServer
		s.ID = "hijack"
	}); err != nil {
		t.Fatalf("UpdateServer err = %v; want nil", err)
	}
	servers, err := a.Servers(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(servers) != 2 || servers[0].ID != "s1" || servers[1].ID != "s2" {
		t.Fatalf("Servers = %+v; want s1, s2", servers)
	}
	if s := servers[1]; !s.Draining || s.Sessions != perServer || s.Addr != "127.0.0.1:1" || s.StartedUnixMs == 0 {
		t.Errorf("s2 = %+v; want draining with %d sessions, addr kept, started set", s, perServer)
	}
	if s, err := a.Server(ctx, "s2"); err != nil || !s.Draining || s.Sessions != perServer {
		t.Errorf("Server(s2) = %+v, %v", s, err)
	}
	if _, err := a.Server(ctx, "hijack"); !errors.Is(err, registry.ErrNotFound) {
		t.Errorf("Server(hijack) err = %v; want ErrNotFound", err)
	}
}

// leaseCount returns how many leases etcd holds.
func leaseCount(t *testing.T, ctx context.Context, cli *clientv3.Client) int {
	t.Helper()
	resp, err := cli.Leases(ctx)
	if err != nil {
		t.Fatal(err)
	}
	return len(resp.Leases)
}
