package main

import (
	"crypto/tls"
	"net"
	"net/http"
	"testing"
	"time"

	"github.com/hotdesk/hotdesk/internal/testutil"
)

// TestHTTPListenersBounded: connections to the dashboard and the metrics
// listener beyond httpMaxConns each (from many sources; one source gets
// httpMaxPerSource) wait in the kernel's queue instead of taking
// descriptors of hotdeskd's (an unauthenticated client opening
// thousands would otherwise starve sessions, etcd and PAM of them), and
// both serve again once the flood ends.
func TestHTTPListenersBounded(t *testing.T) {
	t.Parallel()
	testutil.NeedMatrix(t)
	g, dashAddr := startDashboardGroup(t, "daemon:admin-pw:hotdesk-admin\n", "")
	b := g.brokers[0]
	before, err := readProc(b.PID())
	if err != nil {
		t.Fatal(err)
	}
	const flood = 3 * httpMaxConns
	var conns []net.Conn
	defer func() {
		for _, c := range conns {
			c.Close()
		}
	}()
	for _, addr := range []string{dashAddr, b.metrics} {
		for i := range flood {
			// From many loopback addresses: one source gets only
			// httpMaxPerSource connections, the rest are closed at once.
			src := &net.TCPAddr{IP: net.IPv4(127, 0, 1, byte(1+i%(flood/httpMaxPerSource)))}
			d := net.Dialer{Timeout: 5 * time.Second, LocalAddr: src}
			c, err := d.Dial("tcp", addr)
			if err != nil {
				t.Fatalf("dial %s: %v", addr, err)
			}
			conns = append(conns, c)
		}
	}
	// Every connection within the bounds is accepted at once: wait until
	// the count settles, then hold it to the bound.
	var during procFigures
	testutil.WaitFor(t, 10*time.Second, "hotdeskd accepting up to its bound", func() bool {
		f, err := readProc(b.PID())
		settled := err == nil && f.FDs == during.FDs
		during = f
		return settled && f.FDs >= before.FDs+httpMaxConns
	})
	if limit := before.FDs + 2*httpMaxConns + 16; during.FDs > limit {
		t.Fatalf("hotdeskd holds %d descriptors with %d connections to each HTTP listener (%d before); want at most %d",
			during.FDs, flood, before.FDs, limit)
	}
	for _, c := range conns {
		c.Close()
	}
	conns = nil
	client := &http.Client{Timeout: 20 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{InsecureSkipVerify: true}}}
	for _, url := range []string{"https://" + dashAddr + "/login", "http://" + b.metrics + "/livez"} {
		testutil.WaitFor(t, 30*time.Second, url+" served after the flood", func() bool {
			resp, err := client.Get(url)
			if err != nil {
				return false
			}
			resp.Body.Close()
			return resp.StatusCode == http.StatusOK
		})
	}
}
