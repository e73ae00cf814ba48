package registry_test

import (
	"context"
	"testing"
	"time"

	"github.com/hotdesk/hotdesk/internal/testutil"
	"github.com/hotdesk/hotdesk/registry"
	"github.com/hotdesk/hotdesk/registry/etcdtest"
)

func TestWatchTokens(t *testing.T) {
	t.Parallel()
	eps := etcdtest.Start(t)
	ctx := tctx(t)
	a, err := registry.New(ctx, etcdtest.Client(t, eps), registry.ServerRecord{ID: "wa"})
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close(context.Background())
	b, err := registry.New(ctx, etcdtest.Client(t, eps), registry.ServerRecord{ID: "wb"})
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close(context.Background())

	wctx, wcancel := context.WithCancel(ctx)
	changes := b.WatchTokens(wctx)
	if err := a.EnrollToken(ctx, registry.TokenRecord{ID: "uid.0a0b", Kind: "uid", User: "u"}); err != nil {
		t.Fatal(err)
	}
	if err := a.UpdateToken(ctx, "uid.0a0b", func(r *registry.TokenRecord) { r.Disabled = true }); err != nil {
		t.Fatal(err)
	}
	if err := a.DeleteToken(ctx, "uid.0a0b"); err != nil {
		t.Fatal(err)
	}
	want := []registry.TokenChange{
		{ID: "uid.0a0b", Record: registry.TokenRecord{ID: "uid.0a0b", Kind: "uid", User: "u"}},
		{ID: "uid.0a0b", Record: registry.TokenRecord{ID: "uid.0a0b", Kind: "uid", User: "u", Disabled: true}},
		{ID: "uid.0a0b", Deleted: true},
	}
	for i, w := range want {
		select {
		case got := <-changes:
			got.Record.RegisteredUnixMs = 0
			if got.ID != w.ID || got.Deleted != w.Deleted || got.Record.Disabled != w.Record.Disabled || got.Record.User != w.Record.User {
				t.Fatalf("change %d = %+v; want %+v", i, got, w)
			}
		case <-time.After(10 * time.Second):
			t.Fatalf("change %d never arrived", i)
		}
	}
	testutil.ClosesOnCancel(t, wcancel, changes, waitBound)
}

// TestWatchTokensGapDeletion: a token deleted while the watch is broken
// (and its history compacted away) is reported deleted after the re-list.
func TestWatchTokensGapDeletion(t *testing.T) {
	t.Parallel()
	direct, proxy, a, b := cutOffPair(t, "wa", "wb")
	ctx := tctx(t)
	for _, id := range []string{"uid.01", "uid.02"} {
		if err := a.EnrollToken(ctx, registry.TokenRecord{ID: id, Kind: "uid", User: "u"}); err != nil {
			t.Fatal(err)
		}
	}
	changes := b.WatchTokens(ctx)
	// A change that arrives proves the watch is established.
	if err := a.UpdateToken(ctx, "uid.02", func(r *registry.TokenRecord) { r.Label = "x" }); err != nil {
		t.Fatal(err)
	}
	if got := <-changes; got.ID != "uid.02" {
		t.Fatalf("first change = %+v; want uid.02", got)
	}
	proxy.Blackhole()
	proxy.CloseConns()
	if err := a.DeleteToken(ctx, "uid.01"); err != nil {
		t.Fatal(err)
	}
	compactAway(t, ctx, direct)
	proxy.Heal()
	timeout := time.After(30 * time.Second)
	for {
		select {
		case got := <-changes:
			t.Logf("change %+v", got)
			if got.ID == "uid.01" && got.Deleted {
				return
			}
		case <-timeout:
			t.Fatal("the deletion of uid.01 during the watch gap was never reported")
		}
	}
}
