package wayray

import (
	"errors"
	"net"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/hotdesk/hotdesk/internal/testutil"
)

// TestReadMsgAfterFreeze: an answer already waiting when the read's
// deadline has passed — as after the broker was stopped (SIGSTOP, a paused
// VM) while it waited — is read, not taken for a broken compositor; with
// nothing waiting the read still times out.
func TestReadMsgAfterFreeze(t *testing.T) {
	ln, err := net.Listen("unix", filepath.Join(testutil.ShortTempDir(t, "hdwr"), "s"))
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	peer, err := net.Dial("unix", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer peer.Close()
	c, err := ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()

	if err := WriteMsg(peer, 7, 42, nil); err != nil {
		t.Fatal(err)
	}
	// A deadline already in the past when the read starts: Go reports it
	// before looking at the socket, as after a freeze.
	f, err := ReadMsg(c, time.Nanosecond)
	if err != nil || f.Type != 7 || f.ID != 42 {
		t.Fatalf("ReadMsg with the answer waiting = %+v, %v; want type 7, id 42", f, err)
	}
	if _, err := ReadMsg(c, time.Nanosecond); !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("ReadMsg with nothing waiting = %v; want a deadline error", err)
	}
}
