package proto_test

import (
	"bytes"
	"crypto/ed25519"
	"crypto/sha256"
	"encoding/base32"
	"encoding/binary"
	"encoding/hex"
	"os"
	"reflect"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/hotdesk/hotdesk/proto"
	"github.com/hotdesk/hotdesk/tokens/soft"
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

// specKey is the test vectors' Ed25519 key: the seed 00 01 … 1f.
func specKey() (ed25519.PrivateKey, ed25519.PublicKey) {
	seed := make([]byte, ed25519.SeedSize)
	for i := range seed {
		seed[i] = byte(i)
	}
	priv := ed25519.NewKeyFromSeed(seed)
	return priv, priv.Public().(ed25519.PublicKey)
}

// specSignature returns the hex signature PROTOCOL.md gives under label
// (written on two lines).
func specSignature(t *testing.T, spec, label, section string) string {
	t.Helper()
	m := regexp.MustCompile(`(?m)^` + label + `\s+([0-9a-f]+)\n\s+([0-9a-f]+)$`).FindStringSubmatch(spec)
	if m == nil {
		t.Fatalf("%s not found in PROTOCOL.md %s", label, section)
	}
	return m[1] + m[2]
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
	wantSig := specSignature(t, spec, "signature", "§8.3")
	priv, pub := specKey()
	if got, want := hex.EncodeToString(pub), field("public key"); got != want {
		t.Fatalf("public key = %s; want %s", got, want)
	}
	sum := sha256.Sum256(pub)
	id := "soft." + strings.ToLower(base32.StdEncoding.WithPadding(base32.NoPadding).EncodeToString(sum[:20]))
	if want := field("token id"); id != want {
		t.Fatalf("token id = %s; want %s", id, want)
	}
	msg := specMessage("hotdesk-soft-token-v1", []byte("term-1"), []byte("b1"),
		bytes.Repeat([]byte{1}, 32), bytes.Repeat([]byte{2}, 32), []byte(id))
	if got := msg.Len(); !strings.Contains(spec, "("+strconv.Itoa(got)+" bytes)") {
		t.Fatalf("signed message is %d bytes; PROTOCOL.md says otherwise", got)
	}
	sig := ed25519.Sign(priv, msg.Bytes())
	if got := hex.EncodeToString(sig); got != wantSig {
		t.Fatalf("signature = %s; want %s", got, wantSig)
	}
}

// TestSpecPairVector recomputes the pairing test vector of PROTOCOL.md
// §8.5 from the rules in §8.4, and checks that tokens/soft.PairMessage
// (what terminals sign and brokers verify) builds the same bytes.
func TestSpecPairVector(t *testing.T) {
	spec := readSpec(t)
	wantSig := specSignature(t, spec, "pair signature", "§8.5")
	priv, pub := specKey()
	msg := specMessage("hotdesk-pair-v1", []byte("term-1"), []byte("b1"),
		bytes.Repeat([]byte{1}, 32), []byte("ABCD-EFGH-JKMN"), []byte("soft"), pub)
	if got := msg.Len(); !strings.Contains(spec, "("+strconv.Itoa(got)+" bytes)\npair signature") {
		t.Fatalf("pair message is %d bytes; PROTOCOL.md §8.5 says otherwise", got)
	}
	if !strings.Contains(spec, "pair message    "+hex.EncodeToString([]byte("hotdesk-pair-v1"))+" 00") {
		t.Fatal("PROTOCOL.md §8.5 does not start the pair message with the domain of §8.4")
	}
	sig := ed25519.Sign(priv, msg.Bytes())
	if got := hex.EncodeToString(sig); got != wantSig {
		t.Fatalf("pair signature = %s; want %s", got, wantSig)
	}
	built, err := soft.PairMessage("term-1", "b1", bytes.Repeat([]byte{1}, 32), "ABCD-EFGH-JKMN", "soft", pub)
	if err != nil || !bytes.Equal(built, msg.Bytes()) {
		t.Fatalf("soft.PairMessage = %x, %v; want the §8.4 bytes %x", built, err, msg.Bytes())
	}
}

// TestPairSignatureField: Pair.Signature is body key 5, a byte string
// (PROTOCOL.md §5, message 15), and survives a round trip.
func TestPairSignatureField(t *testing.T) {
	sig := bytes.Repeat([]byte{0xab}, 64)
	b, err := proto.Encode(proto.TypePair, &proto.Pair{Code: "c", Kind: "soft", PublicKey: []byte{1}, Signature: sig})
	if err != nil {
		t.Fatal(err)
	}
	// 0x05 (key 5), 0x58 0x40 (bytes, 64): the signature follows.
	if !bytes.Contains(b, append([]byte{0x05, 0x58, 0x40}, sig...)) {
		t.Fatalf("encoded Pair %x has no key 5 with the signature", b)
	}
	m, err := proto.Decode(b)
	if err != nil {
		t.Fatal(err)
	}
	if p, ok := m.Body.(*proto.Pair); !ok || !bytes.Equal(p.Signature, sig) {
		t.Fatalf("decoded %+v; want the signature back", m.Body)
	}
	// A Pair without key 5 decodes with no signature (the broker then
	// refuses it, §7.4).
	b, err = proto.Encode(proto.TypePair, &proto.Pair{Code: "c", Kind: "soft", PublicKey: []byte{1}})
	if err != nil {
		t.Fatal(err)
	}
	if m, err = proto.Decode(b); err != nil || len(m.Body.(*proto.Pair).Signature) != 0 {
		t.Fatalf("decoded unsigned Pair = %+v, %v; want no signature", m.Body, err)
	}
}

// specMessage builds a signed message as PROTOCOL.md §8.2 and §8.4 state
// it, written here apart from tokens/soft: domain, a zero byte, then each
// part with its 2-byte big-endian length.
func specMessage(domain string, parts ...[]byte) *bytes.Buffer {
	var msg bytes.Buffer
	msg.WriteString(domain)
	msg.WriteByte(0)
	for _, p := range parts {
		msg.Write(binary.BigEndian.AppendUint16(nil, uint16(len(p))))
		msg.Write(p)
	}
	return &msg
}

// specField is one row of a field table of PROTOCOL.md.
type specField struct {
	name string
	opt  bool
}

// specFieldTables returns the rows of PROTOCOL.md's field tables by the
// message (or map) they describe: the tables under "### N Name" headings
// of §5 (both messages of "### 13 Ping, 14 Pong"), and those a paragraph
// introduces elsewhere ("`Welcome` has one more optional field:", "Member
// is a map:"). types maps each heading's message name to its number.
func specFieldTables(t *testing.T, spec string) (tables map[string]map[uint64]specField, types map[string]uint64) {
	t.Helper()
	heading := regexp.MustCompile(`^### (\d+) (\w+)(?:, (\d+) (\w+))?[ (:]`)
	intro := regexp.MustCompile("^(?:`(\\w+)` has .*field|(\\w+) is a map)")
	row := regexp.MustCompile(`^\| (\d+) \| (\w+) \| ([^|]+) \|`)
	tables, types = map[string]map[uint64]specField{}, map[string]uint64{}
	var owners []string
	for _, line := range strings.Split(spec, "\n") {
		switch m := heading.FindStringSubmatch(line); {
		case m != nil:
			owners = nil
			for i := 1; i+1 < len(m) && m[i] != ""; i += 2 {
				n, _ := strconv.ParseUint(m[i], 10, 16)
				types[m[i+1]] = n
				owners = append(owners, m[i+1])
			}
			continue
		case strings.HasPrefix(line, "#"):
			owners = nil
			continue
		}
		if m := intro.FindStringSubmatch(line); m != nil {
			owners = []string{m[1] + m[2]}
			continue
		}
		m := row.FindStringSubmatch(line)
		if m == nil || owners == nil {
			continue
		}
		key, _ := strconv.ParseUint(m[1], 10, 64)
		f := specField{name: m[2], opt: strings.Contains(m[3], "opt")}
		for _, o := range owners {
			if tables[o] == nil {
				tables[o] = map[uint64]specField{}
			}
			if _, dup := tables[o][key]; dup {
				t.Errorf("PROTOCOL.md: %s has two rows for key %d", o, key)
			}
			tables[o][key] = f
		}
	}
	return tables, types
}

// TestSpecMessageFields keeps PROTOCOL.md's message tables (§5, and the
// fields added in later sections) in step with messages.go: every message
// type has its number, every field its key, name and optionality
// (omitempty: "opt"), and the document lists no field the code lacks.
func TestSpecMessageFields(t *testing.T) {
	tables, types := specFieldTables(t, readSpec(t))
	structs := map[string]reflect.Type{"Member": reflect.TypeFor[proto.Member]()}
	for _, typ := range proto.Types() {
		body, err := proto.NewBody(typ)
		if err != nil {
			t.Fatal(err)
		}
		rt := reflect.TypeOf(body).Elem()
		structs[rt.Name()] = rt
		if n, ok := types[rt.Name()]; !ok {
			t.Errorf("PROTOCOL.md §5 has no heading for %s", rt.Name())
		} else if n != uint64(typ) {
			t.Errorf("PROTOCOL.md §5 numbers %s %d; messages.go %d", rt.Name(), n, typ)
		}
	}
	for name := range types {
		if structs[name] == nil {
			t.Errorf("PROTOCOL.md §5 has a message %s that messages.go lacks", name)
		}
	}
	for name, rt := range structs {
		want := tables[name]
		got := map[uint64]specField{}
		for f := range rt.Fields() {
			tag := strings.Split(f.Tag.Get("cbor"), ",")
			if tag[0] == "-" || tag[0] == "" {
				continue
			}
			key, err := strconv.ParseUint(tag[0], 10, 64)
			if err != nil {
				t.Fatalf("%s.%s: cbor tag %q", name, f.Name, f.Tag.Get("cbor"))
			}
			got[key] = specField{name: f.Name, opt: slices.Contains(tag[1:], "omitempty")}
		}
		for key, g := range got {
			w, ok := want[key]
			switch {
			case !ok:
				t.Errorf("PROTOCOL.md: %s has no row for key %d (%s)", name, key, g.name)
			case w.name != g.name:
				t.Errorf("PROTOCOL.md: %s key %d is %s; messages.go %s", name, key, w.name, g.name)
			case w.opt != g.opt:
				t.Errorf("PROTOCOL.md: %s.%s optional = %v; messages.go omitempty = %v", name, g.name, w.opt, g.opt)
			}
		}
		for key, w := range want {
			if _, ok := got[key]; !ok {
				t.Errorf("PROTOCOL.md: %s key %d (%s) is not in messages.go", name, key, w.name)
			}
		}
	}
}
