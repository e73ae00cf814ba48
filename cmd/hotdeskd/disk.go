package main

import (
	"context"
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/hashicorp/go-hclog"

	"github.com/hotdesk/hotdesk/cmd/hotdeskd/config"
	"github.com/hotdesk/hotdesk/internal/clock"
	"github.com/hotdesk/hotdesk/internal/diskspace"
)

// Room on the disks of data_dir and compositor.state_dir: a full one
// refuses every new desktop and, with the embedded etcd in data_dir, stops
// the daemon at etcd's first write (internal/diskspace). The daemon checks
// at start and every diskCheckInterval; a filesystem under diskspace.Low
// (or LowFiles: one out of inodes refuses new files with bytes to spare)
// is a warn line, under Critical (CriticalFiles) an error line (each once, and
// an info line when there is room again), and hotdesk_disk_free_bytes
// exports what is left.
//
// With the embedded etcd, the daemon also sets diskspace.ReserveSize aside
// in data_dir/reserve while the disk has room to spare (at least
// diskspace.Low left after it), and gives it back as soon as it finds that
// filesystem out of room (releaseBelow), the check at start (before etcd
// starts) included: the etcd's next writes find room, so the daemon goes
// on, or starts again, on a disk that filled up, while the administrator
// frees space. A disk that filled between two checks can still stop it at
// etcd's next write; the checks come every diskCheckNear once a
// filesystem runs low, and the next start gives the room back first.

const (
	diskCheckInterval = 2 * time.Second
	// diskCheckNear is the interval while a filesystem is under
	// diskspace.Low: from there a copy fills it in a second.
	diskCheckNear = 250 * time.Millisecond
	// reserveName is the reserve's file in data_dir.
	reserveName = "reserve"
	// holdRetry is how long after a failure to set the reserve aside the
	// next try waits: on a filesystem that keeps no room for it each try
	// writes its 128 MiB again.
	holdRetry = 10 * time.Minute
	// releaseBelow is the room under which the reserve is given back:
	// what is left once a copy that filled the disk has failed. Given back
	// sooner (at diskspace.Critical), it went to the copy still running
	// (TestDiskFullEmbeddedEtcd, on a loaded machine).
	releaseBelow = 4 << 20
)

// diskDir is one directory whose filesystem is watched.
type diskDir struct {
	key, path string // the configuration key naming it, and its path
}

// diskWatch tells when the daemon's directories run out of room.
type diskWatch struct {
	log      hclog.Logger
	dirs     []diskDir
	embedded bool                                                           // the embedded etcd writes into data_dir
	free     func(path string) (room diskspace.Room, dev uint64, err error) // of path, or of existing(path)
	clk      clock.Clock
	reserve  *diskspace.Reserve // in data_dir, for the embedded etcd; nil without it

	mu    sync.Mutex
	left  map[string]uint64          // key → bytes free at the last check
	level map[uint64]diskspace.Level // device → level last told
	// released: the reserve was given back and is not set aside again;
	// data_dir's filesystem counts as full meanwhile (the room it has is
	// the etcd's).
	released bool
	// reserveErr is the reserve's trouble logged last (a failure to give
	// it back or set it aside, no room for it), logged once until the
	// reserve is set aside or given back.
	reserveErr string
	// reserveHeld: the reserve was set aside at the last check.
	reserveHeld bool
	// nextHold: no try to set the reserve aside before (after a failure).
	nextHold time.Time
}

func newDiskWatch(log hclog.Logger, cfg *config.Config, clk clock.Clock) *diskWatch {
	w := &diskWatch{
		log:      log,
		clk:      clk,
		dirs:     []diskDir{{"data_dir", cfg.DataDir}, {"compositor.state_dir", cfg.Compositor.StateDir}},
		embedded: cfg.UsesEmbeddedEtcd(),
		free:     func(p string) (diskspace.Room, uint64, error) { return diskspace.Free(existing(p)) },
		left:     map[string]uint64{},
		level:    map[uint64]diskspace.Level{},
	}
	if w.embedded {
		w.reserve = &diskspace.Reserve{Path: filepath.Join(cfg.DataDir, reserveName), Size: diskspace.ReserveSize}
	}
	return w
}

// check reads the room left for each directory (the nearest existing one
// above it, before it is made) and tells a change of level, once per
// filesystem; a directory that cannot be read is left for the next check.
func (w *diskWatch) check() {
	w.mu.Lock()
	defer w.mu.Unlock()
	told := map[uint64]bool{}
	for _, d := range w.dirs {
		room, dev, err := w.free(d.path)
		if err != nil {
			continue
		}
		if d.key == "data_dir" && w.reserve != nil {
			room, w.reserveHeld = w.keepReserve(d, room)
		}
		w.left[d.key] = room.Bytes
		if told[dev] {
			continue
		}
		told[dev] = true
		lv, was := room.Level(), w.level[dev]
		if d.key == "data_dir" && w.released {
			lv = diskspace.Full
		}
		w.level[dev] = lv
		if lv == was {
			continue
		}
		args := []any{"dir", d.key, "path", d.path, "free", room.String()}
		switch {
		case lv == diskspace.Full:
			w.log.Error(w.warning(d.key, lv), args...)
		case lv == diskspace.LowSpace && was == diskspace.OK:
			w.log.Warn(w.warning(d.key, lv), args...)
		case lv == diskspace.OK:
			w.log.Info("the disk has room again", args...)
		}
	}
}

// keepReserve gives the reserve back when d's filesystem, with room left,
// has no room (under releaseBelow, or its last file), and sets it aside
// when it has room to spare; it returns the room left after that, and
// whether the reserve is set aside.
func (w *diskWatch) keepReserve(d diskDir, room diskspace.Room) (diskspace.Room, bool) {
	size := uint64(w.reserve.Size)
	held := w.reserve.Held()
	switch {
	case room.Bytes < releaseBelow || room.Files < 2:
		if !held {
			return room, false
		}
		if _, err := w.reserve.Release(); err != nil {
			w.reserveSay(hclog.Error, "could not give back the room set aside for the embedded etcd", "path", w.reserve.Path, "error", err)
			return room, w.reserve.Held()
		}
		w.released, w.reserveErr, held = true, "", false
		w.log.Error(fmt.Sprintf("the disk is full: gave back the %s set aside for the embedded etcd, which goes on writing there meanwhile; free space there", diskspace.Format(size)),
			"dir", d.key, "path", w.reserve.Path, "free_before", room.String())
	case held || room.Level() != diskspace.OK:
		return room, held
	case room.Bytes < diskspace.Low+size:
		if !w.released {
			// Between Low and Low+size: no room to spare for it.
			w.reserveSay(hclog.Warn, w.noRoomForReserve(), "path", w.reserve.Path, "free", room.String())
		}
		return room, false
	case w.clk.Now().Before(w.nextHold):
		return room, false
	default:
		if err := w.reserve.Hold(); err != nil {
			// The room is there all the same: not counted full for it.
			w.released, w.nextHold = false, w.clk.Now().Add(holdRetry)
			w.reserveSay(hclog.Error, "could not set room aside for the embedded etcd", "path", w.reserve.Path, "error", err)
			return room, false
		}
		w.released, w.reserveErr, held = false, "", true
		w.log.Info(fmt.Sprintf("set %s aside for the embedded etcd, given back if the disk fills", diskspace.Format(size)), "path", w.reserve.Path)
	}
	if r, _, err := w.free(d.path); err == nil {
		return r, held
	}
	return room, held
}

// reserveSay logs msg at lvl unless it is the reserve's trouble logged
// last (until the reserve is set aside or given back).
func (w *diskWatch) reserveSay(lvl hclog.Level, msg string, args ...any) {
	if msg != w.reserveErr {
		w.reserveErr = msg
		w.log.Log(lvl, msg, args...)
	}
}

// noRoomForReserve says that data_dir's disk has not the room to spare
// for the reserve, and what that means.
func (w *diskWatch) noRoomForReserve() string {
	return fmt.Sprintf("not enough room on the disk of data_dir to set %s aside for the embedded etcd (it needs %s free): should the disk fill, the etcd's next write stops hotdeskd; free space there",
		diskspace.Format(uint64(w.reserve.Size)), diskspace.Format(diskspace.Low+uint64(w.reserve.Size)))
}

// near reports whether a filesystem was under diskspace.Low at the last
// check.
func (w *diskWatch) near() bool {
	w.mu.Lock()
	defer w.mu.Unlock()
	for _, lv := range w.level {
		if lv != diskspace.OK {
			return true
		}
	}
	return false
}

// warning says what a filesystem at lv (not OK) holding the directory of
// key means, and what to do.
func (w *diskWatch) warning(key string, lv diskspace.Level) string {
	what := "no desktop can start there once it is full"
	if key == "data_dir" && w.embedded {
		what = "once it is full no desktop can start, and the embedded etcd (in data_dir) stops hotdeskd at its first write that finds no room, once the room set aside for it (data_dir/reserve) is used up (desktops are kept and adopted when it starts again)"
	}
	if lv == diskspace.Full {
		return "the disk is full or nearly: " + what + "; free space there"
	}
	return "the disk is running out of room: " + what + "; free space there"
}

// warnings checks now and returns a line for each filesystem under
// diskspace.Low, for hotdeskd -check.
func (w *diskWatch) warnings() []string {
	var out []string
	seen := map[uint64]bool{}
	for _, d := range w.dirs {
		room, dev, err := w.free(d.path)
		if err != nil || seen[dev] {
			continue
		}
		seen[dev] = true
		if lv := room.Level(); lv != diskspace.OK {
			out = append(out, fmt.Sprintf("%s %s: %s free: %s", d.key, d.path, room, w.warning(d.key, lv)))
		} else if d.key == "data_dir" && w.reserve != nil && room.Bytes < diskspace.Low+uint64(w.reserve.Size) && !w.reserve.Held() {
			out = append(out, fmt.Sprintf("%s %s: %s free: %s", d.key, d.path, room, w.noRoomForReserve()))
		}
	}
	return out
}

// existing returns path or the nearest directory above it that exists.
func existing(path string) string {
	for p := path; ; p = filepath.Dir(p) {
		if _, err := os.Stat(p); err == nil || p == filepath.Dir(p) {
			return p
		}
	}
}

// reserveBytes returns the room set aside for the embedded etcd at the
// last check (0: given back, or not set aside for want of room); ok is
// false without the embedded etcd.
func (w *diskWatch) reserveBytes() (n uint64, ok bool) {
	if w.reserve == nil {
		return 0, false
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.reserveHeld {
		return uint64(w.reserve.Size), true
	}
	return 0, true
}

// freeBytes returns the bytes left for each directory's configuration key
// at the last check.
func (w *diskWatch) freeBytes() map[string]uint64 {
	w.mu.Lock()
	defer w.mu.Unlock()
	return maps.Clone(w.left)
}

// run checks every diskCheckInterval, every diskCheckNear while a
// filesystem is under diskspace.Low, until ctx ends.
func (w *diskWatch) run(ctx context.Context) {
	for {
		d := diskCheckInterval
		if w.near() {
			d = diskCheckNear
		}
		if !clock.Sleep(ctx, w.clk, d) {
			return
		}
		w.check()
	}
}
