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

// newLink is a link for the test's process, named prefix and the pid, on
// subnet 10.<octet>.<pid>; it fails (CI) or skips the test without root or
// ip(8). The cleanup removes it.
func newLink(t *testing.T, prefix string, octet int, up, down Profile) *Link {
	t.Helper()
	testutil.NeedTools(t, Tools...)
	if os.Geteuid() != 0 {
		if os.Getenv("CI") == "true" {
			t.Fatal("needs root (network namespaces)")
		}
		t.Skip("needs root")
	}
	pid := os.Getpid()
	l, err := New(fmt.Sprintf("%s%d", prefix, pid%100000), fmt.Sprintf("10.%d.%d", octet, pid%250), up, down)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	return l
}

// TestLinkCarriesTCP: a TCP echo across the link, from a process in the
// namespace (ip netns exec) to a listener on the host end, arrives intact
// under delay and loss, and the link's counters saw the loss.
func TestLinkCarriesTCP(t *testing.T) {
	p := Profile{Delay: 20 * time.Millisecond, Jitter: 5 * time.Millisecond, Loss: 0.05}
	l := newLink(t, "lt", 213, p, p)
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

// TestLinkRate: a bulk TCP transfer up a bottleneck of 200 KB/s with a
// queue of 50 KB arrives whole, no sooner than its size at that rate
// allows, and TCP filled the queue until the bottleneck dropped some of
// it (its tail drops); the other direction, with no bottleneck, dropped
// nothing.
func TestLinkRate(t *testing.T) {
	up := Profile{Delay: 10 * time.Millisecond, Rate: 200_000, Buffer: 10_000}
	down := Profile{Delay: 10 * time.Millisecond}
	if got, want := up.QueueDelay(), 50*time.Millisecond; got != want {
		t.Errorf("QueueDelay = %v; want %v", got, want)
	}
	l := newLink(t, "lr", 214, up, down)
	ln, err := net.Listen("tcp", l.HostAddr+":0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	type result struct {
		n       int64
		elapsed time.Duration
		err     error
	}
	got := make(chan result, 1)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			got <- result{err: err}
			return
		}
		defer c.Close()
		first := make([]byte, 1)
		if _, err := io.ReadFull(c, first); err != nil {
			got <- result{err: err}
			return
		}
		start := time.Now()
		n, err := io.Copy(io.Discard, c)
		got <- result{n + 1, time.Since(start), err}
	}()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	const n = 600_000
	cmd := l.Command(ctx, "timeout", "50", "bash", "-c", fmt.Sprintf(
		"exec 3<>/dev/tcp/%s/%d; head -c %d /dev/zero >&3", l.HostAddr, ln.Addr().(*net.TCPAddr).Port, n))
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("%v: %s", err, out)
	}
	r := <-got
	if r.err != nil || r.n != n {
		t.Fatalf("received %d bytes (%v); want %d", r.n, r.err, n)
	}
	// The payload alone, at the rate, without the headers: a lower bound.
	if least := time.Duration(n-1) * time.Second / time.Duration(up.Rate); r.elapsed < least {
		t.Errorf("%d bytes took %v; the bottleneck lets them through in no less than %v", n, r.elapsed, least)
	}
	us, ds := l.Stats()
	if us.Dropped == 0 {
		t.Errorf("the bottleneck dropped nothing of %d packets; want tail drops once TCP filled its queue", us.Packets)
	}
	if us.MaxQueued == 0 || us.MaxQueued > uint64(up.Buffer) {
		t.Errorf("at most %d bytes waited at the bottleneck; want some, no more than its queue's %d", us.MaxQueued, up.Buffer)
	}
	if ds.Dropped != 0 {
		t.Errorf("the direction without a bottleneck dropped %d packets", ds.Dropped)
	}
	t.Logf("%d bytes in %v (%.0f KB/s); up %+v down %+v", n, r.elapsed.Round(time.Millisecond), float64(n)/r.elapsed.Seconds()/1000, us, ds)
}

// TestQuietHost: while QuietHost is held, a new Link waits (its device
// and address would show on the host); released, it is made. A Link
// already up does not keep QuietHost waiting.
func TestQuietHost(t *testing.T) {
	up := newLink(t, "lq", 215, Profile{}, Profile{}) // root and ip(8) checked; up before the quiet
	release, err := QuietHost()
	if err != nil {
		t.Fatal(err)
	}
	type made struct {
		l   *Link
		err error
	}
	done := make(chan made, 1)
	pid := os.Getpid()
	go func() {
		l, err := New(fmt.Sprintf("lw%d", pid%100000), fmt.Sprintf("10.216.%d", pid%250), Profile{}, Profile{})
		done <- made{l, err}
	}()
	select {
	case m := <-done:
		release() // before Close, which waits for it
		if m.l != nil {
			m.l.Close()
		}
		t.Fatalf("a Link was made while the host was kept quiet (%v)", m.err)
	case <-time.After(500 * time.Millisecond):
	}
	release()
	m := <-done
	if m.err != nil {
		t.Fatal(m.err)
	}
	if err := m.l.Close(); err != nil {
		t.Error(err)
	}
	_ = up // closed by newLink's cleanup
}
