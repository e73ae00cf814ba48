//go:build linux

// Package linkemu puts a bad network link between a network namespace of
// a test's own and the host, for tests and measurements that need a real
// kernel TCP (its retransmission timers, its backoff) over delay, jitter,
// loss and outages. The kernel on this project's machines has no netem
// qdisc, so the link is emulated in user space: two TUN devices, one in
// the host namespace and one in the test's namespace, and a goroutine per
// direction that reads each IP packet from one and writes it to the other
// after the profile's delay, unless the profile drops it. A direction may
// also be a bottleneck of limited rate with a queue of its own (a DSL or
// Wi-Fi uplink, a VPN): packets leave it one after the other at that rate,
// wait in its queue meanwhile, and are dropped when the queue is full, as
// a router's FIFO does.
//
// Only the link's own /30 is routed through it: nothing else on the host
// sees any change. Close removes the namespace and both devices.
package linkemu

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

// Profile is what one direction of the link does to its packets.
type Profile struct {
	// Delay is the one-way delay; Jitter spreads it uniformly over
	// Delay ± Jitter. Packets stay in order, as over one radio link.
	Delay, Jitter time.Duration
	// Loss is the probability that a packet is dropped.
	Loss float64
	// Every Period, the link is down (every packet dropped) for Outage,
	// starting Period after the link is set up. Period 0: no outages.
	Period, Outage time.Duration
	// Rate is the bottleneck's rate in bytes per second (0: none). A
	// packet leaves it after the packets queued before it have and its
	// own bytes have been sent; Delay is added after that.
	Rate int
	// Buffer is how many bytes may wait in the bottleneck's queue; a
	// packet arriving at a fuller queue is dropped (a tail drop). 0: only
	// the pump's bound of 4096 packets. Only with Rate.
	Buffer int
}

// QueueDelay is how long a full Buffer takes to drain at Rate (0 without
// a bottleneck): the most the bottleneck adds to a packet's delay.
func (p Profile) QueueDelay() time.Duration {
	if p.Rate <= 0 {
		return 0
	}
	return time.Duration(p.Buffer) * time.Second / time.Duration(p.Rate)
}

// Stats counts one direction's packets.
type Stats struct {
	Packets, Dropped uint64
	// Bytes is the size of the packets not dropped.
	Bytes uint64
	// MaxQueued is the most bytes that waited at the bottleneck at once.
	MaxQueued uint64
}

// Link is a namespace joined to the host by an emulated link.
type Link struct {
	// NS is the network namespace's name (ip netns).
	NS string
	// HostAddr and NSAddr are the two ends' IPv4 addresses.
	HostAddr, NSAddr string

	hostDev, nsDev string
	hostTun, nsTun *os.File
	start          time.Time
	cancel         context.CancelFunc
	wg             sync.WaitGroup

	mu                 sync.Mutex
	up, down           Profile // up: namespace → host; down: host → namespace
	upStats, downStats counters
}

// counters are one direction's Stats as its pump counts them.
type counters struct {
	packets, dropped, bytes atomic.Uint64
	maxQueued               atomic.Uint64 // one writer: the pump
}

func (c *counters) load() Stats {
	return Stats{Packets: c.packets.Load(), Dropped: c.dropped.Load(), Bytes: c.bytes.Load(), MaxQueued: c.maxQueued.Load()}
}

// hostLock is the file whose lock orders the changes Links make to the
// host's network (a device and its address made in New, removed in Close)
// against the tests that must see none: a browser fails the page it is
// loading with net::ERR_NETWORK_CHANGED when an address of the host comes
// or goes (TestDashboardInChromium did, beside TestLinkRate). New and
// Close hold it shared, QuietHost exclusive.
var hostLock = filepath.Join(os.TempDir(), "hotdesk-linkemu-host.lock")

// lockHost takes hostLock (unix.LOCK_SH or LOCK_EX), waiting for it;
// release gives it back.
func lockHost(how int) (release func(), err error) {
	f, err := os.OpenFile(hostLock, os.O_RDWR|os.O_CREATE|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0o600)
	if err != nil {
		return nil, fmt.Errorf("linkemu: %w", err)
	}
	for {
		if err = unix.Flock(int(f.Fd()), how); err != unix.EINTR {
			break
		}
	}
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("linkemu: lock %s: %w", hostLock, err)
	}
	return func() { f.Close() }, nil // the lock goes with the descriptor
}

// QuietHost waits until no Link of any process is being made or removed,
// then keeps any from being made or removed until release is called: for
// a test that a host address coming or going would disturb. The Links
// already up stay up and carry their packets meanwhile.
func QuietHost() (release func(), err error) { return lockHost(unix.LOCK_EX) }

// Tools are the commands New needs.
var Tools = []string{"ip"}

// New creates the namespace name (which must not exist) with loopback up,
// and a link to it whose host end is 10.<n>.<m>.1 and namespace end
// 10.<n>.<m>.2 for subnet "10.<n>.<m>". up and down are the profiles of
// each direction; SetProfiles changes them.
func New(name, subnet string, up, down Profile) (*Link, error) {
	release, err := lockHost(unix.LOCK_SH)
	if err != nil {
		return nil, err
	}
	defer release()
	l := &Link{NS: name, HostAddr: subnet + ".1", NSAddr: subnet + ".2", up: up, down: down,
		hostDev: short("le" + name + "h"), nsDev: short("le" + name + "n")}
	ok := false
	defer func() {
		if !ok {
			l.Close()
		}
	}()
	if err := ip("netns", "add", name); err != nil {
		return nil, err
	}
	if err := ip("-n", name, "link", "set", "lo", "up"); err != nil {
		return nil, err
	}
	if l.hostTun, err = openTun(l.hostDev); err != nil {
		return nil, err
	}
	if l.nsTun, err = openTun(l.nsDev); err != nil {
		return nil, err
	}
	for _, args := range [][]string{
		{"link", "set", l.nsDev, "netns", name},
		{"addr", "add", l.HostAddr, "peer", l.NSAddr, "dev", l.hostDev},
		// No IPv6 link-local address: made by the kernel a second or
		// two after the device is up (once its duplicate detection is
		// over), it would change the host's addresses after New, out of
		// hostLock's order.
		{"link", "set", l.hostDev, "addrgenmode", "none"},
		{"link", "set", l.hostDev, "up"},
		{"-n", name, "addr", "add", l.NSAddr, "peer", l.HostAddr, "dev", l.nsDev},
		{"-n", name, "link", "set", l.nsDev, "up"},
	} {
		if err := ip(args...); err != nil {
			return nil, err
		}
	}
	ctx, cancel := context.WithCancel(context.Background())
	l.cancel = cancel
	l.start = time.Now()
	l.wg.Add(2)
	go l.pump(ctx, l.nsTun, l.hostTun, true)
	go l.pump(ctx, l.hostTun, l.nsTun, false)
	ok = true
	return l, nil
}

// short bounds an interface name to the kernel's 15 bytes.
func short(s string) string {
	if len(s) > 15 {
		return s[len(s)-15:]
	}
	return s
}

// SetProfiles changes both directions' profiles from now on.
func (l *Link) SetProfiles(up, down Profile) {
	l.mu.Lock()
	l.up, l.down = up, down
	l.mu.Unlock()
}

// Stats returns the counters of the up (namespace → host) and down
// directions.
func (l *Link) Stats() (up, down Stats) {
	return l.upStats.load(), l.downStats.load()
}

// Command returns cmd run inside the namespace (ip netns exec).
func (l *Link) Command(ctx context.Context, name string, args ...string) *exec.Cmd {
	return exec.CommandContext(ctx, "ip", append([]string{"netns", "exec", l.NS, name}, args...)...)
}

// Close stops the pumps and removes the devices and the namespace. The
// processes still running in the namespace keep it (without its link)
// until they end.
func (l *Link) Close() error {
	if l.cancel != nil {
		l.cancel()
	}
	var errs []error
	if release, err := lockHost(unix.LOCK_SH); err != nil {
		errs = append(errs, err) // removed all the same
	} else {
		defer release()
	}
	for _, f := range []*os.File{l.hostTun, l.nsTun} {
		if f != nil {
			f.Close()
		}
	}
	l.wg.Wait()
	if err := ip("netns", "del", l.NS); err != nil && !strings.Contains(err.Error(), "No such file") {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

type packet struct {
	at  time.Time
	buf []byte
}

// pump carries packets from in to out under the profile of its direction.
func (l *Link) pump(ctx context.Context, in, out *os.File, up bool) {
	defer l.wg.Done()
	stats := &l.downStats
	if up {
		stats = &l.upStats
	}
	q := make(chan packet, 4096)
	done := make(chan struct{})
	go func() {
		defer close(done)
		t := time.NewTimer(time.Hour)
		defer t.Stop()
		for p := range q {
			if d := time.Until(p.at); d > 0 {
				t.Reset(d)
				select {
				case <-t.C:
				case <-ctx.Done():
					return
				}
			}
			_, _ = out.Write(p.buf)
		}
	}()
	defer func() { close(q); <-done }()
	var last time.Time
	var busy time.Time // when the bottleneck has sent what it holds
	rng := rand.New(rand.NewPCG(uint64(time.Now().UnixNano()), 7))
	for {
		buf := make([]byte, 65536)
		n, err := in.Read(buf)
		if err != nil {
			return
		}
		now := time.Now()
		l.mu.Lock()
		p := l.down
		if up {
			p = l.up
		}
		l.mu.Unlock()
		stats.packets.Add(1)
		if p.Period > 0 && p.Outage > 0 {
			if since := now.Sub(l.start); since >= p.Period && since%p.Period < p.Outage {
				stats.dropped.Add(1)
				continue
			}
		}
		if p.Loss > 0 && rng.Float64() < p.Loss {
			stats.dropped.Add(1)
			continue
		}
		leave := now // when the packet has left the bottleneck
		if p.Rate > 0 {
			queued := 0 // bytes waiting at the bottleneck
			if busy.After(now) {
				queued = int(busy.Sub(now).Seconds() * float64(p.Rate))
				leave = busy
			}
			if p.Buffer > 0 && queued+n > p.Buffer {
				stats.dropped.Add(1)
				continue
			}
			if q := uint64(queued + n); q > stats.maxQueued.Load() {
				stats.maxQueued.Store(q)
			}
			busy = leave.Add(time.Duration(n) * time.Second / time.Duration(p.Rate))
			leave = busy
		}
		d := p.Delay
		if p.Jitter > 0 {
			d += time.Duration(rng.Int64N(int64(2*p.Jitter))) - p.Jitter
		}
		at := leave.Add(max(d, 0))
		if at.Before(last) {
			at = last
		}
		last = at
		select {
		case q <- packet{at: at, buf: buf[:n]}:
			stats.bytes.Add(uint64(n))
		default: // the queue is full: a tail drop
			stats.dropped.Add(1)
		}
	}
}

// openTun creates the TUN device name (IPv4 packets without the packet
// information header) and returns its queue.
func openTun(name string) (*os.File, error) {
	fd, err := unix.Open("/dev/net/tun", unix.O_RDWR|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("linkemu: open /dev/net/tun: %w", err)
	}
	var req [unix.IFNAMSIZ + 64]byte
	copy(req[:unix.IFNAMSIZ-1], name)
	*(*uint16)(unsafe.Pointer(&req[unix.IFNAMSIZ])) = unix.IFF_TUN | unix.IFF_NO_PI
	if _, _, e := unix.Syscall(unix.SYS_IOCTL, uintptr(fd), unix.TUNSETIFF, uintptr(unsafe.Pointer(&req[0]))); e != 0 {
		unix.Close(fd)
		return nil, fmt.Errorf("linkemu: TUNSETIFF %s: %w", name, e)
	}
	// Blocking reads in their own goroutine: Close makes them return
	// through the runtime poller once the fd is non-blocking.
	if err := unix.SetNonblock(fd, true); err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("linkemu: %s: %w", name, err)
	}
	return os.NewFile(uintptr(fd), "/dev/net/tun:"+name), nil
}

func ip(args ...string) error {
	out, err := exec.Command("ip", args...).CombinedOutput()
	if err != nil {
		return fmt.Errorf("linkemu: ip %s: %v: %s", strings.Join(args, " "), err, strings.TrimSpace(string(out)))
	}
	return nil
}
