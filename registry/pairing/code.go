package pairing

import (
	"crypto/rand"
	"encoding/binary"
	"fmt"
	"strings"

	"github.com/hotdesk/hotdesk/proto"
)

// alphabet is Crockford's base32: digits and upper-case letters without
// I, L, O and U.
const alphabet = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"

// Code layout: IDLen characters of id (20 bits) then SecretLen characters of
// secret (40 bits), shown as three dash-separated groups of four.
const (
	IDLen     = 4
	SecretLen = 8
	codeLen   = IDLen + SecretLen
	// maxCodeInput bounds the raw input ParseCode looks at: the wire's
	// bound, so a code a terminal may send is one ParseCode reads.
	maxCodeInput = proto.MaxPairCodeLen
)

// decode maps an input byte to its 5-bit value, or -1. Lower case is
// accepted, and Crockford's look-alikes O→0 and I, L→1.
var decode = func() (d [256]int8) {
	for i := range d {
		d[i] = -1
	}
	for i, c := range alphabet {
		d[c] = int8(i)
		d[strings.ToLower(string(c))[0]] = int8(i)
	}
	for _, c := range "oO" {
		d[c] = 0
	}
	for _, c := range "iIlL" {
		d[c] = 1
	}
	return d
}()

// newCode returns a fresh random code in canonical form (12 characters of
// the alphabet, no dashes).
func newCode() (string, error) {
	var b [8]byte
	if _, err := rand.Read(b[:]); err != nil {
		return "", err
	}
	v := binary.BigEndian.Uint64(b[:])
	out := make([]byte, codeLen)
	for i := range out {
		out[i] = alphabet[v&31]
		v >>= 5
	}
	return string(out), nil
}

// format renders a canonical code as "XXXX-XXXX-XXXX".
func format(canon string) string {
	return canon[0:4] + "-" + canon[4:8] + "-" + canon[8:12]
}

// ParseCode normalises a code typed by a person and splits it into its id
// (the first 4 characters) and secret (the other 8), both in canonical upper
// case. Case does not matter, dashes and spaces may appear anywhere or not at
// all, and O, I and L are read as 0, 1 and 1. Anything else that is not 12
// characters of Crockford base32 is an error wrapping ErrInvalidCode.
func ParseCode(s string) (id, secret string, err error) {
	if len(s) > maxCodeInput {
		return "", "", fmt.Errorf("%w: longer than %d bytes", ErrInvalidCode, maxCodeInput)
	}
	canon := make([]byte, 0, codeLen)
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c == '-' || c == ' ' {
			continue
		}
		v := decode[c]
		if v < 0 {
			return "", "", fmt.Errorf("%w: invalid character at offset %d", ErrInvalidCode, i)
		}
		if len(canon) == codeLen {
			return "", "", fmt.Errorf("%w: more than %d characters", ErrInvalidCode, codeLen)
		}
		canon = append(canon, alphabet[v])
	}
	if len(canon) != codeLen {
		return "", "", fmt.Errorf("%w: %d characters; want %d", ErrInvalidCode, len(canon), codeLen)
	}
	return string(canon[:IDLen]), string(canon[IDLen:]), nil
}

// FormatCode normalises a code like ParseCode and renders it as
// "XXXX-XXXX-XXXX".
func FormatCode(s string) (string, error) {
	id, secret, err := ParseCode(s)
	if err != nil {
		return "", err
	}
	return format(id + secret), nil
}
