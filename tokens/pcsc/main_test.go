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

// This package is the only one that runs pcscd (pcscdtest): one private
// daemon for the whole test binary, started here. The tests share its two
// readers and therefore never run in parallel.
var (
	daemon    *pcscdtest.Daemon
	daemonErr error
)

// wait bounds every wait for pcscd; detection takes about 0.4 s.
const wait = 15 * time.Second

var reader0, reader1 = pcscdtest.Readers[0], pcscdtest.Readers[1]

func TestMain(m *testing.M) {
	daemon, daemonErr = pcscdtest.Start()
	code := m.Run()
	if daemon != nil {
		if code != 0 {
			fmt.Fprintf(os.Stderr, "pcscd log:\n%s\n", daemon.Log())
		}
		daemon.Close()
	}
	code = testutil.CheckLeaks(code, 5*time.Second, "hotdesk/tokens/pcsc.", "hotdesk/tokens/pcsc/vcard.")
	os.Exit(code)
}

// needPCSCD returns the running daemon, or fails (CI=true) or skips the
// test when pcscd with vpcd is not available.
func needPCSCD(t testing.TB) *pcscdtest.Daemon {
	t.Helper()
	pcscdtest.Require(t, daemonErr)
	if err := daemon.Restart(); err != nil { // no-op when running
		t.Fatalf("restart pcscd: %v", err)
	}
	return daemon
}

// watch is a running Watch.
type watch struct {
	t  testing.TB
	ch <-chan tokens.Event
}

func startWatch(t testing.TB, p *Provider) *watch {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	ch, err := p.Watch(ctx)
	if err != nil {
		cancel()
		t.Fatalf("Watch: %v", err)
	}
	t.Cleanup(func() {
		cancel()
		timeout := time.After(wait)
		for {
			select {
			case _, ok := <-ch:
				if !ok {
					return
				}
			case <-timeout:
				t.Errorf("event channel not closed %v after cancel", wait)
				return
			}
		}
	})
	return &watch{t: t, ch: ch}
}

// next returns the next event; it fails the test if none comes within wait.
func (w *watch) next() tokens.Event {
	w.t.Helper()
	select {
	case ev, ok := <-w.ch:
		if !ok {
			w.t.Fatalf("event channel closed")
		}
		return ev
	case <-time.After(wait):
		w.t.Fatalf("no event within %v", wait)
	}
	panic("unreachable")
}

// expect checks the next event's kind, token and reader ("" token: any).
func (w *watch) expect(kind tokens.Kind, token, reader string) tokens.Event {
	w.t.Helper()
	ev := w.next()
	if ev.Kind != kind || (token != "" && ev.Token != token) || ev.Reader != reader {
		w.t.Fatalf("event = %v %q at %q (err %v); want %v %q at %q", ev.Kind, ev.Token, ev.Reader, ev.Err, kind, token, reader)
	}
	return ev
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
	mu sync.Mutex
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
