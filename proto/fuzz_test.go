package proto_test

import (
	"bytes"
	"encoding/hex"
	"errors"
	"io"
	"reflect"
	"strings"
	"testing"

	"github.com/hotdesk/hotdesk/proto"
)

// FuzzDecode: Decode never panics, fails only with its sentinels, and
// whatever it accepts re-encodes and decodes to an equal message.
func FuzzDecode(f *testing.F) {
	for _, typ := range proto.Types() {
		b, err := proto.Encode(typ, samples()[typ])
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
		zero, _ := proto.NewBody(typ)
		if b, err = proto.Encode(typ, zero); err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	for _, bp := range badPayloads {
		b, err := hex.DecodeString(strings.ReplaceAll(bp.hex, " ", ""))
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	f.Fuzz(func(t *testing.T, payload []byte) {
		m, err := proto.Decode(payload)
		if err != nil {
			if !errors.Is(err, proto.ErrMalformed) && !errors.Is(err, proto.ErrUnknownType) && !errors.Is(err, proto.ErrFrameTooLarge) {
				t.Fatalf("error %v wraps no sentinel", err)
			}
			if m != (proto.Msg{}) {
				t.Fatalf("msg = %+v with error %v; want zero", m, err)
			}
			return
		}
		want, _ := proto.NewBody(m.Type)
		if reflect.TypeOf(m.Body) != reflect.TypeOf(want) {
			t.Fatalf("body %T for type %v; want %T", m.Body, m.Type, want)
		}
		again, err := proto.Encode(m.Type, m.Body)
		if err != nil {
			t.Fatalf("re-encode %+v: %v", m.Body, err)
		}
		m2, err := proto.Decode(again)
		if err != nil {
			t.Fatalf("decode re-encoding %x: %v", again, err)
		}
		if !msgEqual(m, m2) {
			t.Fatalf("re-decoded differs: %s", msgDiff(m, m2))
		}
		// The encoding is canonical: a second round trip is byte-identical.
		third, err := proto.Encode(m2.Type, m2.Body)
		if err != nil || !bytes.Equal(third, again) {
			t.Fatalf("encoding not stable: %x then %x (%v)", again, third, err)
		}
	})
}

// FuzzReadFrame: ReadFrame never panics or over-reads, and a payload it
// returns is exactly the announced bytes.
func FuzzReadFrame(f *testing.F) {
	for _, typ := range proto.Types() {
		b, err := proto.Encode(typ, samples()[typ])
		if err != nil {
			f.Fatal(err)
		}
		f.Add(append(header(uint32(len(b))), b...))
	}
	f.Add([]byte{})
	f.Add([]byte{0, 0})
	f.Add(header(0))
	f.Add(header(proto.MaxFrame + 1))
	f.Add(header(0xffffffff))
	f.Add(append(header(50), 0xa2, 0x01))
	f.Add(append(append(header(1), 0xa0), append(header(2), 0xa1, 0x01)...))
	f.Fuzz(func(t *testing.T, stream []byte) {
		r := bytes.NewReader(stream)
		for {
			before := r.Len()
			p, err := proto.ReadFrame(r)
			consumed := before - r.Len()
			if err != nil {
				switch {
				case err == io.EOF:
					if consumed != 0 {
						t.Fatalf("io.EOF after consuming %d bytes", consumed)
					}
				case errors.Is(err, proto.ErrFrameTooLarge):
					if consumed != 4 {
						t.Fatalf("oversized frame: consumed %d bytes; want only the header", consumed)
					}
				case !errors.Is(err, proto.ErrMalformed):
					t.Fatalf("error %v wraps no sentinel", err)
				}
				return
			}
			if len(p) == 0 || len(p) > proto.MaxFrame || consumed != 4+len(p) {
				t.Fatalf("payload %d bytes after consuming %d", len(p), consumed)
			}
			if !bytes.Equal(p, stream[len(stream)-before+4:len(stream)-before+consumed]) {
				t.Fatal("payload differs from the stream")
			}
			// Decoding whatever arrived must not panic either.
			proto.Decode(p)
		}
	})
}

// FuzzParseFingerprint: a pin (a terminal's config, a command line) is 32
// bytes or an error, and its canonical form parses back to the same bytes.
func FuzzParseFingerprint(f *testing.F) {
	fp := proto.Fingerprint([]byte("cert"))
	f.Add(proto.FormatFingerprint(fp))
	f.Add(strings.ToUpper(hex.EncodeToString(fp)))
	f.Add(" SHA256:" + strings.Repeat("ab:", 31) + "ab ")
	f.Add("sha256:")
	f.Add("sha256:0")
	f.Add("sha256:" + strings.Repeat("0", 66))
	f.Fuzz(func(t *testing.T, s string) {
		b, err := proto.ParseFingerprint(s)
		if err != nil {
			if b != nil {
				t.Fatalf("%q: %x with error %v", s, b, err)
			}
			return
		}
		if len(b) != 32 {
			t.Fatalf("%q: %d bytes", s, len(b))
		}
		again, err := proto.ParseFingerprint(proto.FormatFingerprint(b))
		if err != nil || !bytes.Equal(again, b) {
			t.Fatalf("%q: %x reads back as %x (%v)", s, b, again, err)
		}
	})
}
