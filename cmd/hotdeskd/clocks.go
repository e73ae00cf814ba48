package main

import (
	"context"
	"maps"
	"slices"
	"sync"
	"time"

	"github.com/hashicorp/go-hclog"

	"github.com/hotdesk/hotdesk/cmd/internal/adminapi"
	"github.com/hotdesk/hotdesk/internal/clock"
	"github.com/hotdesk/hotdesk/registry"
)

// Group clocks: the members compare times they wrote by their own clocks
// (lockouts, pairing codes' expiry, terminal records' refreshes), which
// holds only while the clocks agree to registry.ClearSkew
// (adminapi.ClockAllowance). Every member
// puts its clock's reading every clockInterval (registry.PutClock) and
// reads the others' as they come (registry.WatchClocks). A reading
// received late makes its writer look further behind than it is, never
// ahead, so a member's offset is the greatest of its last clockReadings
// readings. Beyond clockAllowance either way a member is warned about in
// the log (again when it is back in step), counted in
// hotdesk_group_clock_offset_seconds and shown by GET /v1/servers
// (hotdeskctl server list). Only the members' clocks are compared: the
// readings of ids without a server record at the last listing
// (settingsWatch's, listed) are dropped; anyone who may write to etcd can
// put readings under ids of their choosing (a warning line each, at every
// broker, and a table full of them that no member joining could enter).

const (
	// clockInterval is how often a member puts its clock.
	clockInterval = 15 * time.Second
	// clockReadings is how many of a member's readings make its offset.
	clockReadings = 4
	// clockAllowance is how far a member's clock may be from ours.
	clockAllowance = adminapi.ClockAllowance
)

// clockWatch keeps the offsets of the group's clocks from this member's.
type clockWatch struct {
	log  hclog.Logger
	self string
	clk  clock.Clock // the daemon's: what readings are stamped with

	mu      sync.Mutex
	members map[string]*memberClock // guarded by mu
	// group is the ids of the group's server records at the last
	// listing (nil before it): only their readings are taken.
	group map[string]bool // guarded by mu
}

// memberClock is what is known of one member's clock.
type memberClock struct {
	offsets []time.Duration // its last readings' offsets (theirs − ours), oldest first
	last    time.Time       // when the last reading came, by our clock
	warned  bool            // beyond clockAllowance, logged
}

func newClockWatch(log hclog.Logger, self string, clk clock.Clock) *clockWatch {
	return &clockWatch{log: log, self: self, clk: clk, members: map[string]*memberClock{}}
}

// forget drops the members without a reading for clockReadings intervals
// before now (they left the group). Caller holds w.mu.
func (w *clockWatch) forget(now time.Time) {
	for id, m := range w.members {
		if now.Sub(m.last) > clockReadings*clockInterval {
			delete(w.members, id)
		}
	}
}

// listed takes a listing of the group's server records: the readings of
// their ids are taken from now on, and the members no longer listed (they
// left the group) are forgotten.
func (w *clockWatch) listed(servers []registry.ServerRecord) {
	group := make(map[string]bool, len(servers))
	for _, s := range servers {
		group[s.ID] = true
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	w.group = group
	for id := range w.members {
		if !group[id] {
			delete(w.members, id)
		}
	}
}

// offset is m's clock's offset from ours: the greatest of its readings'.
func (m *memberClock) offset() time.Duration { return slices.Max(m.offsets) }

// observe takes one reading (stamped by the daemon's clock, the one
// offsets are read on).
func (w *clockWatch) observe(c registry.ClockReading) {
	if c.ServerID == w.self {
		return
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	if !w.group[c.ServerID] {
		return // no member's (or one not listed yet: its next reading)
	}
	w.forget(c.Received)
	m := w.members[c.ServerID]
	if m == nil {
		if len(w.members) >= 1024 {
			return // bounded: a group has far fewer members
		}
		m = &memberClock{}
		w.members[c.ServerID] = m
	}
	m.offsets = append(m.offsets, time.UnixMilli(c.UnixMs).Sub(c.Received))
	if len(m.offsets) > clockReadings {
		m.offsets = m.offsets[1:]
	}
	m.last = c.Received
	off := m.offset()
	switch beyond := off > clockAllowance || off < -clockAllowance; {
	case beyond && !m.warned:
		w.log.Warn("a member's clock is not in step with this server's: lockouts, pairing codes and terminal listings go wrong; keep every server's clock synchronised (NTP)",
			"member", c.ServerID, "offset", adminapi.DescribeOffset(off))
		m.warned = true
	case !beyond && m.warned:
		w.log.Info("a member's clock is in step with this server's again", "member", c.ServerID, "offset", adminapi.DescribeOffset(off))
		m.warned = false
	}
}

// offsets returns the clock offsets from ours of the members read lately
// (none on a nil watch: a daemon without a registry).
func (w *clockWatch) offsets() map[string]time.Duration {
	if w == nil {
		return nil
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	w.forget(w.clk.Now())
	out := make(map[string]time.Duration, len(w.members))
	for id, m := range w.members {
		out[id] = m.offset()
	}
	return out
}

// outOfStep returns the members whose clocks are beyond clockAllowance,
// sorted.
func (w *clockWatch) outOfStep() []string {
	offs := w.offsets()
	var ids []string
	for _, id := range slices.Sorted(maps.Keys(offs)) {
		if off := offs[id]; off > clockAllowance || off < -clockAllowance {
			ids = append(ids, id)
		}
	}
	return ids
}

// run puts this member's clock every clockInterval (put) and takes the
// readings of the group (readings) until ctx ends.
func (w *clockWatch) run(ctx context.Context, clk clock.Clock, put func(context.Context) error, readings <-chan registry.ClockReading) {
	tick := make(chan struct{}, 1)
	tick <- struct{}{}
	var timer clock.Timer
	defer func() {
		if timer != nil {
			timer.Stop()
		}
	}()
	for {
		select {
		case <-ctx.Done():
			return
		case c, ok := <-readings:
			if !ok {
				return
			}
			w.observe(c)
		case <-tick:
			if err := put(ctx); err != nil && ctx.Err() == nil {
				w.log.Debug("clock not put: the registry did not take it", "error", err)
			}
			timer = clk.AfterFunc(clockInterval, func() { tick <- struct{}{} })
		}
	}
}
