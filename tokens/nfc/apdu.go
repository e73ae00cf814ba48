package nfc

import (
	"errors"
	"fmt"
)

// ErrMalformed reports an APDU (command or response) that does not parse,
// or a response whose data is not what the command asked for.
var ErrMalformed = errors.New("nfc: malformed apdu")

// APDU size limits of the short APDU encoding (ISO/IEC 7816-4), the only one
// hotdesk uses: a command carries at most 255 data bytes and asks for at most
// 256 response bytes.
const (
	MaxCommandData  = 255
	MaxResponseData = 256
	// NoLe in Command.Le means the command expects no response data.
	NoLe = -1
)

// Command is a short command APDU.
type Command struct {
	CLA, INS, P1, P2 byte
	Data             []byte
	// Le is the number of response bytes expected: NoLe for none, 1–256
	// (256 is encoded as 0x00).
	Le int
}

// Bytes encodes c: CLA INS P1 P2 [Lc data] [Le].
func (c Command) Bytes() ([]byte, error) {
	if len(c.Data) > MaxCommandData {
		return nil, fmt.Errorf("%w: command data is %d bytes, limit %d", ErrMalformed, len(c.Data), MaxCommandData)
	}
	if c.Le != NoLe && (c.Le < 1 || c.Le > MaxResponseData) {
		return nil, fmt.Errorf("%w: le %d out of range", ErrMalformed, c.Le)
	}
	b := make([]byte, 0, 4+1+len(c.Data)+1)
	b = append(b, c.CLA, c.INS, c.P1, c.P2)
	if len(c.Data) > 0 {
		b = append(b, byte(len(c.Data)))
		b = append(b, c.Data...)
	}
	if c.Le != NoLe {
		b = append(b, byte(c.Le)) // 256 → 0x00
	}
	return b, nil
}

// ParseCommand decodes a short command APDU (cases 1–4). Extended-length
// APDUs are refused with ErrMalformed.
func ParseCommand(b []byte) (Command, error) {
	if len(b) < 4 {
		return Command{}, fmt.Errorf("%w: command of %d bytes", ErrMalformed, len(b))
	}
	c := Command{CLA: b[0], INS: b[1], P1: b[2], P2: b[3], Le: NoLe}
	body := b[4:]
	switch {
	case len(body) == 0: // case 1
	case len(body) == 1: // case 2
		c.Le = leValue(body[0])
	default:
		lc := int(body[0])
		if lc == 0 {
			return Command{}, fmt.Errorf("%w: extended length apdus are not supported", ErrMalformed)
		}
		switch len(body) {
		case 1 + lc: // case 3
		case 1 + lc + 1: // case 4
			c.Le = leValue(body[1+lc])
		default:
			return Command{}, fmt.Errorf("%w: lc %d does not match %d body bytes", ErrMalformed, lc, len(body))
		}
		c.Data = body[1 : 1+lc]
	}
	return c, nil
}

func leValue(b byte) int {
	if b == 0 {
		return MaxResponseData
	}
	return int(b)
}

// Response is a response APDU: data followed by the status word SW1 SW2.
type Response struct {
	Data []byte
	SW   uint16
}

// ParseResponse splits a response APDU into data and status word. A response
// shorter than 2 bytes or with more than MaxResponseData data bytes is
// ErrMalformed. Data aliases b.
func ParseResponse(b []byte) (Response, error) {
	if len(b) < 2 {
		return Response{}, fmt.Errorf("%w: response of %d bytes", ErrMalformed, len(b))
	}
	if len(b)-2 > MaxResponseData {
		return Response{}, fmt.Errorf("%w: response data of %d bytes, limit %d", ErrMalformed, len(b)-2, MaxResponseData)
	}
	n := len(b) - 2
	return Response{Data: b[:n], SW: uint16(b[n])<<8 | uint16(b[n+1])}, nil
}

// Bytes encodes r as data || SW1 SW2.
func (r Response) Bytes() []byte {
	b := make([]byte, 0, len(r.Data)+2)
	b = append(b, r.Data...)
	return append(b, byte(r.SW>>8), byte(r.SW))
}

// OK reports whether the status word is 90 00.
func (r Response) OK() bool { return r.SW == SWOK }

// StatusError is a response whose status word is not 90 00.
type StatusError struct {
	Op string
	SW uint16
}

func (e *StatusError) Error() string { return fmt.Sprintf("nfc: %s: status %04X", e.Op, e.SW) }

// Status words used by hotdesk (ISO/IEC 7816-4).
const (
	SWOK                     uint16 = 0x9000
	SWWrongLength            uint16 = 0x6700
	SWSecurityNotSatisfied   uint16 = 0x6982
	SWConditionsNotSatisfied uint16 = 0x6985
	SWWrongData              uint16 = 0x6A80
	SWFileNotFound           uint16 = 0x6A82
	SWWrongP1P2              uint16 = 0x6A86
	SWINSNotSupported        uint16 = 0x6D00
	SWCLANotSupported        uint16 = 0x6E00
	SWUnknown                uint16 = 0x6F00
)
