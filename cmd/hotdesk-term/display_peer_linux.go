//go:build linux

package main

import (
	"bufio"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"strconv"
	"strings"
)

// errRelayPeer: a relay connection from a socket of another user.
var errRelayPeer = errors.New("display relay: peer is not this user's process")

// relayPeerOwn checks that the loopback connection c (accepted by the
// relay) comes from a socket owned by the agent's user: the kernel's
// socket tables (/proc/net/tcp, tcp6) list the peer's socket, keyed by
// its address and ours, with its owner's uid.
func relayPeerOwn(c net.Conn) error {
	local, ok1 := c.LocalAddr().(*net.TCPAddr)
	remote, ok2 := c.RemoteAddr().(*net.TCPAddr)
	if !ok1 || !ok2 {
		return fmt.Errorf("display relay: not a TCP connection")
	}
	for _, table := range []string{"/proc/net/tcp", "/proc/net/tcp6"} {
		f, err := os.Open(table)
		if err != nil {
			continue
		}
		uid, found, err := socketOwner(f, remote, local)
		f.Close()
		if err != nil {
			return fmt.Errorf("display relay: %s: %w", table, err)
		}
		if found {
			if uid != os.Getuid() {
				return fmt.Errorf("%w (uid %d)", errRelayPeer, uid)
			}
			return nil
		}
	}
	return fmt.Errorf("%w: its socket is not in the kernel's tables", errRelayPeer)
}

// maxSocketTable bounds what socketOwner reads of a table.
const maxSocketTable = 16 << 20

// socketOwner finds the socket with local address l and remote address r
// in a /proc/net/tcp or tcp6 table and returns its owner's uid.
func socketOwner(table io.Reader, l, r *net.TCPAddr) (uid int, found bool, err error) {
	sc := bufio.NewScanner(io.LimitReader(table, maxSocketTable))
	sc.Buffer(make([]byte, 0, 512), 4096)
	first := true
	for sc.Scan() {
		if first { // the header
			first = false
			continue
		}
		// sl local_address rem_address st tx_queue:rx_queue tr:tm->when retrnsmt uid ...
		f := strings.Fields(sc.Text())
		if len(f) < 8 {
			continue
		}
		la, err1 := parseProcAddr(f[1])
		ra, err2 := parseProcAddr(f[2])
		if err1 != nil || err2 != nil || !sameAddr(la, l) || !sameAddr(ra, r) {
			continue
		}
		n, err := strconv.Atoi(f[7])
		if err != nil {
			return 0, false, fmt.Errorf("uid %q: %w", f[7], err)
		}
		return n, true, nil
	}
	return 0, false, sc.Err()
}

// parseProcAddr parses "0100007F:1F90" (IPv4) or the 32-hex-digit IPv6
// form: the address as the kernel's 32-bit words in host (little-endian)
// order, the port in hex.
func parseProcAddr(s string) (*net.TCPAddr, error) {
	h, p, ok := strings.Cut(s, ":")
	if !ok {
		return nil, fmt.Errorf("address %q", s)
	}
	port, err := strconv.ParseUint(p, 16, 16)
	if err != nil {
		return nil, fmt.Errorf("port %q: %w", p, err)
	}
	b, err := hex.DecodeString(h)
	if err != nil || (len(b) != 4 && len(b) != 16) {
		return nil, fmt.Errorf("address %q", h)
	}
	ip := make(net.IP, len(b))
	for i := 0; i < len(b); i += 4 {
		binary.BigEndian.PutUint32(ip[i:], binary.LittleEndian.Uint32(b[i:]))
	}
	return &net.TCPAddr{IP: ip, Port: int(port)}, nil
}

// sameAddr compares addresses, an IPv4 one equal to its IPv4-mapped IPv6 form.
func sameAddr(a, b *net.TCPAddr) bool {
	return a.Port == b.Port && a.IP.Equal(b.IP)
}
