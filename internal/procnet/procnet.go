// Package procnet tells, from /proc, which process listens on a TCP port:
// the inodes of the sockets listening on it (/proc/net/tcp, tcp6) and
// whether a process holds one of them among its descriptors. Any user can
// bind a free loopback port; this is how a caller makes sure the listener
// it is about to trust is the process it started, not whoever took the
// port after that process was gone.
package procnet

import (
	"bufio"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
)

// Listening returns the inodes of the sockets listening on TCP port (IPv4
// or IPv6) under procRoot ("/proc").
func Listening(procRoot string, port int) []string {
	want := fmt.Sprintf(":%04X", port)
	var inodes []string
	for _, f := range []string{"net/tcp", "net/tcp6"} {
		fh, err := os.Open(filepath.Join(procRoot, f))
		if err != nil {
			continue
		}
		sc := bufio.NewScanner(fh)
		for sc.Scan() {
			fields := strings.Fields(sc.Text())
			if len(fields) > 9 && strings.HasSuffix(fields[1], want) && fields[3] == "0A" { // 0A = LISTEN
				inodes = append(inodes, fields[9])
			}
		}
		fh.Close()
	}
	return inodes
}

// Owns reports whether process pid holds one of the sockets inodes.
func Owns(procRoot string, pid int, inodes []string) bool {
	if pid <= 0 || len(inodes) == 0 {
		return false
	}
	fds := filepath.Join(procRoot, strconv.Itoa(pid), "fd")
	ents, err := os.ReadDir(fds)
	if err != nil {
		return false
	}
	for _, e := range ents {
		link, err := os.Readlink(filepath.Join(fds, e.Name()))
		if err != nil {
			continue
		}
		for _, ino := range inodes {
			if link == "socket:["+ino+"]" {
				return true
			}
		}
	}
	return false
}

// ListenerOf reports whether the socket listening on TCP port is process
// pid's (and no other process listens there).
func ListenerOf(procRoot string, pid, port int) bool {
	inodes := Listening(procRoot, port)
	return len(inodes) == 1 && Owns(procRoot, pid, inodes)
}
