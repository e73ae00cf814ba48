package tokens

import (
	"strings"
	"testing"
)

// FuzzParseID: a token id (what a terminal reports, a card or phone
// yields, an administrator types) is accepted only in its documented
// form, and its type and id join back to it.
func FuzzParseID(f *testing.F) {
	for _, s := range []string{"soft.abc-1_X", "user.john.doe", "user..x", "user.x.", "hce.", ".x", "Soft.x", "uid.0a:0b",
		"piv.00000000000000000000000000000001", "abcdefghijklmnopq.x", "soft.ü", strings.Repeat("a", 200)} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		typ, id, err := ParseID(s)
		if err != nil {
			if typ != "" || id != "" {
				t.Fatalf("%q: %q %q with error %v", s, typ, id, err)
			}
			return
		}
		if typ+"."+id != s || len(s) > MaxIDLen || typ == "" || len(typ) > 16 || id == "" {
			t.Fatalf("%q accepted as %q %q", s, typ, id)
		}
		if strings.Trim(typ, "abcdefghijklmnopqrstuvwxyz") != "" {
			t.Fatalf("%q: type %q", s, typ)
		}
		allowed := "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_-"
		if typ == "user" {
			allowed += "."
			if strings.HasPrefix(id, ".") || strings.HasSuffix(id, ".") || strings.Contains(id, "..") {
				t.Fatalf("%q: user %q", s, id)
			}
		}
		if strings.Trim(id, allowed) != "" {
			t.Fatalf("%q: id %q", s, id)
		}
	})
}
