// Package nfc is the contactless side of hotdesk tokens, independent of
// PC/SC: plain NFC tags and badges identified by their UID, and phones
// running hotdesk's host card emulation (HCE) application.
//
// Plain tags (uid.<hex>) are locate-only. A UID is read in clear by any
// reader and cloned by cheap "magic" cards, so it proves nothing; a policy
// for uid tokens should always ask for a PIN or password. Phones and some
// readers present random UIDs (ISO/IEC 14443-3: a 4-byte UID starting with
// 0x08 is a random id), which UIDTokenID refuses with ErrRandomUID.
//
// Phones (hce.<id>) speak the APDU exchange specified in proto/HCE.md:
// SELECT of AID, then GET-ID, GET-PUBKEY and a chained SIGN. Their token id
// is derived from their Ed25519 public key exactly like a software token's
// (HCETokenID), never from the UID, and the signature is over the same
// challenge message (tokens/soft.ChallengeMessage), so the broker verifies a
// phone like a software token with the key enrolled by pairing code. At
// enrolment the phone proves its key the same way, over the pairing
// transcript (tokens/soft.PairMessage); it signs nothing else.
//
// This package has builders and parsers for the terminal side and Phone, a
// reference implementation of the phone side used by tests and as a model
// for phone apps. It is pure Go; the PC/SC transport lives in tokens/pcsc.
package nfc

import (
	"bytes"
	"crypto/ed25519"
	"encoding/hex"
	"errors"
	"fmt"
	"strings"

	"github.com/hotdesk/hotdesk/tokens"
	"github.com/hotdesk/hotdesk/tokens/soft"
)

// Token types of this package.
const (
	KindHCE = "hce" // phones: "hce." + base32 of SHA-256(public key)[:20]
	KindUID = "uid" // plain tags: "uid." + lower-case hex of the UID
)

// AID is hotdesk's proprietary application identifier: F0 "hotdesk" 01.
var AID = []byte{0xF0, 0x68, 0x6F, 0x74, 0x64, 0x65, 0x73, 0x6B, 0x01}

// Protocol constants of proto/HCE.md.
const (
	// Version is the HCE protocol version a phone reports in its SELECT
	// response.
	Version = 1
	// CLA is the class byte of hotdesk's proprietary commands; CLAChain is
	// or-ed into it on every SIGN block but the last.
	CLA      byte = 0x80
	CLAChain byte = 0x10
	// Instructions.
	INSGetID     byte = 0x10
	INSGetPubKey byte = 0x12
	INSSign      byte = 0x14
	// MaxSignMessage bounds the message of one SIGN exchange, in bytes.
	MaxSignMessage = 1024
	// MaxSelectData bounds the SELECT response data a terminal accepts.
	MaxSelectData = 32
)

// Errors. Test for them with errors.Is.
var (
	// ErrBadUID: a UID of a length no tag uses (not 4–10 bytes).
	ErrBadUID = errors.New("nfc: bad uid")
	// ErrRandomUID: a random (per-session) UID, which locates nothing.
	ErrRandomUID = errors.New("nfc: random uid")
)

// HCETokenID returns a phone's token id: "hce." followed by the lower-case,
// unpadded base32 of the first 20 bytes of SHA-256(pub), the same encoding
// as soft.TokenID.
func HCETokenID(pub ed25519.PublicKey) string {
	return KindHCE + "." + strings.TrimPrefix(soft.TokenID(pub), soft.Kind+".")
}

// UIDTokenID returns a plain tag's token id, "uid." followed by the
// lower-case hex of uid. UIDs of 4–10 bytes are accepted (ISO/IEC 14443 single,
// double and triple size, ISO/IEC 15693 and FeliCa 8 bytes); a random UID is
// ErrRandomUID.
func UIDTokenID(uid []byte) (string, error) {
	if len(uid) < 4 || len(uid) > 10 {
		return "", fmt.Errorf("%w: %d bytes", ErrBadUID, len(uid))
	}
	if IsRandomUID(uid) {
		return "", fmt.Errorf("%w: % X", ErrRandomUID, uid)
	}
	return KindUID + "." + hex.EncodeToString(uid), nil
}

// IsRandomUID reports whether uid is an ISO/IEC 14443-3 random id: 4 bytes,
// the first 0x08. Android HCE phones present one, new at every tap.
func IsRandomUID(uid []byte) bool { return len(uid) == 4 && uid[0] == 0x08 }

// SelectCommand returns SELECT by name of AID: 00 A4 04 00 09 <AID> 00.
func SelectCommand() []byte {
	b, _ := Command{CLA: 0x00, INS: 0xA4, P1: 0x04, P2: 0x00, Data: AID, Le: MaxResponseData}.Bytes()
	return b
}

// GetIDCommand returns GET-ID: 80 10 00 00 00.
func GetIDCommand() []byte {
	b, _ := Command{CLA: CLA, INS: INSGetID, Le: MaxResponseData}.Bytes()
	return b
}

// GetPublicKeyCommand returns GET-PUBKEY: 80 12 00 00 00.
func GetPublicKeyCommand() []byte {
	b, _ := Command{CLA: CLA, INS: INSGetPubKey, Le: MaxResponseData}.Bytes()
	return b
}

// SignCommands splits msg into the chained SIGN commands: blocks of at most
// 255 bytes, CLA 0x90 on all but the last, which has CLA 0x80 and Le 00.
// msg must be 1–MaxSignMessage bytes.
func SignCommands(msg []byte) ([][]byte, error) {
	if len(msg) == 0 || len(msg) > MaxSignMessage {
		return nil, fmt.Errorf("%w: sign message of %d bytes, limit %d", ErrMalformed, len(msg), MaxSignMessage)
	}
	var cmds [][]byte
	for len(msg) > 0 {
		n := min(len(msg), MaxCommandData)
		c := Command{CLA: CLA | CLAChain, INS: INSSign, Data: msg[:n], Le: NoLe}
		msg = msg[n:]
		if len(msg) == 0 {
			c.CLA, c.Le = CLA, MaxResponseData
		}
		b, err := c.Bytes()
		if err != nil {
			return nil, err
		}
		cmds = append(cmds, b)
	}
	return cmds, nil
}

// ParseSelectResponse checks a SELECT response: status 90 00 and data
// starting with a supported protocol version. A status other than 90 00 is a
// *StatusError (6A 82: no hotdesk application).
func ParseSelectResponse(b []byte) error {
	data, err := okData("select", b)
	if err != nil {
		return err
	}
	if len(data) < 1 || len(data) > MaxSelectData {
		return fmt.Errorf("nfc: select: %w: %d data bytes", ErrMalformed, len(data))
	}
	if data[0] != Version {
		return fmt.Errorf("nfc: select: %w: protocol version %d, want %d", ErrMalformed, data[0], Version)
	}
	return nil
}

// ParseIDResponse returns the token id of a GET-ID response: a valid typed
// id of type "hce" (tokens.ParseID) in the form HCETokenID gives, "hce." and
// 32 characters of the lower-case base32 alphabet (36 bytes). Any other id is
// ErrMalformed: a phone cannot make the terminal report a token id that no
// key can have (HCE.md §3.1).
func ParseIDResponse(b []byte) (string, error) {
	data, err := okData("get id", b)
	if err != nil {
		return "", err
	}
	id := string(data)
	typ, rest, err := tokens.ParseID(id)
	if err != nil {
		return "", fmt.Errorf("nfc: get id: %w: %w", ErrMalformed, err)
	}
	if typ != KindHCE {
		return "", fmt.Errorf("nfc: get id: %w: token type %q, want %q", ErrMalformed, typ, KindHCE)
	}
	if len(rest) != hceIDChars || strings.Trim(rest, base32Lower) != "" {
		return "", fmt.Errorf("nfc: get id: %w: %q is not \"hce.\" and %d lower-case base32 characters", ErrMalformed, id, hceIDChars)
	}
	return id, nil
}

// hceIDChars is the length of an hce id after "hce.": 20 bytes in base32.
const hceIDChars = 32

// base32Lower is the RFC 4648 base32 alphabet in lower case.
const base32Lower = "abcdefghijklmnopqrstuvwxyz234567"

// ParsePublicKeyResponse returns the 32-byte Ed25519 public key of a
// GET-PUBKEY response.
func ParsePublicKeyResponse(b []byte) (ed25519.PublicKey, error) {
	return sizedData("get pubkey", "key", ed25519.PublicKeySize, b)
}

// ParseChainResponse checks the response to a SIGN block that is not the
// last: 90 00 and no data.
func ParseChainResponse(b []byte) error {
	data, err := okData("sign", b)
	if err != nil {
		return err
	}
	if len(data) != 0 {
		return fmt.Errorf("nfc: sign: %w: %d data bytes in a chained block's response", ErrMalformed, len(data))
	}
	return nil
}

// ParseSignResponse returns the 64-byte signature of the last SIGN block's
// response. It does not verify it.
func ParseSignResponse(b []byte) ([]byte, error) {
	return sizedData("sign", "signature", ed25519.SignatureSize, b)
}

// okData parses the response to the command op and returns its data if the
// status is 90 00, a *StatusError otherwise.
func okData(op string, b []byte) ([]byte, error) {
	r, err := ParseResponse(b)
	if err != nil {
		return nil, fmt.Errorf("nfc: %s: %w", op, err)
	}
	if !r.OK() {
		return nil, &StatusError{Op: op, SW: r.SW}
	}
	return r.Data, nil
}

// sizedData is okData for data of exactly n bytes (what names them in
// errors), returned as a copy.
func sizedData(op, what string, n int, b []byte) ([]byte, error) {
	data, err := okData(op, b)
	if err != nil {
		return nil, err
	}
	if len(data) != n {
		return nil, fmt.Errorf("nfc: %s: %w: %s of %d bytes, want %d", op, ErrMalformed, what, len(data), n)
	}
	return bytes.Clone(data), nil
}
