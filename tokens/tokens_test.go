package tokens

import "testing"

func TestParseID(t *testing.T) {
	long := "soft."
	for len(long) <= MaxIDLen {
		long += "a"
	}
	tests := []struct {
		in      string
		typ, id string
		ok      bool
	}{
		{"soft.abc123", "soft", "abc123", true},
		{"uid.04A1B2C3", "uid", "04A1B2C3", true},
		{"piv.0f-1e_2d", "piv", "0f-1e_2d", true},
		{"", "", "", false},
		{"soft", "", "", false},
		{".abc", "", "", false},
		{"soft.", "", "", false},
		{"Soft.abc", "", "", false},
		{"soft.a/b", "", "", false},
		{"soft.a.b", "", "", false},
		{"soft.a b", "", "", false},
		{"abcdefghijklmnopq.x", "", "", false},
		{long, "", "", false},
	}
	for _, tc := range tests {
		typ, id, err := ParseID(tc.in)
		if (err == nil) != tc.ok {
			t.Errorf("ParseID(%q) error = %v; want ok=%v", tc.in, err, tc.ok)
			continue
		}
		if tc.ok && (typ != tc.typ || id != tc.id) {
			t.Errorf("ParseID(%q) = %q, %q; want %q, %q", tc.in, typ, id, tc.typ, tc.id)
		}
	}
}
