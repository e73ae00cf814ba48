package broker

import (
	"context"
	"fmt"
	"net"
	"strings"
	"testing"

	"github.com/hashicorp/go-hclog"

	"github.com/hotdesk/hotdesk/proto"
	"github.com/hotdesk/hotdesk/registry"
	"github.com/hotdesk/hotdesk/registry/pairing"
)

// fakePairer fails every Redeem with err.
type fakePairer struct{ err error }

func (f fakePairer) Redeem(context.Context, string, string, string, []byte, string) (registry.TokenRecord, error) {
	return registry.TokenRecord{}, f.err
}

// TestPairRefusalSaysWhy: a Pair refused for its key, kind or label (the
// code untouched, still valid) is not answered as if the code were bad, so
// a phone or terminal can tell the person to fix the key rather than ask
// for a new code; a bad code still gets the code's message.
func TestPairRefusalSaysWhy(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		err  error
		want string
	}{
		{"bad key", fmt.Errorf("pairing: redeem: %w: soft public key is a point of small order", pairing.ErrBadKey), "key"},
		{"bad code", fmt.Errorf("pairing: redeem: %w", pairing.ErrInvalidCode), "pairing code invalid, expired or used"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b := &Broker{log: hclog.NewNullLogger(), cfg: Config{Pairer: fakePairer{tt.err}}}
			peer, mine := net.Pipe()
			defer peer.Close()
			term := &terminal{b: b, id: "t-1", conn: proto.NewConn(mine)}
			defer term.conn.Close()
			go term.pair(context.Background(), &proto.Pair{Code: "AAAA-BBBB-CCCC", Kind: "soft", PublicKey: make([]byte, 32)})
			m, err := proto.NewConn(peer).Recv()
			if err != nil {
				t.Fatal(err)
			}
			e, ok := m.Body.(*proto.Error)
			if !ok || e.Code != proto.ErrPairing {
				t.Fatalf("got %+v; want Error{pairing}", m.Body)
			}
			if !strings.Contains(e.Message, tt.want) || tt.name == "bad key" && strings.Contains(e.Message, "code invalid") {
				t.Fatalf("message %q; want it to say %q", e.Message, tt.want)
			}
			if (e.Detail == proto.DetailKeyRefused) != (tt.name == "bad key") {
				t.Fatalf("detail %q; want %q only for a refused key", e.Detail, proto.DetailKeyRefused)
			}
		})
	}
}

// sourcePairer records the source of every Redeem and refuses it.
type sourcePairer struct{ sources chan string }

func (p sourcePairer) Redeem(_ context.Context, source, _, _ string, _ []byte, _ string) (registry.TokenRecord, error) {
	p.sources <- source
	return registry.TokenRecord{}, fmt.Errorf("pairing: redeem: %w", pairing.ErrInvalidCode)
}

// TestPairSourceIsTheLimitsSource: pairing attempts are rate-limited by the
// source every per-source limit uses (max_unauthenticated_per_source's):
// an IPv6 /64 is one source, so a host holding one does not get a failure
// budget, and a lockout, per address; an IPv4 address is its own.
func TestPairSourceIsTheLimitsSource(t *testing.T) {
	t.Parallel()
	p := sourcePairer{sources: make(chan string, 1)}
	b := &Broker{log: hclog.NewNullLogger(), cfg: Config{Pairer: p}}
	for _, tc := range []struct{ remote, want string }{
		{"[2001:db8:1:2::a]:40000", "2001:db8:1:2::/64"},
		{"[2001:db8:1:2:ffff::b]:40001", "2001:db8:1:2::/64"},
		{"[::ffff:192.0.2.7]:40002", "192.0.2.7"},
		{"192.0.2.8:40003", "192.0.2.8"},
	} {
		peer, mine := net.Pipe()
		term := &terminal{b: b, id: "t-1", remote: tc.remote, conn: proto.NewConn(mine)}
		go term.pair(context.Background(), &proto.Pair{Code: "AAAA-BBBB-CCCC", Kind: "soft", PublicKey: make([]byte, 32)})
		if _, err := proto.NewConn(peer).Recv(); err != nil {
			t.Fatal(err)
		}
		got := <-p.sources
		addr, err := net.ResolveTCPAddr("tcp", tc.remote)
		if err != nil {
			t.Fatal(err)
		}
		if got != tc.want || got != sourceOf(addr) {
			t.Errorf("pairing from %s counted against %q; want %q, the source of max_unauthenticated_per_source (%q)", tc.remote, got, tc.want, sourceOf(addr))
		}
		term.conn.Close()
		peer.Close()
	}
}
