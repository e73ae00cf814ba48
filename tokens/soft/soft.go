// Package soft implements software tokens: ed25519 key pairs held by a
// terminal in a local keystore file.
//
// A software token's id is derived from its public key (TokenID), so the
// broker can recognise it without a lookup table and nobody can choose an id
// colliding with another key's. Possession of the private key is proven by
// signing ChallengeMessage, which binds the terminal, the broker, the
// connection (Welcome nonce), the challenge and the token together so that a
// signature cannot be replayed on another connection, broker or terminal.
//
// The Keystore is the terminal-side file of named keys; the Provider turns
// "insert"/"remove" commands into tokens.Events, like a card reader would.
package soft

import (
	"crypto/ed25519"
	"crypto/sha256"
	"encoding/base32"
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"strings"
)

// Kind is the token type of software tokens: ids are "soft.<id>".
const Kind = "soft"

// idPrefix starts every software token id.
const idPrefix = Kind + "."

// challengeDomain separates software-token signatures from any other use of
// the same key.
const challengeDomain = "hotdesk-soft-token-v1"

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
	parts := [][]byte{[]byte(terminalID), []byte(serverID), welcomeNonce, challengeNonce, []byte(token)}
	names := [...]string{"terminal id", "server id", "welcome nonce", "challenge nonce", "token"}
	n := len(challengeDomain) + 1
	for i, p := range parts {
		if len(p) > math.MaxUint16 {
			return nil, fmt.Errorf("soft: challenge message: %s is %d bytes, limit %d", names[i], len(p), math.MaxUint16)
		}
		n += 2 + len(p)
	}
	msg := make([]byte, 0, n)
	msg = append(msg, challengeDomain...)
	msg = append(msg, 0)
	for _, p := range parts {
		msg = binary.BigEndian.AppendUint16(msg, uint16(len(p)))
		msg = append(msg, p...)
	}
	return msg, nil
}

// Verify checks that sig is pub's ed25519 signature of msg. Any failure,
// including a public key or signature of the wrong size, is ErrBadProof.
func Verify(pub []byte, msg, sig []byte) error {
	switch {
	case len(pub) != ed25519.PublicKeySize:
		return fmt.Errorf("%w: public key is %d bytes; want %d", ErrBadProof, len(pub), ed25519.PublicKeySize)
	case len(sig) != ed25519.SignatureSize:
		return fmt.Errorf("%w: signature is %d bytes; want %d", ErrBadProof, len(sig), ed25519.SignatureSize)
	case !ed25519.Verify(ed25519.PublicKey(pub), msg, sig):
		return ErrBadProof
	}
	return nil
}
