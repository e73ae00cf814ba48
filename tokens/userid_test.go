package tokens

import "testing"

// TestParseUserIDWithDots: password logins name the user in the id, and
// user names may contain dots; other token types may not.
func TestParseUserIDWithDots(t *testing.T) {
	for _, tt := range []struct {
		in string
		ok bool
	}{
		{"user.john.doe", true},
		{"user.a.b.c", true},
		{"user.alice", true},
		{"user..x", false},
		{"user.x.", false},
		{"user.x..y", false},
		{"uid.04.a1", false},
		{"soft.ab.cd", false},
	} {
		_, id, err := ParseID(tt.in)
		if (err == nil) != tt.ok {
			t.Errorf("ParseID(%q) = %q, %v; want ok %v", tt.in, id, err, tt.ok)
		}
	}
}
