//go:build linux

package main

import (
	"bufio"
	"net"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/hotdesk/hotdesk/internal/testutil"
)

// TestSocketOwner: the socket table parser finds a socket by its two
// addresses, IPv4 and IPv6 rows alike, and returns its owner's uid.
func TestSocketOwner(t *testing.T) {
	t.Parallel()
	const table = `  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 0100007F:1F90 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 1 1 0000000000000000 100 0 0 10 0
   1: 0100007F:C350 0100007F:1F90 01 00000000:00000000 00:00000000 00000000  1000        0 2 1 0000000000000000 20 4 30 10 -1
   2: 0000000000000000FFFF00000100007F:C351 0000000000000000FFFF00000100007F:1F90 01 00000000:00000000 00:00000000 00000000  65534        0 3 1 0 20 4 30 10 -1
`
	relay := &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 0x1F90}
	for _, tc := range []struct {
		port  int
		uid   int
		found bool
	}{{0xC350, 1000, true}, {0xC351, 65534, true}, {0xC352, 0, false}} {
		peer := &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: tc.port}
		uid, found, err := socketOwner(strings.NewReader(table), peer, relay)
		if err != nil || uid != tc.uid || found != tc.found {
			t.Errorf("socketOwner(port %#x) = %d, %v, %v; want %d, %v, nil", tc.port, uid, found, err, tc.uid, tc.found)
		}
	}
	if _, _, err := socketOwner(strings.NewReader("h\n 0: 0100007F:1F90 0100007F:C350 01 0 0 0 x\n"), relay,
		&net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 0xC350}); err == nil {
		t.Error("a row with a bad uid: nil error; want an error")
	}
}

// TestRelayRefusesOtherUsers: a connection to the relay from another
// user's process, even one made first, is closed; the relay hands on the
// connection of its own user's process.
func TestRelayRefusesOtherUsers(t *testing.T) {
	t.Parallel()
	if os.Getuid() != 0 {
		testutil.SkipOrFail(t, "needs root to connect as another user (nobody)")
	}
	if _, err := exec.LookPath("runuser"); err != nil {
		t.Fatalf("runuser: %v", err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	port := strconv.Itoa(ln.Addr().(*net.TCPAddr).Port)
	// nobody connects first, says "n" and waits.
	other := exec.Command("runuser", "-u", "nobody", "--", "bash", "-c",
		"exec 3<>/dev/tcp/127.0.0.1/"+port+" && printf n >&3 && echo connected && read -t 30 <&3")
	out, err := other.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := other.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { _ = other.Process.Kill(); _ = other.Wait() }()
	line, err := bufio.NewReader(out).ReadString('\n')
	if err != nil || line != "connected\n" {
		t.Fatalf("nobody's connection: %q, %v", line, err)
	}
	own, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer own.Close()
	if _, err := own.Write([]byte("s")); err != nil {
		t.Fatal(err)
	}

	got, err := acceptOwn(ln, testLogger(t))
	if err != nil {
		t.Fatal(err)
	}
	defer got.Close()
	_ = got.SetReadDeadline(time.Now().Add(waitBound))
	b := make([]byte, 1)
	if _, err := got.Read(b); err != nil || b[0] != 's' {
		t.Fatalf("relay handed on a connection that sent %q (%v); want this user's (\"s\")", b, err)
	}
}
