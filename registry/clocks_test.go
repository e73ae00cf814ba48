package registry_test

import (
	"context"
	"fmt"
	"slices"
	"strings"
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

// TestWatchClocksHostileIDs: a clock reading under an id no member could
// have (anyone who may write to etcd can put one) is never handed on: an
// id of hundreds of kilobytes, kept by every broker for each of up to 1024
// such "members", logged and exported as a metric label, or one with a
// newline or a slash. A reading of a member's id still comes.
func TestWatchClocksHostileIDs(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(context.Background(), waitBound)
	defer cancel()
	eps := etcdtest.Start(t)
	cli := etcdtest.Client(t, eps)
	b2 := newReg(t, cli, "b2")
	readings := newStore(t, cli, "b1").WatchClocks(ctx)
	put := func(id string) {
		t.Helper()
		v := fmt.Sprintf(`{"server_id":%q,"unix_ms":%d}`, id, time.Now().Add(time.Hour).UnixMilli())
		if _, err := cli.Put(ctx, registry.DefaultPrefix+"clocks/"+id, v); err != nil {
			t.Fatal(err)
		}
	}
	hostile := []string{strings.Repeat("x", 300_000), "a\nserver_id=b2", "..", "a b"}
	// The watch starts in its own goroutine: put until b2's reading comes,
	// the hostile ones before it each time.
	for seen := false; !seen; {
		for _, id := range hostile {
			put(id)
		}
		if err := b2.PutClock(ctx); err != nil {
			t.Fatal(err)
		}
		for more := true; more; {
			select {
			case c := <-readings:
				if c.ServerID == "b2" {
					seen = true
				} else if slices.Contains(hostile, c.ServerID) {
					t.Fatalf("a reading under id %.40q (%d bytes) handed on", c.ServerID, len(c.ServerID))
				}
			case <-time.After(100 * time.Millisecond):
				more = false
			case <-ctx.Done():
				t.Fatal("no clock reading of b2")
			}
		}
	}
}
