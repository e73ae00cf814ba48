package pcsc

import (
	"bytes"
	"crypto/ed25519"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"testing"

	"github.com/hotdesk/hotdesk/tokens"
	"github.com/hotdesk/hotdesk/tokens/nfc"
	"github.com/hotdesk/hotdesk/tokens/pcsc/vcard"
	"github.com/hotdesk/hotdesk/tokens/soft"
)

// scriptTx is a card that answers each command with the next response of
// a script: responses each prefixed by their length (2 bytes, big-endian;
// a length past the end takes the rest). When the script is spent the card
// is gone (a transport error).
type scriptTx struct {
	script []byte
	sent   int
	cmds   [][]byte // the commands sent
}

var errScriptSpent = errors.New("card removed")

func (s *scriptTx) Transmit(cmd []byte) ([]byte, error) {
	s.sent++
	s.cmds = append(s.cmds, bytes.Clone(cmd))
	if len(s.script) < 2 {
		return nil, errScriptSpent
	}
	n := int(binary.BigEndian.Uint16(s.script))
	s.script = s.script[2:]
	n = min(n, len(s.script))
	resp := bytes.Clone(s.script[:n])
	s.script = s.script[n:]
	return resp, nil
}

// recordTx is a virtual card whose responses are recorded as a script.
type recordTx struct {
	h      func([]byte) []byte
	script []byte
}

func (r *recordTx) Transmit(cmd []byte) ([]byte, error) {
	resp := r.h(cmd)
	r.script = binary.BigEndian.AppendUint16(r.script, uint16(len(resp)))
	r.script = append(r.script, resp...)
	return resp, nil
}

// script returns the responses of card to f's exchange as a script.
func script(card vcard.Card, f func(transmitter)) []byte {
	rec := &recordTx{h: card.Handle}
	f(rec)
	return rec.script
}

func fuzzPhone() *nfc.Phone { return &nfc.Phone{Key: ed25519.NewKeyFromSeed(make([]byte, 32))} }

// maxTransmits bounds the commands identify may send one card: each
// identifier sends two commands, each followed by at most one repeat (6C)
// and maxGetResponse+1 GET RESPONSEs.
const maxTransmits = 3 * 2 * (2 + maxGetResponse + 1)

// FuzzIdentify: whatever a broken or hostile card answers, identify sends
// it a bounded number of commands and either reports a token id of the
// form its identifier gives or a card error (ErrCardUnreadable): never a
// panic, never an id a card cannot have.
func FuzzIdentify(f *testing.F) {
	ph := fuzzPhone()
	ident := func(tx transmitter) { identify(tx, DefaultIdentify) }
	for _, c := range []vcard.Card{
		vcard.UIDCard([]byte{4, 1, 2, 3}),
		vcard.UIDCard([]byte{4, 1, 2, 3, 4, 5, 6, 7, 8, 9}),
		vcard.PIVCard([16]byte{15: 1}),
		vcard.PIVCard([16]byte{}),
		vcard.PhoneCard(ph),
		vcard.GarbageCard(),
	} {
		f.Add(script(c, ident))
	}
	// GET RESPONSE chains and a 6C retry (a card asking for another Le).
	resp := func(b ...[]byte) []byte {
		var s []byte
		for _, r := range b {
			s = binary.BigEndian.AppendUint16(s, uint16(len(r)))
			s = append(s, r...)
		}
		return s
	}
	f.Add(resp([]byte{0x6A, 0x82}, []byte{0x90, 0x00}, []byte{0x53, 0x12, 0x34, 0x10, 0x61, 0x10},
		append(bytes.Repeat([]byte{7}, 16), 0x90, 0x00)))
	f.Add(resp([]byte{0x6C, 0x02}, append([]byte{1, 0}, 0x90, 0x00), []byte{0x61, 0x24}, []byte("hce.aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\x90\x00")))
	f.Add(resp([]byte{0x6A, 0x82}, []byte{0x6A, 0x82}, []byte{0x61, 0xFF}, []byte{0x61, 0xFF}, []byte{0x61, 0xFF}))
	f.Add(resp([]byte{0x6A, 0x82}, []byte{0x90, 0x00}, []byte{0x53, 0x82, 0xFF, 0xFF, 0x90, 0x00}))
	f.Fuzz(func(t *testing.T, s []byte) {
		tx := &scriptTx{script: s}
		id, err := identify(tx, DefaultIdentify)
		checkSent(t, tx, [][]byte{nfc.SelectCommand(), nfc.GetIDCommand(), pivSelect, pivGetCHUID, {0xFF, 0xCA, 0x00, 0x00, 0x00}})
		if tx.sent > maxTransmits {
			t.Fatalf("identify sent %d commands", tx.sent)
		}
		if err != nil {
			if id != "" {
				t.Fatalf("id %q with error %v", id, err)
			}
			if !errors.Is(err, ErrCardUnreadable) {
				t.Fatalf("error %v is not ErrCardUnreadable", err)
			}
			return
		}
		typ, rest, err := tokens.ParseID(id)
		if err != nil {
			t.Fatalf("id %q: %v", id, err)
		}
		switch typ {
		case IdentifyPIV:
			if b, err := hex.DecodeString(rest); err != nil || len(b) != 16 || bytes.Equal(b, make([]byte, 16)) || hex.EncodeToString(b) != rest {
				t.Fatalf("piv id %q", id)
			}
		case nfc.KindUID:
			b, err := hex.DecodeString(rest)
			if err != nil || len(b) < 4 || len(b) > 10 || nfc.IsRandomUID(b) || hex.EncodeToString(b) != rest {
				t.Fatalf("uid id %q", id)
			}
		case nfc.KindHCE:
			if _, err := nfc.ParseIDResponse(append([]byte(id), 0x90, 0x00)); err != nil {
				t.Fatalf("hce id %q: %v", id, err)
			}
		default:
			t.Fatalf("id %q of no identifier", id)
		}
	})
}

// FuzzPhoneExchange: the exchanges with a phone in the reader (Sign and
// PublicKey: SELECT, GET-ID, then SIGN blocks or GET-PUBKEY) against a
// broken or hostile phone: a bounded number of commands, and a key only if
// it is the token's, a signature only of the right size.
func FuzzPhoneExchange(f *testing.F) {
	ph := fuzzPhone()
	token := ph.TokenID()
	msg, err := soft.ChallengeMessage("t", "s", make([]byte, 32), make([]byte, 32), token)
	if err != nil {
		f.Fatal(err)
	}
	long := append(bytes.Clone(msg), bytes.Repeat([]byte{1}, 600)...)
	f.Add(false, false, script(vcard.PhoneCard(ph), func(tx transmitter) { signHCE(tx, token, msg) }))
	f.Add(false, true, script(vcard.PhoneCard(ph), func(tx transmitter) { signHCE(tx, token, long) }))
	f.Add(true, false, script(vcard.PhoneCard(ph), func(tx transmitter) { publicKeyHCE(tx, token) }))
	other := &nfc.Phone{Key: ed25519.NewKeyFromSeed(bytes.Repeat([]byte{1}, 32))}
	f.Add(true, false, script(vcard.PhoneCard(other), func(tx transmitter) { publicKeyHCE(tx, token) }))
	f.Add(false, false, script(vcard.UIDCard([]byte{8, 1, 2, 3}), func(tx transmitter) { signHCE(tx, token, msg) }))
	// A phone answering the first, chained SIGN block (no Le) with 6C 77:
	// the block was sent again with its last data byte replaced.
	chained := script(vcard.PhoneCard(ph), func(tx transmitter) { selectPhone(tx, token) })
	chained = append(chained, 0, 2, 0x6C, 0x77)
	f.Add(false, true, chained)
	// Every command sent is one of the exchange's, at most with another Le,
	// or a GET RESPONSE.
	known := func(m []byte) [][]byte {
		k := [][]byte{nfc.SelectCommand(), nfc.GetIDCommand(), nfc.GetPublicKeyCommand()}
		signs, err := nfc.SignCommands(m)
		if err != nil {
			f.Fatal(err)
		}
		return append(k, signs...)
	}
	f.Fuzz(func(t *testing.T, pubkey, longMsg bool, s []byte) {
		m := msg
		if longMsg {
			m = long
		}
		tx := &scriptTx{script: s}
		defer checkSent(t, tx, known(m))
		if pubkey {
			pub, err := publicKeyHCE(tx, token)
			if tx.sent > 3*(2+maxGetResponse+1) {
				t.Fatalf("sent %d commands", tx.sent)
			}
			if err == nil && nfc.HCETokenID(pub) != token {
				t.Fatalf("key %x is not %s's", pub, token)
			}
			return
		}
		sig, err := signHCE(tx, token, m)
		if tx.sent > 5*(2+maxGetResponse+1) {
			t.Fatalf("sent %d commands", tx.sent)
		}
		if err == nil && len(sig) != ed25519.SignatureSize {
			t.Fatalf("signature of %d bytes", len(sig))
		}
	})
}

// sameButLe reports whether command APDUs a and b differ at most in Le.
func sameButLe(a, b []byte) bool {
	ca, erra := nfc.ParseCommand(a)
	cb, errb := nfc.ParseCommand(b)
	return erra == nil && errb == nil && ca.CLA == cb.CLA && ca.INS == cb.INS && ca.P1 == cb.P1 && ca.P2 == cb.P2 &&
		bytes.Equal(ca.Data, cb.Data) && (ca.Le == nfc.NoLe) == (cb.Le == nfc.NoLe)
}

// checkSent fails t unless every command tx sent is one of cmds, at most
// with another Le, or a GET RESPONSE.
func checkSent(t *testing.T, tx *scriptTx, cmds [][]byte) {
	t.Helper()
next:
	for _, c := range tx.cmds {
		if len(c) == 5 && bytes.Equal(c[:4], []byte{0x00, 0xC0, 0x00, 0x00}) {
			continue
		}
		for _, k := range cmds {
			if sameButLe(c, k) {
				continue next
			}
		}
		t.Fatalf("sent % X, no command of the exchange", c)
	}
}
