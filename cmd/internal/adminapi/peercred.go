package adminapi

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"slices"
	"strconv"
	"sync"
	"time"

	"golang.org/x/sys/unix"
)

// peer is what the kernel told us about the process at the other end.
type peer struct {
	PID, UID, GID int
	Known         bool  // credentials were read
	Allowed       bool  // the decision, made once per connection
	Err           error // why credentials or groups could not be read
}

func (p *peer) createdBy() string { return "uid:" + strconv.Itoa(p.UID) }

// peerCred reads SO_PEERCRED of a connected unix socket.
func peerCred(c *net.UnixConn) (pid, uid, gid int, err error) {
	rc, err := c.SyscallConn()
	if err != nil {
		return 0, 0, 0, fmt.Errorf("adminapi: peer credentials: %w", err)
	}
	var cred *unix.Ucred
	var credErr error
	if err := rc.Control(func(fd uintptr) {
		cred, credErr = unix.GetsockoptUcred(int(fd), unix.SOL_SOCKET, unix.SO_PEERCRED)
	}); err != nil {
		return 0, 0, 0, fmt.Errorf("adminapi: peer credentials: %w", err)
	}
	if credErr != nil {
		return 0, 0, 0, fmt.Errorf("adminapi: peer credentials: %w", credErr)
	}
	return int(cred.Pid), int(cred.Uid), int(cred.Gid), nil
}

// allowPeer is the access decision: root, the daemon's own uid, or (when
// adminGID >= 0) a peer whose gid or supplementary groups contain adminGID.
func allowPeer(uid, gid int, groups []int, selfUID, adminGID int) bool {
	switch {
	case uid == 0 || uid == selfUID:
		return true
	case adminGID < 0:
		return false
	case gid == adminGID:
		return true
	default:
		return slices.Contains(groups, adminGID)
	}
}

// maxStatusBytes bounds a read of /proc/<pid>/status (a few KiB in practice).
const maxStatusBytes = 64 << 10

// procGroups returns the supplementary groups of pid from
// <procRoot>/<pid>/status, checking that the process still has effective uid
// uid (so that a recycled pid is not trusted).
func procGroups(procRoot string, pid, uid int) ([]int, error) {
	f, err := os.Open(fmt.Sprintf("%s/%d/status", procRoot, pid))
	if err != nil {
		return nil, fmt.Errorf("adminapi: peer groups: %w", err)
	}
	defer f.Close()
	data, err := io.ReadAll(io.LimitReader(f, maxStatusBytes))
	if err != nil {
		return nil, fmt.Errorf("adminapi: peer groups: %w", err)
	}
	euid, groups, err := parseStatus(data)
	if err != nil {
		return nil, fmt.Errorf("adminapi: peer groups: pid %d: %w", pid, err)
	}
	if euid != uid {
		return nil, fmt.Errorf("adminapi: peer groups: pid %d now has uid %d, not %d", pid, euid, uid)
	}
	return groups, nil
}

// parseStatus extracts the effective uid and the supplementary groups from
// the text of /proc/<pid>/status.
func parseStatus(data []byte) (euid int, groups []int, err error) {
	var haveUID, haveGroups bool
	for line := range bytes.Lines(data) {
		key, rest, ok := bytes.Cut(bytes.TrimRight(line, "\n"), []byte(":"))
		if !ok {
			continue
		}
		switch string(key) {
		case "Uid": // real, effective, saved, filesystem
			f := bytes.Fields(rest)
			if len(f) < 2 {
				return 0, nil, errors.New("malformed Uid line")
			}
			if euid, err = strconv.Atoi(string(f[1])); err != nil {
				return 0, nil, errors.New("malformed Uid line")
			}
			haveUID = true
		case "Groups":
			for _, g := range bytes.Fields(rest) {
				n, err := strconv.Atoi(string(g))
				if err != nil {
					return 0, nil, errors.New("malformed Groups line")
				}
				groups = append(groups, n)
			}
			haveGroups = true
		}
	}
	if !haveUID || !haveGroups {
		return 0, nil, errors.New("no Uid or Groups line")
	}
	return euid, groups, nil
}

// peerListener wraps the unix listener: it bounds the number of open
// connections and reads each connection's credentials and access decision
// once, at accept time.
type peerListener struct {
	net.Listener
	sem       chan struct{}
	done      chan struct{}
	closeOnce sync.Once
	decide    func(*peer)
	// refuse, if set, gets every peer that is not allowed; its answer is
	// written (best effort, without waiting) and the connection closed at
	// once, so refused peers never hold a connection slot.
	refuse func(*peer) []byte
	// busy, if set, is the answer to an allowed peer when all maxConns
	// slots are taken; without it such a connection is just closed.
	busy     func(maxConns int) []byte
	drainers chan struct{} // bounds the goroutines answering refused peers
}

func newPeerListener(ln net.Listener, maxConns int, decide func(*peer)) *peerListener {
	return &peerListener{
		Listener: ln,
		sem:      make(chan struct{}, maxConns),
		done:     make(chan struct{}),
		decide:   decide,
		drainers: make(chan struct{}, 16),
	}
}

func (l *peerListener) Accept() (net.Conn, error) {
	for {
		select {
		case <-l.done:
			return nil, net.ErrClosed
		default:
		}
		c, err := l.Listener.Accept()
		if err != nil {
			return nil, err
		}
		pc := &peerConn{Conn: c, release: func() { <-l.sem }, peer: &peer{PID: -1, UID: -1, GID: -1}}
		if uc, ok := c.(*net.UnixConn); ok {
			pc.peer.PID, pc.peer.UID, pc.peer.GID, pc.peer.Err = peerCred(uc)
			pc.peer.Known = pc.peer.Err == nil
		} else {
			pc.peer.Err = fmt.Errorf("adminapi: %T is not a unix socket: no peer credentials", c)
		}
		if pc.peer.Known {
			l.decide(pc.peer)
		}
		if l.refuse != nil && !pc.peer.Allowed {
			// Refused peers never take a connection slot.
			l.answerAndClose(c, l.refuse(pc.peer))
			continue
		}
		select {
		case l.sem <- struct{}{}:
		default:
			// Every slot is taken (followers of the event stream hold
			// theirs as long as they follow): say so at once rather than
			// leave the client with a connection nobody answers.
			if l.busy != nil {
				l.answerAndClose(c, l.busy(cap(l.sem)))
			} else {
				c.Close()
			}
			continue
		}
		return pc, nil
	}
}

// answerAndClose writes answer to c and closes it. The request's head is
// read first (an HTTP client takes an answer that comes before its request
// is written for a stray one on an idle connection, and reports no
// answer), then the answer written and the rest drained for a moment, by
// a bounded set of goroutines (so the client reads the answer rather than
// a reset); when those are busy, the connection is just closed.
func (l *peerListener) answerAndClose(c net.Conn, answer []byte) {
	select {
	case l.drainers <- struct{}{}:
		go func() {
			defer func() { <-l.drainers }()
			_ = c.SetDeadline(time.Now().Add(200 * time.Millisecond))
			readHead(c)
			_, _ = c.Write(answer)
			if uc, ok := c.(*net.UnixConn); ok {
				_ = uc.CloseWrite()
			}
			_, _ = io.Copy(io.Discard, io.LimitReader(c, 64<<10))
			c.Close()
		}()
	default:
		c.Close()
	}
}

// readHead reads from c until the end of an HTTP request head (a blank
// line), at most 8 KiB, or until c's deadline.
func readHead(c net.Conn) {
	var head []byte
	buf := make([]byte, 1024)
	for len(head) < 8<<10 {
		n, err := c.Read(buf)
		head = append(head, buf[:n]...)
		if bytes.Contains(head, []byte("\r\n\r\n")) || err != nil {
			return
		}
	}
}

func (l *peerListener) Close() error {
	l.closeOnce.Do(func() { close(l.done) })
	return l.Listener.Close()
}

type peerConn struct {
	net.Conn
	peer      *peer
	release   func()
	closeOnce sync.Once
}

func (c *peerConn) Close() error {
	err := c.Conn.Close()
	c.closeOnce.Do(c.release)
	return err
}
