// Package diskspace tells how much room the filesystems holding the
// daemon's state have left, and how much is too little.
//
// A full data_dir is not a slow degradation: a desktop cannot start (its
// state directory and record are written first), and the embedded etcd,
// whose writes go there too, stops the whole daemon at the first write
// that finds the disk full (etcd treats a failed commit as fatal). The
// package tells how close to full a filesystem is (Free, Level), so that
// an administrator is warned before, and keeps room aside to give back
// when it is full (Reserve).
package diskspace

import (
	"fmt"

	"golang.org/x/sys/unix"
)

const (
	// Low is the free space under which an administrator is warned: a
	// few minutes of a runaway log, or one large download, from full.
	Low = 256 << 20
	// Critical is the free space under which the next etcd write may
	// find no room: etcd preallocates each 64 MiB segment of its log.
	Critical = 64 << 20
	// LowFiles and CriticalFiles are the same for the files (inodes) a
	// filesystem can still make: one out of them refuses every new file,
	// a desktop's directory and record too, with bytes to spare.
	LowFiles      = 10000
	CriticalFiles = 1000
)

// Level is how close to full a filesystem is.
type Level int

const (
	OK       Level = iota // at least Low free (and LowFiles)
	LowSpace              // under Low (or LowFiles)
	Full                  // under Critical (or CriticalFiles)
)

// Room is what a filesystem has left for the daemon.
type Room struct {
	Bytes uint64
	// Files is how many more files (inodes) it can make; NoFileLimit
	// for a filesystem that makes them as it needs (btrfs reports none).
	Files uint64
}

// NoFileLimit is Room.Files of a filesystem without a fixed number of
// files.
const NoFileLimit = ^uint64(0)

// Level returns how close to full r is.
func (r Room) Level() Level {
	switch {
	case r.Bytes < Critical || r.Files < CriticalFiles:
		return Full
	case r.Bytes < Low || r.Files < LowFiles:
		return LowSpace
	}
	return OK
}

// String renders r for a person: "12 MiB", or "12 MiB, 800 files" when
// the files are what runs short.
func (r Room) String() string {
	if r.Files < LowFiles {
		return fmt.Sprintf("%s, %d files", Format(r.Bytes), r.Files)
	}
	return Format(r.Bytes)
}

// LevelOf returns the level of a filesystem with free bytes available
// and no shortage of files.
func LevelOf(free uint64) Level { return Room{Bytes: free, Files: NoFileLimit}.Level() }

// Free returns the room left to the daemon (not counting the blocks a
// filesystem reserves for root, which an unprivileged daemon
// cannot use and a root one should not count on) on the filesystem
// holding path, and that filesystem's device number (two paths with the
// same one share it).
func Free(path string) (room Room, dev uint64, err error) {
	var st unix.Stat_t
	if err := unix.Stat(path, &st); err != nil {
		return Room{}, 0, fmt.Errorf("diskspace: %w", err)
	}
	var fs unix.Statfs_t
	if err := unix.Statfs(path, &fs); err != nil {
		return Room{}, 0, fmt.Errorf("diskspace: statfs %s: %w", path, err)
	}
	room = Room{Bytes: fs.Bavail * uint64(fs.Bsize), Files: fs.Ffree}
	if fs.Files == 0 {
		room.Files = NoFileLimit
	}
	return room, st.Dev, nil
}

// Format renders n bytes for a person: "0 B", "12 MiB", "3.4 GiB".
func Format(n uint64) string {
	switch {
	case n >= 10<<30:
		return fmt.Sprintf("%d GiB", n>>30)
	case n >= 1<<30:
		return fmt.Sprintf("%.1f GiB", float64(n)/(1<<30))
	case n >= 1<<20:
		return fmt.Sprintf("%d MiB", n>>20)
	case n >= 1<<10:
		return fmt.Sprintf("%d KiB", n>>10)
	}
	return fmt.Sprintf("%d B", n)
}
