package proto_test

import (
	"bytes"
	"encoding/binary"
	"errors"
	"io"
	"runtime"
	"testing"
	"testing/iotest"

	"github.com/hotdesk/hotdesk/internal/countio"
	"github.com/hotdesk/hotdesk/proto"
)

func header(n uint32) []byte { return binary.BigEndian.AppendUint32(nil, n) }

func TestReadFrame(t *testing.T) {
	boom := errors.New("boom")
	tests := []struct {
		name     string
		r        io.Reader
		want     []byte
		wantErr  error
		consumed int64 // bytes ReadFrame may take from the stream; -1 = all
	}{
		{"one byte", bytes.NewReader(append(header(1), 0xa0)), []byte{0xa0}, nil, -1},
		{"max frame", bytes.NewReader(append(header(proto.MaxFrame), make([]byte, proto.MaxFrame)...)), make([]byte, proto.MaxFrame), nil, -1},
		{"one byte at a time", iotest.OneByteReader(bytes.NewReader(append(header(3), 1, 2, 3))), []byte{1, 2, 3}, nil, -1},
		{"clean eof", bytes.NewReader(nil), nil, io.EOF, 0},
		{"truncated header", bytes.NewReader([]byte{0, 0}), nil, proto.ErrMalformed, -1},
		{"truncated body", bytes.NewReader(append(header(50), 0xa2, 0x01)), nil, proto.ErrMalformed, -1},
		{"empty frame", bytes.NewReader(append(header(0), 0xa0)), nil, proto.ErrMalformed, 4},
		{"max frame + 1", bytes.NewReader(append(header(proto.MaxFrame+1), make([]byte, 100)...)), nil, proto.ErrFrameTooLarge, 4},
		{"huge", bytes.NewReader(append(header(0xffffffff), make([]byte, 100)...)), nil, proto.ErrFrameTooLarge, 4},
		{"header read error", iotest.ErrReader(boom), nil, boom, 0},
		{"body read error", io.MultiReader(bytes.NewReader(append(header(9), 1)), iotest.ErrReader(boom)), nil, boom, -1},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			cr := &countio.Reader{R: tc.r}
			got, err := proto.ReadFrame(cr)
			if !errors.Is(err, tc.wantErr) {
				t.Fatalf("err = %v; want %v", err, tc.wantErr)
			}
			if !bytes.Equal(got, tc.want) {
				t.Fatalf("got = %d bytes; want %d", len(got), len(tc.want))
			}
			if tc.consumed >= 0 && cr.N != tc.consumed {
				t.Fatalf("read %d bytes from the stream; want %d", cr.N, tc.consumed)
			}
		})
	}
	t.Run("clean eof is bare io.EOF", func(t *testing.T) {
		if _, err := proto.ReadFrame(bytes.NewReader(nil)); err != io.EOF {
			t.Fatalf("err = %#v; want io.EOF itself", err)
		}
	})
	t.Run("truncation is unexpected eof", func(t *testing.T) {
		_, err := proto.ReadFrame(bytes.NewReader(append(header(50), 1)))
		if !errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, io.EOF) {
			t.Fatalf("err = %v; want io.ErrUnexpectedEOF and not io.EOF", err)
		}
	})
}

// TestReadFrameOversizedAllocatesNothing checks that a huge length header
// is refused before the payload buffer exists.
func TestReadFrameOversizedAllocatesNothing(t *testing.T) {
	hdr := header(0x7fffffff)
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	for range 10 {
		if _, err := proto.ReadFrame(bytes.NewReader(hdr)); !errors.Is(err, proto.ErrFrameTooLarge) {
			t.Fatalf("err = %v; want ErrFrameTooLarge", err)
		}
	}
	runtime.ReadMemStats(&after)
	if got, limit := after.TotalAlloc-before.TotalAlloc, uint64(1<<20); got > limit {
		t.Fatalf("allocated %d bytes for 10 refused headers; want < %d", got, limit)
	}
}

func TestWriteFrame(t *testing.T) {
	var buf bytes.Buffer
	for _, p := range [][]byte{{1}, bytes.Repeat([]byte{2}, 300), make([]byte, proto.MaxFrame)} {
		if err := proto.WriteFrame(&buf, p); err != nil {
			t.Fatal(err)
		}
	}
	for _, want := range []int{1, 300, proto.MaxFrame} {
		got, err := proto.ReadFrame(&buf)
		if err != nil || len(got) != want {
			t.Fatalf("got = %d bytes, %v; want %d", len(got), err, want)
		}
	}
	if _, err := proto.ReadFrame(&buf); err != io.EOF {
		t.Fatalf("err = %v; want io.EOF", err)
	}
	if err := proto.WriteFrame(&buf, nil); !errors.Is(err, proto.ErrMalformed) {
		t.Fatalf("empty: err = %v; want ErrMalformed", err)
	}
	if err := proto.WriteFrame(&buf, make([]byte, proto.MaxFrame+1)); !errors.Is(err, proto.ErrFrameTooLarge) {
		t.Fatalf("oversized: err = %v; want ErrFrameTooLarge", err)
	}
	if buf.Len() != 0 {
		t.Fatalf("refused frames wrote %d bytes; want 0", buf.Len())
	}
}
