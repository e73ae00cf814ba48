package adminapitest

import (
	"context"
	"errors"
	"reflect"
	"testing"

	"github.com/hotdesk/hotdesk/cmd/internal/adminapi"
	"github.com/hotdesk/hotdesk/internal/event"
)

// The calls the admin API's own tests do not reach behave as the Backend
// contract says.

func TestEvents(t *testing.T) {
	b := New(State{Events: []event.Event{{Kind: "a"}, {Kind: "b"}, {Kind: "c"}}})
	for _, tc := range []struct {
		n    int
		want []string
	}{{-1, nil}, {0, nil}, {2, []string{"b", "c"}}, {5, []string{"a", "b", "c"}}} {
		var got []string
		err := b.Events(context.Background(), tc.n, false, func(e event.Event) error {
			got = append(got, string(e.Kind))
			return nil
		})
		if err != nil || !reflect.DeepEqual(got, tc.want) {
			t.Errorf("Events(n=%d) = %q, %v; want %q, nil", tc.n, got, err, tc.want)
		}
	}

	gone := errors.New("client gone")
	if err := b.Events(context.Background(), 3, true, func(event.Event) error { return gone }); err != gone {
		t.Errorf("Events with a failing emit = %v; want its error", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := b.Events(ctx, 1, true, func(event.Event) error { return nil }); err != nil {
		t.Errorf("Events(follow) after ctx ended = %v; want nil", err)
	}
}

func TestSuspendAndRevoke(t *testing.T) {
	ctx := context.Background()
	b := New(State{
		Sessions: []adminapi.SessionInfo{{ID: "s1", State: "active", Terminal: "t1"}, {ID: "s2", State: "active", Terminal: "t2"}},
		Pairings: []adminapi.PairingInfo{{ID: "ABC", User: "carl"}},
	})
	if err := b.DisconnectSession(ctx, "s1"); err != nil {
		t.Fatal(err)
	}
	if err := b.LockSession(ctx, "s2"); err != nil {
		t.Fatal(err)
	}
	sl, _ := b.Sessions(ctx, adminapi.SessionFilter{State: "suspended"})
	got := sl.Sessions
	want := []adminapi.SessionInfo{{ID: "s1", State: "suspended", LastTerminal: "t1"}, {ID: "s2", State: "suspended", LastTerminal: "t2"}}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("sessions after disconnect and lock = %+v; want %+v", got, want)
	}
	if err := b.LockSession(ctx, "nope"); !errors.Is(err, adminapi.ErrNotFound) {
		t.Errorf("LockSession(nope) = %v; want ErrNotFound", err)
	}

	if err := b.RevokePairing(ctx, "ABC"); err != nil {
		t.Fatal(err)
	}
	if ps, _ := b.Pairings(ctx); len(ps) != 0 {
		t.Errorf("pairings after revoke = %+v; want none", ps)
	}
	if err := b.RevokePairing(ctx, "ABC"); !errors.Is(err, adminapi.ErrNotFound) {
		t.Errorf("second revoke = %v; want ErrNotFound", err)
	}
}
