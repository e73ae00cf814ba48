//go:build unix

package rdpwake

import (
	"io/fs"
	"os"
	"syscall"
)

func ownedBySelfOrRoot(fi fs.FileInfo) bool {
	st, ok := fi.Sys().(*syscall.Stat_t)
	return ok && (st.Uid == 0 || int(st.Uid) == os.Getuid())
}
