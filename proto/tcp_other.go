//go:build !linux

package proto

import "net"

// BoundRetransmits does nothing here: only Linux caps a connection's
// retransmission timeout.
func BoundRetransmits(c net.Conn) bool { return false }
