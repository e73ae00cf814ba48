package pcsc

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"errors"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ebfe/scard"

	"github.com/hotdesk/hotdesk/internal/clock"
	"github.com/hotdesk/hotdesk/tokens"
	"github.com/hotdesk/hotdesk/tokens/nfc"
	"github.com/hotdesk/hotdesk/tokens/pcsc/vcard"
	"github.com/hotdesk/hotdesk/tokens/soft"
)

func TestInsertRemoveBothReaders(t *testing.T) {
	d := needPCSCD(t)
	if d == nil {
		return // ran in a child process
	}
	w := startWatch(t, newProvider(t, Config{}))
	tests := []struct {
		reader int
		uid    []byte
		want   string
	}{
		{0, []byte{0x04, 0xA1, 0xB2, 0xC3}, "uid.04a1b2c3"},
		{1, []byte{0x04, 0x11, 0x22, 0x33, 0x44, 0x55, 0x66}, "uid.04112233445566"},
	}
	for _, tt := range tests {
		w.insertRemove(d, tt.reader, vcard.UIDCard(tt.uid), tt.want)
	}
}

func TestPIVCard(t *testing.T) {
	d := needPCSCD(t)
	if d == nil {
		return // ran in a child process
	}
	w := startWatch(t, newProvider(t, Config{}))
	guid := [16]byte{0x12, 0x34, 0x56, 0x78, 0x9a, 0xbc, 0xde, 0xf0, 0x01, 0x02, 0x03, 0x04, 0x05, 0x06, 0x07, 0x08}
	w.insertRemove(d, 1, vcard.PIVCard(guid), "piv.123456789abcdef00102030405060708")
}

func TestReaderFilter(t *testing.T) {
	d := needPCSCD(t)
	if d == nil {
		return // ran in a child process
	}
	w := startWatch(t, newProvider(t, Config{Readers: []string{"pcd 00 01"}}))
	insert(t, d, 0, vcard.UIDCard([]byte{1, 2, 3, 4}))
	waitReader(t, reader0, true)
	insert(t, d, 1, vcard.UIDCard([]byte{5, 6, 7, 8}))
	// The card in reader 0 is ignored: the first event is reader 1's.
	w.expect(tokens.Inserted, "uid.05060708", reader1)
}

func TestWatchTwice(t *testing.T) {
	if needPCSCD(t) == nil {
		return // ran in a child process
	}
	p := newProvider(t, Config{})
	startWatch(t, p)
	if _, err := p.Watch(context.Background()); !errors.Is(err, ErrWatching) {
		t.Fatalf("second Watch error = %v; want %v", err, ErrWatching)
	}
}

func challenge(t *testing.T, token string) []byte {
	t.Helper()
	msg, err := soft.ChallengeMessage("term-1", "b1", bytes.Repeat([]byte{1}, 32), bytes.Repeat([]byte{2}, 32), token)
	if err != nil {
		t.Fatal(err)
	}
	return msg
}

func newPhone(t *testing.T) *nfc.Phone {
	t.Helper()
	_, key, err := ed25519.GenerateKey(nil)
	if err != nil {
		t.Fatal(err)
	}
	return &nfc.Phone{Key: key}
}

func TestPhone(t *testing.T) {
	d := needPCSCD(t)
	if d == nil {
		return // ran in a child process
	}
	p := newProvider(t, Config{})
	w := startWatch(t, p)
	ph := newPhone(t)
	token := nfc.HCETokenID(ph.Public())
	ctx := context.Background()

	if _, err := p.Sign(ctx, token, challenge(t, token)); !errors.Is(err, ErrNotPresent) {
		t.Fatalf("Sign before insertion error = %v; want %v", err, ErrNotPresent)
	}
	in := w.insertCard(d, 0, vcard.PhoneCard(ph), token)

	pub, err := p.PublicKey(ctx, token)
	if err != nil {
		t.Fatalf("PublicKey: %v", err)
	}
	if !bytes.Equal(pub, ph.Public()) {
		t.Fatalf("PublicKey = %x; want %x", pub, ph.Public())
	}
	// A long terminal id makes the message longer than one APDU (chaining).
	for _, term := range []string{"term-1", string(bytes.Repeat([]byte("t"), 300))} {
		msg, err := soft.ChallengeMessage(term, "b1", bytes.Repeat([]byte{1}, 32), bytes.Repeat([]byte{2}, 32), token)
		if err != nil {
			t.Fatal(err)
		}
		sig, err := p.Sign(ctx, token, msg)
		if err != nil {
			t.Fatalf("Sign (%d bytes): %v", len(msg), err)
		}
		if err := soft.Verify(pub, msg, sig); err != nil {
			t.Fatalf("Verify (%d bytes) = %v; want nil", len(msg), err)
		}
	}
	other := nfc.HCETokenID(newPhone(t).Public())
	if _, err := p.Sign(ctx, other, challenge(t, other)); !errors.Is(err, ErrNotPresent) {
		t.Fatalf("Sign of another phone error = %v; want %v", err, ErrNotPresent)
	}
	w.removeCard(in, 0, token)
	if _, err := p.Sign(ctx, token, challenge(t, token)); !errors.Is(err, ErrNotPresent) {
		t.Fatalf("Sign after removal error = %v; want %v", err, ErrNotPresent)
	}
}

func TestPhoneWrongKey(t *testing.T) {
	d := needPCSCD(t)
	if d == nil {
		return // ran in a child process
	}
	p := newProvider(t, Config{})
	w := startWatch(t, p)
	enrolled := newPhone(t)
	token := enrolled.TokenID()
	w.insertCard(d, 1, vcard.ImpostorCard(enrolled, newPhone(t).Key), token)
	msg := challenge(t, token)
	sig, err := p.Sign(context.Background(), token, msg)
	if err != nil {
		t.Fatalf("Sign: %v", err)
	}
	if err := soft.Verify(enrolled.Public(), msg, sig); !errors.Is(err, soft.ErrBadProof) {
		t.Fatalf("Verify with the enrolled key = %v; want %v", err, soft.ErrBadProof)
	}
}

func TestPhoneMalformed(t *testing.T) {
	d := needPCSCD(t)
	if d == nil {
		return // ran in a child process
	}
	p := newProvider(t, Config{})
	w := startWatch(t, p)

	// A phone whose signature response is truncated: Sign fails.
	ph := newPhone(t)
	card := vcard.PhoneCard(ph)
	inner := card.Handle
	card.Handle = func(apdu []byte) []byte {
		resp := inner(apdu)
		if len(apdu) > 1 && apdu[1] == nfc.INSSign && apdu[0] == nfc.CLA {
			return append(resp[:10:10], 0x90, 0x00)
		}
		return resp
	}
	in := w.insertCard(d, 0, card, ph.TokenID())
	if _, err := p.Sign(context.Background(), ph.TokenID(), challenge(t, ph.TokenID())); !errors.Is(err, nfc.ErrMalformed) {
		t.Fatalf("Sign error = %v; want %v", err, nfc.ErrMalformed)
	}
	w.removeCard(in, 0, ph.TokenID())

	// A phone answering GET-ID with garbage: a card error.
	card = vcard.PhoneCard(ph)
	inner = card.Handle
	card.Handle = func(apdu []byte) []byte {
		if len(apdu) > 1 && apdu[1] == nfc.INSGetID {
			return []byte{'h', 'c', 'e', '.', '!', 0x90, 0x00}
		}
		return inner(apdu)
	}
	insert(t, d, 0, card)
	ev := w.expectError(reader0, ErrCardUnreadable)
	if !errors.Is(ev.Err, nfc.ErrMalformed) {
		t.Fatalf("error event err = %v; want %v", ev.Err, nfc.ErrMalformed)
	}
}

// TestBadCards: each bad card is reported as a card error and the provider
// keeps working on the reader. The cases run in parallel, each with a
// provider and a pcscd of its own.
func TestBadCards(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		card vcard.Card
		mute bool
	}{
		{"garbage", vcard.GarbageCard(), false},
		{"mute", vcard.MuteCard(), true},
		{"phone without the app, random uid", vcard.PhoneCard(&nfc.Phone{Key: newPhone(t).Key}), false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			d := needPCSCD(t)
			if d == nil {
				return // ran in a child process
			}
			clk := clock.NewFake(time.Unix(1000, 0))
			p := newProvider(t, Config{Clock: clk, IdentifyTimeout: time.Second})
			w := startWatch(t, p)
			if tt.name == "phone without the app, random uid" {
				ph := tt.card.Handle
				tt.card.Handle = func(apdu []byte) []byte {
					if apdu[1] == 0xA4 {
						return []byte{0x6A, 0x82}
					}
					return ph(apdu)
				}
			}
			in := insert(t, d, 0, tt.card)
			if tt.mute {
				<-in.Seen()
				// Reported at once, while the identification hangs (the
				// fake clock has not run its timeout).
				w.expectReading(reader0)
				clk.Advance(time.Second) // identification timeout
			}
			ev := w.expectError(reader0, ErrCardUnreadable)
			t.Logf("card error: %v", ev.Err)
			if !w.read {
				t.Fatalf("card error without a reading before it")
			}
			remove(t, in)
			// vpcd hides a swap within one poll: let pcscd see the removal.
			waitReader(t, reader0, false)
			// The provider keeps working on the same reader.
			w.insertRemove(d, 0, vcard.UIDCard([]byte{4, 3, 2, 1}), "uid.04030201")
		})
	}
}

func TestRemovalDuringIdentification(t *testing.T) {
	d := needPCSCD(t)
	if d == nil {
		return // ran in a child process
	}
	// The fake clock never runs the identification timeout: only the
	// removal can end the mute card's identification.
	clk := clock.NewFake(time.Unix(1000, 0))
	w := startWatch(t, newProvider(t, Config{Clock: clk}))
	in := insert(t, d, 0, vcard.MuteCard())
	<-in.Seen() // identification is waiting for the card
	w.expectReading(reader0)
	// The other reader keeps working meanwhile.
	w.insertRemove(d, 1, vcard.UIDCard([]byte{1, 1, 1, 1}), "uid.01010101")
	remove(t, in)
	// The mute card's Reading ends with a Removed without a token, and
	// nothing else: the next event is the next card's.
	w.expectUnread(reader0)
	waitReader(t, reader0, false)
	w.insertRemove(d, 0, vcard.UIDCard([]byte{2, 2, 2, 2}), "uid.02020202")
}

func TestFastSwap(t *testing.T) {
	d := needPCSCD(t)
	if d == nil {
		return // ran in a child process
	}
	p := newProvider(t, Config{})
	var mu sync.Mutex
	var gate chan struct{}
	p.hookBeforeWait = func() {
		mu.Lock()
		g := gate
		mu.Unlock()
		if g != nil {
			<-g
		}
	}
	w := startWatch(t, p)
	a := w.insertCard(d, 0, vcard.UIDCard([]byte{0xA, 0xA, 0xA, 0xA}), "uid.0a0a0a0a")

	// Hold the watcher out of GetStatusChange while card A is swapped for
	// card B: pcscd sees both movements, the watcher only the event
	// counter that moved by two while the reader stayed "present".
	mu.Lock()
	gate = make(chan struct{})
	release := gate
	mu.Unlock()
	p.mu.Lock()
	p.po.cancelWait()
	p.mu.Unlock()
	remove(t, a)
	waitReader(t, reader0, false)
	insert(t, d, 0, vcard.UIDCard([]byte{0xB, 0xB, 0xB, 0xB}))
	waitReader(t, reader0, true)
	mu.Lock()
	gate = nil
	mu.Unlock()
	close(release)

	w.expect(tokens.Removed, "uid.0a0a0a0a", reader0)
	w.expect(tokens.Inserted, "uid.0b0b0b0b", reader0)
}

// TestReaderReportedUnknown: a wait that reports a reader as unknown while
// pcscd still lists it (libpcsclite 1.9 does so now and then under load;
// this test makes two waits in a row do it) is no reader gone: no event,
// and the card in it stays inserted.
func TestReaderReportedUnknown(t *testing.T) {
	d := needPCSCD(t)
	if d == nil {
		return // ran in a child process
	}
	p := newProvider(t, Config{})
	var armed atomic.Bool
	var glitches atomic.Int32
	glitches.Store(2)
	reportUnknown(p, reader0, &armed, &glitches)
	w := startWatch(t, p)
	in := w.insertCard(d, 0, vcard.UIDCard([]byte{0x0C, 1, 1, 1}), "uid.0c010101")
	armed.Store(true)
	// A card in reader 1 ends the poller's wait: the next waits report
	// reader 0 unknown.
	w.insertCard(d, 1, vcard.UIDCard([]byte{0x0C, 2, 2, 2}), "uid.0c020202")
	if n := glitches.Load(); n > 0 {
		t.Fatalf("%d of 2 waits reported reader 0 unknown; want both", 2-n)
	}
	w.removeCard(in, 0, "uid.0c010101")
}

// waitPending waits until clk has n pending timers.
func waitPending(t *testing.T, clk *clock.Fake, n int) {
	t.Helper()
	deadline := time.Now().Add(wait)
	for clk.Pending() != n {
		if time.Now().After(deadline) {
			t.Fatalf("pending timers = %d; want %d", clk.Pending(), n)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func TestDebounce(t *testing.T) {
	d := needPCSCD(t)
	if d == nil {
		return // ran in a child process
	}
	const grace = 30 * time.Second
	clk := clock.NewFake(time.Unix(1000, 0))
	det := newDetections()
	p := newProvider(t, Config{Clock: clk, RemoveGrace: grace, Observe: det.observe})
	w := startWatch(t, p)
	badge := []byte{0xBA, 0xD6, 0xE0, 0x01}
	const token = "uid.bad6e001"

	in := w.insertCard(d, 1, vcard.UIDCard(badge), token) // insertion is not delayed
	det.next(t)
	waitPending(t, clk, 0)

	// Out of the field and back within the grace: no event.
	remove(t, in)
	waitPending(t, clk, 1) // the grace timer
	clk.Advance(grace / 2)
	in = insert(t, d, 1, vcard.UIDCard(badge))
	if x := det.next(t); x.Token != token {
		t.Fatalf("identified %q; want %q", x.Token, token)
	}
	waitPending(t, clk, 0) // grace stopped
	// Not even a Reading: it would have been queued before the
	// identification ended.
	w.none()
	clk.Advance(2 * grace)

	// Out for longer than the grace: Removed, and it is the next event.
	remove(t, in)
	waitPending(t, clk, 1)
	clk.Advance(grace - time.Second)
	if clk.Pending() != 1 {
		t.Fatalf("grace timer gone before the grace ended")
	}
	clk.Advance(time.Second)
	w.expect(tokens.Removed, token, reader1)

	// Another card within the grace: Removed at once, then Inserted, with
	// no Reading (the card might have been the token coming back).
	in = w.insertCard(d, 1, vcard.UIDCard(badge), token)
	remove(t, in)
	waitPending(t, clk, 1)
	insert(t, d, 1, vcard.UIDCard([]byte{1, 2, 3, 4}))
	w.expect(tokens.Removed, token, reader1)
	w.expectUnannounced(tokens.Inserted, "uid.01020304", reader1)
	if w.read {
		t.Fatalf("a reading for a card inserted within the grace")
	}
}

func TestPCSCDRestart(t *testing.T) {
	d := needPCSCD(t)
	if d == nil {
		return // ran in a child process
	}
	p := newProvider(t, Config{MinBackoff: 20 * time.Millisecond, MaxBackoff: 200 * time.Millisecond})
	w := startWatch(t, p)
	in := w.insertCard(d, 0, vcard.UIDCard([]byte{7, 7, 7, 7}), "uid.07070707")

	if err := d.Kill(); err != nil {
		t.Fatalf("kill pcscd: %v", err)
	}
	// Card state unknown: the token is removed, both readers unavailable.
	w.expect(tokens.Removed, "uid.07070707", reader0)
	w.expectError(reader0, ErrUnavailable)
	w.expectError(reader1, ErrUnavailable)
	remove(t, in)

	if err := d.Restart(); err != nil {
		t.Fatalf("restart pcscd: %v", err)
	}
	w.insertCard(d, 1, vcard.UIDCard([]byte{0x88, 8, 8, 8}), "uid.88080808")
}

func TestWatchWithoutPCSCD(t *testing.T) {
	d := needPCSCD(t)
	if d == nil {
		return // ran in a child process
	}
	if err := d.Stop(); err != nil {
		t.Fatalf("stop pcscd: %v", err)
	}
	p := newProvider(t, Config{MinBackoff: 20 * time.Millisecond, MaxBackoff: 200 * time.Millisecond})
	w := startWatch(t, p)
	w.expectError("", ErrUnavailable)
	if err := d.Restart(); err != nil {
		t.Fatalf("restart pcscd: %v", err)
	}
	w.insertCard(d, 0, vcard.UIDCard([]byte{9, 9, 9, 9}), "uid.09090909")
}

// BenchmarkDetection measures, per card insertion, pcscd's detection delay
// (virtual card connected → pcscd reports the card; vpcd is polled about
// every 0.4 s, real CCID readers interrupt) separately from identification
// (the APDUs, "identify_ms") and the whole (connect → Inserted event).
func BenchmarkDetection(b *testing.B) {
	d := benchPCSCD(b)
	det := newDetections()
	p := newProvider(b, Config{Observe: det.observe})
	w := startWatch(b, p)
	cards := []struct {
		name string
		card func() vcard.Card
	}{
		{"uid", func() vcard.Card { return vcard.UIDCard([]byte{1, 2, 3, 4}) }},
		{"hce", func() vcard.Card { return vcard.PhoneCard(&nfc.Phone{Key: ed25519.NewKeyFromSeed(make([]byte, 32))}) }},
	}
	for _, c := range cards {
		b.Run(c.name, func(b *testing.B) {
			var detect, ident, total time.Duration
			n := 0
			for b.Loop() {
				n++
				start := time.Now()
				in, err := vcard.Insert(context.Background(), d.Port(0), c.card())
				if err != nil {
					b.Fatal(err)
				}
				w.expect(tokens.Inserted, "", reader0)
				total += time.Since(start)
				x := det.next(b)
				detect += x.Detected.Sub(start)
				ident += x.Identified.Sub(x.Detected)
				if err := in.Remove(); err != nil {
					b.Fatal(err)
				}
				w.expect(tokens.Removed, "", reader0)
			}
			ms := func(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 / float64(n) }
			b.ReportMetric(ms(detect), "detect_ms/op")
			b.ReportMetric(ms(ident), "identify_ms/op")
			b.ReportMetric(ms(total), "inserted_ms/op")
		})
	}
}

// unplug makes p's poller see reader leave pcscd's list once armed: the
// reader list loses it, and (during) the next wait reports it unknown, as
// pcscd does for a reader unplugged while a wait runs.
func unplug(p *Provider, reader string, during bool) (arm func()) {
	var armed atomic.Bool
	p.hookListReaders = func(names []string) []string {
		if !armed.Load() {
			return names
		}
		return slices.DeleteFunc(names, func(n string) bool { return n == reader })
	}
	if during {
		reportUnknown(p, reader, &armed, nil)
	}
	return func() { armed.Store(true) }
}

// reportUnknown makes p's poller's waits, while armed, report reader
// unknown, as pcscd does for a reader unplugged while a wait runs. If left
// is not nil, only its count of waits do (each counts it down).
func reportUnknown(p *Provider, reader string, armed *atomic.Bool, left *atomic.Int32) {
	p.hookAfterWait = func(states []scard.ReaderState) {
		if !armed.Load() {
			return
		}
		for i := range states {
			if states[i].Reader == reader && (left == nil || left.Add(-1) >= 0) {
				states[i].EventState = scard.StateUnknown | scard.StateUnavailable | scard.StateChanged
			}
		}
	}
}

// TestReaderUnpluggedDuringWait: a reader unplugged while the poller waits
// is reported unknown and is gone from the list: its card's token is
// removed and the reader reported unavailable, even when it was the only
// reader watched (no later wait reports anything for it).
func TestReaderUnpluggedDuringWait(t *testing.T) {
	d := needPCSCD(t)
	if d == nil {
		return // ran in a child process
	}
	p := newProvider(t, Config{Readers: []string{reader0}})
	arm := unplug(p, reader0, true)
	w := startWatch(t, p)
	in := w.insertCard(d, 0, vcard.UIDCard([]byte{0x0D, 1, 1, 1}), "uid.0d010101")
	arm()
	// The card leaving ends the poller's wait, which reports reader 0
	// unknown.
	w.removeCard(in, 0, "uid.0d010101")
	w.expectError(reader0, ErrUnavailable)
}

// TestReaderUnpluggedBetweenWaits: a reader that leaves pcscd's list while
// no wait runs (libpcsclite then reports nothing about it) is seen gone
// all the same, within a bounded wait.
func TestReaderUnpluggedBetweenWaits(t *testing.T) {
	d := needPCSCD(t)
	if d == nil {
		return // ran in a child process
	}
	p := newProvider(t, Config{})
	arm := unplug(p, reader0, false)
	w := startWatch(t, p)
	w.insertCard(d, 0, vcard.UIDCard([]byte{0x0D, 3, 3, 3}), "uid.0d030303")
	arm()
	w.expect(tokens.Removed, "uid.0d030303", reader0)
	w.expectError(reader0, ErrUnavailable)
}
