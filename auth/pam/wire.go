package pam

import (
	"fmt"
	"io"

	"github.com/fxamacker/cbor/v2"

	"github.com/hotdesk/hotdesk/internal/rlimit"
	"github.com/hotdesk/hotdesk/proto"
)

// The parent↔helper protocol: length-prefixed frames (proto.ReadFrame /
// proto.AppendFrame, at most proto.MaxFrame bytes) each carrying one CBOR
// map with exactly one of the fields of wireMsg set.
//
//	parent → helper: start, then one answer per prompt, then (session only)
//	                 bind* (the desktop's pid), close
//	helper → parent: prompt*, result, then (session only) closed
//
// An account check (start with AccountOnly) is start → result: no prompt.
// A card login's session (start with NoSecret and OpenSession) sends no
// prompt either, and is then held as a login's: bind*, close → closed.
// After its result the helper waits for the parent to close its end, and
// then exits (the parent first kills what a module left behind, while the
// helper, a subreaper, still holds it); after a result with Reusable set
// the parent may send the next account check's start instead (never a
// login's).
//
// A session's helper whose parent goes without close (its end of the pipe
// closed) closes the session at once, or, once bound, when the bound
// process has ended.
type wireMsg struct {
	Start  *wireStart  `cbor:"1,keyasint,omitempty"`
	Prompt *wirePrompt `cbor:"2,keyasint,omitempty"`
	Answer *wireAnswer `cbor:"3,keyasint,omitempty"`
	Result *wireResult `cbor:"4,keyasint,omitempty"`
	Close  *wireClose  `cbor:"5,keyasint,omitempty"`
	Closed *wireClosed `cbor:"6,keyasint,omitempty"`
	Bind   *wireBind   `cbor:"7,keyasint,omitempty"`
}

// wireBind names the desktop an open session belongs to: if the daemon
// goes (a restart that keeps desktops), the helper keeps the session open
// until that process ends instead of closing it at once.
type wireBind struct {
	PID int `cbor:"1,keyasint"`
}

type wireStart struct {
	Service     string `cbor:"1,keyasint"`
	ConfDir     string `cbor:"2,keyasint,omitempty"`
	User        string `cbor:"3,keyasint,omitempty"`
	TTY         string `cbor:"4,keyasint,omitempty"`
	RHost       string `cbor:"5,keyasint,omitempty"`
	OpenSession bool   `cbor:"6,keyasint,omitempty"`
	// AllowNullAuthtok drops PAM_DISALLOW_NULL_AUTHTOK.
	AllowNullAuthtok bool `cbor:"7,keyasint,omitempty"`
	// AccountOnly runs pam_acct_mgmt alone (no pam_authenticate, no
	// session): the helper answers every message itself, never sends a
	// prompt, and sends the result.
	AccountOnly bool `cbor:"8,keyasint,omitempty"`
	// NoSecret runs pam_acct_mgmt instead of pam_authenticate (a card
	// login's session: PAM_NEW_AUTHTOK_REQD passes, no pam_chauthtok),
	// then with OpenSession the session, held as a login's. As in an
	// account check the helper answers every message itself and never
	// sends a prompt. Never sent to a helper that ran account checks.
	NoSecret bool `cbor:"9,keyasint,omitempty"`
}

type wirePrompt struct {
	Style uint8  `cbor:"1,keyasint"`
	Text  string `cbor:"2,keyasint"`
}

type wireAnswer struct {
	// Text is the answer; a byte string so both ends can wipe it.
	Text []byte `cbor:"1,keyasint,omitempty"`
}

type wireResult struct {
	OK      bool     `cbor:"1,keyasint,omitempty"`
	User    string   `cbor:"2,keyasint,omitempty"`
	Stage   string   `cbor:"3,keyasint,omitempty"`
	Code    int      `cbor:"4,keyasint,omitempty"`
	Message string   `cbor:"5,keyasint,omitempty"`
	Env     []string `cbor:"6,keyasint,omitempty"`
	// Reusable (account checks only): the transaction has ended and no
	// process a module started is left; the helper waits for another
	// start, which the parent may send instead of closing its end.
	Reusable bool `cbor:"7,keyasint,omitempty"`
	// Limits (a session opened) are the resource limits the session's
	// modules changed in the helper (pam_limits): the desktop's.
	Limits []rlimit.Limit `cbor:"8,keyasint,omitempty"`
}

type wireClose struct{}

type wireClosed struct {
	Stage   string `cbor:"1,keyasint,omitempty"`
	Code    int    `cbor:"2,keyasint,omitempty"`
	Message string `cbor:"3,keyasint,omitempty"`
}

// Bounds of the helper protocol.
const (
	maxEnv     = 128 // PAM environment entries passed back
	maxPrompts = 64  // prompts per transaction
	maxText    = 4096
)

var (
	wireEnc cbor.EncMode
	wireDec cbor.DecMode
)

func init() {
	var err error
	if wireEnc, err = cbor.CoreDetEncOptions().EncMode(); err != nil {
		panic("pam: cbor enc mode: " + err.Error())
	}
	opts := proto.StrictDecOptions(4, maxEnv, 16)
	opts.ExtraReturnErrors = cbor.ExtraDecErrorUnknownField
	if wireDec, err = opts.DecMode(); err != nil {
		panic("pam: cbor dec mode: " + err.Error())
	}
}

// writeMsg writes m as one frame with a single Write. The encoded bytes are
// wiped afterwards (they may hold an answer).
func writeMsg(w io.Writer, m *wireMsg) error {
	payload, err := wireEnc.Marshal(m)
	if err != nil {
		return fmt.Errorf("pam: encode: %w", err)
	}
	defer clear(payload)
	buf, err := proto.AppendFrame(make([]byte, 0, 4+len(payload)), payload)
	defer clear(buf)
	if err != nil {
		return fmt.Errorf("pam: encode: %w", err)
	}
	if _, err := w.Write(buf); err != nil {
		return fmt.Errorf("pam: write: %w", err)
	}
	return nil
}

// readMsg reads and strictly decodes one frame holding exactly one message.
func readMsg(r io.Reader) (*wireMsg, error) {
	payload, err := proto.ReadFrame(r)
	if err != nil {
		return nil, err
	}
	defer clear(payload)
	var m wireMsg
	if err := wireDec.Unmarshal(payload, &m); err != nil {
		return nil, fmt.Errorf("pam: %w: %w", ErrProtocol, err)
	}
	n := 0
	for _, set := range []bool{m.Start != nil, m.Prompt != nil, m.Answer != nil, m.Result != nil, m.Close != nil, m.Closed != nil, m.Bind != nil} {
		if set {
			n++
		}
	}
	if n != 1 {
		return nil, fmt.Errorf("pam: %w: frame carries %d messages", ErrProtocol, n)
	}
	// Result's Env is the protocol's only array. Looked at only there: the
	// check copies parts of the frame, and an answer's must stay wipeable.
	if m.Result != nil {
		if err := proto.CheckNullElements(payload, &m); err != nil {
			return nil, fmt.Errorf("pam: %w: %w", ErrProtocol, err)
		}
	}
	return &m, nil
}
