package pcsc

import (
	"context"
	"errors"
	"fmt"
	"runtime"
	"slices"
	"sync"
	"time"

	"github.com/ebfe/scard"

	"github.com/hotdesk/hotdesk/internal/clock"
)

// pnpReader is pcsc-lite's pseudo reader that changes when readers are
// added or removed.
const pnpReader = `\\?PnP?\Notification`

// cancelRetry is how often SCardCancel is repeated after the Watch context
// ended until the poller has stopped: a cancel that arrives just before
// GetStatusChange starts waiting is lost.
const cancelRetry = 50 * time.Millisecond

// waitTimeout bounds one GetStatusChange; the poller then waits again. It
// bounds how late a change is seen if libpcsclite's wake-up is lost: once,
// under load, the bench's card scenario saw a card removal only ~10 s
// late, at the next card movement (libpcsclite 1.9 itself waits in steps
// of 60 s). A wait that times out costs a round trip to pcscd.
const waitTimeout = 2 * time.Second

// maxRelists bounds consecutive reader relists without a successful wait.
const maxRelists = 8

// recheckPause is how long the poller waits before it lists the readers
// again after a wait reported a listed reader unknown.
const recheckPause = 50 * time.Millisecond

// poller owns the PC/SC context of a Watch and sends snapshots and
// unavailability to the machine.
type poller struct {
	p   *Provider
	out chan<- any

	mu  sync.Mutex
	cur *scard.Context // the context waiting in GetStatusChange, if any
}

// run establishes a context, watches until it dies, and repeats with backoff
// until ctx ends. It runs locked to its OS thread: pcsc-lite contexts must
// not move between threads.
func (po *poller) run(ctx context.Context) {
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	cfg := po.p.cfg
	backoff := cfg.MinBackoff
	reported := false
	for ctx.Err() == nil {
		sctx, err := scard.EstablishContext()
		if err == nil {
			po.setCurrent(sctx)
			var delivered bool
			delivered, err = po.session(ctx, sctx)
			po.setCurrent(nil)
			_ = sctx.Release() // fails for a dead context; nothing to do
			if ctx.Err() != nil {
				return
			}
			if delivered {
				reported, backoff = false, cfg.MinBackoff
			}
		}
		if !reported {
			po.p.log.Warn("pcsc context lost; retrying", "error", err, "backoff", backoff)
			po.send(ctx, unavailable{err: err})
			reported = true
		}
		if !clock.Sleep(ctx, po.p.clk, backoff) {
			return
		}
		backoff = min(2*backoff, cfg.MaxBackoff)
	}
}

// session watches the readers with sctx until ctx ends (nil error) or the
// context fails. delivered reports whether a snapshot was sent.
func (po *poller) session(ctx context.Context, sctx *scard.Context) (delivered bool, err error) {
	var states []scard.ReaderState
	relist, relists := true, 0
	recheck := false // after a reader was reported unknown
	for {
		if ctx.Err() != nil {
			return delivered, nil
		}
		if relist {
			if relists++; relists > maxRelists {
				return delivered, errors.New("pcsc: readers keep changing")
			}
			names, err := po.listReaders(sctx)
			if err != nil {
				return delivered, err
			}
			if left := missing(states, names); len(left) > 0 {
				// A reader left between waits, or during one:
				// libpcsclite reports no more change for it, so no wait
				// would.
				po.send(ctx, readersLeft{names: left})
			}
			states = rebuild(states, names)
			relist = false
			if recheck {
				// Ask for every reader's state: the wait returns at once.
				for i := range states {
					if states[i].Reader != pnpReader {
						states[i].CurrentState = scard.StateUnaware
					}
				}
				recheck = false
			}
		}
		if hook := po.p.hookBeforeWait; hook != nil {
			hook()
		}
		err := sctx.GetStatusChange(states, waitTimeout)
		if hook := po.p.hookAfterWait; hook != nil && err == nil {
			hook(states)
		}
		switch {
		case err == nil:
		case errors.Is(err, scard.ErrTimeout):
			// libpcsclite listens for readers coming and going only
			// during a wait: compare the list.
			names, err := po.listReaders(sctx)
			if err != nil {
				return delivered, err
			}
			relist = !sameReaders(states, names)
			continue
		case errors.Is(err, scard.ErrCancelled):
			continue
		case errors.Is(err, scard.ErrUnknownReader), errors.Is(err, scard.ErrReaderUnavailable):
			relist = true
			continue
		default:
			return delivered, fmt.Errorf("pcsc: get status change: %w", err)
		}
		if unknownReader(states) {
			// Under load, libpcsclite 1.9 (Debian 12) now and then
			// reports a reader it knows as unknown (UNKNOWN|UNAVAILABLE,
			// event counter 0): seen about once a run of the bench's
			// card scenario beside other scenarios, with the reader
			// listed again right after. (Its table of reader states is
			// shared by all the contexts of a process, identification
			// uses contexts of its own, and the table is unlocked until
			// pcsc-lite 2.0.1.) So a reader counts as gone only if it
			// is missing from the reader list too: list the readers
			// again and ask for the state of every one; a reader really
			// gone is then missing from the snapshot. Bounded by
			// maxRelists.
			po.p.log.Debug("reader reported unknown; listing the readers again")
			relist, recheck = true, true
			// A pause for libpcsclite, in real time (not the provider's
			// clock, whose timers are the machine's).
			pause := time.NewTimer(recheckPause)
			select {
			case <-pause.C:
			case <-ctx.Done():
				pause.Stop()
				return delivered, nil
			}
			continue
		}
		relists = 0
		snap := snapshot{at: po.p.clk.Now(), readers: make([]readerState, 0, len(states)-1)}
		for i := range states {
			s := &states[i]
			if s.Reader == pnpReader {
				if s.EventState&scard.StateChanged != 0 {
					relist = true
				}
			} else {
				snap.readers = append(snap.readers, readerState{name: s.Reader, flags: s.EventState})
			}
			s.CurrentState = s.EventState &^ scard.StateChanged
		}
		po.send(ctx, snap)
		delivered = true
	}
}

// unknownReader reports whether the wait reported a reader (not the PnP
// reader) as unknown to pcscd.
func unknownReader(states []scard.ReaderState) bool {
	for _, s := range states {
		if s.Reader != pnpReader && s.EventState&scard.StateUnknown != 0 {
			return true
		}
	}
	return false
}

// missing returns the readers of states (the PnP reader aside) that are
// not in names.
func missing(states []scard.ReaderState, names []string) []string {
	var left []string
	for _, s := range states {
		if s.Reader != pnpReader && !slices.Contains(names, s.Reader) {
			left = append(left, s.Reader)
		}
	}
	return left
}

// sameReaders reports whether states (the PnP reader aside) watch exactly
// names.
func sameReaders(states []scard.ReaderState, names []string) bool {
	if len(states) != len(names)+1 {
		return false
	}
	for _, n := range names {
		if !slices.ContainsFunc(states, func(s scard.ReaderState) bool { return s.Reader == n }) {
			return false
		}
	}
	return true
}

// listReaders returns the watched readers, at most maxReaders.
func (po *poller) listReaders(sctx *scard.Context) ([]string, error) {
	all, err := sctx.ListReaders()
	if hook := po.p.hookListReaders; hook != nil && err == nil {
		all = hook(all)
	}
	if errors.Is(err, scard.ErrNoReadersAvailable) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("pcsc: list readers: %w", err)
	}
	var names []string
	for _, r := range all {
		if po.p.watched(r) && len(names) < maxReaders {
			names = append(names, r)
		}
	}
	if len(names) < len(all) {
		po.p.log.Debug("readers ignored", "watched", len(names), "present", len(all))
	}
	return names, nil
}

// rebuild returns reader states for names, keeping the current state of
// readers already watched, with the PnP reader last.
func rebuild(old []scard.ReaderState, names []string) []scard.ReaderState {
	prev := map[string]scard.StateFlag{}
	for _, s := range old {
		prev[s.Reader] = s.CurrentState
	}
	states := make([]scard.ReaderState, 0, len(names)+1)
	for _, n := range append(names, pnpReader) {
		states = append(states, scard.ReaderState{Reader: n, CurrentState: prev[n]}) // absent: StateUnaware (0)
	}
	return states
}

func (po *poller) send(ctx context.Context, msg any) {
	select {
	case po.out <- msg:
	case <-ctx.Done():
	}
}

func (po *poller) setCurrent(c *scard.Context) {
	po.mu.Lock()
	po.cur = c
	po.mu.Unlock()
}

// cancelWait interrupts a running GetStatusChange (the poller waits again).
func (po *poller) cancelWait() {
	po.mu.Lock()
	defer po.mu.Unlock()
	if po.cur != nil {
		_ = po.cur.Cancel()
	}
}

// cancelOnDone cancels the poller's wait when ctx ends, repeating until
// done is closed.
func (po *poller) cancelOnDone(ctx context.Context, done <-chan struct{}) {
	select {
	case <-done:
		return
	case <-ctx.Done():
	}
	t := time.NewTicker(cancelRetry)
	defer t.Stop()
	for {
		po.cancelWait()
		select {
		case <-done:
			return
		case <-t.C:
		}
	}
}

// goneWait bounds how long a failed identification waits for pcscd to
// report that the card left: an exchange with a card that is pulled out
// fails before pcscd's next poll of the reader notices.
const goneWait = 1500 * time.Millisecond

// errCardGone: identification failed because the card left the reader;
// the machine reports nothing (the removal follows from pcscd).
var errCardGone = errors.New("pcsc: card left during identification")

// withCard connects to the card in reader with a new PC/SC context on a
// thread of its own and runs f in a transaction (see connectRun).
func withCard(reader string, f func(transmitter) error) error {
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	sctx, err := scard.EstablishContext()
	if err != nil {
		return fmt.Errorf("%w: %w", ErrUnavailable, err)
	}
	defer sctx.Release()
	return connectRun(sctx, reader, f)
}

// connectRun connects to the card in reader, runs f inside a transaction
// and disconnects, leaving the card powered. Failures to connect are
// *transportError.
func connectRun(sctx *scard.Context, reader string, f func(transmitter) error) error {
	card, err := sctx.Connect(reader, scard.ShareShared, scard.ProtocolAny)
	if err != nil {
		return fmt.Errorf("%w: connect: %w", ErrCardUnreadable, &transportError{err})
	}
	defer card.Disconnect(scard.LeaveCard)
	if err := card.BeginTransaction(); err != nil {
		return fmt.Errorf("%w: begin transaction: %w", ErrCardUnreadable, &transportError{err})
	}
	defer card.EndTransaction(scard.LeaveCard)
	return f(card)
}

// identifyReader identifies the card in reader (machine.identify). If the
// exchange with the card broke down, it waits up to goneWait for pcscd to
// report the card gone and then returns errCardGone instead of a card error.
func (p *Provider) identifyReader(reader string) (string, error) {
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	sctx, err := scard.EstablishContext()
	if err != nil {
		return "", fmt.Errorf("%w: %w: %w", ErrCardUnreadable, ErrUnavailable, err)
	}
	defer sctx.Release()
	rs := []scard.ReaderState{{Reader: reader}}
	if err := sctx.GetStatusChange(rs, 0); err != nil && !errors.Is(err, scard.ErrTimeout) {
		return "", fmt.Errorf("%w: reader state: %w", ErrCardUnreadable, err)
	}
	start := rs[0].EventState
	var token string
	err = connectRun(sctx, reader, func(tx transmitter) error {
		var err error
		token, err = identify(tx, p.cfg.Identify)
		return err
	})
	if err == nil {
		return token, nil
	}
	var te *transportError
	if errors.As(err, &te) && cardLeft(sctx, reader, start) {
		return "", errCardGone
	}
	if !errors.Is(err, ErrCardUnreadable) {
		err = fmt.Errorf("%w: %w", ErrCardUnreadable, err)
	}
	return "", err
}

// cardLeft reports whether pcscd reports, within goneWait, that the card
// that was in reader in state start is gone (absent, or the event counter
// moved).
func cardLeft(sctx *scard.Context, reader string, start scard.StateFlag) bool {
	rs := []scard.ReaderState{{Reader: reader, CurrentState: start &^ scard.StateChanged}}
	deadline := time.Now().Add(goneWait)
	for {
		left := time.Until(deadline)
		if left <= 0 {
			return false
		}
		err := sctx.GetStatusChange(rs, left)
		if err != nil {
			return !errors.Is(err, scard.ErrTimeout) // reader or pcscd gone: so is the card
		}
		s := rs[0].EventState
		if s&scard.StatePresent == 0 || s>>16 != start>>16 {
			return true
		}
		rs[0].CurrentState = s &^ scard.StateChanged
	}
}
