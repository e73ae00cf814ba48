package main

import (
	"context"
	"sync"
	"time"

	"github.com/hashicorp/go-hclog"

	"github.com/hotdesk/hotdesk/internal/clock"
)

// etcd's history: a cluster that never compacts it grows until its quota
// and then refuses every write (registry/history.go). The broker notes a
// revision and, every historyCheckInterval, whether a read at it is still
// answered: once it has been for historyMaxAge, or historyMaxRevisions
// later, the history is not being compacted, and the broker says so (a
// warn line, once, and an info line when it is compacted again) and
// exports how many revisions are kept (hotdesk_registry_history_revisions).

const (
	historyCheckInterval = 10 * time.Minute
	// historyMaxAge is far beyond any useful retention (the embedded etcd
	// keeps an hour).
	historyMaxAge = 24 * time.Hour
	// historyMaxRevisions is about 400 MB of etcd's database at the size
	// of a terminal record: a site of 1000 terminals writes it in 3 hours.
	historyMaxRevisions = 1_000_000
)

// historyStore is what historyWatch reads of the registry.
type historyStore interface {
	Revision(ctx context.Context) (int64, error)
	Compacted(ctx context.Context, rev int64) (bool, error)
}

// historyWatch tells whether etcd compacts its history.
type historyWatch struct {
	log          hclog.Logger
	maxAge       time.Duration
	maxRevisions int64

	mu      sync.Mutex
	baseRev int64     // a revision still readable at the last check (0: none yet)
	baseAt  time.Time // when it was current, by the daemon's clock
	kept    int64     // revisions since baseRev, at the last check
	warned  bool
}

func newHistoryWatch(log hclog.Logger) *historyWatch {
	return &historyWatch{log: log, maxAge: historyMaxAge, maxRevisions: historyMaxRevisions}
}

// check compares what etcd keeps with what it should have compacted by
// now; a read that fails is tried at the next check.
func (w *historyWatch) check(ctx context.Context, now time.Time, store historyStore) {
	w.mu.Lock()
	defer w.mu.Unlock()
	cur, err := store.Revision(ctx)
	if err != nil {
		return
	}
	if w.baseRev == 0 || cur < w.baseRev {
		// The first check, or etcd went back in time (restored from a
		// snapshot): a revision it holds is the base.
		w.baseRev, w.baseAt, w.kept = cur, now, 0
		return
	}
	compacted, err := store.Compacted(ctx, w.baseRev)
	if err != nil {
		return
	}
	if compacted {
		if w.warned {
			w.log.Info("etcd compacts its history again")
			w.warned = false
		}
		w.baseRev, w.baseAt, w.kept = cur, now, 0
		return
	}
	w.kept = cur - w.baseRev
	if !w.warned && (now.Sub(w.baseAt) >= w.maxAge || w.kept >= w.maxRevisions) {
		w.log.Warn("etcd keeps its whole history: it never compacts it, so its database grows until its quota and then refuses every write (no login, no hot-desk); run every member with --auto-compaction-mode=periodic --auto-compaction-retention=1h",
			"since", w.baseAt.UTC().Format(time.RFC3339), "revisions", w.kept)
		w.warned = true
	}
}

// revisions is how many revisions etcd kept past one it should have
// compacted by now, at the last check (0 while none is known).
func (w *historyWatch) revisions() int64 {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.kept
}

// run checks at once and every historyCheckInterval until ctx ends.
func (w *historyWatch) run(ctx context.Context, clk clock.Clock, store historyStore) {
	for {
		w.check(ctx, clk.Now(), store)
		if !clock.Sleep(ctx, clk, historyCheckInterval) {
			return
		}
	}
}
