package main

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"

	"github.com/hotdesk/hotdesk/registry"
	"github.com/hotdesk/hotdesk/registry/etcdtest"
)

// TestHistoryWatch: on a real etcd that never compacts, a broker says so
// (once) after a day, or sooner after a million revisions, counting the
// revisions kept; once the history is compacted it says so, and counts
// from there.
func TestHistoryWatch(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	eps := etcdtest.Start(t)
	cli := etcdtest.Client(t, eps)
	store, err := registry.NewStore(cli, "b1")
	if err != nil {
		t.Fatal(err)
	}
	put := func(n int) {
		t.Helper()
		for range n {
			if _, err := cli.Put(ctx, "/hotdesk/terminals/b1/t-1", "{}"); err != nil {
				t.Fatal(err)
			}
		}
	}
	var logs strings.Builder
	w := newHistoryWatch(hclog.New(&hclog.LoggerOptions{Output: &logs}))
	at := time.Unix(1_000_000, 0)
	w.check(ctx, at, store) // the baseline
	put(5)
	w.check(ctx, at.Add(historyMaxAge-time.Minute), store)
	if w.revisions() != 5 || logs.Len() != 0 {
		t.Fatalf("within a day: %d revisions kept, log %q; want 5, nothing said", w.revisions(), logs.String())
	}
	w.check(ctx, at.Add(historyMaxAge), store)
	w.check(ctx, at.Add(historyMaxAge+historyCheckInterval), store)
	if n := strings.Count(logs.String(), "etcd keeps its whole history"); n != 1 || !strings.Contains(logs.String(), "--auto-compaction-retention") {
		t.Fatalf("after a day: %d warnings; want one, saying how to compact:\n%s", n, logs.String())
	}
	// Compacted: said, and counted from there.
	resp, err := cli.Put(ctx, "/hotdesk/terminals/b1/t-1", "{}")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := cli.Compact(ctx, resp.Header.Revision); err != nil {
		t.Fatal(err)
	}
	w.check(ctx, at.Add(historyMaxAge+2*historyCheckInterval), store)
	if w.revisions() != 0 || !strings.Contains(logs.String(), "compacts its history again") {
		t.Fatalf("after a compaction: %d revisions, log:\n%s\nwant 0, and said", w.revisions(), logs.String())
	}
	// Many revisions in little time are told too.
	w.maxRevisions = 20
	put(20)
	w.check(ctx, at.Add(historyMaxAge+3*historyCheckInterval), store)
	if n := strings.Count(logs.String(), "etcd keeps its whole history"); n != 2 || w.revisions() != 20 {
		t.Errorf("20 revisions (the bound) in 10 minutes: %d warnings, %d revisions; want a second warning, 20", n, w.revisions())
	}
}

// fakeHistory is a historyStore whose revision the test sets.
type fakeHistory struct{ rev int64 }

func (f *fakeHistory) Revision(context.Context) (int64, error)        { return f.rev, nil }
func (f *fakeHistory) Compacted(context.Context, int64) (bool, error) { return false, nil }

// TestHistoryWatchRestored: etcd restored from a snapshot (its revision
// back below the base) starts the count again from what it holds; the
// base stayed in the future before, and the count was negative until
// etcd's revisions caught up.
func TestHistoryWatchRestored(t *testing.T) {
	t.Parallel()
	w := newHistoryWatch(hclog.NewNullLogger())
	at := time.Unix(1_000_000, 0)
	store := &fakeHistory{rev: 1000}
	w.check(context.Background(), at, store)
	store.rev = 1500
	w.check(context.Background(), at.Add(historyCheckInterval), store)
	if w.revisions() != 500 {
		t.Fatalf("%d revisions kept; want 500", w.revisions())
	}
	store.rev = 700 // restored
	w.check(context.Background(), at.Add(2*historyCheckInterval), store)
	store.rev = 760
	w.check(context.Background(), at.Add(3*historyCheckInterval), store)
	if w.revisions() != 60 {
		t.Errorf("after a restore: %d revisions kept; want 60, counted from the restored revision", w.revisions())
	}
}
