package vcard_test

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"encoding/binary"
	"io"
	"net"
	"testing"
	"time"

	"github.com/hotdesk/hotdesk/tokens/nfc"
	"github.com/hotdesk/hotdesk/tokens/pcsc/vcard"
)

// reader plays vpcd's side of the protocol on a loopback listener.
type reader struct {
	t    *testing.T
	conn net.Conn
}

func listen(t *testing.T) (net.Listener, int) {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	return l, l.Addr().(*net.TCPAddr).Port
}

func accept(t *testing.T, l net.Listener) *reader {
	t.Helper()
	c, err := l.Accept()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	c.SetDeadline(time.Now().Add(10 * time.Second))
	return &reader{t: t, conn: c}
}

func (r *reader) send(b []byte) {
	r.t.Helper()
	msg := binary.BigEndian.AppendUint16(nil, uint16(len(b)))
	if _, err := r.conn.Write(append(msg, b...)); err != nil {
		r.t.Fatal(err)
	}
}

func (r *reader) recv() []byte {
	r.t.Helper()
	var hdr [2]byte
	if _, err := io.ReadFull(r.conn, hdr[:]); err != nil {
		r.t.Fatal(err)
	}
	b := make([]byte, binary.BigEndian.Uint16(hdr[:]))
	if _, err := io.ReadFull(r.conn, b); err != nil {
		r.t.Fatal(err)
	}
	return b
}

func TestProtocol(t *testing.T) {
	l, port := listen(t)
	in, err := vcard.Insert(context.Background(), port, vcard.UIDCard([]byte{4, 1, 2, 3}))
	if err != nil {
		t.Fatal(err)
	}
	r := accept(t, l)
	r.send([]byte{1}) // power on: no answer
	r.send([]byte{4}) // ATR
	if got := r.recv(); !bytes.Equal(got, vcard.ATRStorage) {
		t.Fatalf("ATR = %x; want %x", got, vcard.ATRStorage)
	}
	r.send([]byte{0xFF, 0xCA, 0x00, 0x00, 0x00})
	if got, want := r.recv(), []byte{4, 1, 2, 3, 0x90, 0x00}; !bytes.Equal(got, want) {
		t.Fatalf("GET UID = %x; want %x", got, want)
	}
	select {
	case <-in.Seen():
	default:
		t.Fatalf("Seen not closed after an APDU")
	}
	if n := in.APDUs(); n != 1 {
		t.Fatalf("APDUs = %d; want 1", n)
	}
	if err := in.Remove(); err != nil {
		t.Fatalf("Remove: %v", err)
	}
	if _, err := r.conn.Read(make([]byte, 1)); err != io.EOF {
		t.Fatalf("read after Remove = %v; want EOF", err)
	}
	if err := in.Remove(); err != nil {
		t.Fatalf("second Remove: %v", err)
	}
}

func TestCards(t *testing.T) {
	ph := &nfc.Phone{Key: ed25519.NewKeyFromSeed(make([]byte, 32))}
	guid := [16]byte{1}
	tests := []struct {
		name string
		card vcard.Card
		apdu []byte
		want []byte // nil: no answer
	}{
		{"piv select", vcard.PIVCard(guid), []byte{0x00, 0xA4, 0x04, 0x00, 0x0B, 0xA0, 0x00, 0x00, 0x03, 0x08, 0x00, 0x00, 0x10, 0x00, 0x01, 0x00, 0x00}, nil},
		{"piv chuid", vcard.PIVCard(guid), []byte{0x00, 0xCB, 0x3F, 0xFF, 0x05, 0x5C, 0x03, 0x5F, 0xC1, 0x02, 0x00}, append(vcard.CHUID(guid), 0x90, 0x00)},
		{"phone select", vcard.PhoneCard(ph), nfc.SelectCommand(), []byte{0x01, 0x90, 0x00}},
		{"uid card select", vcard.UIDCard([]byte{1, 2, 3, 4}), nfc.SelectCommand(), []byte{0x6A, 0x82}},
		{"garbage", vcard.GarbageCard(), nfc.SelectCommand(), []byte{0x42}},
	}
	for _, tt := range tests {
		resp := tt.card.Handle(tt.apdu)
		if tt.want != nil && !bytes.Equal(resp, tt.want) {
			t.Errorf("%s: response = %x; want %x", tt.name, resp, tt.want)
		}
		if tt.want == nil && !bytes.HasSuffix(resp, []byte{0x90, 0x00}) {
			t.Errorf("%s: response = %x; want success", tt.name, resp)
		}
	}
	// The phone's UID is random and changes when it enters the field again.
	c := vcard.PhoneCard(ph)
	uid1 := c.Handle([]byte{0xFF, 0xCA, 0x00, 0x00, 0x00})
	c.OnPower()
	uid2 := c.Handle([]byte{0xFF, 0xCA, 0x00, 0x00, 0x00})
	if len(uid1) != 6 || uid1[0] != 0x08 || bytes.Equal(uid1, uid2) {
		t.Errorf("phone uids = %x, %x; want two different random uids", uid1, uid2)
	}
}

func TestMuteCard(t *testing.T) {
	l, port := listen(t)
	in, err := vcard.Insert(context.Background(), port, vcard.MuteCard())
	if err != nil {
		t.Fatal(err)
	}
	r := accept(t, l)
	r.send([]byte{0xFF, 0xCA, 0x00, 0x00, 0x00})
	r.send([]byte{4})
	if got := r.recv(); !bytes.Equal(got, vcard.ATRContactless) { // the APDU got no answer
		t.Fatalf("first message = %x; want the ATR %x", got, vcard.ATRContactless)
	}
	if err := in.Remove(); err != nil {
		t.Fatal(err)
	}
}
