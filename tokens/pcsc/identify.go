package pcsc

import (
	"bytes"
	"encoding/hex"
	"errors"
	"fmt"
	"strings"

	"github.com/hotdesk/hotdesk/tokens/nfc"
)

// Identification methods, the values of Config.Identify.
const (
	IdentifyHCE = "hce" // a phone running hotdesk's HCE application (tokens/nfc)
	IdentifyPIV = "piv" // a PIV card: the GUID of its CHUID
	IdentifyUID = "uid" // a contactless tag: its UID (locate-only)
)

// DefaultIdentify is the default identification order.
var DefaultIdentify = []string{IdentifyHCE, IdentifyPIV, IdentifyUID}

// maxResponse bounds a response assembled from GET RESPONSE chunks.
const maxResponse = 4096

// maxGetResponse bounds the GET RESPONSE round trips of one command.
const maxGetResponse = 16

// transmitter sends one command APDU to a card and returns its response
// APDU. *scard.Card implements it.
type transmitter interface {
	Transmit(cmd []byte) ([]byte, error)
}

// errNotThisKind: the card does not run the application an identifier
// asks for; the next identifier is tried.
var errNotThisKind = errors.New("not this kind of card")

// transportError is a failure to exchange APDUs at all (card removed, reader
// or pcscd gone); identification stops.
type transportError struct{ err error }

func (e *transportError) Error() string { return "transmit: " + e.err.Error() }
func (e *transportError) Unwrap() error { return e.err }

// transmit sends cmd and returns the whole response: data || SW1 SW2. It
// follows 61 xx with GET RESPONSE and answers 6C xx by repeating the
// command with Le = xx, within the bounds maxResponse and maxGetResponse.
func transmit(tx transmitter, cmd []byte) ([]byte, error) {
	resp, err := tx.Transmit(cmd)
	if err != nil {
		return nil, &transportError{err}
	}
	if len(resp) >= 2 && resp[len(resp)-2] == 0x6C && hasLe(cmd) {
		retry := bytes.Clone(cmd)
		retry[len(retry)-1] = resp[len(resp)-1]
		if resp, err = tx.Transmit(retry); err != nil {
			return nil, &transportError{err}
		}
	}
	var data []byte
	for i := 0; len(resp) >= 2 && resp[len(resp)-2] == 0x61; i++ {
		data = append(data, resp[:len(resp)-2]...)
		if i >= maxGetResponse || len(data) > maxResponse {
			return nil, fmt.Errorf("%w: response longer than %d bytes", nfc.ErrMalformed, maxResponse)
		}
		if resp, err = tx.Transmit([]byte{0x00, 0xC0, 0x00, 0x00, resp[len(resp)-1]}); err != nil {
			return nil, &transportError{err}
		}
	}
	if data != nil {
		resp = append(data, resp...)
	}
	if len(resp) > maxResponse {
		return nil, fmt.Errorf("%w: response longer than %d bytes", nfc.ErrMalformed, maxResponse)
	}
	return resp, nil
}

// hasLe reports whether cmd, a short command APDU, ends with an Le (cases
// 2 and 4): only such a command is repeated with the Le a 6C xx asks for.
// Repeating another (a chained SIGN block) replaced its last data byte.
func hasLe(cmd []byte) bool {
	c, err := nfc.ParseCommand(cmd)
	return err == nil && c.Le != nfc.NoLe
}

// identify runs the identifiers of order on the card until one succeeds and
// returns its token id. A card no identifier recognises is an error wrapping
// ErrCardUnreadable that lists why each one failed.
func identify(tx transmitter, order []string) (string, error) {
	var why []string
	for _, kind := range order {
		var (
			id  string
			err error
		)
		switch kind {
		case IdentifyHCE:
			id, err = identifyHCE(tx)
		case IdentifyPIV:
			id, err = identifyPIV(tx)
		case IdentifyUID:
			id, err = identifyUID(tx)
		default:
			err = fmt.Errorf("%w: unknown identification %q", errNotThisKind, kind)
		}
		if err == nil {
			return id, nil
		}
		if !errors.Is(err, errNotThisKind) {
			return "", fmt.Errorf("%w: %s: %w", ErrCardUnreadable, kind, err)
		}
		why = append(why, kind+": "+strings.TrimSuffix(err.Error(), ": "+errNotThisKind.Error()))
	}
	return "", fmt.Errorf("%w: %s", ErrCardUnreadable, strings.Join(why, "; "))
}

// notKind wraps err (a status or parse failure of an application the card
// may simply not have) as errNotThisKind, keeping its text.
func notKind(err error) error { return fmt.Errorf("%w: %w", err, errNotThisKind) }

// identifyHCE selects hotdesk's HCE application and asks for the phone's
// token id. A card without the application is errNotThisKind; a phone that
// selects it and then answers GET-ID wrongly is a card error.
func identifyHCE(tx transmitter) (string, error) {
	resp, err := transmit(tx, nfc.SelectCommand())
	if err != nil {
		return "", transportOr(err)
	}
	if err := nfc.ParseSelectResponse(resp); err != nil {
		return "", notKind(err)
	}
	if resp, err = transmit(tx, nfc.GetIDCommand()); err != nil {
		return "", transportOr(err)
	}
	return nfc.ParseIDResponse(resp)
}

// transportOr keeps transport errors (stop identifying) and turns response
// errors into errNotThisKind.
func transportOr(err error) error {
	var te *transportError
	if errors.As(err, &te) {
		return err
	}
	return notKind(err)
}

// PIV commands (NIST SP 800-73-4).
var (
	pivSelect   = []byte{0x00, 0xA4, 0x04, 0x00, 0x0B, 0xA0, 0x00, 0x00, 0x03, 0x08, 0x00, 0x00, 0x10, 0x00, 0x01, 0x00, 0x00}
	pivGetCHUID = []byte{0x00, 0xCB, 0x3F, 0xFF, 0x05, 0x5C, 0x03, 0x5F, 0xC1, 0x02, 0x00}
)

// identifyPIV selects the PIV application and reads the GUID of the CHUID:
// "piv." + 32 lower-case hex digits.
func identifyPIV(tx transmitter) (string, error) {
	resp, err := transmit(tx, pivSelect)
	if err != nil {
		return "", transportOr(err)
	}
	if err := okStatus("piv select", resp); err != nil {
		return "", notKind(err)
	}
	if resp, err = transmit(tx, pivGetCHUID); err != nil {
		return "", transportOr(err)
	}
	if err := okStatus("piv get chuid", resp); err != nil {
		return "", notKind(err)
	}
	guid, err := chuidGUID(resp[:len(resp)-2])
	if err != nil {
		return "", notKind(err)
	}
	return IdentifyPIV + "." + hex.EncodeToString(guid), nil
}

// identifyUID asks the reader for the card's UID (PC/SC part 3 GET DATA,
// FF CA 00 00 00).
func identifyUID(tx transmitter) (string, error) {
	resp, err := transmit(tx, []byte{0xFF, 0xCA, 0x00, 0x00, 0x00})
	if err != nil {
		return "", transportOr(err)
	}
	if err := okStatus("get uid", resp); err != nil {
		return "", notKind(err)
	}
	id, err := nfc.UIDTokenID(resp[:len(resp)-2])
	if err != nil {
		return "", notKind(err)
	}
	return id, nil
}

func okStatus(op string, resp []byte) error {
	r, err := nfc.ParseResponse(resp)
	if err != nil {
		return fmt.Errorf("%s: %w", op, err)
	}
	if !r.OK() {
		return &nfc.StatusError{Op: op, SW: r.SW}
	}
	return nil
}

// chuidGUID returns the 16-byte GUID (tag 0x34) of a CHUID data object
// (tag 0x53). An all-zero GUID identifies nothing and is an error.
func chuidGUID(b []byte) ([]byte, error) {
	tag, val, rest, err := tlv(b)
	if err != nil {
		return nil, fmt.Errorf("chuid: %w", err)
	}
	if tag != 0x53 || len(rest) != 0 {
		return nil, fmt.Errorf("chuid: %w: tag %02X with %d trailing bytes", nfc.ErrMalformed, tag, len(rest))
	}
	for len(val) > 0 {
		var v []byte
		tag, v, val, err = tlv(val)
		if err != nil {
			return nil, fmt.Errorf("chuid: %w", err)
		}
		if tag != 0x34 {
			continue
		}
		if len(v) != 16 {
			return nil, fmt.Errorf("chuid: %w: guid of %d bytes", nfc.ErrMalformed, len(v))
		}
		if bytes.Equal(v, make([]byte, 16)) {
			return nil, fmt.Errorf("chuid: %w: zero guid", nfc.ErrMalformed)
		}
		return v, nil
	}
	return nil, fmt.Errorf("chuid: %w: no guid", nfc.ErrMalformed)
}

// tlv splits one BER-TLV with a one-byte tag (the CHUID uses only those)
// and a definite length of up to 3 bytes off b.
func tlv(b []byte) (tag byte, val, rest []byte, err error) {
	if len(b) < 2 {
		return 0, nil, nil, fmt.Errorf("%w: truncated tlv", nfc.ErrMalformed)
	}
	tag, n, b := b[0], int(b[1]), b[2:]
	switch {
	case n < 0x80:
	case n == 0x81 || n == 0x82:
		k := n - 0x80
		if len(b) < k {
			return 0, nil, nil, fmt.Errorf("%w: truncated tlv length", nfc.ErrMalformed)
		}
		n = 0
		for _, c := range b[:k] {
			n = n<<8 | int(c)
		}
		b = b[k:]
	default:
		return 0, nil, nil, fmt.Errorf("%w: tlv length byte %02X", nfc.ErrMalformed, n)
	}
	if len(b) < n {
		return 0, nil, nil, fmt.Errorf("%w: tlv of %d bytes, %d left", nfc.ErrMalformed, n, len(b))
	}
	return tag, b[:n], b[n:], nil
}

// signHCE runs the SIGN exchange with the phone whose token id must be
// token: SELECT, GET-ID (the card in the reader may have changed), then the
// chained SIGN blocks.
func signHCE(tx transmitter, token string, msg []byte) ([]byte, error) {
	cmds, err := nfc.SignCommands(msg)
	if err != nil {
		return nil, err
	}
	if err := selectPhone(tx, token); err != nil {
		return nil, err
	}
	for i, c := range cmds {
		resp, err := transmit(tx, c)
		if err != nil {
			return nil, err
		}
		if i < len(cmds)-1 {
			if err := nfc.ParseChainResponse(resp); err != nil {
				return nil, err
			}
			continue
		}
		return nfc.ParseSignResponse(resp)
	}
	panic("unreachable")
}

// publicKeyHCE asks the phone for its public key and checks that it is
// token's key.
func publicKeyHCE(tx transmitter, token string) ([]byte, error) {
	if err := selectPhone(tx, token); err != nil {
		return nil, err
	}
	resp, err := transmit(tx, nfc.GetPublicKeyCommand())
	if err != nil {
		return nil, err
	}
	pub, err := nfc.ParsePublicKeyResponse(resp)
	if err != nil {
		return nil, err
	}
	if got := nfc.HCETokenID(pub); got != token {
		return nil, fmt.Errorf("%w: public key is of %s", ErrNotPresent, got)
	}
	return pub, nil
}

func selectPhone(tx transmitter, token string) error {
	resp, err := transmit(tx, nfc.SelectCommand())
	if err != nil {
		return err
	}
	if err := nfc.ParseSelectResponse(resp); err != nil {
		return err
	}
	if resp, err = transmit(tx, nfc.GetIDCommand()); err != nil {
		return err
	}
	id, err := nfc.ParseIDResponse(resp)
	if err != nil {
		return err
	}
	if id != token {
		return fmt.Errorf("%w: the phone in the reader is %s", ErrNotPresent, id)
	}
	return nil
}
