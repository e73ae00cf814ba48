// Package netsrc names what a peer's address counts against in hotdesk's
// limits. Host is the peer's own address, for what one machine holds for
// long (its connections: the terminals of one office network share a /64,
// and each holds its connection as long as it runs, so a /64 limit would
// cap the office). Source is the peer's network, for every per-source
// limit of what is short-lived and cheap to ask for (connections before
// their first message, logins waiting in PAM, pairing-code attempts): an
// IPv4 address, or an IPv6 /64, since one host commonly holds a whole /64
// and would otherwise multiply its budget by 2^64.
package netsrc

import (
	"net"
	"net/netip"
)

// Host returns the IP address of addr ("host:port" or a bare address), an
// IPv4-mapped IPv6 address as IPv4; anything that is no IP
// address is returned as it is (minus a port).
func Host(addr string) string {
	if h, _, err := net.SplitHostPort(addr); err == nil {
		addr = h
	}
	if ip, err := netip.ParseAddr(addr); err == nil {
		return ip.Unmap().String()
	}
	return addr
}

// Source returns the source addr counts against in a per-source limit: its
// Host, or for an IPv6 address its /64 ("2001:db8:1:2::/64").
func Source(addr string) string {
	h := Host(addr)
	ip, err := netip.ParseAddr(h)
	if err != nil || ip.Is4() {
		return h
	}
	p, err := ip.Prefix(64)
	if err != nil {
		return h
	}
	return p.String()
}
