//go:build linux

package linkemu

import (
	"context"
	"fmt"
	"io"
	"net"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/hotdesk/hotdesk/internal/testutil"
)

// TestLinkCarriesTCP: a TCP echo across the link, from a process in the
// namespace (ip netns exec) to a listener on the host end, arrives intact
// under delay and loss, and the link's counters saw the loss.
func TestLinkCarriesTCP(t *testing.T) {
	testutil.NeedTools(t, Tools...)
	if os.Geteuid() != 0 {
		if os.Getenv("CI") == "true" {
			t.Fatal("needs root (network namespaces)")
		}
		t.Skip("needs root")
	}
	p := Profile{Delay: 20 * time.Millisecond, Jitter: 5 * time.Millisecond, Loss: 0.05}
	l, err := New(fmt.Sprintf("lt%d", os.Getpid()%100000), fmt.Sprintf("10.213.%d", os.Getpid()%250), p, p)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	ln, err := net.Listen("tcp", l.HostAddr+":0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		defer c.Close()
		io.Copy(c, c)
	}()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	// The namespace's end has no route to anything but the host's end.
	const n = 300000
	cmd := l.Command(ctx, "timeout", "50", "bash", "-c", fmt.Sprintf(
		"exec 3<>/dev/tcp/%s/%d; head -c %d /dev/zero >&3 & head -c %d <&3 | wc -c",
		l.HostAddr, ln.Addr().(*net.TCPAddr).Port, n, n))
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("%v: %s", err, out)
	}
	if got := strings.TrimSpace(string(out)); got != strconv.Itoa(n) {
		t.Fatalf("echoed %s bytes; want %d", got, n)
	}
	up, down := l.Stats()
	if up.Dropped == 0 || down.Dropped == 0 {
		t.Errorf("dropped up %d, down %d packets; want some each way at 5%% loss", up.Dropped, down.Dropped)
	}
	t.Logf("up %+v down %+v", up, down)
}
