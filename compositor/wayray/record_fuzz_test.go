package wayray

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/hotdesk/hotdesk/compositor/procsup"
)

// FuzzReadRecord: a session.json Adopt finds after a restart (written by
// an earlier daemon, or by the compositor, which runs as the daemon's
// user) is read within a bound and is either a record of its session with
// a pid that may be the compositor's and an endpoint the session could
// announce (or none), or an error: never a panic.
func FuzzReadRecord(f *testing.F) {
	dir := filepath.Join(f.TempDir(), "s1")
	if err := os.Mkdir(dir, 0o700); err != nil {
		f.Fatal(err)
	}
	add := func(r record) []byte {
		b, err := json.Marshal(r)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
		return b
	}
	good := record{SessionID: "s1", User: "alice", PID: 4242, StartTicks: 9, BootID: "b", Socket: filepath.Join(dir, "control.sock"),
		Endpoint: "rdp://127.0.0.1:3390", Started: time.Unix(1_700_000_000, 0).UTC(), Labels: map[string]string{"a": "b"}}
	b := add(good)
	// A valid record after 64 KiB of blanks: too large to read.
	f.Add(append(bytes.Repeat([]byte(" "), procsup.MaxRecordSize), b...))
	r := good
	r.Endpoint = "wayland:" + filepath.Join(dir, "wayland-0")
	add(r)
	r.Endpoint = "tcp://127.0.0.1:0"
	add(r)
	r.SessionID = "s2"
	add(r)
	f.Add([]byte(`{"session_id":"s1","pid":1}`))
	f.Add([]byte(`{"session_id":"s1","pid":2,"labels":[]}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		if err := os.WriteFile(filepath.Join(dir, "session.json"), b, 0o600); err != nil {
			t.Fatal(err)
		}
		r, err := readRecord(dir, "s1")
		if err != nil {
			return
		}
		if len(b) > procsup.MaxRecordSize {
			t.Fatalf("record of %d bytes read", len(b))
		}
		if r.SessionID != "s1" || r.PID <= 1 {
			t.Fatalf("record %+v accepted", r)
		}
		if r.Endpoint != "" && !(&session{dir: dir}).validEndpoint(r.Endpoint) {
			t.Fatalf("record with endpoint %q accepted", r.Endpoint)
		}
	})
}
