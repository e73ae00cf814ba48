// Package soft implements software tokens: ed25519 key pairs held by a
// terminal in a local keystore file.
//
// A software token's id is derived from its public key (TokenID), so the
// broker can recognise it without a lookup table and nobody can choose an id
// colliding with another key's. Possession of the private key is proven by
// signing ChallengeMessage, which binds the terminal, the broker, the
// connection (Welcome nonce), the challenge and the token together so that a
// signature cannot be replayed on another connection, broker or terminal.
// Enrolment with a pairing code is proven the same way over PairMessage,
// in a domain of its own.
//
// The Keystore is the terminal-side file of named keys; the Provider turns
// "insert"/"remove" commands into tokens.Events, like a card reader would.
package soft

import (
	"bytes"
	"crypto/ed25519"
	"crypto/sha256"
	"encoding/base32"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"math"
	"strings"
)

// Kind is the token type of software tokens: ids are "soft.<id>".
const Kind = "soft"

// idPrefix starts every software token id.
const idPrefix = Kind + "."

// challengeDomain and pairDomain separate the two things a token key signs
// (login proofs, pairing proofs) from each other and from any other use of
// the same key.
const (
	challengeDomain = "hotdesk-soft-token-v1"
	pairDomain      = "hotdesk-pair-v1"
)

// ErrBadProof reports a signature that does not verify, or a key or
// signature of the wrong size.
var ErrBadProof = errors.New("soft: bad proof of possession")

// idEncoding is RFC 4648 base32 without padding; ids use it in lower case.
var idEncoding = base32.StdEncoding.WithPadding(base32.NoPadding)

// TokenID returns the token id of pub: "soft." followed by the lower-case,
// unpadded base32 (RFC 4648 alphabet) of the first 20 bytes of SHA-256(pub).
func TokenID(pub ed25519.PublicKey) string {
	sum := sha256.Sum256(pub)
	return idPrefix + strings.ToLower(idEncoding.EncodeToString(sum[:20]))
}

// ChallengeMessage returns the bytes a terminal signs to prove possession of
// token's key:
//
//	"hotdesk-soft-token-v1" || 0x00 || lp(terminalID) || lp(serverID) ||
//	lp(welcomeNonce) || lp(challengeNonce) || lp(token)
//
// where lp(x) is len(x) as a big-endian uint16 followed by x. It fails if any
// part is longer than 65535 bytes; it never truncates.
func ChallengeMessage(terminalID, serverID string, welcomeNonce, challengeNonce []byte, token string) ([]byte, error) {
	return message("challenge", challengeDomain,
		[]string{"terminal id", "server id", "welcome nonce", "challenge nonce", "token"},
		[]byte(terminalID), []byte(serverID), welcomeNonce, challengeNonce, []byte(token))
}

// PairMessage returns the bytes a terminal (or a phone) signs to prove, in
// a Pair, possession of the private key of pub, which it asks to enrol as
// a token of kind with code:
//
//	"hotdesk-pair-v1" || 0x00 || lp(terminalID) || lp(serverID) ||
//	lp(welcomeNonce) || lp(code) || lp(kind) || lp(pub)
//
// with lp as in ChallengeMessage, code exactly as sent in the Pair. Its
// domain differs from ChallengeMessage's (neither is a prefix of the
// other), so a pairing signature is never a login proof and a login proof
// never a pairing signature; the Welcome nonce binds it to one connection
// and the server id to one broker, so it cannot be replayed elsewhere. It
// fails if any part is longer than 65535 bytes; it never truncates.
func PairMessage(terminalID, serverID string, welcomeNonce []byte, code, kind string, pub []byte) ([]byte, error) {
	return message("pair", pairDomain,
		[]string{"terminal id", "server id", "welcome nonce", "code", "kind", "public key"},
		[]byte(terminalID), []byte(serverID), welcomeNonce, []byte(code), []byte(kind), pub)
}

// message returns domain || 0x00 || lp(part) for each part.
func message(what, domain string, names []string, parts ...[]byte) ([]byte, error) {
	n := len(domain) + 1
	for i, p := range parts {
		if len(p) > math.MaxUint16 {
			return nil, fmt.Errorf("soft: %s message: %s is %d bytes, limit %d", what, names[i], len(p), math.MaxUint16)
		}
		n += 2 + len(p)
	}
	msg := make([]byte, 0, n)
	msg = append(msg, domain...)
	msg = append(msg, 0)
	for _, p := range parts {
		msg = binary.BigEndian.AppendUint16(msg, uint16(len(p)))
		msg = append(msg, p...)
	}
	return msg, nil
}

// Verify checks that sig is pub's ed25519 signature of msg. Any failure,
// including a public key or signature of the wrong size, or a weak public
// key (WeakKey), is ErrBadProof.
func Verify(pub []byte, msg, sig []byte) error {
	switch {
	case len(pub) != ed25519.PublicKeySize:
		return fmt.Errorf("%w: public key is %d bytes; want %d", ErrBadProof, len(pub), ed25519.PublicKeySize)
	case WeakKey(pub):
		return fmt.Errorf("%w: public key is a point of small order", ErrBadProof)
	case len(sig) != ed25519.SignatureSize:
		return fmt.Errorf("%w: signature is %d bytes; want %d", ErrBadProof, len(sig), ed25519.SignatureSize)
	case !ed25519.Verify(ed25519.PublicKey(pub), msg, sig):
		return ErrBadProof
	}
	return nil
}

// smallOrder holds the y coordinates, as 32-byte little-endian encodings
// without the sign bit, of the ed25519 points of small order (1, 2, 4 and
// 8), canonical or not: 0, 1, the two of order 8, p-1, and p and p+1 (0
// and 1 again). It is libsodium's list.
var smallOrder = func() [][]byte {
	hexes := []string{
		"0000000000000000000000000000000000000000000000000000000000000000",
		"0100000000000000000000000000000000000000000000000000000000000000",
		"26e8958fc2b227b045c3f489f2ef98f0d5dfac05d3c63339b13802886d53fc05",
		"c7176a703d4dd84fba3c0b760d10670f2a2053fa2c39ccc64ec7fd7792ac037a",
		"ecffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f",
		"edffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f",
		"eeffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f",
	}
	out := make([][]byte, len(hexes))
	for i, h := range hexes {
		b, err := hex.DecodeString(h)
		if err != nil || len(b) != ed25519.PublicKeySize {
			panic("soft: bad small-order point " + h)
		}
		out[i] = b
	}
	return out
}()

// WeakKey reports whether pub, an ed25519 public key of 32 bytes, encodes
// a point of small order. For such a key anyone can make signatures that
// ed25519.Verify accepts (one try in at most 8 succeeds, without any
// private key), so it proves nothing: it is never enrolled and never
// accepted in a proof. Keys of another size are not weak (they are wrong).
func WeakKey(pub []byte) bool {
	if len(pub) != ed25519.PublicKeySize {
		return false
	}
	for _, p := range smallOrder {
		if bytes.Equal(pub[:31], p[:31]) && pub[31]&0x7f == p[31] {
			return true
		}
	}
	return false
}
