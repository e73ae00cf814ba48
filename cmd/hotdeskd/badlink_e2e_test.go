//go:build linux

package main

import (
	"context"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hotdesk/hotdesk/internal/linkemu"
	"github.com/hotdesk/hotdesk/internal/testutil"
)

// badLink is one link TestBadLinkSoak measures: each direction's profile
// (up: terminal → server) and whether an application in the session
// redraws its window without pause meanwhile (weston-simple-shm), so that
// the display stream fills what the link carries.
type badLink struct {
	up, down linkemu.Profile
	busy     bool
	// download: bulk TCP downloads (four connections, as a browser or an
	// updater opens) from the server's side to the terminal's run all
	// along (someone behind the same router fetching a file): they keep
	// the bottleneck's queue full.
	download bool
}

// each is a link whose two directions have the same profile.
func each(p linkemu.Profile) badLink { return badLink{up: p, down: p} }

// badLinks are the links TestBadLinkSoak measures, as a person at a
// terminal meets them: the round trip is split evenly between the two
// directions, the loss applies to each direction. The "dsl" and "slow"
// links are bottlenecks with a router's queue in front (the queue's depth
// as a time at the rate: how late a packet that finds it full arrives),
// filled by a desktop that keeps changing.
var badLinks = map[string]badLink{
	"rtt0":             each(linkemu.Profile{}), // the link's own cost: the baseline
	"rtt50-loss0.5":    each(linkemu.Profile{Delay: 25 * time.Millisecond, Jitter: 5 * time.Millisecond, Loss: 0.005}),
	"rtt150-loss2":     each(linkemu.Profile{Delay: 75 * time.Millisecond, Jitter: 10 * time.Millisecond, Loss: 0.02}),
	"rtt300-loss5":     each(linkemu.Profile{Delay: 150 * time.Millisecond, Jitter: 20 * time.Millisecond, Loss: 0.05}),
	"rtt50-out1s/20":   each(linkemu.Profile{Delay: 25 * time.Millisecond, Jitter: 5 * time.Millisecond, Period: 20 * time.Second, Outage: time.Second}),
	"rtt50-out1.5s/15": each(linkemu.Profile{Delay: 25 * time.Millisecond, Jitter: 5 * time.Millisecond, Period: 15 * time.Second, Outage: 1500 * time.Millisecond}),
	"rtt50-out5s/30":   each(linkemu.Profile{Delay: 25 * time.Millisecond, Jitter: 5 * time.Millisecond, Period: 30 * time.Second, Outage: 5 * time.Second}),
	// 4 Mbit/s down with a 0.5 s queue, 1 Mbit/s up with a 1 s queue.
	"dsl4m-busy": {
		up:   linkemu.Profile{Delay: 15 * time.Millisecond, Rate: 125_000, Buffer: 125_000},
		down: linkemu.Profile{Delay: 15 * time.Millisecond, Rate: 500_000, Buffer: 250_000},
		busy: true,
	},
	// 1 Mbit/s down, 512 kbit/s up, 1 s queues each way.
	"slow1m-busy": {
		up:   linkemu.Profile{Delay: 25 * time.Millisecond, Rate: 64_000, Buffer: 64_000},
		down: linkemu.Profile{Delay: 25 * time.Millisecond, Rate: 125_000, Buffer: 125_000},
		busy: true,
	},
	"dsl4m-download": {
		up:       linkemu.Profile{Delay: 15 * time.Millisecond, Rate: 125_000, Buffer: 125_000},
		down:     linkemu.Profile{Delay: 15 * time.Millisecond, Rate: 500_000, Buffer: 250_000},
		busy:     true,
		download: true,
	},
	"slow1m-download": {
		up:       linkemu.Profile{Delay: 25 * time.Millisecond, Rate: 64_000, Buffer: 64_000},
		down:     linkemu.Profile{Delay: 25 * time.Millisecond, Rate: 125_000, Buffer: 125_000},
		busy:     true,
		download: true,
	},
}

// needRootNetns fails (CI) or skips the test without root and ip(8).
func needRootNetns(t *testing.T) {
	t.Helper()
	testutil.NeedTools(t, linkemu.Tools...)
	if os.Geteuid() != 0 {
		if os.Getenv("CI") == "true" {
			t.Fatal("needs root: network namespaces and TUN devices")
		}
		t.Skip("needs root: network namespaces and TUN devices")
	}
}

var linkSeq atomic.Int32

// newBadLink is a namespace of the test's own behind link b; the cleanup
// removes it.
func newBadLink(t *testing.T, b badLink) *linkemu.Link {
	t.Helper()
	n := int(linkSeq.Add(1))
	l, err := linkemu.New(fmt.Sprintf("hdl%d-%d", os.Getpid()%10000, n), fmt.Sprintf("10.%d.%d", 200+os.Getpid()%50, n), b.up, b.down)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := l.Close(); err != nil {
			t.Error(err)
		}
	})
	return l
}

// freePortOn returns a free TCP address on host.
func freePortOn(t *testing.T, host string) string {
	t.Helper()
	ln, err := net.Listen("tcp", net.JoinHostPort(host, "0"))
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

// TestBadLinkSoak measures what a person at a terminal behind a bad link
// sees: hotdeskd (card+pin, weston RDP desktops) on the host, hotdesk-term
// with FreeRDP (under Xvfb) in a namespace behind the link. For each
// profile of HOTDESK_BADLINK (comma-separated names of badLinks, "all")
// for HOTDESK_BADLINK_SECS (default 150) each: hot-desk cycles (insert,
// PIN, attached, display stream spliced, desktop pixels on screen, 20 s
// held, removed) and, meanwhile, every connection the terminal lost and
// whether the session came back without the PIN. A measurement, run by
// hand:
//
//	HOTDESK_BADLINK=all go test -run TestBadLinkSoak -v -timeout 60m ./cmd/hotdeskd
//
// Without HOTDESK_BADLINK, a check of an ordinary bad Wi-Fi (150 ms round
// trip, 2 % loss each way) for one cycle: the desktop comes up on the
// terminal's screen and the terminal never loses its broker. Budget
// ≈ 50 s.
func TestBadLinkSoak(t *testing.T) {
	which := os.Getenv("HOTDESK_BADLINK")
	check := which == ""
	secs := 150
	if check {
		t.Parallel() // its own daemon, namespace and display
		which, secs = "rtt150-loss2", 1
	}
	needRootNetns(t)
	testutil.NeedTools(t, "xfreerdp", "Xvfb", "xwd")
	if s := os.Getenv("HOTDESK_BADLINK_SECS"); s != "" {
		secs, _ = strconv.Atoi(s)
	}
	var names []string
	if which == "all" {
		for n := range badLinks {
			names = append(names, n)
		}
		slices.Sort(names)
	} else {
		names = strings.Split(which, ",")
	}
	for _, name := range names {
		p, ok := badLinks[name]
		if !ok {
			t.Fatalf("no profile %q", name)
		}
		t.Run(name, func(t *testing.T) { soakLink(t, p, time.Duration(secs)*time.Second, check) })
	}
}

// soakLink runs hot-desk cycles for d behind link b; check: fail the
// test for a lost connection or a desktop that never showed.
func soakLink(t *testing.T, b badLink, d time.Duration, check bool) {
	if b.busy {
		testutil.NeedTools(t, "weston-simple-shm")
	}
	l := newBadLink(t, b)
	linkUp := time.Now()
	if b.download {
		startDownload(t, l)
	}
	e := startE2EAt(t, freePortOn(t, l.HostAddr), "", "card+pin", false, "", "compositor {\n  backend = \"rdp\"\n}")
	ks := e.enroll("pat")
	disp := testutil.StartXvfbs(t, 1)[0]
	blank := testutil.Screenshot(t, disp)
	ctx, cancel := context.WithTimeout(context.Background(), d+3*time.Minute)
	defer cancel()
	cmd := l.Command(ctx, filepath.Join(e.bin, "hotdesk-term"), "-server", e.addr, "-pin", e.pin, "-id", "t-1",
		"-keystore", ks, "-json", "-display", "xfreerdp /v:{addr} /cert:ignore /u:x /p:x /size:800x600 /bpp:24", "run")
	cmd.Env = append(os.Environ(), "DISPLAY="+disp)
	evs, in := testutil.StartEvents(t, cmd, 256)

	type cycle struct{ attached, stream, pixels time.Duration }
	var (
		cycles                         []cycle
		lost, resumed, repin, connects int
		errs                           []string
		shown                          bool // the card is in and was attached: a reconnect should resume it
		reconnecting                   bool
		busy                           bool // the busy application runs
	)
	evTime := func(ev map[string]any) time.Time {
		if s, ok := ev["time"].(string); ok {
			if tm, err := time.Parse(time.RFC3339Nano, s); err == nil {
				return tm
			}
		}
		return time.Now()
	}
	// handle books an event; it returns it for the caller's wait.
	handle := func(ev map[string]any) {
		switch ev["event"] {
		case "connected":
			connects++
		case "disconnected":
			lost++
			reconnecting = shown
			t.Logf("%s: lost: %v", evTime(ev).Format("15:04:05.000"), ev["error"])
		case "prompt":
			if reconnecting {
				repin++
			}
			fmt.Fprintln(in, "answer 2468")
		case "attached":
			shown = true
			if reconnecting {
				if ev["resumed"] == true {
					resumed++
				}
				reconnecting = false
			}
		case "error":
			errs = append(errs, fmt.Sprint(ev["name"], ": ", ev["message"]))
		}
	}
	await := func(want string, within time.Duration) (map[string]any, bool) {
		timeout := time.After(within)
		for {
			select {
			case ev, ok := <-evs:
				if !ok {
					t.Fatal("hotdesk-term ended")
				}
				handle(ev)
				if ev["event"] == want {
					return ev, true
				}
			case <-timeout:
				return nil, false
			}
		}
	}
	// drain handles the events of the next d.
	drain := func(d time.Duration) { await("", d) }
	if _, ok := await("connected", time.Minute); !ok {
		t.Fatal("never connected")
	}
	end := time.Now().Add(d)
	for time.Now().Before(end) {
		start := time.Now()
		fmt.Fprintln(in, "insert default")
		var c cycle
		if ev, ok := await("attached", time.Minute); ok {
			c.attached = evTime(ev).Sub(start)
			if b.busy && !busy {
				// Redraws its window at every frame.
				busy = true
				e.runInSession(fmt.Sprint(ev["session"]), "weston-simple-shm")
			}
		} else {
			t.Errorf("cycle %d: not attached within a minute", len(cycles))
		}
		if ev, ok := await("stream", time.Minute); ok {
			c.stream = evTime(ev).Sub(start)
		}
		// The desktop's pixels on the terminal's screen.
		for time.Since(start) < time.Minute {
			drain(200 * time.Millisecond)
			if changed(testutil.Screenshot(t, disp), blank) >= desktopVisible {
				c.pixels = time.Since(start)
				break
			}
		}
		if check && c.pixels == 0 {
			t.Errorf("cycle %d: the desktop never showed on the terminal's screen", len(cycles)+1)
		}
		cycles = append(cycles, c)
		t.Logf("cycle %d: attached %v, stream %v, pixels %v", len(cycles), c.attached.Round(time.Millisecond),
			c.stream.Round(time.Millisecond), c.pixels.Round(time.Millisecond))
		drain(17 * time.Second) // not a whole outage period: cycles and outages drift apart
		fmt.Fprintln(in, "remove default")
		shown = false
		await("detached", 30*time.Second)
		drain(3 * time.Second)
	}
	up, down := l.Stats()
	med := func(f func(cycle) time.Duration) string {
		var ds []time.Duration
		for _, c := range cycles {
			ds = append(ds, f(c))
		}
		slices.Sort(ds)
		if len(ds) == 0 {
			return "-"
		}
		return fmt.Sprintf("%v/%v", ds[len(ds)/2].Round(time.Millisecond), ds[len(ds)-1].Round(time.Millisecond))
	}
	t.Logf("RESULT %s: cycles %d; insert→attached p50/max %s; →stream %s; →pixels %s; lost %d (resumed without PIN %d, PIN asked again %d), connects %d; errors %q; packets up %d (dropped %d) down %d (dropped %d); down %.0f KB/s, most queued up %v down %v",
		t.Name(), len(cycles), med(func(c cycle) time.Duration { return c.attached }), med(func(c cycle) time.Duration { return c.stream }),
		med(func(c cycle) time.Duration { return c.pixels }), lost, resumed, repin, connects, errs,
		up.Packets, up.Dropped, down.Packets, down.Dropped, float64(down.Bytes)/time.Since(linkUp).Seconds()/1000,
		queued(b.up, up), queued(b.down, down))
	if check && (lost > 0 || len(errs) > 0) {
		t.Errorf("the terminal lost its broker %d times (errors %q); want never", lost, errs)
	}
	fmt.Fprintln(in, "quit")
}

// queued is the most that waited at p's bottleneck, as a delay ("-"
// without one).
func queued(p linkemu.Profile, s linkemu.Stats) string {
	if p.Rate == 0 {
		return "-"
	}
	return (time.Duration(s.MaxQueued) * time.Second / time.Duration(p.Rate)).Round(time.Millisecond).String()
}

// startDownload runs four bulk downloads across l, from a sender on the
// host to readers in the namespace, until the test ends.
func startDownload(t *testing.T, l *linkemu.Link) {
	t.Helper()
	ln, err := net.Listen("tcp", net.JoinHostPort(l.HostAddr, "0"))
	if err != nil {
		t.Fatal(err)
	}
	var (
		senders sync.WaitGroup
		mu      sync.Mutex
		conns   []net.Conn
	)
	senders.Add(1)
	go func() {
		defer senders.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			conns = append(conns, c)
			mu.Unlock()
			senders.Add(1)
			go func() {
				defer senders.Done()
				io.Copy(c, zeros{})
			}()
		}
	}()
	ctx, cancel := context.WithCancel(context.Background())
	var readers []*exec.Cmd
	t.Cleanup(func() {
		cancel()
		for _, c := range readers {
			c.Wait()
		}
		ln.Close()
		mu.Lock()
		for _, c := range conns {
			c.Close()
		}
		mu.Unlock()
		senders.Wait()
	})
	for range 4 {
		// ip netns exec and bash's exec leave the reader itself as the
		// process the context kills.
		c := l.Command(ctx, "bash", "-c", fmt.Sprintf("exec cat </dev/tcp/%s/%d >/dev/null", l.HostAddr, ln.Addr().(*net.TCPAddr).Port))
		if err := c.Start(); err != nil {
			t.Fatal(err)
		}
		readers = append(readers, c)
	}
}

// zeros is an endless reader of zero bytes.
type zeros struct{}

func (zeros) Read(p []byte) (int, error) {
	clear(p)
	return len(p), nil
}

// TestOutageKeeps: a terminal on Wi-Fi (25 ms each way) whose link drops
// every packet for 1.5 s, three times, keeps its connection to hotdeskd
// (default 5 s lease: Pings every 833 ms) and its desktop attached: TCP
// sends the first Ping lost in an outage again after about 0.25, 0.75
// and 1.75 s, so the broker hears nothing for 1.75 s plus the interval
// before it (≈ 2.6 s) although the link was down for 1.5; the terminal
// itself gives the broker 3 to 4 intervals from its Ping. Budget ≈ 30 s.
func TestOutageKeeps(t *testing.T) {
	t.Parallel()
	needRootNetns(t)
	p := linkemu.Profile{Delay: 25 * time.Millisecond}
	l := newBadLink(t, each(p))
	e := startE2EAt(t, freePortOn(t, l.HostAddr), "", "kiosk", false, "")
	ks := e.enroll("alice")
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cmd := l.Command(ctx, filepath.Join(e.bin, "hotdesk-term"), "-server", e.addr, "-pin", e.pin, "-id", "t-1",
		"-keystore", ks, "-json", "run")
	evs, in := testutil.StartEvents(t, cmd, 64)
	next(t, evs, "connected")
	fmt.Fprintln(in, "insert default")
	next(t, evs, "attached")
	down := p
	down.Loss = 1
	for i := range 3 {
		time.Sleep(2 * time.Second) // a few Pings answered
		l.SetProfiles(down, down)
		time.Sleep(1500 * time.Millisecond)
		l.SetProfiles(p, p)
		// The Pings sent again after the outage are answered.
		deadline := time.After(5 * time.Second)
	drain:
		for {
			select {
			case ev, ok := <-evs:
				if !ok {
					t.Fatal("hotdesk-term ended")
				}
				if ev["event"] == "disconnected" {
					t.Fatalf("outage %d of 1.5 s: the terminal lost its broker: %v", i+1, ev)
				}
			case <-deadline:
				break drain
			}
		}
	}
	if log := e.d.LogTail(1 << 20); strings.Contains(log, "terminal connection closed") {
		t.Errorf("the broker dropped the terminal:\n%s", log)
	}
	fmt.Fprintln(in, "quit")
}
