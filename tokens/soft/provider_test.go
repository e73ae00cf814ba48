package soft_test

import (
	"context"
	"errors"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/hotdesk/hotdesk/internal/clock"
	"github.com/hotdesk/hotdesk/tokens"
	"github.com/hotdesk/hotdesk/tokens/soft"
)

// waitBound is a safety bound for channel operations; never a timing assert.
const waitBound = 10 * time.Second

func recvEvent(t *testing.T, ch <-chan tokens.Event) tokens.Event {
	t.Helper()
	select {
	case ev, ok := <-ch:
		if !ok {
			t.Fatal("event channel closed; want an event")
		}
		return ev
	case <-time.After(waitBound):
		t.Fatal("no event")
	}
	return tokens.Event{}
}

func TestProvider(t *testing.T) {
	ks := mustOpen(t, filepath.Join(t.TempDir(), "k.json"))
	a, b := mustGenerate(t, ks, "a"), mustGenerate(t, ks, "b")
	start := time.Date(2030, 1, 2, 3, 4, 5, 0, time.UTC)
	clk := clock.NewFake(start)
	p := soft.NewProvider(ks, clk)

	// State is kept without watchers.
	if err := p.Insert("a"); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	ch, err := p.Watch(ctx)
	if err != nil {
		t.Fatal(err)
	}
	ch2, err := p.Watch(ctx)
	if err != nil {
		t.Fatal(err)
	}

	clk.Advance(time.Second)
	steps := []struct {
		name    string
		op      func(string) error
		key     string
		wantErr error
		want    *tokens.Event
	}{
		{"insert b", p.Insert, "b", nil, &tokens.Event{Kind: tokens.Inserted, Token: b.Token, Reader: "soft"}},
		{"remove a", p.Remove, "a", nil, &tokens.Event{Kind: tokens.Removed, Token: a.Token, Reader: "soft"}},
		{"remove a again", p.Remove, "a", soft.ErrNotInserted, nil},
		{"insert unknown", p.Insert, "zz", soft.ErrNotFound, nil},
		{"remove unknown", p.Remove, "zz", soft.ErrNotFound, nil},
		{"re-present b", p.Insert, "b", nil, &tokens.Event{Kind: tokens.Inserted, Token: b.Token, Reader: "soft"}},
	}
	for _, s := range steps {
		err := s.op(s.key)
		if s.wantErr == nil && err != nil || s.wantErr != nil && !errors.Is(err, s.wantErr) {
			t.Fatalf("%s: err = %v; want %v", s.name, err, s.wantErr)
		}
		if s.want == nil {
			continue
		}
		for _, c := range []<-chan tokens.Event{ch, ch2} {
			got := recvEvent(t, c)
			if got.Kind != s.want.Kind || got.Token != s.want.Token || got.Reader != s.want.Reader || !got.At.Equal(start.Add(time.Second)) {
				t.Errorf("%s: event = %+v; want %+v at %v", s.name, got, *s.want, start.Add(time.Second))
			}
		}
	}
	if got, want := p.Inserted(), []string{b.Token}; !slices.Equal(got, want) {
		t.Errorf("Inserted = %v; want %v", got, want)
	}

	cancel()
	for _, c := range []<-chan tokens.Event{ch, ch2} {
		select {
		case ev, ok := <-c:
			if ok {
				t.Errorf("event %+v after cancel; want closed channel", ev)
			}
		case <-time.After(waitBound):
			t.Fatal("channel not closed after cancel")
		}
	}
	// Events after the watchers left go nowhere and do not block.
	if err := p.Remove("b"); err != nil {
		t.Errorf("Remove without watchers = %v; want nil", err)
	}
	if _, err := p.Watch(ctx); err == nil {
		t.Errorf("Watch(cancelled ctx) = nil error; want error")
	}
}

// A watcher that does not read blocks Insert only until its context ends.
func TestProviderFullWatcherCancelled(t *testing.T) {
	ks := mustOpen(t, filepath.Join(t.TempDir(), "k.json"))
	mustGenerate(t, ks, "a")
	p := soft.NewProvider(ks, clock.Real{})
	ctx, cancel := context.WithCancel(context.Background())
	ch, err := p.Watch(ctx)
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		for range 100 {
			_ = p.Insert("a")
		}
	}()
	cancel()
	select {
	case <-done:
	case <-time.After(waitBound):
		t.Fatal("Insert blocked after the watcher's context ended")
	}
	n := 0
	for range ch {
		n++
	}
	if n > 100 {
		t.Errorf("got %d events; want at most 100", n)
	}
}
