package printable

import "testing"

func TestString(t *testing.T) {
	for _, s := range []string{"", "alice@example.com", "Büro 3 – Empfang", "a b"} {
		if !String(s) {
			t.Errorf("String(%q) = false; want true", s)
		}
	}
	for _, s := range []string{
		"tab\there", "line\nbreak", "nul\x00", "esc\x1b[2J", "bad \xff utf-8",
		"nbsp\u00a0", "rtl\u202eoverride",
	} {
		if String(s) {
			t.Errorf("String(%q) = true; want false", s)
		}
	}
}
