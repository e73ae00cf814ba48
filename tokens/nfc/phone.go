package nfc

import (
	"bytes"
	"crypto/ed25519"
	"encoding/binary"
	"sync"
)

// The two kinds of message a phone agrees to sign (proto/HCE.md §3.4):
// login challenges (tokens/soft.ChallengeMessage: signDomain, then five
// length-prefixed fields, the last its token id) and pairing transcripts
// (tokens/soft.PairMessage: pairDomain, then six fields, the kind "hce"
// and its public key last).
var (
	signDomain = []byte("hotdesk-soft-token-v1\x00")
	pairDomain = []byte("hotdesk-pair-v1\x00")
)

const (
	challengeFields = 5
	pairFields      = 6
)

// Phone is the reference implementation of the phone side of proto/HCE.md:
// what a phone's HCE service does with each command APDU it receives. Key is
// the phone's enrolled Ed25519 key. A Phone is safe for concurrent use, but
// like a real card it keeps one state (selection, SIGN chain), so commands
// of two interleaved exchanges disturb each other.
type Phone struct {
	Key ed25519.PrivateKey

	mu       sync.Mutex
	selected bool
	chain    []byte // SIGN blocks received so far; nil when no chain is open
}

// Public returns the phone's public key.
func (ph *Phone) Public() ed25519.PublicKey { return ph.Key.Public().(ed25519.PublicKey) }

// TokenID returns the phone's token id, HCETokenID of its public key.
func (ph *Phone) TokenID() string { return HCETokenID(ph.Public()) }

// Deselect forgets the selection and any open SIGN chain, as a phone does
// when it leaves the field (Android: HostApduService.onDeactivated).
func (ph *Phone) Deselect() {
	ph.mu.Lock()
	defer ph.mu.Unlock()
	ph.selected, ph.chain = false, nil
}

// HandleAPDU answers one command APDU with a response APDU; it never
// returns nil.
func (ph *Phone) HandleAPDU(apdu []byte) []byte {
	ph.mu.Lock()
	defer ph.mu.Unlock()
	c, err := ParseCommand(apdu)
	if err != nil {
		ph.chain = nil
		return sw(SWWrongLength)
	}
	if c.CLA == 0x00 && c.INS == 0xA4 {
		ph.chain = nil
		if c.P1 != 0x04 || !bytes.Equal(c.Data, AID) {
			ph.selected = false
			return sw(SWFileNotFound)
		}
		ph.selected = true
		return Response{Data: []byte{Version}, SW: SWOK}.Bytes()
	}
	if c.CLA&^CLAChain != CLA {
		ph.chain = nil
		return sw(SWCLANotSupported)
	}
	if !ph.selected {
		ph.chain = nil
		return sw(SWConditionsNotSatisfied)
	}
	if c.INS != INSSign {
		ph.chain = nil // any other command aborts an open SIGN chain
	}
	if c.P1 != 0 || c.P2 != 0 {
		ph.chain = nil
		return sw(SWWrongP1P2)
	}
	switch c.INS {
	case INSGetID:
		if c.CLA != CLA || len(c.Data) != 0 {
			return sw(SWWrongLength)
		}
		return Response{Data: []byte(ph.TokenID()), SW: SWOK}.Bytes()
	case INSGetPubKey:
		if c.CLA != CLA || len(c.Data) != 0 {
			return sw(SWWrongLength)
		}
		return Response{Data: ph.Public(), SW: SWOK}.Bytes()
	case INSSign:
		return ph.sign(c)
	}
	return sw(SWINSNotSupported)
}

func (ph *Phone) sign(c Command) []byte {
	if len(c.Data) == 0 || len(ph.chain)+len(c.Data) > MaxSignMessage {
		ph.chain = nil
		return sw(SWWrongLength)
	}
	ph.chain = append(ph.chain, c.Data...)
	if c.CLA&CLAChain != 0 {
		return sw(SWOK)
	}
	msg := ph.chain
	ph.chain = nil
	if !challengeFor(msg, ph.TokenID()) && !pairFor(msg, ph.Public()) {
		return sw(SWWrongData)
	}
	return Response{Data: ed25519.Sign(ph.Key, msg), SW: SWOK}.Bytes()
}

// challengeFor reports whether msg is a hotdesk challenge message (the
// domain, then exactly five length-prefixed fields) whose last field, the
// token, is token. A phone signs nothing else but pairFor's messages, so
// its key cannot be used to sign data of another protocol.
func challengeFor(msg []byte, token string) bool {
	f, ok := fields(msg, signDomain, challengeFields)
	return ok && string(f[challengeFields-1]) == token
}

// pairFor reports whether msg is a hotdesk pairing transcript (the pairing
// domain, then exactly six length-prefixed fields) for a phone with key
// pub: its kind field is "hce" and its last field pub.
func pairFor(msg []byte, pub []byte) bool {
	f, ok := fields(msg, pairDomain, pairFields)
	return ok && string(f[4]) == KindHCE && bytes.Equal(f[5], pub)
}

// fields splits msg, which must start with domain, into exactly n
// length-prefixed fields (2-byte big-endian length, then the bytes).
func fields(msg, domain []byte, n int) ([][]byte, bool) {
	rest, ok := bytes.CutPrefix(msg, domain)
	if !ok {
		return nil, false
	}
	out := make([][]byte, 0, n)
	for range n {
		if len(rest) < 2 {
			return nil, false
		}
		l := int(binary.BigEndian.Uint16(rest))
		if len(rest) < 2+l {
			return nil, false
		}
		out, rest = append(out, rest[2:2+l]), rest[2+l:]
	}
	return out, len(rest) == 0
}

func sw(s uint16) []byte { return []byte{byte(s >> 8), byte(s)} }
