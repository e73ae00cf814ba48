package registry_test

import (
	"errors"
	"testing"

	"github.com/hotdesk/hotdesk/registry"
	"github.com/hotdesk/hotdesk/registry/etcdtest"
)

// TestLookupRoute: one local read returns a session's claim and its
// owner's record (for a redirect), as Lookup and Server would; absent
// keys, and a claim whose owner has no record, are told apart.
func TestLookupRoute(t *testing.T) {
	t.Parallel()
	eps, a, b := newPair(t)
	ctx := tctx(t)
	mine, won, err := b.Claim(ctx, "soft.route", registry.Session{ID: "r1"})
	if err != nil || !won {
		t.Fatalf("Claim = %v, %v; want won", won, err)
	}
	c, srv, err := a.LookupRoute(ctx, "soft.route")
	if err != nil {
		t.Fatalf("LookupRoute = %v", err)
	}
	if c.Fence != mine.Fence || c.Session.ID != "r1" || c.Session.ServerID != "s2" {
		t.Errorf("claim = %+v; want s2's claim r1 with fence %d", c, mine.Fence)
	}
	want, err := a.Server(ctx, "s2")
	if err != nil {
		t.Fatal(err)
	}
	if srv.ID != "s2" || srv.Addr != want.Addr || srv.StartedUnixMs != want.StartedUnixMs {
		t.Errorf("owner = %+v; want s2's record %+v", srv, want)
	}

	if _, _, err := a.LookupRoute(ctx, "soft.none"); !errors.Is(err, registry.ErrNotFound) {
		t.Errorf("LookupRoute(absent) = %v; want ErrNotFound", err)
	}
	if _, _, err := a.LookupRoute(ctx, "not a key"); err == nil || errors.Is(err, registry.ErrNotFound) {
		t.Errorf("LookupRoute(invalid) = %v; want an error other than ErrNotFound", err)
	}

	// A claim of a server whose record is gone (its lease ending): the
	// claim, and ErrNotFound for the owner.
	if _, err := etcdtest.Client(t, eps).Delete(ctx, registry.DefaultPrefix+"servers/s2"); err != nil {
		t.Fatal(err)
	}
	c, srv, err = a.LookupRoute(ctx, "soft.route")
	if !errors.Is(err, registry.ErrNotFound) || c.Session.ServerID != "s2" || srv.ID != "" {
		t.Errorf("LookupRoute(owner gone) = %+v, %+v, %v; want the claim, no record, ErrNotFound", c, srv, err)
	}
}
