package proto_test

import (
	"crypto/tls"
	"net"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/hotdesk/hotdesk/internal/testutil"
	"github.com/hotdesk/hotdesk/proto"
	"github.com/hotdesk/hotdesk/proto/prototest"
)

// rtoMax is c's TCP_RTO_MAX_MS, or -1 when the kernel has none.
func rtoMax(t *testing.T, c net.Conn) time.Duration {
	t.Helper()
	rc, err := c.(*net.TCPConn).SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	v, gerr := -1, error(nil)
	if err := rc.Control(func(fd uintptr) { v, gerr = unix.GetsockoptInt(int(fd), unix.IPPROTO_TCP, unix.TCP_RTO_MAX_MS) }); err != nil {
		t.Fatal(err)
	}
	if gerr != nil {
		testutil.SkipOrFail(t, "kernel without TCP_RTO_MAX_MS (Linux ≥ 6.15): %v", gerr)
	}
	return time.Duration(v) * time.Millisecond
}

// TestDialBoundsRetransmits: a connection proto.Dial makes (a terminal's
// to its broker, to an attach gateway) sends a lost segment again within
// MaxRetransmit, whatever TCP's backoff would have waited: a radio link
// back after an outage is used within a second.
func TestDialBoundsRetransmits(t *testing.T) {
	cert := newCert(t)
	s := startServer(t, proto.ServerTLSConfig(cert), func(c *proto.Conn) { c.Recv() })
	c, err := dial(t, s.addr, prototest.PinnedTLS(t, s.pin))
	if err != nil {
		t.Fatal(err)
	}
	if got := rtoMax(t, c.NetConn().(*tls.Conn).NetConn()); got != proto.MaxRetransmit {
		t.Errorf("TCP_RTO_MAX_MS = %v; want %v", got, proto.MaxRetransmit)
	}
}
