package registry_test

import (
	"errors"
	"testing"
	"time"

	"github.com/hotdesk/hotdesk/registry"
	"github.com/hotdesk/hotdesk/registry/etcdtest"
)

// TestStoreOutlivesLease: the lease-independent Store keeps serving tokens,
// pairing codes and the token watch after the server's Registry (its lease)
// is closed and a new one taken, as the daemon's pairer and token watch do
// across a lease loss; a bad server id is refused.
func TestStoreOutlivesLease(t *testing.T) {
	t.Parallel()
	eps := etcdtest.Start(t)
	cli := etcdtest.Client(t, eps)
	ctx := tctx(t)
	if _, err := registry.NewStore(cli, "a/b"); !errors.Is(err, registry.ErrInvalidKey) {
		t.Fatalf("NewStore(bad id) err = %v; want ErrInvalidKey", err)
	}
	if _, err := registry.NewStore(nil, "s1"); err == nil {
		t.Fatal("NewStore(nil client) succeeded; want an error")
	}
	st := newStore(t, cli, "s1")
	first := newReg(t, cli, "s1")
	changes := st.WatchTokens(ctx)
	if err := first.Close(ctx); err != nil {
		t.Fatal(err)
	}
	second := newReg(t, cli, "s1") // the new lease
	if second.LeaseID() == first.LeaseID() {
		t.Fatal("the second Registry has the first one's lease")
	}

	if err := st.EnrollToken(ctx, registry.TokenRecord{ID: "soft.after", Kind: "soft", User: "alice"}); err != nil {
		t.Fatalf("EnrollToken on the store after the lease closed: %v", err)
	}
	if got, err := second.Token(ctx, "soft.after"); err != nil || got.User != "alice" {
		t.Fatalf("Token through the new lease = %+v, %v; want alice's", got, err)
	}
	// The watch starts asynchronously ("from now on"): touch the token
	// until a change of it arrives.
	deadline := time.After(waitBound)
	for seen := false; !seen; {
		if err := st.UpdateToken(ctx, "soft.after", func(r *registry.TokenRecord) { r.Label += "x" }); err != nil {
			t.Fatalf("UpdateToken on the store: %v", err)
		}
		select {
		case ch, ok := <-changes:
			if !ok {
				t.Fatal("the store's token watch closed after the lease changed")
			}
			seen = ch.ID == "soft.after"
		case <-time.After(200 * time.Millisecond):
		case <-deadline:
			t.Fatal("the store's token watch saw nothing after the lease changed")
		}
	}
	if err := st.PutPairing(ctx, registry.Pairing{ID: "code1", User: "alice", SecretHash: []byte{1}}, time.Minute); err != nil {
		t.Fatalf("PutPairing on the store: %v", err)
	}
	p, rev, err := st.Pairing(ctx, "code1")
	if err != nil || p.User != "alice" {
		t.Fatalf("Pairing = %+v, %v; want alice's", p, err)
	}
	if err := st.ConsumePairing(ctx, "code1", rev); err != nil {
		t.Fatalf("ConsumePairing: %v", err)
	}
}
