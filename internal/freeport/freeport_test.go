package freeport

import (
	"net"
	"strconv"
	"testing"
)

// TestLoopback: the port returned can be listened on at once.
func TestLoopback(t *testing.T) {
	port, err := Loopback()
	if err != nil {
		t.Fatalf("Loopback: %v", err)
	}
	if port <= 0 || port > 65535 {
		t.Fatalf("Loopback = %d; want a port number", port)
	}
	ln, err := net.Listen("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(port)))
	if err != nil {
		t.Fatalf("listen on the port Loopback returned: %v", err)
	}
	ln.Close()
}
