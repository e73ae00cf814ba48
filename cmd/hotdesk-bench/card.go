package main

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/hotdesk/hotdesk/registry"
	"github.com/hotdesk/hotdesk/tokens"
	"github.com/hotdesk/hotdesk/tokens/nfc"
	"github.com/hotdesk/hotdesk/tokens/pcsc"
	"github.com/hotdesk/hotdesk/tokens/pcsc/pcscdtest"
	"github.com/hotdesk/hotdesk/tokens/pcsc/vcard"
)

// cardNotes goes into the card row: which part of the time is whose.
const cardNotes = "CARD: a virtual contactless card (vcard UID) in vpcd reader 0 of a private pcscd, watched by tokens/pcsc in this process; " +
	"pcscd_detect = card connected to vpcd → pcscd reports it (vpcd is polled about every 0.4 s; real CCID readers interrupt), " +
	"identify = the identification APDUs, reader = card connected → Inserted event (the terminal agent's part), " +
	"p50/p99 = the broker's part: TokenInserted sent → Attached (locate-only uid token, session resumed)"

// cardTrials bounds the card scenario: every trial costs pcscd polls
// (about 0.4 s to notice the card and again its removal).
const cardTrials = 40

// cardEventTimeout bounds the wait for one provider event.
const cardEventTimeout = 10 * time.Second

// card: a virtual UID card registered to a user is inserted into a virtual
// reader of a private pcscd; the provider's Inserted event is forwarded as
// TokenInserted by a terminal connected to broker 0, the session resumes,
// the card is pulled and the removal forwarded. The reader's part and the
// broker's part are reported separately. Without pcscd and the vpcd driver
// the row says "skipped" (n = 0).
func (b *bench) card(ctx context.Context) (row, error) {
	r := b.newRow("card")
	r.Notes = cardNotes + "; " + notes
	d, err := pcscdtest.Start() // sets PCSCLITE_CSOCK_NAME for this process
	if err != nil {
		r.Skipped = true
		r.Notes = "SKIPPED: " + err.Error() + " (Debian packages pcscd, vsmartcard-vpcd); " + r.Notes
		return r, nil
	}
	defer d.Close()

	uid := []byte{0x04, 0xbe, 0x4c, 0x01}
	tok, err := nfc.UIDTokenID(uid)
	if err != nil {
		return r, fmt.Errorf("bench: card: %w", err)
	}
	a := b.g.nodes[0]
	if err := a.reg.EnrollToken(ctx, registry.TokenRecord{ID: tok, Kind: nfc.KindUID, User: "bench", Label: "bench badge"}); err != nil && !errors.Is(err, registry.ErrExists) {
		return r, fmt.Errorf("bench: card: %w", err)
	}

	dets := make(chan pcsc.Detection, 16)
	p, err := pcsc.New(pcsc.Config{
		Readers: []string{pcscdtest.Readers[0]},
		Logger:  b.log.Named("pcsc"),
		Observe: func(x pcsc.Detection) {
			select {
			case dets <- x:
			default: // never block the watch goroutine
			}
		},
	})
	if err != nil {
		return r, fmt.Errorf("bench: card: %w", err)
	}
	wctx, stop := context.WithCancel(ctx)
	evs, err := p.Watch(wctx)
	if err != nil {
		stop()
		return r, fmt.Errorf("bench: card: %w", err)
	}
	defer func() {
		stop()
		for range evs { // drain until the provider has released pcscd
		}
	}()

	t, err := b.dial(ctx, a, "card-a")
	if err != nil {
		return r, err
	}
	defer t.close()
	restore, err := b.g.placeOn(ctx, a)
	if err != nil {
		return r, err
	}
	defer restore()

	n := min(b.p.n, cardTrials)
	budget := max(b.p.budget, 30*time.Second) // pcscd's polls dominate: n trials need about n seconds
	var detect, ident, reader, broker []time.Duration
	// Trial 0 creates the session: not counted.
	err = runTrials(&r, n+1, budget, func(i int) error {
		x, err := cardTrial(ctx, t, d, p, evs, dets, uid, tok, i > 0)
		if err != nil {
			b.log.Warn("card trial failed", "trial", i, "err", err, "pcscd_log", tail(d.Log(), 2048))
		}
		if err == nil && i > 0 {
			detect, ident = append(detect, x.detect), append(ident, x.identify)
			reader, broker = append(reader, x.reader), append(broker, x.broker)
		}
		return err
	})
	if err != nil {
		return r, fmt.Errorf("bench: card: %w", err)
	}
	r.fill(broker, b.etcdP99)
	r.PcscdDetectP50, r.PcscdDetectP99 = p50p99(detect)
	r.IdentifyP50, r.IdentifyP99 = p50p99(ident)
	r.ReaderP50, r.ReaderP99 = p50p99(reader)
	r.BrokerP50, r.BrokerP99 = ptr(r.P50), ptr(r.P99)
	return r, nil
}

// cardTiming is one trial's parts.
type cardTiming struct {
	detect, identify, reader, broker time.Duration
}

// cardTrial inserts the card, forwards the provider's Inserted event to the
// broker, then pulls the card and forwards the removal.
func cardTrial(ctx context.Context, t *terminal, d *pcscdtest.Daemon, p *pcsc.Provider, evs <-chan tokens.Event,
	dets <-chan pcsc.Detection, uid []byte, tok string, resume bool) (x cardTiming, err error) {
	for len(dets) > 0 { // identifications of earlier cards
		<-dets
	}
	t0 := time.Now()
	card, err := vcard.Insert(ctx, d.Port(0), vcard.UIDCard(uid))
	if err != nil {
		return x, err
	}
	defer card.Remove()
	ev, err := nextCardEvent(ctx, evs)
	if err != nil {
		return x, err
	}
	if ev.Kind != tokens.Inserted || ev.Token != tok {
		return x, fmt.Errorf("card event %v %q (%v); want inserted %q", ev.Kind, ev.Token, ev.Err, tok)
	}
	x.reader = time.Since(t0)
	select {
	case det := <-dets:
		x.detect, x.identify = det.Detected.Sub(t0), det.Identified.Sub(det.Detected)
	default:
		return x, errors.New("no detection observed before the inserted event")
	}
	o, err := hotdesk(ctx, t, tok) // TokenInserted → Attached
	if err != nil {
		return x, err
	}
	if o.at != t {
		o.at.close()
		return x, fmt.Errorf("redirected to %s; want a session on the terminal's broker", o.server)
	}
	if resume && !o.resumed {
		return x, errors.New("session created again; want resumed")
	}
	x.broker = o.total
	if err := card.Remove(); err != nil {
		return x, err
	}
	if ev, err = nextCardEvent(ctx, evs); err != nil {
		return x, err
	}
	if ev.Kind != tokens.Removed || ev.Token != tok {
		return x, fmt.Errorf("card event %v %q (%v); want removed %q", ev.Kind, ev.Token, ev.Err, tok)
	}
	return x, park(ctx, t, tok)
}

// nextCardEvent is the next card event other than Reading (the moment
// pcscd showed the card; its Inserted, Error or removal follows) and the
// empty-token Removed that ends a Reading without an identification (a
// card that flickered in the reader as the virtual card connected: it is
// read again). Both are progress, which the tokens contract tells
// consumers that do not show it to pass over.
func nextCardEvent(ctx context.Context, evs <-chan tokens.Event) (tokens.Event, error) {
	tm := time.NewTimer(cardEventTimeout)
	defer tm.Stop()
	for {
		select {
		case ev, ok := <-evs:
			if !ok {
				return ev, errors.New("card events ended")
			}
			if ev.Kind == tokens.Reading || ev.Kind == tokens.Removed && ev.Token == "" {
				continue
			}
			return ev, nil
		case <-tm.C:
			return tokens.Event{}, fmt.Errorf("no card event in %v", cardEventTimeout)
		case <-ctx.Done():
			return tokens.Event{}, ctx.Err()
		}
	}
}

// tail is the end of s, at most n bytes.
func tail(s string, n int) string {
	if len(s) > n {
		return "…" + s[len(s)-n:]
	}
	return s
}
