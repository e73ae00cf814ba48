package netsrc

import "testing"

func TestHostAndSource(t *testing.T) {
	for _, tc := range []struct{ addr, host, source string }{
		{"192.0.2.7:4000", "192.0.2.7", "192.0.2.7"},
		{"192.0.2.7", "192.0.2.7", "192.0.2.7"},
		{"[::ffff:192.0.2.7]:4000", "192.0.2.7", "192.0.2.7"},
		{"[2001:db8:1:2:aaaa::1]:4000", "2001:db8:1:2:aaaa::1", "2001:db8:1:2::/64"},
		{"[2001:db8:1:2:bbbb::9]:4000", "2001:db8:1:2:bbbb::9", "2001:db8:1:2::/64"},
		{"[2001:db8:1:3::1]:4000", "2001:db8:1:3::1", "2001:db8:1:3::/64"},
		{"[fe80::1%eth0]:4000", "fe80::1%eth0", "fe80::/64"},
		{"/run/hotdesk.sock", "/run/hotdesk.sock", "/run/hotdesk.sock"},
		{"", "", ""},
	} {
		if got := Host(tc.addr); got != tc.host {
			t.Errorf("Host(%q) = %q; want %q", tc.addr, got, tc.host)
		}
		if got := Source(tc.addr); got != tc.source {
			t.Errorf("Source(%q) = %q; want %q", tc.addr, got, tc.source)
		}
	}
}
