package registry_test

import (
	"errors"
	"slices"
	"testing"

	"github.com/hotdesk/hotdesk/registry"
)

// TestOrphanIndex: each server writes its orphans' records of a token
// under its lease, forced to its own id; a token's listing has every
// server's and no other token's (one whose name the first's begins
// with included); a deletion removes one; a server's records leave with
// its lease; a token or session that is no valid key is refused.
func TestOrphanIndex(t *testing.T) {
	t.Parallel()
	_, regs := newGroup(t, "a", "b")
	a, b := regs[0], regs[1]
	ctx := tctx(t)
	put := func(r *registry.Registry, token, session string, created int64) {
		t.Helper()
		o := registry.OrphanRecord{Token: token, SessionID: session, ServerID: "forged", User: "una", CreatedUnixMs: created}
		if err := r.PutOrphan(ctx, o); err != nil {
			t.Fatal(err)
		}
	}
	put(a, "uid.01", "s-a1", 1)
	put(a, "uid.01", "s-a2", 2)
	put(b, "uid.01", "s-b1", 3)
	put(b, "uid.012", "s-b2", 4)
	list := func(token string) []string {
		t.Helper()
		os, err := b.Orphans(ctx, token)
		if err != nil {
			t.Fatal(err)
		}
		var out []string
		for _, o := range os {
			if o.Token != token || o.User != "una" {
				t.Fatalf("record %+v listed for %s", o, token)
			}
			out = append(out, o.ServerID+"/"+o.SessionID)
		}
		slices.Sort(out)
		return out
	}
	if got, want := list("uid.01"), []string{"a/s-a1", "a/s-a2", "b/s-b1"}; !slices.Equal(got, want) {
		t.Fatalf("orphans of uid.01: %v; want %v", got, want)
	}
	if err := a.DeleteOrphan(ctx, "uid.01", "s-a1"); err != nil {
		t.Fatal(err)
	}
	if err := a.DeleteOrphan(ctx, "uid.01", "s-a1"); err != nil {
		t.Fatalf("deleting an absent record: %v; want none", err)
	}
	if got, want := list("uid.01"), []string{"a/s-a2", "b/s-b1"}; !slices.Equal(got, want) {
		t.Fatalf("after a deletion: %v; want %v", got, want)
	}
	if err := a.Close(ctx); err != nil {
		t.Fatal(err)
	}
	if got, want := list("uid.01"), []string{"b/s-b1"}; !slices.Equal(got, want) {
		t.Fatalf("after a's lease was revoked: %v; want %v", got, want)
	}
	if got, want := list("uid.012"), []string{"b/s-b2"}; !slices.Equal(got, want) {
		t.Fatalf("orphans of uid.012: %v; want %v", got, want)
	}
	for _, o := range []registry.OrphanRecord{{Token: "uid/01", SessionID: "s-x"}, {Token: "uid.01", SessionID: "../s"}, {Token: "uid.01"}} {
		if err := b.PutOrphan(ctx, o); !errors.Is(err, registry.ErrInvalidKey) {
			t.Errorf("PutOrphan(%+v): %v; want ErrInvalidKey", o, err)
		}
	}
	if _, err := b.Orphans(ctx, "a/b"); !errors.Is(err, registry.ErrInvalidKey) {
		t.Errorf("Orphans(a/b): %v; want ErrInvalidKey", err)
	}
}
