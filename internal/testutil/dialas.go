package testutil

import (
	"context"
	"errors"
	"fmt"
	"os/exec"
	"os/user"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// ErrConnRefused is what DialAs returns when the connection was refused.
var ErrConnRefused = errors.New("connection refused")

// Nobody returns the uid and gid of the local account nobody (the test
// fails without it).
func Nobody(t testing.TB) (uid, gid int) {
	t.Helper()
	u, err := user.Lookup("nobody")
	if err != nil {
		t.Fatalf("account nobody: %v", err)
	}
	uid, _ = strconv.Atoi(u.Uid)
	gid, _ = strconv.Atoi(u.Gid)
	return uid, gid
}

// DialAs opens a TCP connection to 127.0.0.1:port from a child process
// running as uid and gid with no supplementary groups (bash's /dev/tcp; the
// caller must be root), as another local user would, and closes it. It
// returns nil if the connection was established, an error wrapping
// ErrConnRefused if it was refused, any other error otherwise. It waits at
// most 10 s.
func DialAs(uid, gid, port int) error {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, "/bin/bash", "-c", fmt.Sprintf("exec 3<>/dev/tcp/127.0.0.1/%d", port))
	cmd.Env = []string{"PATH=/usr/bin:/bin", "LANG=C"}
	cmd.Dir = "/"
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid), Groups: []uint32{}}}
	out, err := cmd.CombinedOutput()
	switch {
	case err == nil:
		return nil
	case strings.Contains(string(out), "Connection refused"):
		return fmt.Errorf("dial 127.0.0.1:%d as uid %d: %w", port, uid, ErrConnRefused)
	default:
		return fmt.Errorf("dial 127.0.0.1:%d as uid %d: %w: %s", port, uid, err, strings.TrimSpace(string(out)))
	}
}
