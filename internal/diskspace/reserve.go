package diskspace

import (
	"errors"
	"fmt"
	"io/fs"
	"os"

	"golang.org/x/sys/unix"
)

// ReserveSize is the room a daemon with the embedded etcd sets aside in
// its data_dir: twice Critical. An etcd that starts preallocates its next
// log segment (64 MiB) at once and rewrites the tail of its current one,
// and then needs room for its database's growth: with only 64 MiB given
// back, a start on a full disk failed ("failed to read WAL … no space
// left on device").
const ReserveSize = 2 * Critical

// Reserve is room set aside on a filesystem in a file of its own (a
// ballast), to be given back when that filesystem is full: the embedded
// etcd, whose first write that finds no room stops the daemon, then has
// room for its next pages and log segment while an administrator frees
// some. It helps when whatever filled the disk has stopped (a copy that
// failed for want of room), not against something that goes on writing.
type Reserve struct {
	Path string
	Size int64
}

// ErrNotAllocated means the filesystem took the reserve's bytes without keeping
// room for them.
var ErrNotAllocated = errors.New("diskspace: the filesystem keeps no room for the reserve (compressed or thin)")

// Hold sets the room aside: the file is made with Size bytes allocated
// (fallocate; zeros written on a filesystem without it). On a filesystem
// without the room, or one that does not keep it (ErrNotAllocated), it
// leaves no file behind and returns an error.
func (r Reserve) Hold() error {
	if r.Held() {
		return nil
	}
	f, err := os.OpenFile(r.Path, os.O_RDWR|os.O_CREATE|os.O_TRUNC|unix.O_NOFOLLOW, 0o600)
	if err != nil {
		return fmt.Errorf("diskspace: reserve: %w", err)
	}
	err = unix.Fallocate(int(f.Fd()), 0, 0, r.Size)
	if errors.Is(err, unix.EOPNOTSUPP) {
		err = writeZeros(f, r.Size)
	}
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil && !r.Held() {
		// Written, yet not allocated: a filesystem that compresses or
		// deduplicates (ZFS, btrfs with compression) keeps no room for
		// zeros, so there is nothing to give back.
		err = ErrNotAllocated
	}
	if err != nil {
		os.Remove(r.Path)
		return fmt.Errorf("diskspace: reserve %s: %w", r.Path, err)
	}
	return nil
}

func writeZeros(f *os.File, n int64) error {
	chunk := make([]byte, 1<<20)
	for n > 0 {
		w, err := f.Write(chunk[:min(n, int64(len(chunk)))])
		if err != nil {
			return err
		}
		n -= int64(w)
	}
	return nil
}

// Held reports whether the room is set aside: the file is a regular file
// of Size bytes, all of them allocated.
func (r Reserve) Held() bool {
	var st unix.Stat_t
	if unix.Lstat(r.Path, &st) != nil || st.Mode&unix.S_IFMT != unix.S_IFREG {
		return false
	}
	return st.Size >= r.Size && st.Blocks*512 >= r.Size
}

// Release gives the room back (removes the file); it reports whether the
// room was set aside.
func (r Reserve) Release() (bool, error) {
	held := r.Held()
	if err := os.Remove(r.Path); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return false, fmt.Errorf("diskspace: release reserve: %w", err)
	}
	return held, nil
}
