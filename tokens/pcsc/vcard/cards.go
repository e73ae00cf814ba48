package vcard

import (
	"bytes"
	"crypto/ed25519"
	"sync"

	"github.com/hotdesk/hotdesk/tokens/nfc"
)

// ATRs of the card kinds.
var (
	// ATRContactless is what a PC/SC reader reports for an ISO/IEC 14443-4
	// card or phone without historical bytes.
	ATRContactless = []byte{0x3B, 0x80, 0x80, 0x01, 0x01}
	// ATRStorage is the PC/SC part 3 ATR of a MIFARE Classic 1K tag.
	ATRStorage = []byte{0x3B, 0x8F, 0x80, 0x01, 0x80, 0x4F, 0x0C, 0xA0, 0x00, 0x00, 0x03, 0x06, 0x03, 0x00, 0x01, 0x00, 0x00, 0x00, 0x00, 0x6A}
	// ATRPIV is the ATR of a YubiKey 4 (a contact PIV card).
	ATRPIV = []byte{0x3B, 0xF8, 0x13, 0x00, 0x00, 0x81, 0x31, 0xFE, 0x15, 0x59, 0x75, 0x62, 0x69, 0x6B, 0x65, 0x79, 0x34, 0xD4}
)

// PIVAID is the PIV card application's AID (NIST SP 800-73-4).
var PIVAID = []byte{0xA0, 0x00, 0x00, 0x03, 0x08, 0x00, 0x00, 0x10, 0x00, 0x01, 0x00}

var (
	getUID     = []byte{0xFF, 0xCA, 0x00, 0x00}
	getCHUID   = []byte{0x00, 0xCB, 0x3F, 0xFF, 0x05, 0x5C, 0x03, 0x5F, 0xC1, 0x02}
	swOK       = []byte{0x90, 0x00}
	swNotFound = []byte{0x6A, 0x82}
	swNoINS    = []byte{0x6D, 0x00}
	swNoCLA    = []byte{0x6E, 0x00}
)

// UIDCard is a plain contactless tag: the reader answers GET DATA
// (FF CA 00 00 00) with uid; it has no applications.
func UIDCard(uid []byte) Card {
	uid = bytes.Clone(uid)
	return Card{ATR: ATRStorage, Handle: func(apdu []byte) []byte {
		if bytes.HasPrefix(apdu, getUID) {
			return append(bytes.Clone(uid), swOK...)
		}
		if isSelect(apdu) {
			return swNotFound
		}
		return swNoINS
	}}
}

// PIVCard is a PIV card whose CHUID carries guid: SELECT of the PIV AID
// answers 90 00 with an application property template, GET DATA of the
// CHUID (5F C1 02) answers the CHUID with the GUID under tag 0x34.
func PIVCard(guid [16]byte) Card {
	chuid := CHUID(guid)
	apt := []byte{0x61, 0x11, 0x4F, 0x06, 0x00, 0x00, 0x10, 0x00, 0x01, 0x00, 0x79, 0x07, 0x4F, 0x05, 0xA0, 0x00, 0x00, 0x03, 0x08}
	return Card{ATR: ATRPIV, Handle: func(apdu []byte) []byte {
		switch {
		case isSelect(apdu):
			if len(apdu) >= 5+9 && bytes.HasPrefix(apdu[5:], PIVAID[:9]) {
				return append(bytes.Clone(apt), swOK...)
			}
			return swNotFound
		case bytes.HasPrefix(apdu, getCHUID):
			return append(bytes.Clone(chuid), swOK...)
		case bytes.HasPrefix(apdu, getUID):
			return swNoCLA
		}
		return swNoINS
	}}
}

// CHUID returns a PIV Card Holder Unique Identifier data object (tag 0x53)
// with a FASC-N, guid, an expiry date and an empty signature.
func CHUID(guid [16]byte) []byte {
	var body []byte
	body = append(body, 0x30, 25)
	body = append(body, bytes.Repeat([]byte{0xD4}, 25)...) // FASC-N
	body = append(body, 0x34, 16)
	body = append(body, guid[:]...)
	body = append(body, 0x35, 8)
	body = append(body, "20301231"...)
	body = append(body, 0x3E, 0x00, 0xFE, 0x00)
	return append([]byte{0x53, byte(len(body))}, body...)
}

// PhoneCard is a phone running hotdesk's HCE application with ph's key: it
// presents a new random UID (08 xx xx xx) every time it enters the field
// and hands every other APDU to ph.
func PhoneCard(ph *nfc.Phone) Card {
	var mu sync.Mutex
	uid := randomUID()
	return Card{
		ATR: ATRContactless,
		OnPower: func() {
			mu.Lock()
			uid = randomUID()
			mu.Unlock()
			ph.Deselect()
		},
		Handle: func(apdu []byte) []byte {
			if bytes.HasPrefix(apdu, getUID) {
				mu.Lock()
				defer mu.Unlock()
				return append(bytes.Clone(uid), swOK...)
			}
			return ph.HandleAPDU(apdu)
		},
	}
}

// ImpostorCard is a phone claiming genuine's token: it answers as
// PhoneCard(genuine) does (the same token id) but signs whatever it is
// asked with forger, the impostor's own key.
func ImpostorCard(genuine *nfc.Phone, forger ed25519.PrivateKey) Card {
	c := PhoneCard(genuine)
	power, handle := c.OnPower, c.Handle
	var chain []byte // SIGN blocks so far; Handle and OnPower run one at a time
	c.OnPower = func() {
		chain = nil
		power()
	}
	c.Handle = func(apdu []byte) []byte {
		cmd, err := nfc.ParseCommand(apdu)
		if err != nil || cmd.INS != nfc.INSSign {
			chain = nil
			return handle(apdu)
		}
		chain = append(chain, cmd.Data...)
		if cmd.CLA&nfc.CLAChain != 0 {
			return swOK
		}
		sig := ed25519.Sign(forger, chain)
		chain = nil
		return append(sig, swOK...)
	}
	return c
}

func randomUID() []byte { return append([]byte{0x08}, randomBytes(3)...) }

// GarbageCard powers up normally but answers every command with one byte
// of junk: no status word, no data.
func GarbageCard() Card {
	return Card{ATR: ATRContactless, Handle: func([]byte) []byte { return []byte{0x42} }}
}

// MuteCard powers up normally but never answers a command.
func MuteCard() Card { return Card{ATR: ATRContactless} }

func isSelect(apdu []byte) bool { return len(apdu) >= 4 && apdu[0] == 0x00 && apdu[1] == 0xA4 }
