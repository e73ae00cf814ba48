// Package printable checks untrusted text before it is stored, logged or
// shown: names, labels and ids that peers and users choose. It has no
// dependencies beyond the standard library, so every layer may use it.
package printable

import (
	"unicode"
	"unicode/utf8"
)

// String reports whether s is valid UTF-8 made of printable characters
// only (letters, marks, numbers, punctuation, symbols and the ASCII space,
// as unicode.IsPrint): no control characters, no other white space, no
// invalid bytes. The empty string is printable.
func String(s string) bool {
	if !utf8.ValidString(s) {
		return false
	}
	for _, r := range s {
		if !unicode.IsPrint(r) {
			return false
		}
	}
	return true
}
