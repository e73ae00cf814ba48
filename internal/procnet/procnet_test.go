package procnet

import (
	"net"
	"os"
	"testing"
)

// TestListenerOf: this process's listener is recognised as its own and as
// nobody else's; a port nobody listens on is nobody's.
func TestListenerOf(t *testing.T) {
	t.Parallel()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := ln.Addr().(*net.TCPAddr).Port
	if !ListenerOf("/proc", os.Getpid(), port) {
		t.Fatalf("port %d: not recognised as this process's listener", port)
	}
	if ListenerOf("/proc", os.Getppid(), port) {
		t.Fatalf("port %d: taken for the parent process's", port)
	}
	ln.Close()
	if ListenerOf("/proc", os.Getpid(), port) {
		t.Fatalf("port %d: still ours once closed", port)
	}
}
