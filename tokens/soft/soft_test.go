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

func TestPairMessage(t *testing.T) {
	got, err := soft.PairMessage("t1", "srv", []byte{0xaa, 0xbb}, "ABCD-EFGH-JKMN", "soft", []byte{1, 2, 3})
	if err != nil {
		t.Fatal(err)
	}
	want := []byte("hotdesk-pair-v1\x00" +
		"\x00\x02t1" + "\x00\x03srv" + "\x00\x02\xaa\xbb" + "\x00\x0eABCD-EFGH-JKMN" + "\x00\x04soft" + "\x00\x03\x01\x02\x03")
	if !bytes.Equal(got, want) {
		t.Errorf("PairMessage = %q; want %q", got, want)
	}
	a, _ := soft.PairMessage("t", "s", nil, "AB", "c", nil)
	b, _ := soft.PairMessage("t", "s", nil, "A", "Bc", nil)
	if bytes.Equal(a, b) {
		t.Errorf("field boundaries are ambiguous: %q", a)
	}
	long := strings.Repeat("x", 1<<16)
	for name, f := range map[string]func() ([]byte, error){
		"terminal": func() ([]byte, error) { return soft.PairMessage(long, "s", nil, "c", "soft", nil) },
		"server":   func() ([]byte, error) { return soft.PairMessage("t", long, nil, "c", "soft", nil) },
		"nonce":    func() ([]byte, error) { return soft.PairMessage("t", "s", []byte(long), "c", "soft", nil) },
		"code":     func() ([]byte, error) { return soft.PairMessage("t", "s", nil, long, "soft", nil) },
		"kind":     func() ([]byte, error) { return soft.PairMessage("t", "s", nil, "c", long, nil) },
		"key":      func() ([]byte, error) { return soft.PairMessage("t", "s", nil, "c", "soft", []byte(long)) },
	} {
		if _, err := f(); err == nil {
			t.Errorf("PairMessage with a %s of 65536 bytes: no error", name)
		}
	}
}

// TestPairAndChallengeSeparate: a login proof (a signature over a
// ChallengeMessage) never verifies as a pairing proof and the reverse,
// whatever the fields: the two domains differ before the first field,
// so no message of one kind is a message of the other. Without the
// separation, a pairing signature obtained at one terminal could serve
// as a login proof, or a login proof enrol a key.
func TestPairAndChallengeSeparate(t *testing.T) {
	priv := ed25519.NewKeyFromSeed(bytes.Repeat([]byte{9}, ed25519.SeedSize))
	pub := priv.Public().(ed25519.PublicKey)
	nonce := bytes.Repeat([]byte{1}, 32)
	login, err := soft.ChallengeMessage("term-1", "b1", nonce, bytes.Repeat([]byte{2}, 32), soft.TokenID(pub))
	if err != nil {
		t.Fatal(err)
	}
	pair, err := soft.PairMessage("term-1", "b1", nonce, "ABCD-EFGH-JKMN", soft.Kind, pub)
	if err != nil {
		t.Fatal(err)
	}
	if err := soft.Verify(pub, pair, ed25519.Sign(priv, login)); !errors.Is(err, soft.ErrBadProof) {
		t.Errorf("login proof verified as a pairing proof: %v", err)
	}
	if err := soft.Verify(pub, login, ed25519.Sign(priv, pair)); !errors.Is(err, soft.ErrBadProof) {
		t.Errorf("pairing proof verified as a login proof: %v", err)
	}
	// Whatever the fields, a message of one kind does not start with the
	// other's domain.
	empty, _ := soft.ChallengeMessage("", "", nil, nil, "")
	emptyPair, _ := soft.PairMessage("", "", nil, "", "", nil)
	loginDomain, pairDomain := empty[:len(empty)-5*2], emptyPair[:len(emptyPair)-6*2]
	if bytes.HasPrefix(login, pairDomain) || bytes.HasPrefix(pair, loginDomain) {
		t.Errorf("the domains overlap: %q, %q", loginDomain, pairDomain)
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
		// Made without any private key (PROTOCOL.md §8: a key of small order).
		{"forged for the all-zero key", make([]byte, 32), msg, forgedZeroKeySig(t), soft.ErrBadProof},
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

// forgedZeroKeySig is a signature of "message" under the all-zero public key
// (a point of order 4), made without a private key: pick s and a point T of
// the key's subgroup, R = [s]B + T, until -[k]A = T (one try in four).
// ed25519.Verify accepts it, so a proof with such a key proves nothing.
func forgedZeroKeySig(t *testing.T) []byte {
	t.Helper()
	sig, err := hex.DecodeString("436abba1fe9cdf95fef40a3636394672e1ba70e676d84b308a9f65fb1f4f2b13" +
		"8b60098494b4224583817eb550411f22228282206c6c34b45864259b80aacc08")
	if err != nil {
		t.Fatal(err)
	}
	if !ed25519.Verify(make([]byte, 32), []byte("message"), sig) {
		t.Fatal("the forged signature does not verify under crypto/ed25519; the test proves nothing")
	}
	return sig
}

// TestWeakKey: every encoding of a point of small order (either sign bit,
// canonical or not) is weak; a real key, or one a bit away from a weak one,
// is not.
func TestWeakKey(t *testing.T) {
	t.Parallel()
	weak := []string{
		"0000000000000000000000000000000000000000000000000000000000000000", // order 4
		"0100000000000000000000000000000000000000000000000000000000000000", // identity
		"26e8958fc2b227b045c3f489f2ef98f0d5dfac05d3c63339b13802886d53fc05", // order 8
		"c7176a703d4dd84fba3c0b760d10670f2a2053fa2c39ccc64ec7fd7792ac037a", // order 8
		"ecffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f", // p-1, order 2
		"edffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f", // p (0, not canonical)
		"eeffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f", // p+1 (1, not canonical)
	}
	for _, h := range weak {
		pub, err := hex.DecodeString(h)
		if err != nil {
			t.Fatal(err)
		}
		if !soft.WeakKey(pub) {
			t.Errorf("WeakKey(%s) = false; want true", h)
		}
		pub[31] ^= 0x80 // the other sign of x
		if !soft.WeakKey(pub) {
			t.Errorf("WeakKey(%x) = false; want true (sign bit set)", pub)
		}
		pub[1] ^= 1
		if soft.WeakKey(pub) {
			t.Errorf("WeakKey(%x) = true; want false (not a listed point)", pub)
		}
	}
	good := ed25519.NewKeyFromSeed(bytes.Repeat([]byte{7}, ed25519.SeedSize)).Public().(ed25519.PublicKey)
	if soft.WeakKey(good) || soft.WeakKey(make([]byte, 31)) {
		t.Error("WeakKey of a real key or a short one = true; want false")
	}
}
