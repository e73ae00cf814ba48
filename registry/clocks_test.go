package registry_test

import (
	"context"
	"testing"
	"time"

	"github.com/hotdesk/hotdesk/internal/clock"
	"github.com/hotdesk/hotdesk/registry"
	"github.com/hotdesk/hotdesk/registry/etcdtest"
)

// offsetClock is the real clock set d ahead (behind when d < 0), as a
// server's whose NTP stopped.
type offsetClock struct {
	clock.Real
	d time.Duration
}

func (c offsetClock) Now() time.Time { return time.Now().Add(c.d) }

// TestWatchClocks: a member reads the others' clocks as they put them,
// each stamped with when it arrived by its own clock: a clock an hour ahead
// is seen an hour ahead, less the time its reading took to come.
func TestWatchClocks(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(context.Background(), waitBound)
	defer cancel()
	eps := etcdtest.Start(t)
	b1 := newReg(t, etcdtest.Client(t, eps), "b1")
	b2 := newReg(t, etcdtest.Client(t, eps), "b2", registry.WithClock(offsetClock{d: time.Hour}))
	store, err := registry.NewStore(etcdtest.Client(t, eps), "b1", registry.WithLogger(testLogger(t)))
	if err != nil {
		t.Fatal(err)
	}
	readings := store.WatchClocks(ctx)
	// The watch starts in its own goroutine: put until a reading comes.
	var got registry.ClockReading
	for got.ServerID != "b2" {
		if err := b2.PutClock(ctx); err != nil {
			t.Fatal(err)
		}
		if err := b1.PutClock(ctx); err != nil {
			t.Fatal(err)
		}
		select {
		case got = <-readings:
		case <-time.After(100 * time.Millisecond):
		case <-ctx.Done():
			t.Fatal("no clock reading of b2")
		}
	}
	ahead := time.UnixMilli(got.UnixMs).Sub(got.Received)
	if ahead > time.Hour || ahead < 59*time.Minute {
		t.Errorf("b2's clock read %v ahead; want an hour less its delivery", ahead)
	}
	cancel()
	for range readings { // closed when ctx ends
	}
}
