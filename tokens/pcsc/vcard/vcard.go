// Package vcard is a virtual smart card speaking the protocol of the vpcd
// reader driver (vsmartcard-vpcd), so that tests drive a real pcscd with
// cards of any UID, PIV data or phone behaviour. It is pure Go and not a test
// file, so tests of other packages can use it.
//
// The protocol: the card connects over TCP to the reader's port (the system
// configuration /etc/reader.conf.d/vpcd has reader 0 on Port0 and reader 1 on
// Port1; tokens/pcsc/pcscdtest starts pcscd on private ports). Connecting is
// inserting, closing is removing. Every message in both directions is a
// 2-byte big-endian length followed by the payload. From the reader, a
// 1-byte payload is a control code (0 power off, 1 power on, 2 reset, 4 send
// the ATR, which the card answers with its ATR); a longer payload is a
// command APDU, answered with a response APDU.
package vcard

import (
	"context"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"strconv"
	"sync"
)

// Ports of the two readers of the system vpcd configuration.
const (
	Port0 = 35963
	Port1 = 35964
)

// Control codes of the vpcd protocol.
const (
	ctrlOff   = 0
	ctrlOn    = 1
	ctrlReset = 2
	ctrlATR   = 4
)

// Card is a virtual card.
type Card struct {
	// ATR is the answer to reset (2–33 bytes).
	ATR []byte
	// Handle answers a command APDU with a response APDU. A nil Handle, or
	// a nil response, is a mute card: the command is never answered.
	// Handle is called from one goroutine at a time.
	Handle func(apdu []byte) []byte
	// OnPower, if set, is called when the reader powers the card on or
	// resets it (a phone forgets its state when it enters the field).
	OnPower func()
}

// Inserted is a card in a reader.
type Inserted struct {
	conn net.Conn
	done chan struct{}
	seen chan struct{}

	mu       sync.Mutex
	seenOnce bool
	apdus    int
	err      error
}

// Insert connects c to the vpcd reader listening on 127.0.0.1:port (insert
// the card) and serves the reader until Remove. pcscd notices the card at
// its next poll of the driver (about 0.4 s).
func Insert(ctx context.Context, port int, c Card) (*Inserted, error) {
	if len(c.ATR) < 2 || len(c.ATR) > 33 {
		return nil, fmt.Errorf("vcard: insert: atr of %d bytes", len(c.ATR))
	}
	var d net.Dialer
	conn, err := d.DialContext(ctx, "tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(port)))
	if err != nil {
		return nil, fmt.Errorf("vcard: insert: %w", err)
	}
	in := &Inserted{conn: conn, done: make(chan struct{}), seen: make(chan struct{})}
	go in.serve(c)
	return in, nil
}

// Remove takes the card out (closes the connection) and waits until its
// goroutine has ended. It is safe to call more than once.
func (in *Inserted) Remove() error {
	err := in.conn.Close()
	<-in.done
	if errors.Is(err, net.ErrClosed) {
		err = nil
	}
	if err != nil {
		return fmt.Errorf("vcard: remove: %w", err)
	}
	return nil
}

// Seen is closed when the card has received its first command APDU.
func (in *Inserted) Seen() <-chan struct{} { return in.seen }

// APDUs returns how many command APDUs the card has received.
func (in *Inserted) APDUs() int {
	in.mu.Lock()
	defer in.mu.Unlock()
	return in.apdus
}

// Err returns the error that ended the card's connection other than
// Remove, if any (e.g. the reader went away).
func (in *Inserted) Err() error {
	in.mu.Lock()
	defer in.mu.Unlock()
	return in.err
}

func (in *Inserted) serve(c Card) {
	defer close(in.done)
	err := in.loop(c) // returns only on an error
	if !errors.Is(err, net.ErrClosed) && !errors.Is(err, io.EOF) {
		in.mu.Lock()
		in.err = err
		in.mu.Unlock()
	}
}

func (in *Inserted) loop(c Card) error {
	var hdr [2]byte
	for {
		quickAck(in.conn)
		if _, err := io.ReadFull(in.conn, hdr[:]); err != nil {
			return err
		}
		msg := make([]byte, binary.BigEndian.Uint16(hdr[:]))
		if _, err := io.ReadFull(in.conn, msg); err != nil {
			return err
		}
		var resp []byte
		switch {
		case len(msg) == 1 && msg[0] == ctrlATR:
			resp = c.ATR
		case len(msg) == 1 && (msg[0] == ctrlOn || msg[0] == ctrlReset):
			if c.OnPower != nil {
				c.OnPower()
			}
		case len(msg) <= 1: // power off, unknown control
		default:
			in.mu.Lock()
			in.apdus++
			if !in.seenOnce {
				in.seenOnce = true
				close(in.seen)
			}
			in.mu.Unlock()
			if c.Handle != nil {
				resp = c.Handle(msg)
			}
		}
		if resp == nil {
			continue
		}
		if len(resp) > 0xFFFF {
			return fmt.Errorf("vcard: response of %d bytes", len(resp))
		}
		out := binary.BigEndian.AppendUint16(make([]byte, 0, 2+len(resp)), uint16(len(resp)))
		if _, err := in.conn.Write(append(out, resp...)); err != nil {
			return err
		}
	}
}

// randomBytes fills a new slice of n bytes from crypto/rand.
func randomBytes(n int) []byte {
	b := make([]byte, n)
	_, _ = rand.Read(b) // never fails (Go ≥ 1.24)
	return b
}
