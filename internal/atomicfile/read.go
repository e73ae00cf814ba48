package atomicfile

import (
	"fmt"
	"io"
	"io/fs"
	"os"
	"syscall"
)

// ReadPrivate reads a small state file that must be private: a regular
// file, none of whose permission bits in forbidden is set, at most limit
// bytes and, with ownOnly, owned by the effective uid. A missing file is an
// error that matches fs.ErrNotExist. Every refusal says why, so the caller
// can report it or log it and ignore the file.
func ReadPrivate(path string, limit int64, forbidden fs.FileMode, ownOnly bool) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return nil, err
	}
	if !st.Mode().IsRegular() {
		return nil, fmt.Errorf("%s is not a regular file", path)
	}
	if perm := st.Mode().Perm(); perm&forbidden != 0 {
		return nil, fmt.Errorf("%s has mode %04o: group or others may %s it; chmod %04o it", path, perm, access(perm&forbidden), perm&^forbidden)
	}
	if sys, ok := st.Sys().(*syscall.Stat_t); ownOnly && ok && int(sys.Uid) != os.Geteuid() {
		return nil, fmt.Errorf("%s is owned by uid %d, not this user (uid %d)", path, sys.Uid, os.Geteuid())
	}
	data, err := io.ReadAll(io.LimitReader(f, limit+1))
	if err != nil {
		return nil, err
	}
	if int64(len(data)) > limit {
		return nil, fmt.Errorf("%s is larger than %d bytes", path, limit)
	}
	return data, nil
}

// ReadLimited reads a file an administrator names (a CA bundle, a PAM
// service file): a regular file of at most limit bytes. A path to
// /dev/zero, a FIFO or a huge file by mistake is an error saying so, not
// a read that never ends or fills the memory.
func ReadLimited(path string, limit int64) ([]byte, error) {
	return ReadPrivate(path, limit, 0, false)
}

func access(bits fs.FileMode) string {
	switch {
	case bits&0o022 != 0 && bits&0o044 != 0:
		return "read and write"
	case bits&0o022 != 0:
		return "write"
	default:
		return "read"
	}
}
