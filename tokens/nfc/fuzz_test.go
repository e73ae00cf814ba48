package nfc_test

import (
	"bytes"
	"crypto/ed25519"
	"errors"
	"strings"
	"testing"

	"github.com/hotdesk/hotdesk/tokens"
	"github.com/hotdesk/hotdesk/tokens/nfc"
	"github.com/hotdesk/hotdesk/tokens/soft"
)

// FuzzParseCommand: a command APDU (what a hostile reader or terminal sends
// a phone) parses or fails with ErrMalformed, and whatever parses encodes
// back to exactly the bytes it came from.
func FuzzParseCommand(f *testing.F) {
	f.Add(nfc.SelectCommand())
	f.Add(nfc.GetIDCommand())
	f.Add(nfc.GetPublicKeyCommand())
	cmds, err := nfc.SignCommands(bytes.Repeat([]byte{0xAB}, 300))
	if err != nil {
		f.Fatal(err)
	}
	for _, c := range cmds {
		f.Add(c)
	}
	f.Add([]byte{})
	f.Add([]byte{0x80, 0x10, 0x00})
	f.Add([]byte{0x80, 0x14, 0x00, 0x00, 0x00, 0x01, 0x02})       // extended length
	f.Add([]byte{0x80, 0x14, 0x00, 0x00, 0x05, 0x01, 0x02})       // lc past the end
	f.Add([]byte{0x80, 0x14, 0x00, 0x00, 0x01, 0x01, 0x00, 0x00}) // one byte too many
	f.Fuzz(func(t *testing.T, b []byte) {
		c, err := nfc.ParseCommand(b)
		if err != nil {
			if !errors.Is(err, nfc.ErrMalformed) {
				t.Fatalf("error %v is not ErrMalformed", err)
			}
			return
		}
		if len(c.Data) > nfc.MaxCommandData || c.Le != nfc.NoLe && (c.Le < 1 || c.Le > nfc.MaxResponseData) {
			t.Fatalf("parsed %+v out of bounds", c)
		}
		again, err := c.Bytes()
		if err != nil {
			t.Fatalf("re-encode %+v: %v", c, err)
		}
		if !bytes.Equal(again, b) {
			t.Fatalf("% X parsed as %+v, encodes as % X", b, c, again)
		}
	})
}

// FuzzParseResponses: every response parser of the terminal side (what a
// broken card or a hostile phone answers) fails with ErrMalformed or a
// *StatusError, and what it accepts has the size and form HCE.md gives.
func FuzzParseResponses(f *testing.F) {
	key := seedKey()
	pub := key.Public().(ed25519.PublicKey)
	ok := func(data []byte) []byte { return nfc.Response{Data: data, SW: nfc.SWOK}.Bytes() }
	f.Add(ok([]byte{nfc.Version}))
	f.Add(ok([]byte(nfc.HCETokenID(pub))))
	f.Add(ok(pub))
	f.Add(ok(ed25519.Sign(key, []byte("x"))))
	f.Add(ok(nil))
	f.Add([]byte{0x6A, 0x82})
	f.Add([]byte{0x90})
	f.Add(ok([]byte("hce.KZDVVJ2UMNDUYAUF35O36K6KW462MUJV")))
	f.Add(ok([]byte("user.x")))
	f.Add(ok(make([]byte, nfc.MaxResponseData+1)))
	f.Fuzz(func(t *testing.T, b []byte) {
		in := bytes.Clone(b)
		check := func(what string, err error) {
			t.Helper()
			var se *nfc.StatusError
			if err != nil && !errors.Is(err, nfc.ErrMalformed) && !errors.As(err, &se) {
				t.Fatalf("%s: error %v is neither ErrMalformed nor a status", what, err)
			}
			if !bytes.Equal(b, in) {
				t.Fatalf("%s changed its input", what)
			}
		}
		r, err := nfc.ParseResponse(b)
		check("response", err)
		if err == nil {
			if len(r.Data) > nfc.MaxResponseData || !bytes.Equal(r.Bytes(), b) {
				t.Fatalf("response % X parsed as %+v", b, r)
			}
		}
		err = nfc.ParseSelectResponse(b)
		check("select", err)
		if err == nil && (len(b) < 3 || b[0] != nfc.Version) {
			t.Fatalf("select response % X accepted", b)
		}
		id, err := nfc.ParseIDResponse(b)
		check("get id", err)
		if err == nil {
			typ, rest, perr := tokens.ParseID(id)
			if perr != nil || typ != nfc.KindHCE || len(rest) != 32 || strings.ToLower(rest) != rest {
				t.Fatalf("get id accepted %q (%v)", id, perr)
			}
		}
		k, err := nfc.ParsePublicKeyResponse(b)
		check("get pubkey", err)
		if err == nil {
			if len(k) != ed25519.PublicKeySize {
				t.Fatalf("key of %d bytes", len(k))
			}
			k[0] ^= 0xFF // a copy: the caller keeps it, the buffer is reused
			if !bytes.Equal(b, in) {
				t.Fatal("the key aliases the response")
			}
		}
		sig, err := nfc.ParseSignResponse(b)
		check("sign", err)
		if err == nil && len(sig) != ed25519.SignatureSize {
			t.Fatalf("signature of %d bytes", len(sig))
		}
		err = nfc.ParseChainResponse(b)
		check("chain", err)
		if err == nil && !bytes.Equal(b, []byte{0x90, 0x00}) {
			t.Fatalf("chain response % X accepted", b)
		}
	})
}

// FuzzPhone: the reference phone answers any sequence of command APDUs
// (from a hostile reader) with a well-formed response, and signs only a
// hotdesk challenge for its own token or a pairing transcript of its own
// key, assembled from the SIGN blocks it acknowledged. The input is a
// sequence of commands, each prefixed by its length (one byte).
func FuzzPhone(f *testing.F) {
	ph := &nfc.Phone{Key: seedKey()}
	seq := func(cmds ...[]byte) []byte {
		var b []byte
		for _, c := range cmds {
			b = append(b, byte(len(c)))
			b = append(b, c...)
		}
		return b
	}
	chal, err := soft.ChallengeMessage("term-1", "srv-1", make([]byte, 32), make([]byte, 32), ph.TokenID())
	if err != nil {
		f.Fatal(err)
	}
	pair, err := soft.PairMessage("term-1", "srv-1", make([]byte, 32), "ABCD-EFGH-JKMN", nfc.KindHCE, ph.Public())
	if err != nil {
		f.Fatal(err)
	}
	long := append(bytes.Clone(chal[:len(chal)-1]), bytes.Repeat([]byte{'x'}, 400)...)
	for _, msg := range [][]byte{chal, pair, long} {
		signs, err := nfc.SignCommands(msg)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(seq(append([][]byte{nfc.SelectCommand(), nfc.GetIDCommand(), nfc.GetPublicKeyCommand()}, signs...)...))
	}
	f.Add(seq(nfc.GetIDCommand()))
	f.Add(seq(nfc.SelectCommand(), []byte{0x90, 0x14, 0, 0, 1, 'h'}, nfc.GetIDCommand(), []byte{0x80, 0x14, 0, 0, 1, 'h', 0}))
	f.Add(seq(nfc.SelectCommand(), []byte{0x80, 0x14, 1, 0, 1, 'h', 0}, []byte{0x00, 0xA4, 0x04, 0x00, 0x01, 0xF0}))
	f.Fuzz(func(t *testing.T, in []byte) {
		ph.Deselect()
		var chain []byte // the SIGN data the phone acknowledged, as the terminal sees it
		for len(in) > 0 {
			n := int(in[0])
			in = in[1:]
			if n > len(in) {
				n = len(in)
			}
			cmd := bytes.Clone(in[:n])
			in = in[n:]
			resp := ph.HandleAPDU(cmd)
			r, err := nfc.ParseResponse(resp)
			if err != nil {
				t.Fatalf("command % X: response % X: %v", cmd, resp, err)
			}
			c, cerr := nfc.ParseCommand(cmd)
			isSign := cerr == nil && c.INS == nfc.INSSign
			switch {
			case r.OK() && isSign && c.CLA == nfc.CLA|nfc.CLAChain && len(r.Data) == 0:
				chain = append(chain, c.Data...)
				if len(chain) > nfc.MaxSignMessage {
					t.Fatalf("phone acknowledged %d bytes of SIGN chain", len(chain))
				}
			case r.OK() && isSign:
				msg := append(chain, c.Data...)
				if !ed25519.Verify(ph.Public(), msg, r.Data) {
					t.Fatalf("signature over % X does not verify", msg)
				}
				if !bytes.HasPrefix(msg, []byte("hotdesk-soft-token-v1\x00")) && !bytes.HasPrefix(msg, []byte("hotdesk-pair-v1\x00")) {
					t.Fatalf("phone signed % X", msg)
				}
				chain = nil
			default:
				chain = nil
			}
		}
	})
}
