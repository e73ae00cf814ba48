package main

import (
	"fmt"
	"time"
)

// A display client that ends by itself while its session is shown leaves
// the screen empty with the session still attached here: FreeRDP failed,
// or the compositor dropped the connection (weston 10 ended a peer that
// way about a second after activating it, on a loaded server, while it
// resized its output for the new terminal).
// The terminal then presents the session's token again, if it is still
// inserted: the broker answers the same terminal's token with Attached
// again and a new ticket (PROTOCOL.md §7.1; no PIN is asked), and a new
// client shows the session. At most maxDisplayLosses times a minute per
// session, after displayLossDelay doubled at each; then a display_failed
// error says so and the person presents the token again. The presentation
// is dropped if the session left the terminal meanwhile (a Detached: an
// administrator's disconnect closes the stream too, and is not undone).
const (
	maxDisplayLosses  = 3
	displayLossWindow = time.Minute
	displayLossDelay  = time.Second
)

// reportDisplayLost is the display's Lost: it hands session to the loop
// without waiting (a report that finds the buffer full is dropped: the
// loop has one for the session already).
func (a *agent) reportDisplayLost(session string) {
	select {
	case a.displayLost <- session:
	default:
	}
}

// displayEnded handles a client that ended while showing session.
func (a *agent) displayEnded(session string) {
	tok := a.sessionToken
	if session == "" || a.session != session || tok == "" || !a.inserted(tok) {
		return // no longer shown here, or its token is gone: nothing to bring back
	}
	now := a.clk.Now()
	kept := a.displayLosses[:0]
	for _, t := range a.displayLosses {
		if now.Sub(t) < displayLossWindow {
			kept = append(kept, t)
		}
	}
	a.displayLosses = kept
	if len(kept) >= maxDisplayLosses {
		a.out.emit(errorEvent(0, errDisplay, fmt.Sprintf(
			"the display client of session %s ended %d times within %s; present the token again", session, len(kept)+1, displayLossWindow)))
		return
	}
	d := displayLossDelay << len(kept)
	a.displayLosses = append(a.displayLosses, now)
	a.scheduleRepresentFor(tok, session, d)
	a.out.emit(displayLostEvent(session, len(a.displayLosses), d))
}

func displayLostEvent(session string, attempt int, again time.Duration) event {
	return event{name: "display_lost",
		fields: []field{{"session", session}, {"attempt", attempt}},
		text:   fmt.Sprintf("display of session %s lost; presenting the token again in %s", clean(session), again)}
}
