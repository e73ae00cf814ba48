package vcard

import (
	"net"
	"syscall"
)

// quickAck turns delayed ACKs off for the next reads. vpcd writes the
// length and the payload of a message in two sends; with Nagle on its side
// and delayed ACKs on ours each message would wait about 40 ms. Linux
// clears TCP_QUICKACK again by itself, so it is set before every read.
func quickAck(c net.Conn) {
	tc, ok := c.(*net.TCPConn)
	if !ok {
		return
	}
	rc, err := tc.SyscallConn()
	if err != nil {
		return
	}
	_ = rc.Control(func(fd uintptr) {
		_ = syscall.SetsockoptInt(int(fd), syscall.IPPROTO_TCP, syscall.TCP_QUICKACK, 1)
	})
}
