// Package diskspace tells how much room the filesystems holding the
// daemon's state have left, and how much is too little.
//
// A full data_dir is not a slow degradation: a desktop cannot start (its
// state directory and record are written first), and the embedded etcd,
// whose writes go there too, stops the whole daemon at the first write
// that finds the disk full (etcd treats a failed commit as fatal). Warning
// before that is the only help an administrator gets.
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
)

// Level is how close to full a filesystem is.
type Level int

const (
	OK       Level = iota // at least Low free
	LowSpace              // under Low
	Full                  // under Critical
)

// LevelOf returns the level of a filesystem with free bytes available.
func LevelOf(free uint64) Level {
	switch {
	case free < Critical:
		return Full
	case free < Low:
		return LowSpace
	}
	return OK
}

// Free returns the bytes available to the daemon (not counting the blocks
// a filesystem reserves for root, which an unprivileged daemon cannot use
// and a root one should not count on) on the filesystem holding path, and
// that filesystem's device number (two paths with the same one share it).
func Free(path string) (free, dev uint64, err error) {
	var st unix.Stat_t
	if err := unix.Stat(path, &st); err != nil {
		return 0, 0, fmt.Errorf("diskspace: %w", err)
	}
	var fs unix.Statfs_t
	if err := unix.Statfs(path, &fs); err != nil {
		return 0, 0, fmt.Errorf("diskspace: statfs %s: %w", path, err)
	}
	return fs.Bavail * uint64(fs.Bsize), st.Dev, nil
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
