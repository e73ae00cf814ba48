package pcsc

import (
	"context"
	"errors"
	"fmt"
	"os"
	"runtime"
	"sync"
	"testing"
	"time"

	"github.com/ebfe/scard"

	"github.com/hotdesk/hotdesk/internal/testutil"
	"github.com/hotdesk/hotdesk/tokens"
	"github.com/hotdesk/hotdesk/tokens/pcsc/pcscdtest"
	"github.com/hotdesk/hotdesk/tokens/pcsc/vcard"
)

// The tests that need pcscd each run in a child process of their own (the
// test binary again, with -test.run naming the test): libpcsclite reads
// PCSCLITE_CSOCK_NAME once per process, so a process talks to one pcscd,
// and a private pcscd per test lets the tests run in parallel without
// sharing its two readers. The child starts its daemon in TestMain.
var (
	daemon    *pcscdtest.Daemon
	daemonErr error
)

// childEnv is set to "1" in the environment of a child test process.
const childEnv = "HOTDESK_PCSC_TEST_CHILD"

// wait bounds every wait for pcscd; detection takes about 0.4 s.
const wait = 15 * time.Second

var reader0, reader1 = pcscdtest.Readers[0], pcscdtest.Readers[1]

func TestMain(m *testing.M) {
	child := os.Getenv(childEnv) == "1"
	if child {
		daemon, daemonErr = pcscdtest.Start()
	} else {
		// The tests wait for pcscd's polls of the readers, they do not
		// compute.
		testutil.RaiseParallel(8)
	}
	code := m.Run()
	if benchDaemon.d != nil {
		benchDaemon.d.Close()
	}
	if daemon != nil {
		if code != 0 {
			fmt.Fprintf(os.Stderr, "pcscd log:\n%s\n", daemon.Log())
		}
		daemon.Close()
	}
	code = testutil.CheckLeaks(code, 5*time.Second, "hotdesk/tokens/pcsc.", "hotdesk/tokens/pcsc/vcard.")
	os.Exit(code)
}

// needPCSCD runs t with a private pcscd. In the test process it marks t
// parallel, runs t alone in a child process and returns nil once the child
// has ended (the caller returns at once; the child's failure or skip is
// t's). In the child it returns the child's running daemon, or fails (CI
// is "true") or skips t when pcscd with vpcd is not available.
func needPCSCD(t *testing.T) *pcscdtest.Daemon {
	t.Helper()
	if !testutil.InChild(childEnv) {
		t.Parallel()
		testutil.RunInChild(t, childEnv)
		return nil
	}
	pcscdtest.Require(t, daemonErr)
	if err := daemon.Restart(); err != nil { // no-op when running
		t.Fatalf("restart pcscd: %v", err)
	}
	return daemon
}

// benchDaemon is the private pcscd of the benchmarks, which run in the
// test process itself, one at a time: started by the first and stopped by
// TestMain.
var benchDaemon struct {
	once sync.Once
	d    *pcscdtest.Daemon
	err  error
}

// benchPCSCD returns the benchmarks' daemon, or fails (CI is "true") or
// skips b when pcscd with vpcd is not available.
func benchPCSCD(b *testing.B) *pcscdtest.Daemon {
	b.Helper()
	if os.Getenv(childEnv) == "1" {
		b.Fatal("benchmarks run in the test process, not in a child")
	}
	benchDaemon.once.Do(func() { benchDaemon.d, benchDaemon.err = pcscdtest.Start() })
	pcscdtest.Require(b, benchDaemon.err)
	return benchDaemon.d
}

// readingContract checks a stream of events against the Reading contract
// of package tokens: per reader, a Reading is ended by exactly one
// Inserted, Error or Removed without a token, with no other event at the
// reader in between, and a Removed without a token ends a Reading.
type readingContract struct {
	open map[string]bool // readers with a Reading not yet ended
}

func (c *readingContract) check(ev tokens.Event) error {
	if c.open == nil {
		c.open = map[string]bool{}
	}
	r := ev.Reader
	switch ev.Kind {
	case tokens.Reading:
		if ev.Token != "" || r == "" {
			return fmt.Errorf("reading with token %q at reader %q; want no token, a reader", ev.Token, r)
		}
		if c.open[r] {
			return fmt.Errorf("second reading at %q before the first ended", r)
		}
		c.open[r] = true
	case tokens.Inserted, tokens.Error:
		delete(c.open, r)
	case tokens.Removed:
		switch {
		case ev.Token == "" && !c.open[r]:
			return fmt.Errorf("removed without a token at %q, no reading to end", r)
		case ev.Token != "" && c.open[r]:
			return fmt.Errorf("removed %q at %q while a reading is open there", ev.Token, r)
		}
		delete(c.open, r)
	default:
		return fmt.Errorf("unknown kind %v", ev.Kind)
	}
	return nil
}

// watch is a running Watch. It checks every event against the Reading
// contract; next and expect pass over Reading events (recv does not), and
// read says whether the event expect returned ended a Reading.
type watch struct {
	t        testing.TB
	ch       <-chan tokens.Event
	contract readingContract
	read     bool
}

func startWatch(t testing.TB, p *Provider) *watch {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	ch, err := p.Watch(ctx)
	if err != nil {
		cancel()
		t.Fatalf("Watch: %v", err)
	}
	t.Cleanup(func() { testutil.ClosesOnCancel(t, cancel, ch, wait) })
	return &watch{t: t, ch: ch}
}

// recv returns the next event, Reading included, checked against the
// Reading contract; it fails the test if none comes within wait.
func (w *watch) recv() tokens.Event {
	w.t.Helper()
	select {
	case ev, ok := <-w.ch:
		if !ok {
			w.t.Fatalf("event channel closed")
		}
		reading := w.contract.open[ev.Reader]
		if err := w.contract.check(ev); err != nil {
			w.t.Fatalf("event %v %q at %q (err %v) breaks the reading contract: %v", ev.Kind, ev.Token, ev.Reader, ev.Err, err)
		}
		w.read = reading && ev.Kind != tokens.Reading
		return ev
	case <-time.After(wait):
		w.t.Fatalf("no event within %v", wait)
	}
	panic("unreachable")
}

// next returns the next event other than Reading.
func (w *watch) next() tokens.Event {
	w.t.Helper()
	for {
		if ev := w.recv(); ev.Kind != tokens.Reading {
			return ev
		}
	}
}

// expect checks the next event's kind, token and reader ("" token: any),
// Reading events passed over. An Inserted must end a Reading (use
// expectUnannounced for one in a grace).
func (w *watch) expect(kind tokens.Kind, token, reader string) tokens.Event {
	w.t.Helper()
	ev := w.expectUnannounced(kind, token, reader)
	if kind == tokens.Inserted && !w.read {
		w.t.Fatalf("inserted %q at %q without a reading before it", ev.Token, reader)
	}
	return ev
}

// expectUnannounced is expect without requiring a Reading before an
// Inserted.
func (w *watch) expectUnannounced(kind tokens.Kind, token, reader string) tokens.Event {
	w.t.Helper()
	ev := w.next()
	if ev.Kind != kind || (token != "" && ev.Token != token) || ev.Reader != reader {
		w.t.Fatalf("event = %v %q at %q (err %v); want %v %q at %q", ev.Kind, ev.Token, ev.Reader, ev.Err, kind, token, reader)
	}
	return ev
}

// none fails if an event is queued now.
func (w *watch) none() {
	w.t.Helper()
	select {
	case ev, ok := <-w.ch:
		w.t.Fatalf("event %v %q at %q (err %v, open %v); want none", ev.Kind, ev.Token, ev.Reader, ev.Err, ok)
	default:
	}
}

// expectReading checks that the very next event is a Reading at reader.
func (w *watch) expectReading(reader string) {
	w.t.Helper()
	if ev := w.recv(); ev.Kind != tokens.Reading || ev.Reader != reader {
		w.t.Fatalf("event = %v %q at %q (err %v); want reading at %q", ev.Kind, ev.Token, ev.Reader, ev.Err, reader)
	}
}

// expectUnread checks that the next event other than Reading is a Removed
// without a token at reader, ending a Reading: the card left before it was
// identified.
func (w *watch) expectUnread(reader string) {
	w.t.Helper()
	ev := w.next()
	if ev.Kind != tokens.Removed || ev.Token != "" || ev.Reader != reader || !w.read {
		w.t.Fatalf("event = %v %q at %q (err %v, ended a reading: %v); want removed without a token at %q ending a reading",
			ev.Kind, ev.Token, ev.Reader, ev.Err, w.read, reader)
	}
}

// expectError checks that the next event is an Error at reader wrapping
// target.
func (w *watch) expectError(reader string, target error) tokens.Event {
	w.t.Helper()
	ev := w.expect(tokens.Error, "", reader)
	if !errors.Is(ev.Err, target) {
		w.t.Fatalf("error event err = %v; want %v", ev.Err, target)
	}
	return ev
}

// insert inserts c into reader i; the card is removed (and the reader seen
// empty by pcscd) at cleanup unless removed before with remove.
func insert(t testing.TB, d *pcscdtest.Daemon, i int, c vcard.Card) *vcard.Inserted {
	t.Helper()
	in, err := vcard.Insert(context.Background(), d.Port(i), c)
	if err != nil {
		t.Fatalf("insert: %v", err)
	}
	t.Cleanup(func() {
		if err := in.Remove(); err != nil {
			t.Errorf("remove: %v", err)
		}
		if d.Running() {
			waitReader(t, pcscdtest.Readers[i], false)
		}
	})
	return in
}

func remove(t testing.TB, in *vcard.Inserted) {
	t.Helper()
	if err := in.Remove(); err != nil {
		t.Fatalf("remove: %v", err)
	}
}

// insertCard inserts c into reader i (as insert does): the watch must
// report it Inserted with token.
func (w *watch) insertCard(d *pcscdtest.Daemon, i int, c vcard.Card, token string) *vcard.Inserted {
	w.t.Helper()
	in := insert(w.t, d, i, c)
	w.expect(tokens.Inserted, token, pcscdtest.Readers[i])
	return in
}

// removeCard removes in from reader i: the watch must report token
// Removed.
func (w *watch) removeCard(in *vcard.Inserted, i int, token string) {
	w.t.Helper()
	remove(w.t, in)
	w.expect(tokens.Removed, token, pcscdtest.Readers[i])
}

// insertRemove inserts c into reader i and removes it: the watch must
// report it Inserted and then Removed, with token.
func (w *watch) insertRemove(d *pcscdtest.Daemon, i int, c vcard.Card, token string) {
	w.t.Helper()
	w.removeCard(w.insertCard(d, i, c, token), i, token)
}

// waitReader waits, with a PC/SC context of its own, until pcscd reports
// reader with (present) or without a card.
func waitReader(t testing.TB, reader string, present bool) {
	t.Helper()
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		defer runtime.UnlockOSThread()
		errc <- func() error {
			c, err := scard.EstablishContext()
			if err != nil {
				return err
			}
			defer c.Release()
			rs := []scard.ReaderState{{Reader: reader}}
			deadline := time.Now().Add(wait)
			for time.Now().Before(deadline) {
				if err := c.GetStatusChange(rs, 500*time.Millisecond); err != nil && !errors.Is(err, scard.ErrTimeout) {
					return err
				}
				if (rs[0].EventState&scard.StatePresent != 0) == present {
					return nil
				}
				rs[0].CurrentState = rs[0].EventState &^ scard.StateChanged
			}
			return fmt.Errorf("reader %q present=%v not seen within %v", reader, !present, wait)
		}()
	}()
	if err := <-errc; err != nil {
		t.Fatalf("wait for reader: %v", err)
	}
}

func newProvider(t testing.TB, cfg Config) *Provider {
	t.Helper()
	p, err := New(cfg)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	return p
}

// detections collects Observe calls.
type detections struct {
	ch chan Detection
}

func newDetections() *detections { return &detections{ch: make(chan Detection, 64)} }

func (d *detections) observe(x Detection) {
	select {
	case d.ch <- x:
	default:
	}
}

func (d *detections) next(t testing.TB) Detection {
	t.Helper()
	select {
	case x := <-d.ch:
		return x
	case <-time.After(wait):
		t.Fatalf("no identification within %v", wait)
	}
	panic("unreachable")
}
