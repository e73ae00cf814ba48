package registry_test

import (
	"context"
	"testing"
	"time"

	"github.com/hotdesk/hotdesk/registry"
	"github.com/hotdesk/hotdesk/registry/etcdtest"
)

func TestWatchTokens(t *testing.T) {
	eps := etcdtest.Start(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
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
	wcancel()
	for range changes { // closed after cancel
	}
}
