package splice

import (
	"io"
	"net"
	"testing"
	"time"
)

// TestConns: bytes cross both ways; when one end closes, Conns closes the
// other side and returns.
func TestConns(t *testing.T) {
	left, a := net.Pipe()
	b, right := net.Pipe()
	returned := make(chan struct{})
	go func() { defer close(returned); Conns(a, b) }()

	for _, tc := range []struct {
		name     string
		from, to net.Conn
	}{
		{"a to b", left, right},
		{"b to a", right, left},
	} {
		go func() { _, _ = tc.from.Write([]byte("ping")) }()
		buf := make([]byte, 4)
		if _, err := io.ReadFull(tc.to, buf); err != nil || string(buf) != "ping" {
			t.Fatalf("%s: read %q, %v; want ping", tc.name, buf, err)
		}
	}

	left.Close()
	select {
	case <-returned:
	case <-time.After(10 * time.Second): // a bound, not a timing assertion
		t.Fatal("Conns did not return after one side closed")
	}
	if _, err := right.Read(make([]byte, 1)); err != io.EOF {
		t.Errorf("read at the other side after the close = %v; want EOF", err)
	}
}
