package weston

import (
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// FuzzReadRecord: a session.json that Adopt finds after a restart (written
// by an earlier daemon, perhaps half-written or corrupted on disk) is
// either a record Adopt can use as it is — its version, its session's id,
// a pid that may be a desktop's, a boot id, an RDP port if any that is a
// port — or an error wrapping ErrBadRecord: never a panic.
func FuzzReadRecord(f *testing.F) {
	add := func(r record) {
		b, err := json.Marshal(r)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	good := record{Version: recordVersion, SessionID: "s1", User: "alice", Account: "hdk1", PID: 4242, StartTicks: 99,
		BootID: "b00t", Endpoint: "rdp://127.0.0.1:3390", Started: time.Unix(1_700_000_000, 0).UTC(), Labels: map[string]string{"token": "soft.x"}}
	add(good)
	r := good
	r.Endpoint = "wayland:/run/hotdesk/s1/wayland-0"
	add(r)
	r.PID = 1
	add(r)
	f.Add([]byte(`{"version":1,"session_id":"s1","pid":2,"boot_id":"b","started":"not a time"}`))
	f.Add([]byte(`{"version":1,"session_id":"s1","pid":2,"boot_id":"b","labels":{"a":1}}`))
	f.Add([]byte(`[]`))
	dir := f.TempDir()
	path := filepath.Join(dir, recordName)
	f.Fuzz(func(t *testing.T, b []byte) {
		if err := os.WriteFile(path, b, 0o600); err != nil {
			t.Fatal(err)
		}
		rec, err := readRecord(dir, "s1")
		if err != nil {
			if !errors.Is(err, ErrBadRecord) {
				t.Fatalf("error %v is not ErrBadRecord", err)
			}
			return
		}
		if rec.Version != recordVersion || rec.SessionID != "s1" || rec.PID <= 1 || rec.BootID == "" {
			t.Fatalf("record %+v accepted", rec)
		}
		if p := rdpPortOf(rec.Endpoint); p < 0 || p > 65535 || strings.HasPrefix(rec.Endpoint, "rdp://") && p == 0 {
			t.Fatalf("record with endpoint %q accepted: rdp port %d", rec.Endpoint, p)
		}
	})
}
