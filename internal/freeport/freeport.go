// Package freeport picks TCP ports for programs that must be given a port
// number before they listen (weston's RDP backend; the daemons the demo and
// the chaos harness start). A port is free when it is returned, but nothing
// reserves it: another process may take it before it is used, so code that
// can listen on port 0 itself should do that instead.
package freeport

import (
	"fmt"
	"net"
)

// Loopback returns a TCP port that is free on 127.0.0.1.
func Loopback() (int, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, fmt.Errorf("freeport: %w", err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port, nil
}
