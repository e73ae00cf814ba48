package proto_test

import (
	"bufio"
	"bytes"
	"encoding/hex"
	"os"
	"strconv"
	"strings"
	"testing"

	"github.com/fxamacker/cbor/v2"
	"github.com/google/go-cmp/cmp"

	"github.com/hotdesk/hotdesk/proto"
)

// previousFrames returns testdata/f477c10/frames.txt: every message type
// as the previous release encodes it (how they were made is said at the
// top of the file).
func previousFrames(t *testing.T) map[proto.Type][]byte {
	t.Helper()
	f, err := os.Open("testdata/f477c10/frames.txt")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	out := map[proto.Type][]byte{}
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := sc.Text()
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		typ, h, _ := strings.Cut(line, "\t")
		n, err1 := strconv.Atoi(typ)
		b, err2 := hex.DecodeString(h)
		if err1 != nil || err2 != nil {
			t.Fatalf("frames.txt: %q: %v %v", line, err1, err2)
		}
		out[proto.Type(n)] = b
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	return out
}

// TestPreviousReleaseFrames: a terminal or broker of the previous release
// and one of this release understand each other. Every message the
// previous release sends decodes here into the same message, which this
// release would encode byte for byte as the previous one did (its new
// fields are optional and absent); this release's messages differ from
// the previous one's only by its new optional fields (TokenInserted.Resume,
// Attached.ResumeKey), which a decoder of the previous release's message
// shapes skips (unknown body keys are ignored, PROTOCOL.md §2), keeping
// every field it knows. (Checked once against the previous release's own
// decoder as well: it decoded every sample of this release.)
func TestPreviousReleaseFrames(t *testing.T) {
	t.Parallel()
	old := previousFrames(t)
	if len(old) != len(samples()) {
		t.Fatalf("frames.txt has %d types; this release has %d", len(old), len(samples()))
	}
	for typ, b := range old {
		m, err := proto.Decode(b)
		if err != nil || m.Type != typ {
			t.Errorf("type %d of the previous release: %+v, %v", typ, m, err)
			continue
		}
		again, err := proto.Encode(typ, m.Body)
		if err != nil || !bytes.Equal(again, b) {
			t.Errorf("type %d: the previous release's %x decodes to %+v, encoded here as %x, %v", typ, b, m.Body, again, err)
		}
	}

	// This release's messages: the same as the previous release's but
	// for the new optional fields.
	newFields := map[proto.Type]func(any){
		proto.TypeTokenInserted: func(b any) { b.(*proto.TokenInserted).Resume = nil },
		proto.TypeAttached:      func(b any) { b.(*proto.Attached).ResumeKey = nil },
	}
	for typ, body := range samples() {
		if clear, ok := newFields[typ]; ok {
			clear(body)
		}
		b, err := proto.Encode(typ, body)
		if err != nil || !bytes.Equal(b, old[typ]) {
			t.Errorf("type %d without this release's new optional fields: %x, %v; the previous release sends %x", typ, b, err, old[typ])
		}
	}

	// The previous release's decoder of the two messages that gained a
	// field: its message shapes (f477c10's proto/messages.go) and this
	// package's body rules, which ignore unknown keys.
	type oldTokenInserted struct {
		Token  string `cbor:"1,keyasint"`
		Reader string `cbor:"2,keyasint,omitempty"`
	}
	type oldAttached struct {
		SessionID string `cbor:"1,keyasint"`
		Token     string `cbor:"2,keyasint"`
		User      string `cbor:"3,keyasint"`
		Endpoint  string `cbor:"4,keyasint"`
		Ticket    []byte `cbor:"5,keyasint,omitempty"`
		Resumed   bool   `cbor:"6,keyasint,omitempty"`
		ServerID  string `cbor:"7,keyasint"`
	}
	dm, err := proto.StrictDecOptions(8, 64, 64).DecMode()
	if err != nil {
		t.Fatal(err)
	}
	s := samples()
	for typ, tc := range map[proto.Type]struct{ got, want any }{
		proto.TypeTokenInserted: {new(oldTokenInserted), &oldTokenInserted{Token: "uid.04a1b2c3", Reader: "Virtual PCD 00 00"}},
		proto.TypeAttached: {new(oldAttached), &oldAttached{SessionID: "s-1", Token: "piv.0011", User: "alice", Endpoint: "rdp://127.0.0.1:3389",
			Ticket: bytes.Repeat([]byte{5}, 16), Resumed: true, ServerID: "b1"}},
	} {
		b, err := proto.Encode(typ, s[typ])
		if err != nil {
			t.Fatal(err)
		}
		var env struct {
			Type uint64          `cbor:"1,keyasint"`
			Body cbor.RawMessage `cbor:"2,keyasint"`
		}
		if err := dm.Unmarshal(b, &env); err != nil || env.Type != uint64(typ) {
			t.Fatalf("type %d: envelope %+v, %v", typ, env, err)
		}
		if err := dm.Unmarshal(env.Body, tc.got); err != nil {
			t.Errorf("type %d with this release's new field, read as the previous release reads it: %v", typ, err)
		} else if d := cmp.Diff(tc.want, tc.got); d != "" {
			t.Errorf("type %d read as the previous release reads it (-want +got):\n%s", typ, d)
		}
	}
}
