package nfc_test

import (
	"bytes"
	"crypto/ed25519"
	"encoding/hex"
	"errors"
	"strings"
	"testing"

	"github.com/hotdesk/hotdesk/tokens"
	"github.com/hotdesk/hotdesk/tokens/nfc"
	"github.com/hotdesk/hotdesk/tokens/soft"
)

func unhex(t *testing.T, s string) []byte {
	t.Helper()
	b, err := hex.DecodeString(strings.ReplaceAll(s, " ", ""))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// seedKey is the key of the test vector of proto/PROTOCOL.md §8.3.
func seedKey() ed25519.PrivateKey {
	seed := make([]byte, 32)
	for i := range seed {
		seed[i] = byte(i)
	}
	return ed25519.NewKeyFromSeed(seed)
}

func TestHCETokenID(t *testing.T) {
	pub := seedKey().Public().(ed25519.PublicKey)
	got := nfc.HCETokenID(pub)
	if want := "hce.kzdvvj2umnduyauf35o36k6kw462mujv"; got != want {
		t.Fatalf("HCETokenID = %q; want %q", got, want)
	}
	if soft := soft.TokenID(pub); strings.TrimPrefix(got, "hce.") != strings.TrimPrefix(soft, "soft.") {
		t.Fatalf("HCETokenID %q and soft.TokenID %q differ in encoding", got, soft)
	}
	if _, _, err := tokens.ParseID(got); err != nil {
		t.Fatalf("ParseID(%q) = %v", got, err)
	}
}

func TestUIDTokenID(t *testing.T) {
	tests := []struct {
		uid     string
		want    string
		wantErr error
	}{
		{"04a1b2c3", "uid.04a1b2c3", nil},
		{"04112233445566", "uid.04112233445566", nil},
		{"0102030405060708090a", "uid.0102030405060708090a", nil},
		{"08a1b2c3", "", nfc.ErrRandomUID},
		{"08a1b2c3d4e5f6", "uid.08a1b2c3d4e5f6", nil}, // only 4-byte UIDs are random ids
		{"010203", "", nfc.ErrBadUID},
		{"0102030405060708090a0b", "", nfc.ErrBadUID},
		{"", "", nfc.ErrBadUID},
	}
	for _, tt := range tests {
		got, err := nfc.UIDTokenID(unhex(t, tt.uid))
		if got != tt.want || !errors.Is(err, tt.wantErr) || (tt.wantErr == nil) != (err == nil) {
			t.Errorf("UIDTokenID(%s) = %q, %v; want %q, %v", tt.uid, got, err, tt.want, tt.wantErr)
		}
	}
}

func TestCommandRoundTrip(t *testing.T) {
	tests := []struct {
		name string
		cmd  nfc.Command
		want string
	}{
		{"case 1", nfc.Command{CLA: 0x80, INS: 0x10, Le: nfc.NoLe}, "80100000"},
		{"case 2", nfc.Command{CLA: 0x80, INS: 0x10, Le: 256}, "8010000000"},
		{"case 3", nfc.Command{CLA: 0x90, INS: 0x14, Data: []byte{1, 2}, Le: nfc.NoLe}, "901400000201 02"},
		{"case 4", nfc.Command{INS: 0xA4, P1: 4, Data: nfc.AID, Le: 256}, "00a4040009f0686f746465736b0100"},
	}
	for _, tt := range tests {
		b, err := tt.cmd.Bytes()
		if err != nil {
			t.Fatalf("%s: Bytes: %v", tt.name, err)
		}
		if want := unhex(t, tt.want); !bytes.Equal(b, want) {
			t.Errorf("%s: Bytes = %x; want %x", tt.name, b, want)
		}
		c, err := nfc.ParseCommand(b)
		if err != nil {
			t.Fatalf("%s: ParseCommand: %v", tt.name, err)
		}
		if c.CLA != tt.cmd.CLA || c.INS != tt.cmd.INS || c.Le != tt.cmd.Le || !bytes.Equal(c.Data, tt.cmd.Data) {
			t.Errorf("%s: ParseCommand = %+v; want %+v", tt.name, c, tt.cmd)
		}
	}
	if !bytes.Equal(nfc.SelectCommand(), unhex(t, "00a4040009f0686f746465736b0100")) {
		t.Errorf("SelectCommand = %x", nfc.SelectCommand())
	}
}

func TestParseCommandMalformed(t *testing.T) {
	for _, s := range []string{"", "801000", "8010000003 0102", "8010000000 0102", "80100000020102 0000"} {
		if _, err := nfc.ParseCommand(unhex(t, s)); !errors.Is(err, nfc.ErrMalformed) {
			t.Errorf("ParseCommand(%s) error = %v; want %v", s, err, nfc.ErrMalformed)
		}
	}
	if _, err := (nfc.Command{Data: make([]byte, 256), Le: nfc.NoLe}).Bytes(); !errors.Is(err, nfc.ErrMalformed) {
		t.Errorf("Bytes of 256 data bytes error = %v; want %v", err, nfc.ErrMalformed)
	}
}

func TestSignCommands(t *testing.T) {
	tests := []struct {
		n      int
		blocks int
	}{{1, 1}, {255, 1}, {256, 2}, {600, 3}, {nfc.MaxSignMessage, 5}}
	for _, tt := range tests {
		msg := bytes.Repeat([]byte{7}, tt.n)
		cmds, err := nfc.SignCommands(msg)
		if err != nil {
			t.Fatalf("SignCommands(%d): %v", tt.n, err)
		}
		if len(cmds) != tt.blocks {
			t.Fatalf("SignCommands(%d) = %d blocks; want %d", tt.n, len(cmds), tt.blocks)
		}
		var got []byte
		for i, b := range cmds {
			c, err := nfc.ParseCommand(b)
			if err != nil {
				t.Fatal(err)
			}
			last := i == len(cmds)-1
			if wantCLA := map[bool]byte{true: 0x80, false: 0x90}[last]; c.CLA != wantCLA || c.INS != nfc.INSSign {
				t.Errorf("block %d: CLA %02X INS %02X; want %02X 14", i, c.CLA, c.INS, wantCLA)
			}
			if (c.Le == nfc.NoLe) == last {
				t.Errorf("block %d: Le %d", i, c.Le)
			}
			got = append(got, c.Data...)
		}
		if !bytes.Equal(got, msg) {
			t.Errorf("SignCommands(%d) reassembled differs", tt.n)
		}
	}
	for _, n := range []int{0, nfc.MaxSignMessage + 1} {
		if _, err := nfc.SignCommands(make([]byte, n)); !errors.Is(err, nfc.ErrMalformed) {
			t.Errorf("SignCommands(%d) error = %v; want %v", n, err, nfc.ErrMalformed)
		}
	}
}

// exchange runs the terminal side of proto/HCE.md against ph.
func exchange(t *testing.T, ph *nfc.Phone, msg []byte) (string, ed25519.PublicKey, []byte, error) {
	t.Helper()
	if err := nfc.ParseSelectResponse(ph.HandleAPDU(nfc.SelectCommand())); err != nil {
		return "", nil, nil, err
	}
	id, err := nfc.ParseIDResponse(ph.HandleAPDU(nfc.GetIDCommand()))
	if err != nil {
		return "", nil, nil, err
	}
	pub, err := nfc.ParsePublicKeyResponse(ph.HandleAPDU(nfc.GetPublicKeyCommand()))
	if err != nil {
		return "", nil, nil, err
	}
	cmds, err := nfc.SignCommands(msg)
	if err != nil {
		return "", nil, nil, err
	}
	for _, c := range cmds[:len(cmds)-1] {
		if err := nfc.ParseChainResponse(ph.HandleAPDU(c)); err != nil {
			return "", nil, nil, err
		}
	}
	sig, err := nfc.ParseSignResponse(ph.HandleAPDU(cmds[len(cmds)-1]))
	return id, pub, sig, err
}

func TestPhoneExchange(t *testing.T) {
	ph := &nfc.Phone{Key: seedKey()}
	token := ph.TokenID()
	for _, term := range []string{"term-1", strings.Repeat("t", 400)} {
		msg, err := soft.ChallengeMessage(term, "b1", bytes.Repeat([]byte{1}, 32), bytes.Repeat([]byte{2}, 32), token)
		if err != nil {
			t.Fatal(err)
		}
		id, pub, sig, err := exchange(t, ph, msg)
		if err != nil {
			t.Fatalf("exchange (%d bytes): %v", len(msg), err)
		}
		if id != token || id != nfc.HCETokenID(pub) {
			t.Fatalf("GET-ID = %q, HCETokenID(pub) = %q; want %q", id, nfc.HCETokenID(pub), token)
		}
		if err := soft.Verify(pub, msg, sig); err != nil {
			t.Fatalf("Verify = %v; want nil", err)
		}
	}
	// Pairing (HCE.md §3.3): the phone signs the pair transcript for its
	// own key, of kind hce.
	msg, err := soft.PairMessage("term-1", "b1", bytes.Repeat([]byte{1}, 32), "ABCD-EFGH-JKMN", nfc.KindHCE, ph.Public())
	if err != nil {
		t.Fatal(err)
	}
	_, pub, sig, err := exchange(t, ph, msg)
	if err != nil {
		t.Fatalf("pair exchange: %v", err)
	}
	if err := soft.Verify(pub, msg, sig); err != nil {
		t.Fatalf("Verify(pair transcript) = %v; want nil", err)
	}
}

func TestPhoneRefuses(t *testing.T) {
	ph := &nfc.Phone{Key: seedKey()}
	good, err := soft.ChallengeMessage("term-1", "b1", []byte{1}, []byte{2}, ph.TokenID())
	if err != nil {
		t.Fatal(err)
	}
	otherToken, _ := soft.ChallengeMessage("term-1", "b1", []byte{1}, []byte{2}, "hce.other")
	goodPair, err := soft.PairMessage("term-1", "b1", []byte{1}, "ABCD-EFGH-JKMN", nfc.KindHCE, ph.Public())
	if err != nil {
		t.Fatal(err)
	}
	otherKey := (&nfc.Phone{Key: ed25519.NewKeyFromSeed(bytes.Repeat([]byte{5}, 32))}).Public()
	otherKeyPair, _ := soft.PairMessage("term-1", "b1", []byte{1}, "ABCD-EFGH-JKMN", nfc.KindHCE, otherKey)
	softPair, _ := soft.PairMessage("term-1", "b1", []byte{1}, "ABCD-EFGH-JKMN", soft.Kind, ph.Public())
	// A pair transcript's domain with a challenge's fields (the token id
	// last), and the reverse: neither is signed.
	crossed := append([]byte("hotdesk-pair-v1\x00"), good[len("hotdesk-soft-token-v1\x00"):]...)
	crossed2 := append([]byte("hotdesk-soft-token-v1\x00"), goodPair[len("hotdesk-pair-v1\x00"):]...)
	sel := nfc.SelectCommand()
	sign := func(msg []byte) []byte { c, _ := nfc.SignCommands(msg); return c[0] }
	tests := []struct {
		name   string
		apdus  [][]byte
		wantSW uint16
	}{
		{"get id before select", [][]byte{nfc.GetIDCommand()}, nfc.SWConditionsNotSatisfied},
		{"other aid", [][]byte{unhex(t, "00a4040005a00000000100")}, nfc.SWFileNotFound},
		{"other aid deselects", [][]byte{sel, unhex(t, "00a4040005a00000000100"), nfc.GetIDCommand()}, nfc.SWConditionsNotSatisfied},
		{"unknown ins", [][]byte{sel, unhex(t, "8016000000")}, nfc.SWINSNotSupported},
		{"unknown cla", [][]byte{sel, unhex(t, "a010000000")}, nfc.SWCLANotSupported},
		{"bad p1", [][]byte{sel, unhex(t, "8010010000")}, nfc.SWWrongP1P2},
		{"truncated", [][]byte{sel, unhex(t, "8010")}, nfc.SWWrongLength},
		{"sign not a challenge", [][]byte{sel, sign([]byte("hello"))}, nfc.SWWrongData},
		{"sign another token's challenge", [][]byte{sel, sign(otherToken)}, nfc.SWWrongData},
		{"sign trailing bytes", [][]byte{sel, sign(append(good, 0))}, nfc.SWWrongData},
		{"chain aborted by another command", [][]byte{sel, unhex(t, "9014000003 686f74"), nfc.GetIDCommand(), unhex(t, "8014000001 00 00")}, nfc.SWWrongData},
		{"good", [][]byte{sel, sign(good)}, nfc.SWOK},
		{"pair for another key", [][]byte{sel, sign(otherKeyPair)}, nfc.SWWrongData},
		{"pair as a soft token", [][]byte{sel, sign(softPair)}, nfc.SWWrongData},
		{"pair trailing bytes", [][]byte{sel, sign(append(goodPair, 0))}, nfc.SWWrongData},
		{"pair domain, challenge fields", [][]byte{sel, sign(crossed)}, nfc.SWWrongData},
		{"challenge domain, pair fields", [][]byte{sel, sign(crossed2)}, nfc.SWWrongData},
		{"good pair", [][]byte{sel, sign(goodPair)}, nfc.SWOK},
	}
	for _, tt := range tests {
		ph.Deselect()
		var resp []byte
		for _, a := range tt.apdus {
			resp = ph.HandleAPDU(a)
		}
		r, err := nfc.ParseResponse(resp)
		if err != nil {
			t.Fatalf("%s: %v", tt.name, err)
		}
		if r.SW != tt.wantSW {
			t.Errorf("%s: SW = %04X; want %04X", tt.name, r.SW, tt.wantSW)
		}
	}
	// A chain longer than MaxSignMessage is refused.
	ph.Deselect()
	ph.HandleAPDU(sel)
	block := append(unhex(t, "90140000ff"), bytes.Repeat([]byte{0}, 255)...)
	var r nfc.Response
	for range 5 {
		r, _ = nfc.ParseResponse(ph.HandleAPDU(block))
	}
	if r.SW != nfc.SWWrongLength {
		t.Errorf("long chain: SW = %04X; want %04X", r.SW, nfc.SWWrongLength)
	}
}

func TestParseResponses(t *testing.T) {
	tests := []struct {
		name string
		err  error
	}{
		{"select", nfc.ParseSelectResponse(unhex(t, "6a82"))},
		{"select version", nfc.ParseSelectResponse(unhex(t, "029000"))},
		{"select empty", nfc.ParseSelectResponse(unhex(t, "9000"))},
		{"id type", func() error { _, err := nfc.ParseIDResponse(append([]byte("uid.0102"), 0x90, 0)); return err }()},
		{"id syntax", func() error { _, err := nfc.ParseIDResponse(append([]byte("hce.a/b"), 0x90, 0)); return err }()},
		// HCE.md §1, §3.1: the id is "hce." and 32 base32 characters (36
		// bytes); any other hce id is a card error, never a token event.
		{"id short", func() error { _, err := nfc.ParseIDResponse(append([]byte("hce.aaaa"), 0x90, 0)); return err }()},
		{"id long", func() error {
			_, err := nfc.ParseIDResponse(append([]byte("hce.kzdvvj2umnduyauf35o36k6kw462mujvx"), 0x90, 0))
			return err
		}()},
		{"id alphabet", func() error {
			_, err := nfc.ParseIDResponse(append([]byte("hce.kzdvvj2umnduyauf35o36k6kw462muj1"), 0x90, 0))
			return err
		}()},
		{"id case", func() error {
			_, err := nfc.ParseIDResponse(append([]byte("hce.KZDVVJ2UMNDUYAUF35O36K6KW462MUJV"), 0x90, 0))
			return err
		}()},
		{"pubkey size", func() error { _, err := nfc.ParsePublicKeyResponse(append(make([]byte, 31), 0x90, 0)); return err }()},
		{"sig size", func() error { _, err := nfc.ParseSignResponse(append(make([]byte, 63), 0x90, 0)); return err }()},
		{"chain data", nfc.ParseChainResponse(unhex(t, "019000"))},
		{"short", nfc.ParseChainResponse(unhex(t, "90"))},
	}
	for _, tt := range tests {
		var se *nfc.StatusError
		if !errors.Is(tt.err, nfc.ErrMalformed) && !errors.As(tt.err, &se) {
			t.Errorf("%s: error = %v; want ErrMalformed or *StatusError", tt.name, tt.err)
		}
	}
}

// TestVector checks the test vector of proto/HCE.md §4.
func TestVector(t *testing.T) {
	ph := &nfc.Phone{Key: seedKey()}
	if got, want := hex.EncodeToString(ph.Public()), "03a107bff3ce10be1d70dd18e74bc09967e4d6309ba50d5f1ddc8664125531b8"; got != want {
		t.Fatalf("public key = %s; want %s", got, want)
	}
	ph.HandleAPDU(nfc.SelectCommand())
	got := ph.HandleAPDU(nfc.GetIDCommand())
	if want := unhex(t, "6863652e6b7a6476766a32756d6e64757961756633356f33366b366b773436326d756a76 9000"); !bytes.Equal(got, want) {
		t.Fatalf("GET-ID = %x; want %x", got, want)
	}
	// The challenge of PROTOCOL.md §8.3 for the hce token: one SIGN block.
	msg, err := soft.ChallengeMessage("term-1", "b1", bytes.Repeat([]byte{1}, 32), bytes.Repeat([]byte{2}, 32), ph.TokenID())
	if err != nil {
		t.Fatal(err)
	}
	cmds, err := nfc.SignCommands(msg)
	if err != nil {
		t.Fatal(err)
	}
	if len(msg) != 140 || len(cmds) != 1 || !bytes.HasPrefix(cmds[0], unhex(t, "8014 0000 8c")) || cmds[0][len(cmds[0])-1] != 0 {
		t.Fatalf("message of %d bytes, SIGN commands %x; want 140 bytes in one 80 14 00 00 8C … 00", len(msg), cmds)
	}
	got = ph.HandleAPDU(cmds[0])
	if want := unhex(t, "61448120295028e315628612af9224af60034648d684a8cbfb84294cffc2670d"+
		"780b9e564c19abf6d0793425313701cfc3756a9614c752cc4603dd6306a9e70f 9000"); !bytes.Equal(got, want) {
		t.Fatalf("SIGN = %x; want %x", got, want)
	}
	// The pairing transcript of PROTOCOL.md §8.5 as kind hce: one block.
	msg, err = soft.PairMessage("term-1", "b1", bytes.Repeat([]byte{1}, 32), "ABCD-EFGH-JKMN", nfc.KindHCE, ph.Public())
	if err != nil {
		t.Fatal(err)
	}
	if cmds, err = nfc.SignCommands(msg); err != nil {
		t.Fatal(err)
	}
	if len(msg) != 117 || len(cmds) != 1 || !bytes.HasPrefix(cmds[0], unhex(t, "8014 0000 75")) {
		t.Fatalf("pair message of %d bytes, SIGN commands %x; want 117 bytes in one 80 14 00 00 75 … 00", len(msg), cmds)
	}
	got = ph.HandleAPDU(cmds[0])
	if want := unhex(t, "c123027a5f64983998c67cefe662c8ed854261eab9a2f24f9ba3710676cf3b07"+
		"ac6673c9822f8841ad150062f2fe6957038d83e6481b88a958080079f81e6b05 9000"); !bytes.Equal(got, want) {
		t.Fatalf("SIGN(pair) = %x; want %x", got, want)
	}
}
