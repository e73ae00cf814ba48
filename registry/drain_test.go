package registry_test

import (
	"errors"
	"testing"

	"github.com/hotdesk/hotdesk/registry"
	"github.com/hotdesk/hotdesk/registry/etcdtest"
)

// TestDrain: drain flags are set and cleared by anyone, shown by Servers and
// Server, survive the drained server's restart, and the session count a
// server reports is shown next to them.
func TestDrain(t *testing.T) {
	t.Parallel()
	eps := etcdtest.Start(t)
	cli := etcdtest.Client(t, eps)
	a := newReg(t, cli, "s1")
	b := newReg(t, etcdtest.Client(t, eps), "s2")
	ctx := tctx(t)

	draining := func(r *registry.Registry) map[string]bool {
		t.Helper()
		servers, err := r.Servers(ctx)
		if err != nil {
			t.Fatal(err)
		}
		m := map[string]bool{}
		for _, s := range servers {
			m[s.ID] = s.Draining
		}
		return m
	}

	if err := a.SetDraining(ctx, "s2", true); err != nil {
		t.Fatalf("SetDraining(s2, true) err = %v; want nil", err)
	}
	if err := a.SetDraining(ctx, "s2", true); err != nil {
		t.Fatalf("second SetDraining(s2, true) err = %v; want nil", err)
	}
	if err := b.SetSessionCount(ctx, 7); err != nil {
		t.Fatalf("SetSessionCount err = %v; want nil", err)
	}
	tests := []struct {
		id   string
		want bool
	}{{"s1", false}, {"s2", true}, {"unregistered", false}}
	for _, tt := range tests {
		if got, err := b.Draining(ctx, tt.id); err != nil || got != tt.want {
			t.Errorf("Draining(%s) = %v, %v; want %v", tt.id, got, err, tt.want)
		}
	}
	if got := draining(a); len(got) != 2 || got["s1"] || !got["s2"] {
		t.Errorf("Servers draining = %v; want s2 only", got)
	}
	rec, err := a.Server(ctx, "s2")
	if err != nil || !rec.Draining || rec.Sessions != 7 {
		t.Errorf("Server(s2) = %+v, %v; want draining with 7 sessions", rec, err)
	}

	// The flag has no lease: it outlives the drained server's restart.
	if err := b.Close(ctx); err != nil {
		t.Fatal(err)
	}
	b2 := newReg(t, etcdtest.Client(t, eps), "s2")
	if got := draining(a); !got["s2"] {
		t.Errorf("after restart Servers draining = %v; want s2 still draining", got)
	}
	if err := b2.SetDraining(ctx, "s2", false); err != nil {
		t.Fatalf("SetDraining(s2, false) err = %v; want nil", err)
	}
	if err := b2.SetDraining(ctx, "s2", false); err != nil {
		t.Errorf("clearing an absent flag err = %v; want nil", err)
	}
	if got := draining(a); got["s2"] {
		t.Errorf("after clear Servers draining = %v; want none", got)
	}
	if rec, err := a.Server(ctx, "s2"); err != nil || rec.Draining {
		t.Errorf("Server(s2) after clear = %+v, %v; want not draining", rec, err)
	}

	for _, id := range []string{"", "a/b", ".."} {
		if err := a.SetDraining(ctx, id, true); !errors.Is(err, registry.ErrInvalidKey) {
			t.Errorf("SetDraining(%q) err = %v; want ErrInvalidKey", id, err)
		}
		if _, err := a.Draining(ctx, id); !errors.Is(err, registry.ErrInvalidKey) {
			t.Errorf("Draining(%q) err = %v; want ErrInvalidKey", id, err)
		}
	}
	if err := a.SetSessionCount(ctx, -1); err == nil {
		t.Errorf("SetSessionCount(-1) err = nil; want an error")
	}
}
