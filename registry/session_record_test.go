package registry

import (
	"encoding/json"
	"strings"
	"testing"

	"go.etcd.io/etcd/api/v3/mvccpb"
)

// TestSessionRecordResume: a session record carries the resume key's hash
// and terminal through encode and decode; a record written before they
// existed decodes with neither (its session is adopted, and asks a login);
// a record without them says nothing of them.
func TestSessionRecordResume(t *testing.T) {
	t.Parallel()
	hash := strings.Repeat("ab", 32)
	in := Session{ID: "s-1", Key: "soft.k", ServerID: "b1", State: "active", Terminal: "desk-1",
		ResumeTerminal: "desk-1", ResumeKeySHA256: hash}
	v, err := json.Marshal(in)
	if err != nil {
		t.Fatal(err)
	}
	c, err := decodeClaim("soft.k", &mvccpb.KeyValue{Value: v, CreateRevision: 7})
	if err != nil {
		t.Fatal(err)
	}
	if got := c.Session; got != in || c.Fence != 7 {
		t.Fatalf("decoded %+v (fence %d); want %+v (fence 7)", got, c.Fence, in)
	}
	if !strings.Contains(string(v), `"resume_terminal":"desk-1","resume_key_sha256":"`+hash+`"`) {
		t.Errorf("encoded %s; want resume_terminal and resume_key_sha256", v)
	}

	// As written before the hash existed.
	old := `{"id":"s-1","key":"soft.k","server_id":"b1","user":"bob","state":"suspended","created_unix_ms":1,` +
		`"updated_unix_ms":2,"suspended_unix_ms":2,"last_terminal":"desk-1"}`
	c, err = decodeClaim("soft.k", &mvccpb.KeyValue{Value: []byte(old)})
	if err != nil {
		t.Fatalf("a record of before: %v", err)
	}
	if s := c.Session; s.ID != "s-1" || s.LastTerminal != "desk-1" || s.ResumeTerminal != "" || s.ResumeKeySHA256 != "" {
		t.Fatalf("a record of before decoded as %+v; want it whole, without a resume key", s)
	}

	v, err = json.Marshal(Session{ID: "s-2", Key: "soft.j", State: "suspended"})
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(string(v), "resume") {
		t.Errorf("a record without a resume key encoded as %s; want no resume fields", v)
	}
}
