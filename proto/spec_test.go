package proto_test

import (
	"bytes"
	"crypto/ed25519"
	"crypto/sha256"
	"encoding/base32"
	"encoding/binary"
	"encoding/hex"
	"os"
	"regexp"
	"strconv"
	"strings"
	"testing"

	"github.com/hotdesk/hotdesk/proto"
)

// readSpec returns PROTOCOL.md.
func readSpec(t *testing.T) string {
	t.Helper()
	b, err := os.ReadFile("PROTOCOL.md")
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// TestSpecFrameExample decodes the example frame given in PROTOCOL.md §3.
func TestSpecFrameExample(t *testing.T) {
	m := regexp.MustCompile("`Ping\\{Seq: 5\\}` frame is `([0-9a-f ]+)`").FindStringSubmatch(readSpec(t))
	if m == nil {
		t.Fatal("example frame not found in PROTOCOL.md")
	}
	p, err := proto.ReadFrame(bytes.NewReader(unhex(t, m[1])))
	if err != nil {
		t.Fatal(err)
	}
	got, err := proto.Decode(p)
	if err != nil {
		t.Fatal(err)
	}
	if want := (proto.Msg{Type: proto.TypePing, Body: &proto.Ping{Seq: 5}}); !msgEqual(got, want) {
		t.Fatalf("got = %+v; want %+v", got, want)
	}
}

// TestSpecSoftTokenVector recomputes the software-token test vector of
// PROTOCOL.md §8.3 from the rules in §8.1 and §8.2.
func TestSpecSoftTokenVector(t *testing.T) {
	spec := readSpec(t)
	field := func(name string) string {
		m := regexp.MustCompile(`(?m)^` + name + `\s+(\S+)$`).FindStringSubmatch(spec)
		if m == nil {
			t.Fatalf("%q not found in PROTOCOL.md §8.3", name)
		}
		return m[1]
	}
	sigHex := regexp.MustCompile(`(?m)^signature\s+([0-9a-f]+)\n\s+([0-9a-f]+)$`).FindStringSubmatch(spec)
	if sigHex == nil {
		t.Fatal("signature not found in PROTOCOL.md §8.3")
	}

	seed := make([]byte, ed25519.SeedSize)
	for i := range seed {
		seed[i] = byte(i)
	}
	priv := ed25519.NewKeyFromSeed(seed)
	pub := priv.Public().(ed25519.PublicKey)
	if got, want := hex.EncodeToString(pub), field("public key"); got != want {
		t.Fatalf("public key = %s; want %s", got, want)
	}
	sum := sha256.Sum256(pub)
	id := "soft." + strings.ToLower(base32.StdEncoding.WithPadding(base32.NoPadding).EncodeToString(sum[:20]))
	if want := field("token id"); id != want {
		t.Fatalf("token id = %s; want %s", id, want)
	}
	lp := func(b *bytes.Buffer, x []byte) {
		b.Write(binary.BigEndian.AppendUint16(nil, uint16(len(x))))
		b.Write(x)
	}
	var msg bytes.Buffer
	msg.WriteString("hotdesk-soft-token-v1")
	msg.WriteByte(0)
	lp(&msg, []byte("term-1"))
	lp(&msg, []byte("b1"))
	lp(&msg, bytes.Repeat([]byte{1}, 32))
	lp(&msg, bytes.Repeat([]byte{2}, 32))
	lp(&msg, []byte(id))
	if got := msg.Len(); !strings.Contains(spec, "("+strconv.Itoa(got)+" bytes)") {
		t.Fatalf("signed message is %d bytes; PROTOCOL.md says otherwise", got)
	}
	sig := ed25519.Sign(priv, msg.Bytes())
	if got, want := hex.EncodeToString(sig), sigHex[1]+sigHex[2]; got != want {
		t.Fatalf("signature = %s; want %s", got, want)
	}
}
