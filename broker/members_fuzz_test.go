package broker

import (
	"bytes"
	"crypto/sha256"
	"encoding/json"
	"net"
	"strings"
	"testing"

	"github.com/hotdesk/hotdesk/proto"
	"github.com/hotdesk/hotdesk/registry"
)

// FuzzMemberOf: a server record in the registry (another member's, or a
// corrupted or hostile one) becomes a member of the Welcome only if a
// Welcome of MaxMembers such members encodes within a frame and decodes at
// the terminal, which keeps it: one bad record must not break every
// terminal's handshake.
func FuzzMemberOf(f *testing.F) {
	add := func(r registry.ServerRecord) {
		b, err := json.Marshal(r)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(r.ID, b)
	}
	fp := make([]byte, sha256.Size)
	add(registry.ServerRecord{ID: "srv-1", Addr: "10.0.0.7:4500", Fingerprint: fp, Draining: true})
	add(registry.ServerRecord{ID: "srv-1", Addr: "[2001:db8::1]:4500", Fingerprint: fp})
	add(registry.ServerRecord{ID: "srv-1", Addr: strings.Repeat("a", 253) + ":65535", Fingerprint: fp})
	add(registry.ServerRecord{ID: strings.Repeat("s", registry.MaxKeyLen), Addr: "h:1", Fingerprint: fp})
	// One record alone past a frame: every Welcome failed to encode.
	add(registry.ServerRecord{ID: "srv-1", Addr: strings.Repeat("a", proto.MaxFrame) + ":1", Fingerprint: fp})
	add(registry.ServerRecord{ID: "srv-1", Addr: "h", Fingerprint: fp})
	add(registry.ServerRecord{ID: "srv-1", Addr: "", Fingerprint: fp})
	f.Fuzz(func(t *testing.T, id string, val []byte) {
		var rec registry.ServerRecord
		if json.Unmarshal(val, &rec) != nil {
			return
		}
		if rec.ID == "" {
			rec.ID = id // as the registry fills it in from the key
		}
		m, ok := memberOf(rec)
		if !ok {
			return
		}
		if m.ServerID != rec.ID || m.Addr != rec.Addr || !bytes.Equal(m.Fingerprint, rec.Fingerprint) || m.Draining != rec.Draining {
			t.Fatalf("record %+v made member %+v", rec, m)
		}
		w := &proto.Welcome{Version: 1, ServerID: rec.ID, Nonce: make([]byte, proto.NonceLen), PingInterval: 1000}
		for range proto.MaxMembers {
			w.Members = append(w.Members, m)
		}
		b, err := proto.Encode(proto.TypeWelcome, w)
		if err != nil {
			t.Fatalf("welcome of %d members like %+v: %v", proto.MaxMembers, m, err)
		}
		msg, err := proto.Decode(b)
		if err != nil {
			t.Fatalf("welcome of %d members like %+v: the terminal refuses it: %v", proto.MaxMembers, m, err)
		}
		for _, got := range msg.Body.(*proto.Welcome).Members {
			if _, _, err := net.SplitHostPort(got.Addr); err != nil || len(got.Fingerprint) != sha256.Size || got.ServerID == "" {
				t.Fatalf("member %+v: a terminal drops it", got)
			}
		}
	})
}
