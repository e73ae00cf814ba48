package printable

import "testing"

func TestString(t *testing.T) {
	tests := []struct {
		in   string
		want bool
	}{
		{"", true},
		{"alice@example.com", true},
		{"Büro 3 – Empfang", true},
		{"a b", true},
		{"tab\there", false},
		{"line\nbreak", false},
		{"nul\x00", false},
		{"esc\x1b[2J", false},
		{"bad \xff utf-8", false},
		{"nbsp\u00a0", false},
		{"rtl\u202eoverride", false},
	}
	for _, tt := range tests {
		if got := String(tt.in); got != tt.want {
			t.Errorf("String(%q) = %v; want %v", tt.in, got, tt.want)
		}
	}
}
