package weston

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/hotdesk/hotdesk/compositor/procsup"
	"github.com/hotdesk/hotdesk/internal/atomicfile"
)

const (
	recordName    = "session.json"
	recordVersion = 1
	// logTailSize is how much of weston.log goes into errors and logs.
	logTailSize = 2 << 10
)

// record is the on-disk description of a running compositor, written to
// <StateDir>/<id>/session.json; Adopt uses it to find and verify the
// process after a broker restart.
type record struct {
	Version    int       `json:"version"`
	SessionID  string    `json:"session_id"`
	User       string    `json:"user"`
	Account    string    `json:"account,omitempty"` // local account weston runs as
	PID        int       `json:"pid"`
	StartTicks uint64    `json:"start_ticks"` // /proc/<pid>/stat field 22
	BootID     string    `json:"boot_id"`
	Endpoint   string    `json:"endpoint"`
	Started    time.Time `json:"started"`
	Suspended  bool      `json:"suspended"`
	// Labels are the broker's facts about the session (compositor.Spec.Labels).
	Labels map[string]string `json:"labels,omitempty"`
}

// writeRecord atomically and durably replaces dir/session.json (0600).
func writeRecord(dir string, r record) error {
	b, err := json.Marshal(r)
	if err != nil {
		return err
	}
	return atomicfile.Write(filepath.Join(dir, recordName), append(b, '\n'), 0o600)
}

// readRecord reads and checks dir/session.json. The error wraps
// os.ErrNotExist when there is no record, ErrBadRecord when it is invalid.
func readRecord(dir, wantID string) (record, error) {
	var r record
	if err := procsup.ReadRecord(filepath.Join(dir, recordName), &r); err != nil {
		if errors.Is(err, procsup.ErrBadRecord) {
			return record{}, fmt.Errorf("%w: %v", ErrBadRecord, err)
		}
		return record{}, err
	}
	switch {
	case r.Version != recordVersion:
		return r, fmt.Errorf("%w: version %d", ErrBadRecord, r.Version)
	case r.SessionID != wantID:
		return r, fmt.Errorf("%w: session id %q in dir %q", ErrBadRecord, r.SessionID, wantID)
	case r.PID <= 1:
		return r, fmt.Errorf("%w: pid %d", ErrBadRecord, r.PID)
	case r.BootID == "":
		return r, fmt.Errorf("%w: no boot id", ErrBadRecord)
	case strings.HasPrefix(r.Endpoint, "rdp://") && (rdpPortOf(r.Endpoint) < 1 || rdpPortOf(r.Endpoint) > 65535):
		// Adopt would guard and hand out a port that is none.
		return r, fmt.Errorf("%w: endpoint %q", ErrBadRecord, r.Endpoint)
	}
	return r, nil
}

// logTail returns the last logTailSize bytes of the log at path, made
// printable, or "" if there is none.
func logTail(path string) string { return procsup.LogTail(path, logTailSize) }

// rotateLog keeps the log at path under max bytes: when it is larger, its
// last max bytes are copied to path+".1" and path is truncated to zero.
// Weston holds the log open with O_APPEND, so its next write lands at the
// new end of file. Lines written during the copy may be lost.
//
// The log is the desktop user's file: they may hold a lease on it
// (F_SETLEASE), which makes an open by anyone else wait for the lease
// break time (45 s), holding up every session's tick. It is opened
// without waiting (O_NONBLOCK): a leased log is busy this time
// (EWOULDBLOCK), rotated at a later tick. It is truncated through that
// descriptor, not by name (truncate(2) would wait too).
func rotateLog(path string, max int64) (bool, error) {
	fi, err := os.Stat(path)
	if err != nil || fi.Size() <= max {
		if errors.Is(err, os.ErrNotExist) {
			err = nil
		}
		return false, err
	}
	src, err := os.OpenFile(path, os.O_RDWR|syscall.O_NONBLOCK|syscall.O_NOFOLLOW, 0)
	if err != nil {
		return false, err
	}
	defer src.Close()
	if fi, err = src.Stat(); err != nil || fi.Size() <= max {
		return false, err
	}
	dst, err := os.OpenFile(path+".1", os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return false, err
	}
	_, cerr := io.Copy(dst, io.NewSectionReader(src, fi.Size()-max, max))
	if err := dst.Close(); cerr == nil {
		cerr = err
	}
	if cerr != nil {
		return false, cerr
	}
	return true, src.Truncate(0)
}
