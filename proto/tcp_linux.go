package proto

import (
	"net"
	"time"

	"golang.org/x/sys/unix"
)

// BoundRetransmits caps c's TCP retransmission timeout at MaxRetransmit
// when c is a TCP connection and the kernel offers the cap
// (TCP_RTO_MAX_MS, Linux ≥ 6.15); elsewhere it does nothing. It reports
// whether the cap is set.
//
// The keepalive of the terminal protocol allows a few Ping intervals of
// silence; TCP doubles its retransmission timeout at every loss in a row
// (to 120 s), so a segment lost at the start of a one-second radio outage
// or a short burst of losses is sent again only some seconds after the
// link is back, and the silence outlasts the keepalive although the link
// came back well within it. With the cap, a link back is used within
// MaxRetransmit.
func BoundRetransmits(c net.Conn) bool {
	tc, ok := c.(*net.TCPConn)
	if !ok {
		return false
	}
	rc, err := tc.SyscallConn()
	if err != nil {
		return false
	}
	var serr error
	if err := rc.Control(func(fd uintptr) {
		serr = unix.SetsockoptInt(int(fd), unix.IPPROTO_TCP, unix.TCP_RTO_MAX_MS, int(MaxRetransmit/time.Millisecond))
	}); err != nil {
		return false
	}
	return serr == nil
}
