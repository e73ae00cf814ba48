package pcsc

import (
	"bytes"
	"crypto/ed25519"
	"errors"
	"testing"

	"github.com/hotdesk/hotdesk/tokens/nfc"
	"github.com/hotdesk/hotdesk/tokens/pcsc/vcard"
	"github.com/hotdesk/hotdesk/tokens/soft"
)

// cardTx transmits straight to a virtual card's handler (no pcscd): the
// identification logic alone.
type cardTx struct {
	h    func([]byte) []byte
	sent [][]byte
}

func (c *cardTx) Transmit(cmd []byte) ([]byte, error) {
	c.sent = append(c.sent, bytes.Clone(cmd))
	if c.h == nil {
		return nil, errors.New("mute")
	}
	return c.h(cmd), nil
}

func TestIdentify(t *testing.T) {
	ph := &nfc.Phone{Key: ed25519.NewKeyFromSeed(make([]byte, 32))}
	guid := [16]byte{15: 1}
	tests := []struct {
		name    string
		card    vcard.Card
		order   []string
		want    string
		wantErr bool
	}{
		{"uid", vcard.UIDCard([]byte{4, 1, 2, 3}), DefaultIdentify, "uid.04010203", false},
		{"piv", vcard.PIVCard(guid), DefaultIdentify, "piv.00000000000000000000000000000001", false},
		{"phone", vcard.PhoneCard(ph), DefaultIdentify, ph.TokenID(), false},
		{"phone, uid first: random uid refused, then hce", vcard.PhoneCard(ph), []string{"uid", "hce"}, ph.TokenID(), false},
		{"phone, uid only", vcard.PhoneCard(ph), []string{"uid"}, "", true},
		{"piv card, hce only", vcard.PIVCard(guid), []string{"hce"}, "", true},
		{"piv zero guid falls back", vcard.PIVCard([16]byte{}), []string{"piv"}, "", true},
		{"garbage", vcard.GarbageCard(), DefaultIdentify, "", true},
		{"mute", vcard.MuteCard(), DefaultIdentify, "", true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := identify(&cardTx{h: tt.card.Handle}, tt.order)
			if got != tt.want || (err != nil) != tt.wantErr {
				t.Fatalf("identify = %q, %v; want %q, error %v", got, err, tt.want, tt.wantErr)
			}
			if err != nil && !errors.Is(err, ErrCardUnreadable) {
				t.Fatalf("identify error = %v; want %v", err, ErrCardUnreadable)
			}
		})
	}
}

func TestIdentifyStopsOnTransportError(t *testing.T) {
	tx := &cardTx{}
	_, err := identify(tx, DefaultIdentify)
	var te *transportError
	if !errors.As(err, &te) || !errors.Is(err, ErrCardUnreadable) {
		t.Fatalf("identify error = %v; want a transport error wrapping %v", err, ErrCardUnreadable)
	}
	if len(tx.sent) != 1 {
		t.Fatalf("commands sent = %d; want 1", len(tx.sent))
	}
}

func TestTransmitGetResponse(t *testing.T) {
	// A T=0 style card: 61 xx chunks and 6C xx wrong Le.
	data := bytes.Repeat([]byte{0xAB}, 300)
	pos := 0
	h := func(cmd []byte) []byte {
		switch {
		case cmd[1] == 0xC0: // GET RESPONSE
			n := min(int(cmd[4]), len(data)-pos)
			if cmd[4] == 0 {
				n = min(256, len(data)-pos)
			}
			chunk := data[pos : pos+n]
			pos += n
			if pos < len(data) {
				return append(bytes.Clone(chunk), 0x61, byte(min(len(data)-pos, 255)))
			}
			return append(bytes.Clone(chunk), 0x90, 0x00)
		case cmd[1] == 0xB0 && cmd[4] != 0x20:
			return []byte{0x6C, 0x20}
		case cmd[1] == 0xB0:
			return append(bytes.Repeat([]byte{1}, 0x20), 0x90, 0x00)
		}
		return []byte{0x61, 0x00}
	}
	resp, err := transmit(&cardTx{h: h}, []byte{0x00, 0xCA, 0x00, 0x00, 0x00})
	if err != nil {
		t.Fatalf("transmit: %v", err)
	}
	if want := append(bytes.Clone(data), 0x90, 0x00); !bytes.Equal(resp, want) {
		t.Fatalf("transmit = %d bytes; want %d", len(resp), len(want))
	}
	resp, err = transmit(&cardTx{h: h}, []byte{0x00, 0xB0, 0x00, 0x00, 0x00})
	if err != nil || len(resp) != 0x22 {
		t.Fatalf("transmit with 6C = %d bytes, %v; want 34, nil", len(resp), err)
	}
	endless := func([]byte) []byte { return append(make([]byte, 255), 0x61, 0xFF) }
	if _, err := transmit(&cardTx{h: endless}, []byte{0x00, 0xCA, 0x00, 0x00, 0x00}); !errors.Is(err, nfc.ErrMalformed) {
		t.Fatalf("endless 61 xx error = %v; want %v", err, nfc.ErrMalformed)
	}
}

func TestCHUIDGUID(t *testing.T) {
	guid := [16]byte{1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16}
	long := append([]byte{0x53, 0x82, 0x01, 0x06, 0xEE, 0x82, 0x00, 0xF0}, make([]byte, 0xF0)...)
	long = append(long, 0x34, 0x10)
	long = append(long, guid[:]...)
	tests := []struct {
		name string
		in   []byte
		ok   bool
	}{
		{"vcard", vcard.CHUID(guid), true},
		{"long lengths", long, true},
		{"zero guid", vcard.CHUID([16]byte{}), false},
		{"wrong outer tag", append([]byte{0x54}, vcard.CHUID(guid)[1:]...), false},
		{"truncated", vcard.CHUID(guid)[:20], false},
		{"no guid", []byte{0x53, 0x04, 0x35, 0x02, 0x01, 0x02}, false},
		{"short guid", []byte{0x53, 0x04, 0x34, 0x02, 0x01, 0x02}, false},
		{"bad length byte", []byte{0x53, 0x85, 0x00}, false},
		{"trailing", append(vcard.CHUID(guid), 0), false},
		{"empty", nil, false},
	}
	for _, tt := range tests {
		got, err := chuidGUID(tt.in)
		if tt.ok != (err == nil) || (tt.ok && !bytes.Equal(got, guid[:])) {
			t.Errorf("%s: chuidGUID = %x, %v; want ok %v", tt.name, got, err, tt.ok)
		}
	}
}

func TestSignHCE(t *testing.T) {
	ph := &nfc.Phone{Key: ed25519.NewKeyFromSeed(bytes.Repeat([]byte{3}, 32))}
	other := &nfc.Phone{Key: ed25519.NewKeyFromSeed(bytes.Repeat([]byte{4}, 32))}
	msg, err := soft.ChallengeMessage("t", "b", []byte{1}, []byte{2}, ph.TokenID())
	if err != nil {
		t.Fatal(err)
	}
	sig, err := signHCE(&cardTx{h: vcard.PhoneCard(ph).Handle}, ph.TokenID(), msg)
	if err != nil {
		t.Fatalf("signHCE: %v", err)
	}
	if err := soft.Verify(ph.Public(), msg, sig); err != nil {
		t.Fatalf("Verify = %v", err)
	}
	if _, err := signHCE(&cardTx{h: vcard.PhoneCard(other).Handle}, ph.TokenID(), msg); !errors.Is(err, ErrNotPresent) {
		t.Fatalf("signHCE with another phone error = %v; want %v", err, ErrNotPresent)
	}
	if _, err := publicKeyHCE(&cardTx{h: vcard.PhoneCard(other).Handle}, ph.TokenID()); !errors.Is(err, ErrNotPresent) {
		t.Fatalf("publicKeyHCE with another phone error = %v; want %v", err, ErrNotPresent)
	}
}

func TestNewConfig(t *testing.T) {
	tests := []struct {
		name string
		cfg  Config
		ok   bool
	}{
		{"zero", Config{}, true},
		{"order", Config{Identify: []string{"uid", "piv"}}, true},
		{"unknown", Config{Identify: []string{"uid", "fingerprint"}}, false},
		{"twice", Config{Identify: []string{"uid", "uid"}}, false},
		{"negative", Config{RemoveGrace: -1}, false},
		{"backoff", Config{MinBackoff: 2e9, MaxBackoff: 1e9}, false},
	}
	for _, tt := range tests {
		if _, err := New(tt.cfg); (err == nil) != tt.ok {
			t.Errorf("%s: New error = %v; want ok %v", tt.name, err, tt.ok)
		}
	}
}
