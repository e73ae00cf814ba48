package soft_test

import (
	"bytes"
	"crypto/ed25519"
	"encoding/hex"
	"errors"
	"strings"
	"testing"

	"github.com/hotdesk/hotdesk/tokens"
	"github.com/hotdesk/hotdesk/tokens/soft"
)

func TestTokenID(t *testing.T) {
	// Golden vector, computed independently (Python hashlib + base64):
	// the public key of the all-zero seed.
	pub := ed25519.NewKeyFromSeed(make([]byte, ed25519.SeedSize)).Public().(ed25519.PublicKey)
	if got, want := hex.EncodeToString(pub), "3b6a27bcceb6a42d62a3a8d02a6f0d73653215771de243a63ac048a18b59da29"; got != want {
		t.Fatalf("public key = %s; want %s", got, want)
	}
	if got, want := soft.TokenID(pub), "soft.copdsqhgjnkjc4rardm2bv2bmkh4qjxa"; got != want {
		t.Errorf("TokenID = %q; want %q", got, want)
	}
	typ, id, err := tokens.ParseID(soft.TokenID(pub))
	if err != nil || typ != "soft" || len(id) != 32 {
		t.Errorf("ParseID(TokenID) = %q, %q, %v; want soft, 32 characters, nil", typ, id, err)
	}
	other := ed25519.NewKeyFromSeed(bytes.Repeat([]byte{1}, ed25519.SeedSize)).Public().(ed25519.PublicKey)
	if soft.TokenID(other) == soft.TokenID(pub) {
		t.Errorf("two keys share token id %q", soft.TokenID(pub))
	}
}

func TestChallengeMessage(t *testing.T) {
	got, err := soft.ChallengeMessage("t1", "srv", []byte{0xaa, 0xbb}, []byte{0xcc}, "soft.x")
	if err != nil {
		t.Fatal(err)
	}
	want := []byte("hotdesk-soft-token-v1\x00" +
		"\x00\x02t1" + "\x00\x03srv" + "\x00\x02\xaa\xbb" + "\x00\x01\xcc" + "\x00\x06soft.x")
	if !bytes.Equal(got, want) {
		t.Errorf("ChallengeMessage = %q; want %q", got, want)
	}

	// Moving bytes between adjacent fields must change the message.
	a, _ := soft.ChallengeMessage("ab", "c", nil, nil, "soft.x")
	b, _ := soft.ChallengeMessage("a", "bc", nil, nil, "soft.x")
	if bytes.Equal(a, b) {
		t.Errorf("field boundaries are ambiguous: %q", a)
	}

	long := strings.Repeat("x", 1<<16)
	tests := []struct {
		name           string
		term, srv, tok string
		wn, cn         []byte
		wantErr        bool
	}{
		{"empty parts", "", "", "", nil, nil, false},
		{"max part", long[:1<<16-1], "s", "soft.x", nil, nil, false},
		{"terminal too long", long, "s", "soft.x", nil, nil, true},
		{"server too long", "t", long, "soft.x", nil, nil, true},
		{"welcome nonce too long", "t", "s", "soft.x", []byte(long), nil, true},
		{"challenge nonce too long", "t", "s", "soft.x", nil, []byte(long), true},
		{"token too long", "t", "s", long, nil, nil, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := soft.ChallengeMessage(tt.term, tt.srv, tt.wn, tt.cn, tt.tok)
			if gotErr := err != nil; gotErr != tt.wantErr {
				t.Errorf("err = %v; want error %v", err, tt.wantErr)
			}
		})
	}
}

func TestVerify(t *testing.T) {
	priv := ed25519.NewKeyFromSeed(bytes.Repeat([]byte{7}, ed25519.SeedSize))
	pub := priv.Public().(ed25519.PublicKey)
	otherPub := ed25519.NewKeyFromSeed(bytes.Repeat([]byte{8}, ed25519.SeedSize)).Public().(ed25519.PublicKey)
	msg := []byte("message")
	sig := ed25519.Sign(priv, msg)
	flipped := bytes.Clone(sig)
	flipped[0] ^= 1

	tests := []struct {
		name    string
		pub     []byte
		msg     []byte
		sig     []byte
		wantErr error
	}{
		{"good", pub, msg, sig, nil},
		{"other message", pub, []byte("massage"), sig, soft.ErrBadProof},
		{"other key", otherPub, msg, sig, soft.ErrBadProof},
		{"flipped bit", pub, msg, flipped, soft.ErrBadProof},
		{"short key", pub[:31], msg, sig, soft.ErrBadProof},
		{"nil key", nil, msg, sig, soft.ErrBadProof},
		{"short signature", pub, msg, sig[:63], soft.ErrBadProof},
		{"long signature", pub, msg, append(bytes.Clone(sig), 0), soft.ErrBadProof},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := soft.Verify(tt.pub, tt.msg, tt.sig)
			if tt.wantErr == nil && err != nil || tt.wantErr != nil && !errors.Is(err, tt.wantErr) {
				t.Errorf("Verify = %v; want %v", err, tt.wantErr)
			}
		})
	}
}
