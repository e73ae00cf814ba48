package pcsc

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/ebfe/scard"

	"github.com/hotdesk/hotdesk/internal/clock"
	"github.com/hotdesk/hotdesk/tokens"
)

// The machine alone, without pcscd: snapshots are fed by hand and the
// identification of each card is answered by the test.

type identReq struct {
	reader string
	reply  chan identReply
}

type identReply struct {
	token string
	err   error
}

type machineHarness struct {
	t        *testing.T
	clk      *clock.Fake
	m        *machine
	out      chan tokens.Event
	idents   chan identReq
	stash    map[string]chan identReply
	contract readingContract // every event is checked against it
}

func newHarness(t *testing.T, grace time.Duration) *machineHarness {
	t.Helper()
	clk := clock.NewFake(time.Unix(1000, 0))
	p := newProvider(t, Config{Clock: clk, RemoveGrace: grace, IdentifyTimeout: 5 * time.Second})
	p.present = map[string]string{}
	ctx, cancel := context.WithCancel(context.Background())
	h := &machineHarness{t: t, clk: clk, out: make(chan tokens.Event, 16), idents: make(chan identReq), stash: map[string]chan identReply{}}
	h.m = newMachine(ctx, p, h.out)
	h.m.identify = func(reader string) (string, error) {
		req := identReq{reader: reader, reply: make(chan identReply, 1)}
		select {
		case h.idents <- req:
		case <-ctx.Done():
			return "", ctx.Err()
		}
		select {
		case r := <-req.reply:
			return r.token, r.err
		case <-ctx.Done():
			return "", ctx.Err()
		}
	}
	done := make(chan struct{})
	go func() {
		h.m.run()
		close(done)
	}()
	t.Cleanup(func() {
		cancel()
		<-done
	})
	return h
}

const (
	present = scard.StatePresent | scard.StateChanged
	empty   = scard.StateEmpty | scard.StateChanged
)

func flags(f scard.StateFlag, counter uint16) scard.StateFlag {
	return f | scard.StateFlag(counter)<<16
}

// snap feeds one snapshot of reader states (name, flags pairs).
func (h *machineHarness) snap(rs ...readerState) {
	h.m.post(snapshot{at: h.clk.Now(), readers: rs})
}

// answer waits for the identification of reader and answers it.
func (h *machineHarness) answer(reader, token string, err error) {
	h.t.Helper()
	h.takeIdent(reader) <- identReply{token, err}
}

// identify answers the identification of reader with token and expects
// the Inserted event.
func (h *machineHarness) identify(reader, token string) {
	h.t.Helper()
	h.answer(reader, token, nil)
	h.expect(tokens.Inserted, token, reader)
}

// takeIdent waits for the identification of reader and returns its reply
// channel without answering. Identifications of other readers that come
// first are kept for later.
func (h *machineHarness) takeIdent(reader string) chan identReply {
	h.t.Helper()
	if r, ok := h.stash[reader]; ok {
		delete(h.stash, reader)
		return r
	}
	for {
		select {
		case req := <-h.idents:
			if req.reader == reader {
				return req.reply
			}
			h.stash[req.reader] = req.reply
		case <-time.After(5 * time.Second):
			h.t.Fatalf("no identification of %q", reader)
			return nil
		}
	}
}

// eventually waits until ok holds.
func (h *machineHarness) eventually(what string, ok func() bool) {
	h.t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !ok() {
		if time.Now().After(deadline) {
			h.t.Fatalf("not within 5s: %s", what)
		}
		time.Sleep(time.Millisecond)
	}
}

// reading expects the Reading of a new card at reader.
func (h *machineHarness) reading(reader string) {
	h.t.Helper()
	h.expect(tokens.Reading, "", reader)
}

func (h *machineHarness) expect(kind tokens.Kind, token, reader string) tokens.Event {
	h.t.Helper()
	select {
	case ev := <-h.out:
		if err := h.contract.check(ev); err != nil {
			h.t.Fatalf("event %v %q at %q (%v) breaks the reading contract: %v", ev.Kind, ev.Token, ev.Reader, ev.Err, err)
		}
		if ev.Kind != kind || ev.Token != token || ev.Reader != reader {
			h.t.Fatalf("event = %v %q at %q (%v); want %v %q at %q", ev.Kind, ev.Token, ev.Reader, ev.Err, kind, token, reader)
		}
		return ev
	case <-time.After(5 * time.Second):
		h.t.Fatalf("no event; want %v %q at %q", kind, token, reader)
	}
	panic("unreachable")
}

// quiet checks that no event is pending, after the machine has handled
// everything posted so far (a round trip through its input).
func (h *machineHarness) quiet() {
	h.t.Helper()
	h.sync()
	select {
	case ev := <-h.out:
		h.t.Fatalf("event = %v %q at %q (%v); want none", ev.Kind, ev.Token, ev.Reader, ev.Err)
	default:
	}
}

// noTimers checks that no timer of the machine is pending.
func (h *machineHarness) noTimers() {
	h.t.Helper()
	if n := h.clk.Pending(); n != 0 {
		h.t.Fatalf("pending timers = %d; want 0", n)
	}
}

// sync returns after the machine has handled every message posted before.
func (h *machineHarness) sync() {
	done := make(chan struct{})
	h.m.post(func() { close(done) })
	<-done
}

func rs(name string, f scard.StateFlag) readerState { return readerState{name: name, flags: f} }

func TestMachineInsertRemove(t *testing.T) {
	h := newHarness(t, 0)
	h.snap(rs("r0", flags(empty, 0)), rs("r1", flags(empty, 0)))
	h.snap(rs("r0", flags(present, 1)), rs("r1", flags(empty, 0)))
	h.reading("r0")
	h.identify("r0", "uid.01020304")
	// In use by someone else (same counter): nothing.
	h.snap(rs("r0", flags(present|scard.StateInuse, 1)), rs("r1", flags(empty, 0)))
	h.snap(rs("r0", flags(empty, 2)), rs("r1", flags(empty, 0)))
	h.expect(tokens.Removed, "uid.01020304", "r0")
}

func TestMachineSwapByCounter(t *testing.T) {
	h := newHarness(t, 0)
	h.snap(rs("r0", flags(present, 1)))
	h.reading("r0")
	h.identify("r0", "uid.0a0a0a0a")
	h.snap(rs("r0", flags(present, 3))) // removed and inserted between two waits
	h.expect(tokens.Removed, "uid.0a0a0a0a", "r0")
	h.reading("r0")
	h.identify("r0", "uid.0b0b0b0b")
}

func TestMachineCardError(t *testing.T) {
	h := newHarness(t, 0)
	h.snap(rs("r0", flags(present, 1)))
	h.reading("r0")
	h.answer("r0", "", ErrCardUnreadable)
	ev := h.expect(tokens.Error, "", "r0")
	if !errors.Is(ev.Err, ErrCardUnreadable) {
		t.Fatalf("err = %v; want %v", ev.Err, ErrCardUnreadable)
	}
	// The card left during identification: its Reading ends with a
	// Removed without a token, and nothing else comes, not even when
	// pcscd reports the removal.
	h.snap(rs("r0", flags(empty, 2)))
	h.snap(rs("r0", flags(present, 3)))
	h.reading("r0")
	h.answer("r0", "", errCardGone)
	h.expect(tokens.Removed, "", "r0")
	h.snap(rs("r0", flags(empty, 4)))
	h.quiet()
}

func TestMachineIdentifyTimeout(t *testing.T) {
	h := newHarness(t, 0)
	h.snap(rs("r0", flags(present, 1)))
	h.reading("r0")
	reply := h.takeIdent("r0")
	h.clk.Advance(5 * time.Second)
	ev := h.expect(tokens.Error, "", "r0")
	if !errors.Is(ev.Err, ErrCardUnreadable) {
		t.Fatalf("err = %v; want %v", ev.Err, ErrCardUnreadable)
	}
	reply <- identReply{token: "uid.01020304"} // too late: ignored
	h.quiet()
	// Removal during identification abandons it: its Reading ends with a
	// Removed without a token.
	h.snap(rs("r0", flags(empty, 2)))
	h.snap(rs("r0", flags(present, 3)))
	h.reading("r0")
	reply = h.takeIdent("r0")
	h.snap(rs("r0", flags(empty, 4)))
	h.expect(tokens.Removed, "", "r0")
	reply <- identReply{token: "uid.01020304"}
	h.quiet()
	h.noTimers()
}

func TestMachineGrace(t *testing.T) {
	const grace = time.Second
	h := newHarness(t, grace)
	h.snap(rs("r0", flags(present, 1)))
	h.reading("r0")
	h.identify("r0", "hce.phone")
	if _, err := h.m.p.readerOf("hce.phone"); err != nil {
		t.Fatalf("readerOf = %v", err)
	}

	// Back within the grace as the same token: no event (no Reading
	// either: quiet below).
	h.snap(rs("r0", flags(empty, 2)))
	h.sync()
	if _, err := h.m.p.readerOf("hce.phone"); !errors.Is(err, ErrNotPresent) {
		t.Fatalf("readerOf during grace = %v; want %v", err, ErrNotPresent)
	}
	h.clk.Advance(grace / 2)
	h.snap(rs("r0", flags(present, 3)))
	reply := h.takeIdent("r0")
	h.clk.Advance(grace) // the grace is paused while the card is identified
	reply <- identReply{token: "hce.phone"}
	h.eventually("phone present again", func() bool { _, err := h.m.p.readerOf("hce.phone"); return err == nil })
	h.quiet()

	// Gone for longer than the grace: Removed.
	h.snap(rs("r0", flags(empty, 4)))
	h.sync()
	h.clk.Advance(grace - time.Millisecond)
	h.quiet()
	h.clk.Advance(time.Millisecond)
	h.expect(tokens.Removed, "hce.phone", "r0")

	// Another card within the grace: Removed at once, then Inserted
	// (without a Reading: it might have been the token back).
	h.snap(rs("r0", flags(present, 5)))
	h.reading("r0")
	h.identify("r0", "uid.a")
	h.snap(rs("r0", flags(empty, 6)))
	h.snap(rs("r0", flags(present, 7)))
	h.answer("r0", "uid.b", nil)
	h.expect(tokens.Removed, "uid.a", "r0")
	h.expect(tokens.Inserted, "uid.b", "r0")

	// A card that cannot be read within the grace: Removed, then Error.
	h.snap(rs("r0", flags(empty, 8)))
	h.snap(rs("r0", flags(present, 9)))
	h.answer("r0", "", ErrCardUnreadable)
	h.expect(tokens.Removed, "uid.b", "r0")
	h.expect(tokens.Error, "", "r0")

	// Back and out again during identification: the grace restarts.
	h.snap(rs("r0", flags(present, 11)))
	h.reading("r0")
	h.identify("r0", "uid.c")
	h.snap(rs("r0", flags(empty, 12)))
	h.snap(rs("r0", flags(present, 13)))
	h.takeIdent("r0")
	h.snap(rs("r0", flags(empty, 14)))
	h.sync()
	h.clk.Advance(grace)
	h.expect(tokens.Removed, "uid.c", "r0")
}

func TestMachineUnavailable(t *testing.T) {
	h := newHarness(t, time.Hour)
	h.snap(rs("r0", flags(present, 1)), rs("r1", flags(present, 1)))
	h.reading("r0")
	h.reading("r1")
	h.identify("r0", "uid.a")
	h.identify("r1", "uid.b")
	h.snap(rs("r0", flags(present, 1)), rs("r1", flags(empty, 2))) // r1's token in grace

	h.m.post(unavailable{err: errors.New("pcscd gone")})
	h.m.post(unavailable{err: errors.New("pcscd gone")}) // once per outage
	// No grace: card state unknown.
	h.expect(tokens.Removed, "uid.a", "r0")
	if ev := h.expect(tokens.Error, "", "r0"); !errors.Is(ev.Err, ErrUnavailable) {
		t.Fatalf("err = %v; want %v", ev.Err, ErrUnavailable)
	}
	h.expect(tokens.Removed, "uid.b", "r1")
	h.expect(tokens.Error, "", "r1")
	h.quiet()
	h.noTimers()

	// Back: the card still in r0 is new.
	h.snap(rs("r0", flags(present, 1)))
	h.reading("r0")
	h.identify("r0", "uid.a")

	// A reader unplugged (missing from the snapshot or flagged unknown).
	h.snap(rs("r1", flags(empty, 0)))
	h.expect(tokens.Removed, "uid.a", "r0")
	if ev := h.expect(tokens.Error, "", "r0"); !errors.Is(ev.Err, ErrUnavailable) {
		t.Fatalf("err = %v; want %v", ev.Err, ErrUnavailable)
	}
	h.snap(rs("r1", scard.StateUnknown|scard.StateChanged))
	h.expect(tokens.Error, "", "r1")

	// pcscd gone with no reader known: one Error without a reader.
	h.m.post(unavailable{err: errors.New("no pcscd")})
	h.expect(tokens.Error, "", "")
}

// TestMachineReadingAtOnce: a new card is reported Reading as soon as the
// snapshot shows it, while its identification is still running, and the
// Inserted ends it.
func TestMachineReadingAtOnce(t *testing.T) {
	h := newHarness(t, 0)
	h.snap(rs("r0", flags(empty, 0)))
	h.snap(rs("r0", flags(present, 1)))
	reply := h.takeIdent("r0") // running, not answered
	if ev := h.expect(tokens.Reading, "", "r0"); !ev.At.Equal(h.clk.Now()) || ev.Err != nil {
		t.Fatalf("reading at %v (err %v); want at %v, no error", ev.At, ev.Err, h.clk.Now())
	}
	h.quiet()
	reply <- identReply{token: "uid.01020304"}
	h.expect(tokens.Inserted, "uid.01020304", "r0")
	h.quiet()
}

// TestMachineReadingMute: a mute card is Reading at once and nothing more
// until the identification timeout, which ends the Reading with an Error;
// its removal later reports nothing.
func TestMachineReadingMute(t *testing.T) {
	h := newHarness(t, 0)
	h.snap(rs("r0", flags(present, 1)))
	h.takeIdent("r0") // never answered
	h.reading("r0")
	h.clk.Advance(5*time.Second - time.Millisecond)
	h.quiet()
	h.clk.Advance(time.Millisecond)
	if ev := h.expect(tokens.Error, "", "r0"); !errors.Is(ev.Err, ErrCardUnreadable) {
		t.Fatalf("err = %v; want %v", ev.Err, ErrCardUnreadable)
	}
	h.snap(rs("r0", flags(empty, 2)))
	h.quiet()
	h.noTimers()
}

// TestMachineReadingEnds: a Reading the identification never finishes is
// ended by exactly one event: a Removed without a token when the card
// leaves (or is swapped for another, whose Reading follows), an Error
// when the reader or pcscd goes away.
func TestMachineReadingEnds(t *testing.T) {
	h := newHarness(t, 0)
	h.snap(rs("r0", flags(present, 1)), rs("r1", flags(empty, 0)))
	h.reading("r0")
	reply := h.takeIdent("r0")
	h.snap(rs("r0", flags(empty, 2)), rs("r1", flags(empty, 0)))
	h.expect(tokens.Removed, "", "r0")
	reply <- identReply{token: "uid.01020304"} // too late: ignored
	h.clk.Advance(time.Minute)                 // its timeout was stopped
	h.quiet()

	// Swapped between two waits while being read.
	h.snap(rs("r0", flags(present, 3)), rs("r1", flags(empty, 0)))
	h.reading("r0")
	reply = h.takeIdent("r0")
	h.snap(rs("r0", flags(present, 5)), rs("r1", flags(empty, 0)))
	h.expect(tokens.Removed, "", "r0")
	h.reading("r0")
	reply <- identReply{token: "uid.0a0a0a0a"} // the first card's: ignored
	h.answer("r0", "uid.0b0b0b0b", nil)
	h.expect(tokens.Inserted, "uid.0b0b0b0b", "r0")

	// The reader unplugged while a card is read: one Error, no Removed.
	h.snap(rs("r0", flags(present, 5)), rs("r1", flags(present, 1)))
	h.reading("r1")
	h.takeIdent("r1")
	h.snap(rs("r0", flags(present, 5)))
	if ev := h.expect(tokens.Error, "", "r1"); !errors.Is(ev.Err, ErrUnavailable) {
		t.Fatalf("err = %v; want %v", ev.Err, ErrUnavailable)
	}
	h.quiet()

	// pcscd gone while a card is read: the same.
	h.snap(rs("r0", flags(present, 5)), rs("r1", flags(present, 2)))
	h.reading("r1")
	h.takeIdent("r1")
	h.m.post(unavailable{err: errors.New("pcscd gone")})
	h.expect(tokens.Removed, "uid.0b0b0b0b", "r0")
	h.expect(tokens.Error, "", "r0")
	h.expect(tokens.Error, "", "r1")
	h.quiet()
	h.noTimers()
}

// TestMachineNoReadingInGrace: a card arriving while the reader's token is
// in its removal grace is not reported Reading, not even while it is
// identified: it may be the token coming back, which reports nothing.
func TestMachineNoReadingInGrace(t *testing.T) {
	const grace = time.Second
	h := newHarness(t, grace)
	h.snap(rs("r0", flags(present, 1)))
	h.reading("r0")
	h.identify("r0", "uid.a")
	h.snap(rs("r0", flags(empty, 2)))
	h.snap(rs("r0", flags(present, 3)))
	reply := h.takeIdent("r0")
	h.quiet() // identification running: no Reading
	reply <- identReply{token: "uid.a"}
	h.quiet()

	// A mute card in the grace: no Reading, and at the timeout the old
	// token's Removed and the Error.
	h.snap(rs("r0", flags(empty, 4)))
	h.snap(rs("r0", flags(present, 5)))
	h.takeIdent("r0")
	h.quiet()
	h.clk.Advance(5 * time.Second)
	h.expect(tokens.Removed, "uid.a", "r0")
	h.expect(tokens.Error, "", "r0")
	h.quiet()
}

// TestMachineTokenMovesReaderInGrace: a token taken from one reader and
// presented at another within the first reader's grace (a phone moved to
// the next pad) is the second reader's: its Inserted there ends the
// Reading, and the first reader's grace no longer runs for it. It ran on
// and reported the token Removed at the first reader while it was in the
// second: the broker suspended the session of a token still presented,
// and the phone, forgotten as present, could not sign.
func TestMachineTokenMovesReaderInGrace(t *testing.T) {
	const grace = time.Second
	h := newHarness(t, grace)
	h.snap(rs("r0", flags(present, 1)), rs("r1", flags(empty, 0)))
	h.reading("r0")
	h.identify("r0", "hce.phone")
	h.snap(rs("r0", flags(empty, 2)), rs("r1", flags(empty, 0))) // r0's grace runs
	h.snap(rs("r0", flags(empty, 2)), rs("r1", flags(present, 1)))
	h.reading("r1")
	h.identify("r1", "hce.phone")
	h.clk.Advance(grace)
	h.quiet()
	if r, err := h.m.p.readerOf("hce.phone"); err != nil || r != "r1" {
		t.Fatalf("readerOf after r0's grace = %q, %v; want r1", r, err)
	}
	h.noTimers()
	// A new card at r0 is Reading (r0 holds no token now).
	h.snap(rs("r0", flags(present, 3)), rs("r1", flags(present, 1)))
	h.reading("r0")
	h.identify("r0", "uid.a")
	// Its removal from r1 is reported there, after r1's grace.
	h.snap(rs("r0", flags(present, 3)), rs("r1", flags(empty, 2)))
	h.sync()
	h.clk.Advance(grace)
	h.expect(tokens.Removed, "hce.phone", "r1")
	h.quiet()
}
