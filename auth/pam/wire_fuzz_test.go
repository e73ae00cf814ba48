package pam

import (
	"bytes"
	"errors"
	"io"
	"testing"

	"github.com/hotdesk/hotdesk/internal/rlimit"
	"github.com/hotdesk/hotdesk/proto"
)

// FuzzReadMsg: a stream from the other end of the helper protocol (a
// helper whose PAM module misbehaves, or a parent gone wrong) yields
// messages carrying exactly one field, or an error wrapping ErrProtocol
// or a framing sentinel: never a panic. What decodes encodes and decodes
// again to the same message.
func FuzzReadMsg(f *testing.F) {
	var seed bytes.Buffer
	for _, m := range []*wireMsg{
		{Start: &wireStart{Service: "login", User: "alice", TTY: "hotdesk", OpenSession: true}},
		{Prompt: &wirePrompt{Style: 1, Text: "Password: "}},
		{Answer: &wireAnswer{Text: []byte("secret")}},
		{Result: &wireResult{OK: true, User: "alice", Env: []string{"A=1", "B=2"}, Reusable: true,
			Limits: []rlimit.Limit{{Resource: "nofile", Soft: 1024, Hard: 4096}}}},
		{Result: &wireResult{Stage: "authenticate", Code: 7, Message: "Authentication failure"}},
		{Close: &wireClose{}},
		{Closed: &wireClosed{Stage: "close_session"}},
		{Bind: &wireBind{PID: 4242}},
	} {
		seed.Reset()
		if err := writeMsg(&seed, m); err != nil {
			f.Fatal(err)
		}
		f.Add(bytes.Clone(seed.Bytes()))
	}
	f.Add(rawFrame([]byte{0xa2, 0x03, 0xa0, 0x05, 0xa0}))
	f.Add(rawFrame([]byte{0xa1, 0x04, 0xa2, 0x01, 0xf5, 0x06, 0x82, 0x63, 'A', '=', '1', 0xf6}))
	f.Add(rawFrame([]byte{0xa1, 0x04, 0xa1, 0x08, 0x81, 0xa1, 0x01, 0xf6}))
	f.Add(rawFrame([]byte{0xa1, 0x02, 0xa2, 0x01, 0x18, 0xff, 0x02, 0x60}))
	f.Add(append(rawFrame([]byte{0xa1, 0x05, 0xa0}), 0, 0, 0))
	f.Fuzz(func(t *testing.T, stream []byte) {
		r := bytes.NewReader(stream)
		for {
			m, err := readMsg(r)
			if err != nil {
				if m != nil {
					t.Fatalf("message %+v with error %v", m, err)
				}
				if err != io.EOF && !errors.Is(err, ErrProtocol) && !errors.Is(err, proto.ErrMalformed) && !errors.Is(err, proto.ErrFrameTooLarge) {
					t.Fatalf("error %v wraps no sentinel", err)
				}
				return
			}
			n := 0
			for _, set := range []bool{m.Start != nil, m.Prompt != nil, m.Answer != nil, m.Result != nil, m.Close != nil, m.Closed != nil, m.Bind != nil} {
				if set {
					n++
				}
			}
			if n != 1 {
				t.Fatalf("message %+v carries %d fields", m, n)
			}
			if m.Result != nil && (len(m.Result.Env) > maxEnv || len(m.Result.Limits) > maxEnv) {
				t.Fatalf("result of %d env entries and %d limits", len(m.Result.Env), len(m.Result.Limits))
			}
			var b bytes.Buffer
			if err := writeMsg(&b, m); err != nil {
				t.Fatalf("re-encode %+v: %v", m, err)
			}
			enc := bytes.Clone(b.Bytes())
			m2, err := readMsg(&b)
			if err != nil {
				t.Fatalf("decode re-encoding % X: %v", enc, err)
			}
			var b2 bytes.Buffer
			if err := writeMsg(&b2, m2); err != nil || !bytes.Equal(b2.Bytes(), enc) {
				t.Fatalf("encoding not stable: % X then % X (%v)", enc, b2.Bytes(), err)
			}
		}
	})
}
