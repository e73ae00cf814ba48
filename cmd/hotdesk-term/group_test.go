package main

import (
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/hotdesk/hotdesk/internal/testutil"

	"github.com/hotdesk/hotdesk/proto"
)

func fp(b byte) []byte { return bytes.Repeat([]byte{b}, 32) }

func TestGroupLearnAndCandidates(t *testing.T) {
	t.Parallel()
	g, err := newGroup([]string{"a:1", "b:1"}, [][]byte{fp(1)}, nil, "")
	if err != nil {
		t.Fatal(err)
	}
	if !g.trusted(fp(1)) || g.trusted(fp(2)) {
		t.Fatalf("trusted(pin) = %v, trusted(other) = %v; want true, false", g.trusted(fp(1)), g.trusted(fp(2)))
	}
	changed := g.learn([]proto.Member{
		{ServerID: "a", Addr: "a:1", Fingerprint: fp(1)},
		{ServerID: "c", Addr: "c:1", Fingerprint: fp(3), Draining: true},
		{ServerID: "d", Addr: "d:1", Fingerprint: fp(4)},
		{ServerID: "bad-addr", Addr: "nope", Fingerprint: fp(5)},
		{ServerID: "bad-fp", Addr: "e:1", Fingerprint: []byte{1}},
	})
	if !changed {
		t.Error("learn = false; want true for a new list")
	}
	if !g.trusted(fp(3)) || !g.trusted(fp(4)) || g.trusted(fp(5)) {
		t.Errorf("after learn: trusted(c, d, bad-addr) = %v %v %v; want true true false", g.trusted(fp(3)), g.trusted(fp(4)), g.trusted(fp(5)))
	}
	got := g.candidates(context.Background(), "a:1")
	if want := []string{"b:1", "d:1", "c:1", "a:1"}; !slices.Equal(got, want) {
		t.Errorf("candidates(avoid a) = %v; want %v (configured, learned, draining, the lost one last)", got, want)
	}
	if g.learn(nil) || !g.trusted(fp(4)) {
		t.Error("an empty member list must change nothing")
	}
	// A new list replaces the learned one; configured pins stay.
	g.learn([]proto.Member{{ServerID: "x", Addr: "x:1", Fingerprint: fp(9)}})
	if g.trusted(fp(4)) || !g.trusted(fp(9)) || !g.trusted(fp(1)) {
		t.Error("learn must replace learned fingerprints and keep configured pins")
	}
}

func TestGroupSRV(t *testing.T) {
	t.Parallel()
	g, err := newGroup(nil, [][]byte{fp(1)}, nil, "_hotdesk._tcp.example.com")
	if err != nil {
		t.Fatal(err)
	}
	g.lookup = func(_ context.Context, service, proto, name string) (string, []*net.SRV, error) {
		if name != "_hotdesk._tcp.example.com" {
			return "", nil, errors.New("unexpected name " + name)
		}
		return "", []*net.SRV{{Target: "b1.example.com.", Port: 4500}, {Target: "b2.example.com.", Port: 4600}}, nil
	}
	if got, want := g.candidates(context.Background(), ""), []string{"b1.example.com:4500", "b2.example.com:4600"}; !slices.Equal(got, want) {
		t.Errorf("candidates = %v; want %v", got, want)
	}
}

func TestNewGroupErrors(t *testing.T) {
	t.Parallel()
	for _, tt := range []struct {
		name    string
		servers []string
		pins    [][]byte
		srv     string
	}{
		{"no address", nil, [][]byte{fp(1)}, ""},
		{"no anchor", []string{"a:1"}, nil, ""},
		{"bad address", []string{"a"}, [][]byte{fp(1)}, ""},
		{"short pin", []string{"a:1"}, [][]byte{{1, 2}}, ""},
	} {
		if _, err := newGroup(tt.servers, tt.pins, nil, tt.srv); err == nil {
			t.Errorf("%s: newGroup = nil error; want one", tt.name)
		}
	}
}

// TestGroupDialAny: a dead first candidate and an untrusted broker are
// passed over; the trusted live broker wins; a broker the group learned
// from a Welcome is trusted from then on.
func TestGroupDialAny(t *testing.T) {
	t.Parallel()
	trusted := startBroker(t, "b1", time.Minute)
	stranger := startBroker(t, "b2", time.Minute)
	dead := testutil.FreeAddr(t)
	g, err := newGroup([]string{dead, stranger.addr, trusted.addr}, [][]byte{trusted.fp}, nil, "")
	if err != nil {
		t.Fatal(err)
	}
	a, err := newAgent(Config{Group: g, TerminalID: "t", Keystore: mustKeystore(t), Timeout: waitBound})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	l, err := a.dial(ctx, target{})
	if err != nil {
		t.Fatalf("dial = %v; want the trusted broker", err)
	}
	trusted.accept()
	if l.addr != trusted.addr || l.welcome.ServerID != "b1" {
		t.Errorf("dialed %s (%s); want %s (b1)", l.addr, l.welcome.ServerID, trusted.addr)
	}
	l.close()
	if stranger.accepted.Load() != 0 {
		t.Errorf("the untrusted broker completed %d handshakes; want 0", stranger.accepted.Load())
	}

	only := []string{stranger.addr}
	if _, err := g.dialAny(ctx, only, dialStagger, func(ctx context.Context, addr string, cfg *tlsConfig) (*link, error) {
		return a.dialOne(ctx, target{addr: addr, tls: cfg})
	}); err == nil || !strings.Contains(err.Error(), "not a fingerprint of the group") {
		t.Fatalf("dial untrusted = %v; want a pin mismatch", err)
	}
	g.learn([]proto.Member{{ServerID: "b2", Addr: stranger.addr, Fingerprint: stranger.fp}})
	l, err = g.dialAny(ctx, only, dialStagger, func(ctx context.Context, addr string, cfg *tlsConfig) (*link, error) {
		return a.dialOne(ctx, target{addr: addr, tls: cfg})
	})
	if err != nil {
		t.Fatalf("dial learned member = %v; want success", err)
	}
	stranger.accept()
	l.close()
}

type tlsConfig = tls.Config

// TestDialAnyCancelled: a dial round whose context ends while its dials
// are still winding down waits for them without spinning on the ended
// context: the cancellation is reported once, next to each dial's error.
func TestDialAnyCancelled(t *testing.T) {
	t.Parallel()
	g, err := newGroup([]string{"a:1", "b:1"}, [][]byte{fp(1)}, nil, "")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	started := make(chan struct{}, 2)
	dial := func(ctx context.Context, addr string, _ *tls.Config) (*link, error) {
		started <- struct{}{}
		<-ctx.Done()
		time.Sleep(50 * time.Millisecond) // closing its half-open connection
		return nil, fmt.Errorf("dial %s: %w", addr, ctx.Err())
	}
	go func() {
		<-started
		<-started
		cancel()
	}()
	_, err = g.dialAny(ctx, []string{"a:1", "b:1"}, time.Millisecond, dial)
	var joined interface{ Unwrap() []error }
	if !errors.As(err, &joined) {
		t.Fatalf("dialAny = %v; want the joined errors of the round", err)
	}
	if n := len(joined.Unwrap()); n != 3 {
		t.Fatalf("dialAny returned %d errors; want 3 (the cancellation once, each dial's once)", n)
	}
}
