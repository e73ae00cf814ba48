package proto_test

import (
	"bytes"
	"errors"
	"reflect"
	"strings"
	"testing"

	"github.com/fxamacker/cbor/v2"
	"github.com/hotdesk/hotdesk/proto"
)

func TestSamplesCoverEveryType(t *testing.T) {
	s := samples()
	if got, want := len(s), len(proto.Types()); got != want {
		t.Fatalf("samples cover %d types; want %d", got, want)
	}
	for _, typ := range proto.Types() {
		body, ok := s[typ]
		if !ok {
			t.Fatalf("no sample for %v", typ)
		}
		// Every field is set, so omitempty cannot hide a broken key.
		v := reflect.ValueOf(body).Elem()
		for i := range v.NumField() {
			if v.Field(i).IsZero() {
				t.Errorf("sample %v: field %s is zero", typ, v.Type().Field(i).Name)
			}
		}
	}
	if got, want := proto.Types()[len(proto.Types())-1], proto.TypeAttachOK; got != want {
		t.Errorf("last type = %v; want %v", got, want)
	}
}

func TestEncodeDecodeRoundTrip(t *testing.T) {
	for typ, body := range samples() {
		t.Run(typ.String(), func(t *testing.T) {
			payload, err := proto.Encode(typ, body)
			if err != nil {
				t.Fatal(err)
			}
			got, err := proto.Decode(payload)
			if err != nil {
				t.Fatal(err)
			}
			if want := (proto.Msg{Type: typ, Body: body}); !reflect.DeepEqual(got, want) {
				t.Fatalf("got = %+v; want %+v", got, want)
			}
			// A value body encodes exactly like a pointer body, and the
			// encoding is deterministic.
			again, err := proto.Encode(typ, reflect.ValueOf(body).Elem().Interface())
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(again, payload) {
				t.Fatalf("value encoding = %x; want %x", again, payload)
			}
		})
	}
}

// TestWireLayout pins the envelope and integer keys, so a change to the Go
// structs that would change the wire is caught.
func TestWireLayout(t *testing.T) {
	tests := []struct {
		body any
		want string
	}{
		// {1: 13, 2: {1: 5}}
		{&proto.Ping{Seq: 5}, "a2 01 0d 02 a1 01 05"},
		// {1: 3, 2: {1: "uid.01"}}: Reader omitted when empty.
		{proto.TokenInserted{Token: "uid.01"}, "a2 01 03 02 a1 01 66 7569642e3031"},
		// {1: 1, 2: {1: [1], 2: "t", 4: 1}}
		{&proto.Hello{Versions: []uint16{1}, TerminalID: "t", Hops: 1}, "a2 01 01 02 a3 01 81 01 02 61 74 04 01"},
		// {1: 12, 2: {1: 2, 2: ""}}
		{&proto.Error{Code: proto.ErrBadVersion}, "a2 01 0c 02 a2 01 02 02 60"},
	}
	for _, tc := range tests {
		typ, err := proto.TypeOf(tc.body)
		if err != nil {
			t.Fatal(err)
		}
		got, err := proto.Encode(typ, tc.body)
		if err != nil {
			t.Fatal(err)
		}
		if want := unhex(t, tc.want); !bytes.Equal(got, want) {
			t.Errorf("Encode(%T) = %x; want %x", tc.body, got, want)
		}
	}
}

func TestTypeOfAndNewBody(t *testing.T) {
	for typ, body := range samples() {
		for _, b := range []any{body, reflect.ValueOf(body).Elem().Interface()} {
			got, err := proto.TypeOf(b)
			if err != nil || got != typ {
				t.Errorf("TypeOf(%T) = %v, %v; want %v", b, got, err, typ)
			}
		}
		nb, err := proto.NewBody(typ)
		if err != nil {
			t.Fatal(err)
		}
		if got, want := reflect.TypeOf(nb), reflect.TypeOf(body); got != want {
			t.Errorf("NewBody(%v) = %v; want %v", typ, got, want)
		}
	}
	for _, b := range []any{nil, 3, "hello", struct{}{}, &struct{ A int }{}, []proto.Hello{}} {
		if _, err := proto.TypeOf(b); !errors.Is(err, proto.ErrUnknownType) {
			t.Errorf("TypeOf(%#v) err = %v; want ErrUnknownType", b, err)
		}
	}
	for _, typ := range []proto.Type{0, 21, 999, 65535} {
		if _, err := proto.NewBody(typ); !errors.Is(err, proto.ErrUnknownType) {
			t.Errorf("NewBody(%d) err = %v; want ErrUnknownType", typ, err)
		}
	}
}

func TestEncodeRefuses(t *testing.T) {
	tests := []struct {
		name string
		typ  proto.Type
		body any
		want error
	}{
		{"type mismatch", proto.TypePing, &proto.Pong{Seq: 1}, proto.ErrMalformed},
		{"nil pointer", proto.TypePing, (*proto.Ping)(nil), proto.ErrMalformed},
		{"not a message", proto.TypePing, 5, proto.ErrUnknownType},
		{"nil body", proto.TypePing, nil, proto.ErrUnknownType},
		{"invalid utf-8", proto.TypeError, &proto.Error{Code: proto.ErrInternal, Message: "\xff\xfe"}, proto.ErrMalformed},
		{"too many versions", proto.TypeHello, &proto.Hello{Versions: make([]uint16, 65), TerminalID: "t"}, proto.ErrMalformed},
		{"too large", proto.TypeProof, &proto.Proof{Signature: make([]byte, proto.MaxFrame)}, proto.ErrFrameTooLarge},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			b, err := proto.Encode(tc.typ, tc.body)
			if !errors.Is(err, tc.want) || b != nil {
				t.Fatalf("got = %x, %v; want nil, %v", b, err, tc.want)
			}
		})
	}
}

// badPayloads are envelopes a peer may send that Decode must refuse, with
// the sentinel it must give.
var badPayloads = []struct {
	name string
	hex  string
	want error
}{
	{"empty", "", proto.ErrMalformed},
	{"garbage", "ff fe fd", proto.ErrMalformed},
	{"truncated cbor", "a2 01 0d 02 a1 01", proto.ErrMalformed},
	{"not a map", "01", proto.ErrMalformed},
	{"array envelope", "82 0d a1 01 05", proto.ErrMalformed},
	{"missing type", "a1 02 a0", proto.ErrMalformed},
	{"null type", "a2 01 f6 02 a0", proto.ErrMalformed},
	{"missing body", "a1 01 0d", proto.ErrMalformed},
	{"extra envelope key", "a3 01 0d 02 a1 01 05 03 00", proto.ErrMalformed},
	{"duplicate envelope key", "a3 01 0d 01 0d 02 a1 01 05", proto.ErrMalformed},
	{"duplicate body key", "a2 01 0d 02 a2 01 05 01 06", proto.ErrMalformed},
	{"duplicate unknown body key", "a2 01 0d 02 a3 01 05 18 63 01 18 63 02", proto.ErrMalformed},
	{"indefinite-length body", "a2 01 0d 02 bf 01 05 ff", proto.ErrMalformed},
	{"indefinite-length envelope", "bf 01 0d 02 a1 01 05 ff", proto.ErrMalformed},
	{"indefinite-length string", "a2 01 03 02 a1 01 7f 61 61 ff", proto.ErrMalformed},
	{"indefinite-length array", "a2 01 01 02 a2 01 9f 01 ff 02 61 74", proto.ErrMalformed},
	{"tagged body value", "a2 01 0d 02 a1 01 c1 05", proto.ErrMalformed},
	{"tagged envelope", "d8 37 a2 01 0d 02 a1 01 05", proto.ErrMalformed},
	{"tagged unknown field", "a2 01 0d 02 a2 01 05 18 63 c0 60", proto.ErrMalformed},
	{"trailing bytes", "a2 01 0d 02 a1 01 05 00", proto.ErrMalformed},
	{"two envelopes", "a2 01 0d 02 a1 01 05 a2 01 0d 02 a1 01 05", proto.ErrMalformed},
	{"deeply nested unknown field", "a2 01 0d 02 a2 01 05 18 63 81 81 81 81 81 81 81 81 81 81 00", proto.ErrMalformed},
	{"too many array elements", "a2 01 01 02 a2 02 61 74 01 98 41" + strings.Repeat("01", 65), proto.ErrMalformed},
	{"too many map pairs", "a2 01 0d 02 b8 41" + func() string {
		var s strings.Builder
		for i := range 65 {
			s.WriteString("18")
			s.WriteString(string("0123456789abcdef"[(0x20+i)>>4]) + string("0123456789abcdef"[(0x20+i)&15]))
			s.WriteString("00")
		}
		return s.String()
	}(), proto.ErrMalformed},
	{"simple value 0", "a2 01 0d 02 a1 01 e0", proto.ErrMalformed},
	{"undefined", "a2 01 0d 02 a1 01 f7", proto.ErrMalformed},
	{"simple value 255", "a2 01 0d 02 a1 01 f8 ff", proto.ErrMalformed},
	{"byte string key", "a2 01 0d 02 a2 41 01 05 01 06", proto.ErrMalformed},
	{"bool key", "a2 01 0d 02 a2 f5 05 01 06", proto.ErrMalformed},
	{"negative type", "a2 01 20 02 a0", proto.ErrMalformed},
	{"text type", "a2 01 61 31 02 a0", proto.ErrMalformed},
	{"body not a map", "a2 01 0d 02 80", proto.ErrMalformed},
	{"null body", "a2 01 0d 02 f6", proto.ErrMalformed},
	{"body field type mismatch", "a2 01 0d 02 a1 01 61 78", proto.ErrMalformed},
	{"uint16 overflow", "a2 01 01 02 a2 01 81 1a 00 01 11 70 02 61 74", proto.ErrMalformed},
	{"null version", "a2 01 01 02 a2 01 81 f6 02 61 74", proto.ErrMalformed},
	{"null among versions", "a2 01 01 02 a2 01 82 01 f6 02 61 74", proto.ErrMalformed},
	{"negative into uint", "a2 01 0d 02 a1 01 20", proto.ErrMalformed},
	{"float into uint", "a2 01 0d 02 a1 01 f9 3c 00", proto.ErrMalformed},
	{"invalid utf-8", "a2 01 03 02 a1 01 62 ff fe", proto.ErrMalformed},
	{"bytes into string", "a2 01 03 02 a1 01 42 61 62", proto.ErrMalformed},
	{"string into bytes", "a2 01 06 02 a1 03 62 61 62", proto.ErrMalformed},
	{"unknown type", "a2 01 19 03 e7 02 a0", proto.ErrUnknownType},
	{"type zero", "a2 01 00 02 a0", proto.ErrUnknownType},
	{"type 21", "a2 01 15 02 a1 01 05", proto.ErrUnknownType},
	{"type beyond uint16", "a2 01 1a 00 01 00 0d 02 a0", proto.ErrUnknownType},
}

func TestDecodeRefuses(t *testing.T) {
	for _, tc := range badPayloads {
		t.Run(tc.name, func(t *testing.T) {
			m, err := proto.Decode(unhex(t, tc.hex))
			if !errors.Is(err, tc.want) {
				t.Fatalf("err = %v; want %v", err, tc.want)
			}
			if m != (proto.Msg{}) {
				t.Fatalf("msg = %+v; want zero on error", m)
			}
		})
	}
	t.Run("oversized", func(t *testing.T) {
		if _, err := proto.Decode(make([]byte, proto.MaxFrame+1)); !errors.Is(err, proto.ErrFrameTooLarge) {
			t.Fatalf("err = %v; want ErrFrameTooLarge", err)
		}
	})
}

func TestDecodeAccepts(t *testing.T) {
	tests := []struct {
		name string
		hex  string
		want proto.Msg
	}{
		{"canonical", "a2 01 0d 02 a1 01 05", proto.Msg{Type: proto.TypePing, Body: &proto.Ping{Seq: 5}}},
		{"unknown body key ignored", "a2 01 0d 02 a2 01 05 18 63 63 616263", proto.Msg{Type: proto.TypePing, Body: &proto.Ping{Seq: 5}}},
		{"nested unknown body key ignored", "a2 01 0d 02 a2 18 63 a1 01 82 01 02 01 05", proto.Msg{Type: proto.TypePing, Body: &proto.Ping{Seq: 5}}},
		{"keys out of order", "a2 02 a1 01 05 01 0d", proto.Msg{Type: proto.TypePing, Body: &proto.Ping{Seq: 5}}},
		{"null field is absent", "a2 01 0d 02 a1 01 f6", proto.Msg{Type: proto.TypePing, Body: &proto.Ping{}}},
		{"null versions field is absent", "a2 01 01 02 a2 01 f6 02 61 74", proto.Msg{Type: proto.TypeHello, Body: &proto.Hello{TerminalID: "t"}}},
		{"null in an unknown array", "a2 01 01 02 a3 01 81 01 02 61 74 18 63 81 f6", proto.Msg{Type: proto.TypeHello, Body: &proto.Hello{Versions: []uint16{1}, TerminalID: "t"}}},
		{"text key ignored", "a2 01 0d 02 a2 61 31 07 01 05", proto.Msg{Type: proto.TypePing, Body: &proto.Ping{Seq: 5}}},
		{"negative key ignored", "a2 01 0d 02 a2 20 07 01 05", proto.Msg{Type: proto.TypePing, Body: &proto.Ping{Seq: 5}}},
		{"false", "a2 01 09 02 a1 06 f4", proto.Msg{Type: proto.TypeAttached, Body: &proto.Attached{}}},
		{"empty body", "a2 01 0e 02 a0", proto.Msg{Type: proto.TypePong, Body: &proto.Pong{}}},
		{"non-minimal integer", "a2 01 18 0d 02 a1 01 1b 0000000000000005", proto.Msg{Type: proto.TypePing, Body: &proto.Ping{Seq: 5}}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := proto.Decode(unhex(t, tc.hex))
			if err != nil {
				t.Fatal(err)
			}
			if !msgEqual(got, tc.want) {
				t.Fatalf("got = %+v; want %+v", got, tc.want)
			}
		})
	}
}

func TestNames(t *testing.T) {
	tests := []struct {
		got, want string
	}{
		{proto.TypeTokenInserted.String(), "token_inserted"},
		{proto.Type(99).String(), "type(99)"},
		{proto.ErrBadVersion.String(), "bad_version"},
		{proto.ErrorCode(99).Error(), "error_code(99)"},
		{proto.DetachTokenRemoved.String(), "token_removed"},
		{proto.DetachTakeover.String(), "takeover"},
		{proto.DetachLocked.String(), "locked"},
		{proto.DetachReason(99).String(), "detach_reason(99)"},
		{proto.PromptEchoOff.String(), "echo_off"},
		{proto.PromptInfo.String(), "info"},
		{proto.PromptStyle(99).String(), "prompt_style(99)"},
	}
	for _, tc := range tests {
		if tc.got != tc.want {
			t.Errorf("got = %q; want %q", tc.got, tc.want)
		}
	}
	for _, typ := range proto.Types() {
		if strings.HasPrefix(typ.String(), "type(") {
			t.Errorf("type %d has no name", typ)
		}
	}
	for c := proto.ErrBadFrame; c <= proto.ErrSessionLimited; c++ {
		if strings.HasPrefix(c.String(), "error_code(") {
			t.Errorf("error code %d has no name", c)
		}
	}
}

// helloPayload encodes a frame payload of type Hello whose body is body,
// as it stands, whatever the keys' types: what a peer sending a malformed
// Hello sends.
func helloPayload(t *testing.T, body map[int]any) []byte {
	t.Helper()
	raw, err := cbor.Marshal(body)
	if err != nil {
		t.Fatal(err)
	}
	payload, err := cbor.Marshal(map[int]any{1: uint64(proto.TypeHello), 2: cbor.RawMessage(raw)})
	if err != nil {
		t.Fatal(err)
	}
	return payload
}

// TestDecodeTypeErrorSpeaksWire: a field of the wrong CBOR type is named by
// its key and wire type (PROTOCOL.md §5), not by the Go struct and type
// the broker decodes into.
func TestDecodeTypeErrorSpeaksWire(t *testing.T) {
	// Hello with TerminalID (key 2) an integer.
	_, err := proto.Decode(helloPayload(t, map[int]any{1: []uint16{1}, 2: 7}))
	if !errors.Is(err, proto.ErrMalformed) {
		t.Fatalf("Decode: %v; want ErrMalformed", err)
	}
	msg := err.Error()
	if !strings.Contains(msg, "field 2: positive integer where text is expected") || strings.Contains(msg, "Go ") || strings.Contains(msg, "proto.") {
		t.Fatalf("Decode error %q; want it to name field 2 and its wire types, no Go names", msg)
	}
}

// TestDecodeIntegerRangeSpeaksWire: an integer out of its field's range
// (a negative one for an unsigned field, 300 for a uint8) is reported with
// the range the field takes, not as "positive integer where an integer is
// expected", which contradicts itself.
func TestDecodeIntegerRangeSpeaksWire(t *testing.T) {
	for _, tc := range []struct {
		body map[int]any
		want string
	}{
		{map[int]any{1: []uint16{1}, 2: "t", 4: 300}, "field 4: positive integer where an integer from 0 to 255 is expected"},
		{map[int]any{1: []int{-1}, 2: "t"}, "field 1: negative integer where an integer from 0 to 65535 is expected"},
		{map[int]any{1: []uint16{1}, 2: "t", 5: uint64(1) << 63}, "field 5: positive integer where an integer from -9223372036854775808 to 9223372036854775807 is expected"},
		{map[int]any{1: []uint16{1}, 2: "t", 4: "x"}, "field 4: UTF-8 text string where an integer from 0 to 255 is expected"},
	} {
		_, err := proto.Decode(helloPayload(t, tc.body))
		if !errors.Is(err, proto.ErrMalformed) || !strings.HasSuffix(err.Error(), tc.want) {
			t.Errorf("Decode(Hello %v): %v; want ErrMalformed ending %q", tc.body, err, tc.want)
		}
	}
}
