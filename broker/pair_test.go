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
