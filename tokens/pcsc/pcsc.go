// Package pcsc is the tokens.Provider of smart cards, NFC badges and phones
// on PC/SC readers (pcsc-lite, through github.com/ebfe/scard; cgo).
//
// Watching: one goroutine, locked to its OS thread and owning one PC/SC
// context, waits in SCardGetStatusChange on every reader that matches
// Config.Readers and on \\?PnP?\Notification (readers plugged in or out),
// in waits of at most 2 s (a lost wake-up is not lost for longer).
// Cancelling the Watch context calls SCardCancel on it. A card is "new" when
// the reader's event counter (upper 16 bits of the event state) changes, so
// a card swapped between two waits is seen as a removal and an insertion.
//
// Identification: every new card is identified in its own goroutine with its
// own PC/SC context, inside a PC/SC transaction, trying Config.Identify in
// order: "hce" (a phone running hotdesk's HCE application, hce.<id>, see
// tokens/nfc and proto/HCE.md), "piv" (the GUID of a PIV card's CHUID,
// piv.<32 hex>), "uid" (the UID of a contactless tag, uid.<hex>; random UIDs
// are refused). Identification that takes longer than
// Config.IdentifyTimeout is abandoned.
//
// Events, in order per reader:
//   - tokens.Reading{Reader} the moment pcscd reports a new card, before
//     its identification starts, so that the terminal gives feedback at
//     once (a mute card takes Config.IdentifyTimeout to fail). It is ended
//     by exactly one of: Inserted, Error (card unreadable, timed out, or
//     the reader unavailable) or Removed with an empty Token (the card left
//     before it was identified). Not reported while the reader's token is
//     in its removal grace (below): the card may be that token coming back,
//     which reports nothing; another card then gives Removed of the old
//     token and its own Inserted or Error, without a Reading.
//   - tokens.Inserted{Token, Reader} when a card is identified;
//   - tokens.Removed{Token, Reader} when it leaves the reader. With
//     Config.RemoveGrace > 0 the removal is held back that long: a card that
//     comes back (and is identified as the same token) within the grace
//     produces no event at all. Insertion is never delayed. A token
//     identified at another reader within the grace (a phone moved to the
//     next pad) is Inserted there, and no Removed follows at the reader it
//     left: it is the new reader's, whose removal reports it.
//   - tokens.Error{Reader, Err} with Err wrapping ErrCardUnreadable for a card
//     no identifier recognises, that is mute or answers garbage (the terminal
//     reports a card error; the provider keeps watching).
//   - tokens.Error{Reader, Err} with Err wrapping ErrUnavailable when pcscd
//     stops or restarts (every PC/SC context dies) or a reader is unplugged.
//     Before it, every token present on that reader gets a Removed event
//     without grace: the card state is unknown, so the session is suspended
//     rather than left open on a card that may be gone. The provider
//     re-establishes its context with backoff; once pcscd is back, cards in
//     the readers are identified and reported as new. If pcscd is not
//     running when Watch starts, the first event is an Error with an empty
//     Reader wrapping ErrUnavailable.
//
// Phones must prove possession of their key for every insertion: the
// terminal forwards the broker's challenge with Sign while the phone is in
// the field, and enrolls a phone with the public key from PublicKey.
//
// A Provider has at most one Watch running at a time.
//
// Which part of a hot-desk is the reader's: from a card entering the field to
// the session attached there are three parts. (1) pcscd noticing the card:
// with the vpcd virtual readers pcscd polls about every 0.4 s, so this is
// 0–400 ms and dominates; real CCID readers report a card by interrupt, in a
// few to some tens of milliseconds. (2) Identification, the APDUs this
// package sends (Detection.Identified − Detection.Detected): a few
// milliseconds, more for a phone (HCE SELECT and, later, SIGN over NFC).
// (3) The broker: TokenInserted sent → Attached received, a millisecond or
// less for a local resume plus the compositor. (1) and (2) are the
// terminal's reader; only (3) is hotdesk's server side. They are measured
// apart by `go test -bench Detection ./tokens/pcsc` (1 and 2),
// `go run ./cmd/hotdesk-bench -scenarios card` (pcscd_detect_*, identify_*,
// reader_* = 1+2, broker_* = 3) and `make demo-card` (reader vs broker per
// step).
package pcsc

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/ebfe/scard"
	"github.com/hashicorp/go-hclog"

	"github.com/hotdesk/hotdesk/internal/clock"
	"github.com/hotdesk/hotdesk/tokens"
	"github.com/hotdesk/hotdesk/tokens/nfc"
)

// Errors. Test for them with errors.Is.
var (
	// ErrCardUnreadable: a card could not be identified (no identifier
	// recognised it, it is mute or answered garbage, or identification
	// timed out). Carried by Error events.
	ErrCardUnreadable = errors.New("pcsc: card unreadable")
	// ErrUnavailable: pcscd or a reader is gone; card state unknown.
	// Carried by Error events.
	ErrUnavailable = errors.New("pcsc: reader unavailable")
	// ErrNotPresent: Sign or PublicKey for a token that is not a phone
	// currently identified in a reader.
	ErrNotPresent = errors.New("pcsc: token not present")
	// ErrWatching: Watch while another Watch of the Provider is running.
	ErrWatching = errors.New("pcsc: already watching")
	// ErrBusy: too many Sign/PublicKey exchanges at once.
	ErrBusy = errors.New("pcsc: too many card exchanges")
)

// Defaults.
const (
	DefaultIdentifyTimeout = 5 * time.Second
	DefaultMinBackoff      = 100 * time.Millisecond
	DefaultMaxBackoff      = 5 * time.Second
	// watchBuffer is the capacity of the event channel.
	watchBuffer = 16
	// maxExchanges bounds concurrent Sign/PublicKey exchanges.
	maxExchanges = 8
	// maxReaders bounds the readers watched.
	maxReaders = 64
)

// Config configures a Provider. The zero value watches every reader with the
// default identification order, no removal grace, the real clock and no
// logging.
type Config struct {
	// Readers filters readers by name: a reader is watched if its name
	// contains one of the strings (case-insensitive). Empty: all readers.
	Readers []string
	// Identify is the identification order; default DefaultIdentify.
	// Values: IdentifyHCE, IdentifyPIV, IdentifyUID.
	Identify []string
	// RemoveGrace holds back Removed events (debounce); 0: none. The
	// terminal agent sets e.g. 1 s so that a badge briefly leaving the
	// field does not suspend the session.
	RemoveGrace time.Duration
	// IdentifyTimeout bounds the identification of one card; default
	// DefaultIdentifyTimeout.
	IdentifyTimeout time.Duration
	// MinBackoff and MaxBackoff bound the wait between attempts to reach
	// pcscd; defaults DefaultMinBackoff, DefaultMaxBackoff.
	MinBackoff, MaxBackoff time.Duration
	// Logger; default none.
	Logger hclog.Logger
	// Clock stamps events and runs the grace, identification and backoff
	// timers; default clock.Real.
	Clock clock.Clock
	// Observe, if set, is called after every identification that was not
	// abandoned, from the watch goroutine: it must not block. Used for
	// metrics and the detection benchmark.
	Observe func(Detection)
}

// Detection describes one identification.
type Detection struct {
	Reader string
	Token  string // empty if identification failed
	Err    error  // wraps ErrCardUnreadable on failure
	// Detected is when pcscd reported the card; Identified when
	// identification ended. Identified−Detected is the time spent in
	// APDUs; the time from the card's arrival to Detected is pcscd's.
	Detected, Identified time.Time
}

var _ tokens.Provider = (*Provider)(nil)

// Provider watches PC/SC readers. Create it with New.
type Provider struct {
	cfg Config
	log hclog.Logger
	clk clock.Clock

	exchanges chan struct{} // semaphore of Sign/PublicKey exchanges

	// hookBeforeWait, if set (tests only, before Watch), runs on the
	// poller's thread before every GetStatusChange.
	hookBeforeWait func()
	// hookAfterWait, if set (tests only, before Watch), sees the states
	// of every successful GetStatusChange before the poller does.
	hookAfterWait func([]scard.ReaderState)
	// hookListReaders, if set (tests only, before Watch), filters every
	// reader list the poller gets from pcscd.
	hookListReaders func([]string) []string

	mu       sync.Mutex
	po       *poller // of the running Watch
	watching bool
	present  map[string]string // hce token id → reader, while identified there
}

// New validates cfg and returns a Provider. It does not contact pcscd.
func New(cfg Config) (*Provider, error) {
	if len(cfg.Identify) == 0 {
		cfg.Identify = DefaultIdentify
	}
	seen := map[string]bool{}
	for _, k := range cfg.Identify {
		if k != IdentifyHCE && k != IdentifyPIV && k != IdentifyUID {
			return nil, fmt.Errorf("pcsc: config: unknown identification %q (want %s)", k, strings.Join(DefaultIdentify, ", "))
		}
		if seen[k] {
			return nil, fmt.Errorf("pcsc: config: identification %q listed twice", k)
		}
		seen[k] = true
	}
	cfg.Identify = slices.Clone(cfg.Identify)
	cfg.Readers = slices.Clone(cfg.Readers)
	if cfg.RemoveGrace < 0 || cfg.IdentifyTimeout < 0 || cfg.MinBackoff < 0 || cfg.MaxBackoff < 0 {
		return nil, errors.New("pcsc: config: negative duration")
	}
	if cfg.IdentifyTimeout == 0 {
		cfg.IdentifyTimeout = DefaultIdentifyTimeout
	}
	if cfg.MinBackoff == 0 {
		cfg.MinBackoff = DefaultMinBackoff
	}
	if cfg.MaxBackoff == 0 {
		cfg.MaxBackoff = DefaultMaxBackoff
	}
	if cfg.MaxBackoff < cfg.MinBackoff {
		return nil, fmt.Errorf("pcsc: config: max backoff %v below min backoff %v", cfg.MaxBackoff, cfg.MinBackoff)
	}
	p := &Provider{cfg: cfg, log: cfg.Logger, clk: cfg.Clock, exchanges: make(chan struct{}, maxExchanges)}
	if p.log == nil {
		p.log = hclog.NewNullLogger()
	}
	if p.clk == nil {
		p.clk = clock.Real{}
	}
	return p, nil
}

// Watch starts watching the readers and returns the event stream (see the
// package documentation). The channel is closed after ctx is cancelled,
// once the watching goroutine has released its PC/SC context; the caller
// must drain it until then. Only one Watch may run at a time (ErrWatching).
func (p *Provider) Watch(ctx context.Context) (<-chan tokens.Event, error) {
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("pcsc: watch: %w", err)
	}
	p.mu.Lock()
	if p.watching {
		p.mu.Unlock()
		return nil, ErrWatching
	}
	p.watching = true
	p.present = map[string]string{}
	p.mu.Unlock()

	out := make(chan tokens.Event, watchBuffer)
	m := newMachine(ctx, p, out)
	pollDone := make(chan struct{})
	po := &poller{p: p, out: m.in}
	p.mu.Lock()
	p.po = po
	p.mu.Unlock()
	go func() {
		defer close(pollDone)
		po.run(ctx)
	}()
	go po.cancelOnDone(ctx, pollDone)
	go func() {
		m.run()
		<-pollDone
		p.mu.Lock()
		p.watching = false
		p.present = nil
		p.po = nil
		p.mu.Unlock()
		close(out)
	}()
	return out, nil
}

// watched reports whether reader matches Config.Readers.
func (p *Provider) watched(reader string) bool {
	if len(p.cfg.Readers) == 0 {
		return true
	}
	name := strings.ToLower(reader)
	for _, f := range p.cfg.Readers {
		if strings.Contains(name, strings.ToLower(f)) {
			return true
		}
	}
	return false
}

// setPresent records (reader != "") or forgets where an hce token is.
func (p *Provider) setPresent(token, reader string) {
	if !strings.HasPrefix(token, nfc.KindHCE+".") {
		return
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.present == nil {
		return
	}
	if reader == "" {
		delete(p.present, token)
	} else {
		p.present[token] = reader
	}
}

func (p *Provider) readerOf(token string) (string, error) {
	typ, _, err := tokens.ParseID(token)
	if err != nil {
		return "", fmt.Errorf("%w: %w", ErrNotPresent, err)
	}
	if typ != nfc.KindHCE {
		return "", fmt.Errorf("%w: %s is not a phone token", ErrNotPresent, token)
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	r, ok := p.present[token]
	if !ok {
		return "", fmt.Errorf("%w: %s", ErrNotPresent, token)
	}
	return r, nil
}

// Sign has the phone token, which must be present in a reader, sign msg
// (proto/HCE.md SIGN; msg is tokens/soft.ChallengeMessage for the token, or
// tokens/soft.PairMessage for its key when it is paired) and
// returns the 64-byte Ed25519 signature, unverified: the broker verifies it
// with the enrolled key. ErrNotPresent if token is not a phone currently in
// a reader (or another phone is there now). If ctx ends first, Sign returns
// its error; the exchange with the card finishes in the background.
func (p *Provider) Sign(ctx context.Context, token string, msg []byte) ([]byte, error) {
	if len(msg) == 0 || len(msg) > nfc.MaxSignMessage {
		return nil, fmt.Errorf("pcsc: sign: message of %d bytes, limit %d", len(msg), nfc.MaxSignMessage)
	}
	reader, err := p.readerOf(token)
	if err != nil {
		return nil, fmt.Errorf("pcsc: sign: %w", err)
	}
	sig, err := p.exchange(ctx, reader, func(tx transmitter) ([]byte, error) { return signHCE(tx, token, msg) })
	if err != nil {
		return nil, fmt.Errorf("pcsc: sign: %w", err)
	}
	return sig, nil
}

// PublicKey returns the Ed25519 public key of the phone token present in a
// reader (GET-PUBKEY), for enrollment with a pairing code
// (proto.Pair{Kind: "hce", PublicKey}, whose Signature the phone then
// makes with Sign). The key is checked to match token.
func (p *Provider) PublicKey(ctx context.Context, token string) ([]byte, error) {
	reader, err := p.readerOf(token)
	if err != nil {
		return nil, fmt.Errorf("pcsc: public key: %w", err)
	}
	pub, err := p.exchange(ctx, reader, func(tx transmitter) ([]byte, error) { return publicKeyHCE(tx, token) })
	if err != nil {
		return nil, fmt.Errorf("pcsc: public key: %w", err)
	}
	return pub, nil
}

// exchange runs f with the card in reader on its own goroutine and PC/SC
// context and waits for it or ctx.
func (p *Provider) exchange(ctx context.Context, reader string, f func(transmitter) ([]byte, error)) ([]byte, error) {
	select {
	case p.exchanges <- struct{}{}:
	default:
		return nil, ErrBusy
	}
	type result struct {
		b   []byte
		err error
	}
	done := make(chan result, 1)
	go func() {
		defer func() { <-p.exchanges }()
		var r result
		r.err = withCard(reader, func(tx transmitter) error {
			var err error
			r.b, err = f(tx)
			return err
		})
		done <- r
	}()
	select {
	case r := <-done:
		return r.b, r.err
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}
