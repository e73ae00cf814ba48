package adminapi_test

import (
	"bufio"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"runtime"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/hotdesk/hotdesk/cmd/internal/adminapi/adminapitest"
	"github.com/hotdesk/hotdesk/internal/testutil"
	"golang.org/x/sys/unix"
)

// dialAs connects to the unix socket addr from an OS thread whose effective
// uid and gid are uid and gid, so the kernel records those as the peer's
// credentials. Only that thread changes identity (raw syscalls, not the
// process-wide setresuid), and the thread is discarded afterwards.
func dialAs(t *testing.T, addr string, uid, gid int) net.Conn {
	t.Helper()
	type result struct {
		c   net.Conn
		err error
	}
	ch := make(chan result, 1)
	go func() {
		// Never unlocked: the thread dies with this goroutine.
		runtime.LockOSThread()
		keep := ^uintptr(0) // -1: leave unchanged
		if _, _, e := unix.RawSyscall(unix.SYS_SETRESGID, keep, uintptr(gid), keep); e != 0 {
			ch <- result{nil, fmt.Errorf("setresgid: %w", e)}
			return
		}
		if _, _, e := unix.RawSyscall(unix.SYS_SETRESUID, keep, uintptr(uid), keep); e != 0 {
			ch <- result{nil, fmt.Errorf("setresuid: %w", e)}
			return
		}
		c, err := net.Dial("unix", addr)
		unix.RawSyscall(unix.SYS_SETRESUID, keep, 0, keep)
		unix.RawSyscall(unix.SYS_SETRESGID, keep, 0, keep)
		ch <- result{c, err}
	}()
	r := <-ch
	if r.err != nil {
		t.Fatalf("dial as uid %d: %v", uid, r.err)
	}
	t.Cleanup(func() { r.c.Close() })
	return r.c
}

func get(t *testing.T, c net.Conn, path string) (int, string) {
	t.Helper()
	if _, err := fmt.Fprintf(c, "GET %s HTTP/1.1\r\nHost: hotdesk\r\n\r\n", path); err != nil {
		t.Fatal(err)
	}
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(body)
}

// Real connections: root is accepted; another uid is refused with 403 and
// a log line unless its gid is the admin group.
func TestRealPeerCredentials(t *testing.T) {
	testutil.NeedRoot(t, "connecting as another uid needs root")
	const nobody = 65534
	tests := []struct {
		name       string
		uid, gid   int
		adminGID   int
		wantStatus int
	}{
		{"root", 0, 0, -1, http.StatusOK},
		{"other uid refused", nobody, nobody, -1, http.StatusForbidden},
		{"other uid, other group refused", nobody, nobody, 4242, http.StatusForbidden},
		{"other uid in admin group", nobody, nobody, nobody, http.StatusOK},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			// An abstract socket: no file permissions stand in the way, so
			// the peer-credential check is all that decides.
			var rnd [8]byte
			rand.Read(rnd[:])
			addr := "@hotdesk-adminapi-test-" + hex.EncodeToString(rnd[:])
			ln, err := net.Listen("unix", addr)
			if err != nil {
				t.Fatal(err)
			}
			ts := serveOn(t, ln, addr, adminapitest.New(adminapitest.State{}), tt.adminGID)

			c := dialAs(t, addr, tt.uid, tt.gid)
			status, body := get(t, c, "/v1/sessions")
			if status != tt.wantStatus {
				t.Errorf("status got = %d; want %d (body %s)", status, tt.wantStatus, body)
			}
			logs := ts.logs.String()
			refusedLogged := strings.Contains(logs, "admin api request refused") &&
				strings.Contains(logs, fmt.Sprintf("uid=%d", tt.uid))
			if want := tt.wantStatus == http.StatusForbidden; refusedLogged != want {
				t.Errorf("refusal logged got = %v; want %v (logs %q)", refusedLogged, want, logs)
			}
			if tt.wantStatus == http.StatusForbidden && !strings.Contains(body, "may not use the admin API") {
				t.Errorf("body got = %s; want the refusal reason", body)
			}
			if tt.wantStatus == http.StatusForbidden {
				// A refused peer's connection is closed at once: it holds
				// no connection slot.
				c.SetReadDeadline(time.Now().Add(10 * time.Second))
				if n, err := c.Read(make([]byte, 1)); n != 0 || (err != io.EOF && !errors.Is(err, syscall.ECONNRESET)) {
					t.Errorf("read after refusal = %d, %v; want EOF or a reset (closed by the server)", n, err)
				}
			}
		})
	}
}
