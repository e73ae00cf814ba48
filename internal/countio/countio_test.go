package countio_test

import (
	"errors"
	"io"
	"strings"
	"testing"
	"testing/iotest"

	"github.com/hotdesk/hotdesk/internal/countio"
)

func TestReader(t *testing.T) {
	r := &countio.Reader{R: iotest.HalfReader(strings.NewReader("hello, world"))}
	buf := make([]byte, 4)
	if n, err := r.Read(buf); n != 2 || err != nil || r.N != 2 {
		t.Fatalf("Read = %d, %v with N = %d; want 2, nil with N = 2", n, err, r.N)
	}
	if _, err := io.ReadAll(r); err != nil || r.N != 12 {
		t.Fatalf("after ReadAll: err = %v, N = %d; want nil, 12", err, r.N)
	}

	boom := errors.New("boom")
	r = &countio.Reader{R: io.MultiReader(strings.NewReader("abc"), iotest.ErrReader(boom))}
	if _, err := io.ReadAll(r); !errors.Is(err, boom) || r.N != 3 {
		t.Fatalf("ReadAll over a failing reader: err = %v, N = %d; want boom, 3", err, r.N)
	}
}
