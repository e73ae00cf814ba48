package weston

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestPreviousReleaseRecords: the session.json a hotdeskd of the previous
// release (f477c10) wrote for its desktops is read by this release's
// Adopt (readRecord), field for field: after an in-place upgrade the
// new daemon finds every desktop. testdata/f477c10 holds records a real
// f477c10 hotdeskd wrote (a headless desktop it had suspended, an RDP
// one shown at a terminal), copied from its data_dir.
func TestPreviousReleaseRecords(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		file, id, endpoint string
		suspended          bool
	}{
		{"headless-suspended.json", "s-52lbybrgxsb2po3p", "wayland:/tmp/upgJXV3/data/sessions/s-52lbybrgxsb2po3p/run/wayland-hd", true},
		{"rdp-active.json", "s-7cyhyghknb4xf5m4", "rdp://127.0.0.1:45899", false},
	} {
		b, err := os.ReadFile(filepath.Join("testdata/f477c10", tc.file))
		if err != nil {
			t.Fatal(err)
		}
		var strict record
		dec := json.NewDecoder(bytes.NewReader(b))
		dec.DisallowUnknownFields()
		if err := dec.Decode(&strict); err != nil {
			t.Errorf("%s: %v: a field the previous release wrote is unknown here", tc.file, err)
		}
		dir := filepath.Join(t.TempDir(), tc.id)
		if err := os.Mkdir(dir, 0o700); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, recordName), b, 0o600); err != nil {
			t.Fatal(err)
		}
		r, err := readRecord(dir, tc.id)
		if err != nil {
			t.Errorf("%s: readRecord = %v", tc.file, err)
			continue
		}
		if r.SessionID != tc.id || r.PID <= 0 || r.StartTicks == 0 || r.BootID == "" || r.Endpoint != tc.endpoint ||
			r.Suspended != tc.suspended || r.Labels["hotdesk.token"] == "" || r.Labels["hotdesk.created_unix_ms"] == "" {
			t.Errorf("%s: %+v", tc.file, r)
		}
		if strings.HasPrefix(tc.endpoint, "rdp:") && rdpPortOf(r.Endpoint) != 45899 {
			t.Errorf("%s: RDP port %d; want 45899", tc.file, rdpPortOf(r.Endpoint))
		}
	}
}
