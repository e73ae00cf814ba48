package main

import (
	"slices"
	"time"

	"github.com/hotdesk/hotdesk/proto"
	"github.com/hotdesk/hotdesk/tokens/soft"
)

// maxUnavailableRetries bounds how often one insertion is presented again
// after Error{unavailable} (broker not ready, owner unreachable, group
// full); then the error stands and the person tries again.
const maxUnavailableRetries = 8

// ownerRetry is how often a token whose owner did not answer a redirect is
// presented again, for the first ownerFastRetries times: about half the
// etcd lessor's expiry tick (500 ms), so that once the dead owner's lease
// expires the token is taken by another member within a fraction of a
// second. Each attempt is a TokenInserted on the connection the redirect
// came on and a refused (or timed out) dial: no new connection to a live
// broker. Later attempts back off to maxRedirectBackoff.
const (
	ownerRetry       = 200 * time.Millisecond
	ownerFastRetries = 30 // 6 s: a lease TTL of 5 s and the lessor's tick
)

// ownerRetryDelay is the wait before the redirFails-th attempt.
func (a *agent) ownerRetryDelay() time.Duration {
	if a.redirFails <= ownerFastRetries {
		return ownerRetry
	}
	return min(ownerRetry<<min(a.redirFails-ownerFastRetries, 8), maxRedirectBackoff)
}

// ownerUnreachable presents tok again on the current connection after
// about d (±20%), if it is still inserted then; removal cancels it.
func (a *agent) ownerUnreachable(tok string, d time.Duration) {
	if tok == "" || !a.inserted(tok) {
		return
	}
	d = jitter(d, maxRedirectBackoff)
	a.scheduleRepresent(tok, d)
	a.log.Debug("redirect target unreachable; presenting the token again", "token", tok, "in", d, "attempt", a.redirFails)
}

// retryState is the loop's record of tokens answered "unavailable".
type retryState struct {
	attempts map[string]int // token → retries so far for this insertion
	timers   map[string]interface{ Stop() bool }
	// gen counts each token's scheduled presentations and insertions: a
	// timer that fired after its token was pulled and put back (or after
	// another timer replaced it) is recognised as stale and ignored.
	gen map[string]uint64
}

// representation is a due presentation of a token, from a timer of
// generation gen; with a session, only while that session is shown here.
type representation struct {
	tok     string
	gen     uint64
	session string
}

// scheduleRepresent presents tok again after d, replacing any presentation
// of tok already scheduled.
func (a *agent) scheduleRepresent(tok string, d time.Duration) {
	a.scheduleRepresentFor(tok, "", d)
}

// scheduleRepresentFor is scheduleRepresent for a token whose session,
// if not "", must still be shown here when it is due (no Detached came).
func (a *agent) scheduleRepresentFor(tok, session string, d time.Duration) {
	r := &a.retries
	if r.attempts == nil {
		r.attempts = map[string]int{}
		r.timers = map[string]interface{ Stop() bool }{}
	}
	if r.gen == nil {
		r.gen = map[string]uint64{}
	}
	if t := r.timers[tok]; t != nil {
		t.Stop()
	}
	r.gen[tok]++
	due := representation{tok: tok, gen: r.gen[tok], session: session}
	r.timers[tok] = a.clk.AfterFunc(d, func() {
		select {
		case a.represent <- due:
		case <-a.stopped:
		}
	})
}

// unavailable handles Error{unavailable} for a token: if it is still
// inserted, present it again after a backoff (doubling from MinBackoff, at
// most maxRedirectBackoff), up to maxUnavailableRetries times.
func (a *agent) unavailable(e *proto.Error) {
	// rate_limited (the broker's queue was full) and stale_fence (an
	// outdated redirect; the next insert is a new lookup) are transient
	// the same way (PROTOCOL.md §7.5).
	// A lockout after failed logins is not: it lasts 30 s and more, and
	// every attempt meanwhile is refused, audited and counted again; the
	// person presents the card again when the greeter says so.
	transient := e.Code == proto.ErrUnavailable || e.Code == proto.ErrRateLimited || e.Code == proto.ErrStaleFence
	if !transient || e.Detail == proto.DetailLockedOut || e.Token == "" || !a.inserted(e.Token) {
		return
	}
	r := &a.retries
	if r.attempts == nil {
		r.attempts = map[string]int{}
		r.timers = map[string]interface{ Stop() bool }{}
	}
	n := r.attempts[e.Token]
	if n >= maxUnavailableRetries || r.timers[e.Token] != nil {
		return
	}
	r.attempts[e.Token] = n + 1
	d := min(a.cfg.MinBackoff<<min(n, 8), maxRedirectBackoff)
	tok := e.Token
	a.scheduleRepresent(tok, d)
	a.log.Debug("token unavailable; presenting it again", "token", tok, "in", d, "attempt", n+1)
}

// wrongPINPause is how long a refused PIN or password shows before the
// card still in its reader is presented again (a new prompt).
const wrongPINPause = 1500 * time.Millisecond

// wrongAnswer presents a token again, after wrongPINPause, when its login
// failed on an answer the person typed (a wrong PIN) and it is still
// inserted: the person types the PIN again without pulling the card, as at
// a cash machine. Nothing is presented again without a new answer (a
// prompt nobody answers, a refused proof), and a lockout after too many
// wrong answers ends it (rate_limited, which is not retried).
func (a *agent) wrongAnswer(e *proto.Error) {
	if e.Token == "" {
		return
	}
	// Any refusal of a token ends the login the answer was for (a card
	// pulled meanwhile, a broker going away): it counts for that one only.
	answered := a.answered
	a.answered = false
	if e.Code != proto.ErrAuthFailed || !answered || !a.inserted(e.Token) ||
		e.Detail == proto.DetailNoAnswer || e.Detail == proto.DetailLockoutStarted {
		return
	}
	if a.retries.timers[e.Token] != nil {
		return
	}
	a.scheduleRepresent(e.Token, wrongPINPause)
}

// representDue presents tok again if it is still inserted.
func (a *agent) representDue(due representation) {
	tok := due.tok
	if due.gen != a.retries.gen[tok] {
		return // replaced, or its token pulled since: not this timer's turn
	}
	delete(a.retries.timers, tok)
	if a.conn == nil || !a.inserted(tok) || (due.session != "" && a.session != due.session) {
		return
	}
	reader := soft.Reader
	if r, ok := a.cards[tok]; ok {
		reader = r
	}
	a.send(a.insertMsg(tok, reader))
}

// insertDone forgets the retries of tok (attached, or removed).
func (a *agent) insertDone(tok string) {
	if t := a.retries.timers[tok]; t != nil {
		t.Stop()
	}
	if a.retries.gen != nil {
		a.retries.gen[tok]++ // a timer that already fired is stale now
	}
	delete(a.retries.timers, tok)
	delete(a.retries.attempts, tok)
}

// inserted reports whether tok is at the terminal now.
func (a *agent) inserted(tok string) bool {
	if _, ok := a.cards[tok]; ok {
		return true
	}
	return slices.Contains(a.prov.Inserted(), tok)
}

// stopRetries stops every retry timer (the loop ends).
func (a *agent) stopRetries() {
	for _, t := range a.retries.timers {
		t.Stop()
	}
}
