package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/hotdesk/hotdesk/proto"
)

// TestGroupMembersPersisted: members learned by one run are kept in the
// state directory (0600, atomically) and trusted by the next run with the
// same anchors, which can dial them while its configured brokers are
// down; a file under other anchors, writable by others, oversized,
// malformed or holding invalid members is refused or filtered, never
// trusted as is.
func TestGroupMembersPersisted(t *testing.T) {
	t.Parallel()
	dir := filepath.Join(t.TempDir(), "state")
	anchors := anchorsID([][]byte{fp(1)}, nil)
	newG := func() *group {
		g, err := newGroup([]string{"a:1"}, [][]byte{fp(1)}, nil, "")
		if err != nil {
			t.Fatal(err)
		}
		return g
	}
	g := newG()
	if n, err := g.persist(dir, anchors); n != 0 || err != nil {
		t.Fatalf("persist on an empty dir = %d, %v; want 0, nil", n, err)
	}
	if st, err := os.Stat(dir); err != nil || st.Mode().Perm() != 0o700 {
		t.Fatalf("state dir: %v, %v; want mode 0700", st, err)
	}
	g.learn([]proto.Member{
		{ServerID: "a", Addr: "a:1", Fingerprint: fp(1)},
		{ServerID: "c", Addr: "c:1", Fingerprint: fp(3), Draining: true},
	})
	if err := g.save(); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, membersFile)
	if st, err := os.Stat(path); err != nil || st.Mode().Perm() != 0o600 {
		t.Fatalf("members file: %v, %v; want mode 0600", st, err)
	}

	// The next run (its configured broker a is down) knows c.
	g2 := newG()
	if n, err := g2.persist(dir, anchors); n != 2 || err != nil {
		t.Fatalf("persist = %d, %v; want 2 members loaded", n, err)
	}
	if !g2.trusted(fp(3)) {
		t.Error("a member loaded from the state file is not trusted")
	}
	if got := strings.Join(g2.candidates(t.Context(), "a:1"), ","); got != "c:1,a:1" {
		t.Errorf("candidates = %s; want c:1,a:1", got)
	}

	// Other anchors (the terminal was given another pin): ignored.
	g3 := newG()
	if n, err := g3.persist(dir, anchorsID([][]byte{fp(7)}, nil)); n != 0 || err == nil || !strings.Contains(err.Error(), "other trust anchors") {
		t.Errorf("persist under other anchors = %d, %v; want 0 and an error", n, err)
	}
	if g3.trusted(fp(3)) {
		t.Error("a member kept under other anchors is trusted")
	}

	good, _ := os.ReadFile(path)
	for _, tt := range []struct {
		name string
		data string
		mode os.FileMode
		want string
	}{
		{"writable by others", string(good), 0o666, "others may write it"},
		{"oversized", strings.Repeat(" ", maxMembersFileSize+1), 0o600, "larger than"},
		{"malformed", "{", 0o600, "unexpected EOF"},
		{"unknown field", `{"format":1,"anchors":"` + anchors + `","members":[],"extra":1}`, 0o600, "unknown field"},
		{"future format", `{"format":2,"anchors":"` + anchors + `","members":[]}`, 0o600, "format 2"},
		{"too many", `{"format":1,"anchors":"` + anchors + `","members":[` + strings.TrimSuffix(strings.Repeat(`{"server_id":"x","addr":"x:1","fingerprint":"`+proto.FormatFingerprint(fp(9))+`"},`, proto.MaxMembers+1), ",") + `]}`, 0o600, "limit"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			if err := os.WriteFile(path, []byte(tt.data), tt.mode); err != nil {
				t.Fatal(err)
			}
			os.Chmod(path, tt.mode) // WriteFile honours the umask
			g := newG()
			n, err := g.persist(dir, anchors)
			if n != 0 || err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("persist = %d, %v; want 0 and an error containing %q", n, err, tt.want)
			}
			if g.trusted(fp(3)) || g.trusted(fp(9)) {
				t.Error("a member of a refused file is trusted")
			}
		})
	}

	// Invalid members are dropped, valid ones kept.
	mixed := `{"format":1,"anchors":"` + anchors + `","members":[` +
		`{"server_id":"c","addr":"c:1","fingerprint":"` + proto.FormatFingerprint(fp(3)) + `"},` +
		`{"server_id":"bad","addr":"nope","fingerprint":"` + proto.FormatFingerprint(fp(4)) + `"},` +
		`{"server_id":"short","addr":"s:1","fingerprint":"sha256:0102"},` +
		`{"server_id":"","addr":"e:1","fingerprint":"` + proto.FormatFingerprint(fp(5)) + `"}]}`
	if err := os.WriteFile(path, []byte(mixed), 0o600); err != nil {
		t.Fatal(err)
	}
	g4 := newG()
	if n, err := g4.persist(dir, anchors); n != 1 || err != nil {
		t.Errorf("persist of a file with invalid members = %d, %v; want 1 valid member", n, err)
	}
	if !g4.trusted(fp(3)) || g4.trusted(fp(4)) || g4.trusted(fp(5)) {
		t.Error("invalid members must be dropped and the valid one kept")
	}
}
