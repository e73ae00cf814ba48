package main

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/hotdesk/hotdesk/internal/clock"
	"github.com/hotdesk/hotdesk/proto"
	"github.com/hotdesk/hotdesk/tokens"
	"github.com/hotdesk/hotdesk/tokens/nfc"
	"github.com/hotdesk/hotdesk/tokens/soft"
)

// Pair generates a key named tokenName (label: label), enrolls it at the
// home broker with code, and saves the keystore once the broker confirms.
// It returns the new token id. A broker Error is printed and returned.
//
// A pairing whose outcome is not known is sent again with the same key,
// up to pairAttempts in all: answered Error{unavailable}, on the same
// connection (enroll); its connection ended after the Pair was sent, on a
// new one, signed again. The broker may have enrolled the key (the
// registry took the redemption, its answer was lost), and then answers
// the same Pair Paired (PROTOCOL.md §7.4). A new key would be refused as
// a used code, and the first one, enrolled, would never be saved.
func (a *agent) Pair(ctx context.Context, code, tokenName, label string) (string, error) {
	if err := checkCode(code); err != nil {
		return "", err
	}
	key, err := a.cfg.Keystore.Generate(tokenName, label)
	if err != nil {
		return "", fmt.Errorf("pair: %w", err)
	}
	sign := func(_ context.Context, msg []byte) ([]byte, error) { return a.cfg.Keystore.Sign(key.Token, msg) }
	var tok string
	tries := &pairTries{}
	for {
		tok, err = a.enroll(ctx, tries, code, soft.Kind, key.Public, label, key.Token, sign)
		if err == nil || ctx.Err() != nil || !tries.left() || !errors.Is(err, errUnanswered) {
			break
		}
		wait := tries.wait()
		a.out.emit(pairAgainEvent(err.Error(), wait))
		if !clock.Sleep(ctx, a.clk, wait) {
			break
		}
	}
	if err != nil && ctx.Err() != nil {
		// Not wrapped: a cancelled context is not a clean end here (the
		// command exits 1). The key is not saved.
		return "", fmt.Errorf("%w (the key is not saved): %v", errPairCancelled, err)
	}
	if err != nil {
		return "", err
	}
	if err := a.cfg.Keystore.Save(); err != nil {
		return "", fmt.Errorf("pair: token %s enrolled but not saved: %w", key.Token, err)
	}
	return tok, nil
}

// PairPhone waits (within wait, on the agent's clock) for a phone
// presented at the card readers, reads its public key over NFC and
// enrolls it at the home broker with code, the phone proving its key by
// signing the pairing transcript while it is still at the reader. The key
// stays on the phone; it returns the phone's token id. While
// Run watches the readers (the agent with its greeter), the phones come
// from its loop and are not presented to the broker meanwhile.
//
// A pairing ended by ctx (a signal, the greeter's Esc) is errPairCancelled
// — errNoPhoneCancelled before a phone was read, when nothing was sent and
// the code is still valid — not "no phone presented", which is the wait
// elapsed.
func (a *agent) PairPhone(ctx context.Context, code, label string, wait time.Duration) (string, error) {
	if a.cfg.Cards == nil {
		return "", errors.New("pair: no card readers (-pcsc)")
	}
	if err := checkCode(code); err != nil {
		return "", err
	}
	if ctx.Err() != nil {
		return "", errNoPhoneCancelled
	}
	wctx, cancel := context.WithCancel(ctx)
	defer cancel()
	elapsed := a.clk.AfterFunc(wait, cancel) // the wait for a phone, on the agent's clock
	defer elapsed.Stop()
	events, release, err := a.watchPhones(wctx)
	if err != nil {
		if ctx.Err() != nil {
			return "", errNoPhoneCancelled
		}
		return "", fmt.Errorf("pair: card readers: %w", err)
	}
	defer func() {
		cancel()
		release()
	}()
	a.out.emit(event{name: "waiting", text: "present the phone to a reader"})
	for {
		var ev tokens.Event
		select {
		case e, ok := <-events:
			if !ok {
				return "", noPhone(ctx, wait)
			}
			ev = e
		case <-wctx.Done():
			return "", noPhone(ctx, wait)
		}
		if ev.Kind != tokens.Inserted {
			continue
		}
		if !isPhone(ev.Token) {
			// Only from a watch of the pairing's own: Run's loop
			// answers these itself (cardEvent).
			a.out.emit(notPhoneEvent(ev))
			continue
		}
		// Said before the phone is read: a pairing cancelled by then
		// (the greeter's Esc while it showed the wait) stops here.
		a.out.emit(pairPhoneEvent(ev))
		if ctx.Err() != nil {
			return "", errNoPhoneCancelled
		}
		pub, err := a.cfg.Cards.PublicKey(wctx, ev.Token)
		if err != nil {
			if ctx.Err() != nil {
				return "", errNoPhoneCancelled
			}
			return "", fmt.Errorf("pair: reading the phone's key: %w", err)
		}
		sign := func(ctx context.Context, msg []byte) ([]byte, error) {
			sig, err := a.cfg.Cards.Sign(ctx, ev.Token, msg)
			var se *nfc.StatusError
			switch {
			case errors.As(err, &se) && se.SW == nfc.SWWrongData:
				return nil, fmt.Errorf("the phone's app does not sign pairing transcripts (update it): %w", err)
			case errors.As(err, &se) && se.SW == nfc.SWSecurityNotSatisfied:
				return nil, fmt.Errorf("the pairing was declined on the phone: %w", err)
			case err != nil && errors.Is(context.Cause(ctx), errPhoneSignWait):
				return nil, fmt.Errorf("the phone did not sign within %s (was the pairing confirmed on the phone?): %w", phoneSignWait, err)
			}
			return sig, err
		}
		// Answered Error{unavailable}, the same Pair is sent again on its
		// connection (enroll): the phone need not sign again, nor be
		// held to the reader meanwhile. A connection that ends first
		// ends the pairing: a new one needs a new signature.
		tok, err := a.enroll(ctx, &pairTries{}, code, nfc.KindHCE, pub, label, ev.Token, sign)
		if err != nil && ctx.Err() != nil {
			// Not wrapped: a cancelled context is not a clean end here.
			return "", fmt.Errorf("%w while the phone was being enrolled: %v", errPairCancelled, err)
		}
		return tok, err
	}
}

// errPairCancelled is a phone pairing ended by its caller's context (a
// signal, the greeter's Esc), not by the wait for the phone. It does not
// match context.Canceled: the pair command says so and exits 1, as
// nothing was paired.
var errPairCancelled = errors.New("pair: pairing cancelled")

// errNoPhoneCancelled is a pairing cancelled before a phone was read:
// nothing was sent, so the code is still valid.
var errNoPhoneCancelled = fmt.Errorf("%w before a phone was read (the code is still valid)", errPairCancelled)

// noPhone is why a wait of wait for a phone ended without one: ctx was
// cancelled, or the wait elapsed.
func noPhone(ctx context.Context, wait time.Duration) error {
	if ctx.Err() != nil {
		return errNoPhoneCancelled
	}
	return fmt.Errorf("pair: no phone presented within %s", wait)
}

// watchPhones returns the card events a pairing waits on and the function
// that ends the wait (after ctx is cancelled). While Run watches the
// readers they come from its loop (the phones only); otherwise from a
// watch of the pairing's own, whose events are printed here.
func (a *agent) watchPhones(ctx context.Context) (<-chan tokens.Event, func(), error) {
	if a.cardsWatched.Load() {
		ch := make(chan tokens.Event, 8)
		select {
		case a.phoneReq <- ch:
		case <-a.stopped:
			return nil, nil, errors.New("agent stopped")
		case <-ctx.Done():
			return nil, nil, ctx.Err()
		}
		return ch, func() {
			select {
			case a.phoneReq <- nil:
			case <-a.stopped:
			}
		}, nil
	}
	events, err := a.cfg.Cards.Watch(ctx)
	if err != nil {
		return nil, nil, err
	}
	out := make(chan tokens.Event)
	done := make(chan struct{})
	go func() {
		defer close(done)
		defer close(out)
		for ev := range events {
			a.out.emit(cardEventOf(ev))
			select {
			case out <- ev:
			case <-ctx.Done():
			}
		}
	}()
	return out, func() {
		for range out { // drain until the provider closes it
		}
		<-done
	}, nil
}

// phoneSignWait bounds how long a phone may take to sign a pairing
// transcript: it may ask its user to confirm (HCE.md §3.3). The broker
// connection is pinged meanwhile.
const phoneSignWait = 30 * time.Second

// errPhoneSignWait is the cause of a phone's signing context cancelled
// after phoneSignWait.
var errPhoneSignWait = errors.New("pair: the phone's time to sign is up")

// signContext is the context a key of kind signs a pairing transcript
// within: a phone's ends phoneSignWait (on the agent's clock) from now,
// its cause errPhoneSignWait; the rest of the exchange keeps the agent's
// timeout (HCE.md §3.3). stop releases it.
func (a *agent) signContext(ctx context.Context, kind string) (sctx context.Context, stop func()) {
	if kind != nfc.KindHCE {
		return ctx, func() {}
	}
	sctx, cancel := context.WithCancelCause(ctx)
	t := a.clk.AfterFunc(phoneSignWait, func() { cancel(errPhoneSignWait) })
	return sctx, func() {
		t.Stop()
		cancel(nil)
	}
}

// checkCode refuses a pairing code no broker could accept (longer than
// proto.MaxPairCodeLen): nothing is generated, signed or sent for it.
func checkCode(code string) error {
	if n := len(strings.TrimSpace(code)); n > proto.MaxPairCodeLen {
		return fmt.Errorf("pair: the code is %d bytes; a pairing code is at most %d (as hotdeskctl token pair printed it)", n, proto.MaxPairCodeLen)
	}
	return nil
}

// enroll sends Pair to the home broker, signed with sign (the key of pub)
// over the connection's pairing transcript (PROTOCOL.md §8.4), and waits
// for its answer (within the agent's timeout; a phone's signature within
// phoneSignWait, before it). A Pair answered Error{unavailable} (not
// judged: §7.4) is sent again on the same connection, its signature still
// good for it, after tries.wait() and while tries.left(); each send has
// the agent's timeout for its answer.
func (a *agent) enroll(ctx context.Context, tries *pairTries, code, kind string, pub []byte, label, want string,
	sign func(ctx context.Context, msg []byte) ([]byte, error)) (string, error) {
	l, err := a.dial(ctx, a.home())
	if err != nil {
		return "", fmt.Errorf("pair: connect: %w", err)
	}
	defer l.close()
	a.out.emit(connectedEvent(l.welcome.ServerID, l.addr))

	wait := a.cfg.Timeout
	if kind == nfc.KindHCE {
		wait += phoneSignWait
	}
	wctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	deadline := time.AfterFunc(wait, func() { cancel(context.DeadlineExceeded) })
	defer deadline.Stop()
	stop := context.AfterFunc(wctx, func() { l.c.Close() })
	defer stop()
	code = strings.TrimSpace(code)
	msg, err := soft.PairMessage(a.cfg.TerminalID, l.welcome.ServerID, l.welcome.Nonce, code, kind, pub)
	if err != nil {
		return "", fmt.Errorf("pair: %w", err)
	}
	// A phone signs over NFC, and may ask its user to confirm; the broker
	// may answer the Pair late (its pairings queue behind one another, a
	// loaded server): both longer than the broker waits for a frame, so
	// the connection is pinged until the answer.
	stopPings := a.keepAlive(l)
	defer stopPings()
	sctx, stopSign := a.signContext(wctx, kind)
	sig, err := sign(sctx, msg)
	stopSign()
	if err != nil {
		return "", fmt.Errorf("pair: signing the pairing request: %w", err)
	}
	if err := ctx.Err(); err != nil {
		// Cancelled while the key signed: the code is not sent.
		return "", fmt.Errorf("pair: %w", err)
	}
	pair := &proto.Pair{Code: code, Kind: kind, PublicKey: pub, Label: label, Signature: sig}
	tries.sent++
	if err := l.c.Send(pair); err != nil {
		return "", fmt.Errorf("pair: %w", err)
	}
	var again clock.Timer // the same Pair, sent again
	defer func() {
		if again != nil {
			again.Stop()
		}
	}()
	for {
		m, err := l.c.Recv()
		if err != nil {
			if cause := context.Cause(wctx); cause != nil {
				err = cause
			}
			return "", fmt.Errorf("pair: waiting for the broker: %w: %w", errUnanswered, err)
		}
		switch b := m.Body.(type) {
		case *proto.Paired:
			if b.Token != want {
				return "", fmt.Errorf("pair: broker enrolled token %q; want %q", b.Token, want)
			}
			a.out.emit(pairedEvent(b))
			return b.Token, nil
		case *proto.Error:
			if b.Code != proto.ErrUnavailable || !tries.left() {
				a.out.emit(protoErrorEvent(b))
				return "", fmt.Errorf("pair: broker refused: %w", &proto.ProtocolError{Code: b.Code, Message: b.Message})
			}
			// Not an error yet: the event says it is sent again (a
			// greeter that saw an error would leave the pairing).
			after := tries.wait()
			tries.sent++
			a.out.emit(pairAgainEvent(b.Message, after))
			deadline.Reset(after + a.cfg.Timeout)
			// Pinged meanwhile (keepAlive); a Pair that cannot be sent
			// ends the connection, and its Recv.
			again = a.clk.AfterFunc(after, func() {
				if l.c.Send(pair) != nil {
					l.c.Close()
				}
			})
		case *proto.Ping:
			if err := l.c.Send(&proto.Pong{Seq: b.Seq}); err != nil {
				return "", fmt.Errorf("pair: %w", err)
			}
		default:
			a.log.Debug("ignoring message while pairing", "type", m.Type.String())
		}
	}
}

// pairAttempts bounds how often a pairing sends its Pair (on one
// connection or several), pairRetryWait the wait before the second (the
// third waits twice as long).
const (
	pairAttempts  = 3
	pairRetryWait = time.Second
)

// pairTries counts the Pairs a pairing has sent.
type pairTries struct{ sent int }

// left reports whether the pairing may send its Pair again.
func (p *pairTries) left() bool { return p.sent < pairAttempts }

// wait is how long to wait before sending it again.
func (p *pairTries) wait() time.Duration { return time.Duration(p.sent) * pairRetryWait }

// errUnanswered is a pairing whose connection ended after its Pair was
// sent, before the broker's answer.
var errUnanswered = errors.New("no answer after the pairing was sent")

// keepAlive sends l a Ping every ping interval of its broker until the
// returned function is called (and has returned).
func (a *agent) keepAlive(l *link) (stop func()) {
	var mu sync.Mutex
	stopped := false
	var seq uint64
	var timer clock.Timer
	var tick func()
	tick = func() {
		mu.Lock()
		defer mu.Unlock()
		if stopped {
			return
		}
		seq++
		_ = l.c.Send(&proto.Ping{Seq: seq})
		timer = a.clk.AfterFunc(l.welcome.PingEvery(), tick)
	}
	timer = a.clk.AfterFunc(l.welcome.PingEvery(), tick)
	return func() {
		mu.Lock()
		defer mu.Unlock()
		stopped = true
		timer.Stop()
	}
}
