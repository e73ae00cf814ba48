package main

import (
	"fmt"
	"sort"
	"strings"
	"time"
)

// Row is the checker's verdict on one period of the run: the fault-free
// baseline before the first fault, or one fault with the quiet period after
// it. It is printed as one JSON line.
type Row struct {
	Fault  string  `json:"fault"`
	Target string  `json:"target,omitempty"`
	AtS    float64 `json:"at_s"`
	// RecoveryMs: fault injected → group working again; -1 if it never was.
	RecoveryMs int64 `json:"recovery_ms"`
	Ops        int   `json:"ops"`
	// FailedOps: operations overlapping the fault window [injected, recovered].
	FailedOps int `json:"failed_ops"`
	// FailedOpsOutsideFault: failed operations entirely in the quiet
	// period after the window (or in the baseline).
	FailedOpsOutsideFault int `json:"failed_ops_outside_fault"`
	// DoubleAttached: pairs of terminals that showed one token or session
	// at the same time for longer than the takeover window.
	DoubleAttached int   `json:"double_attached"`
	MaxDoubleMs    int64 `json:"max_double_ms"`
	// SessionsLost: sessions whose token led to a new session while they
	// were neither ended with a reason (Detached destroyed), nor listed as
	// orphaned, nor shown again later (an orphan given back).
	SessionsLost     int `json:"sessions_lost"`
	SessionsOrphaned int `json:"sessions_orphaned"`
	// OrphansRestored: sessions another one had replaced that their
	// token later led back to (orphans given back once the token had no
	// session any more).
	OrphansRestored int `json:"orphans_restored"`
	// AttachedUnclaimed: Attached messages from a broker that did not hold
	// the token's claim in etcd around that time (± ClaimGrace).
	AttachedUnclaimed int `json:"attached_unclaimed"`
	// AdminViolations: an administrator's action not honoured (checkAdmin):
	// a killed session shown again, a killed, disconnected or locked one
	// still shown, a disabled token attached or still shown, a new session
	// placed on a drained server.
	AdminViolations int      `json:"admin_violations"`
	Violations      []string `json:"violations,omitempty"`
}

// Violated reports whether the row breaks an invariant.
func (r Row) Violated() bool { return len(r.Violations) > 0 }

// checkConfig holds the checker's bounds.
type checkConfig struct {
	// TakeoverWindow is how long two terminals may both show a token or a
	// session: a takeover's Detached to the old terminal and Attached to
	// the new one are sent together but travel on different connections.
	TakeoverWindow time.Duration
	// ClaimGrace allows for the delay of the harness's etcd watch when an
	// Attached is matched with the claim history.
	ClaimGrace time.Duration
	// DrainGrace is how long after a drain's answer a new session may
	// still be placed on the drained server (the other brokers learn of it
	// through their watch of the registry).
	DrainGrace time.Duration
	// DisableGrace is how long after a token's disable was answered its
	// session may still be shown or attached: the brokers learn of it
	// through their watch of the registry, and one cut off from etcd
	// stops showing sessions when its lease's safe window ends.
	DisableGrace time.Duration
}

// interval is one stretch of a terminal showing a session: from Attached
// to Detached, the connection's end, or the next Attached at that terminal
// (a terminal shows one session).
type interval struct {
	term, token, session, server string
	conn                         int64
	from, to                     time.Duration
}

// period is the part of the run a row covers.
type period struct {
	row      *Row
	from, to time.Duration // [from, to)
	// fault window [wFrom, wTo]; empty for the baseline.
	wFrom, wTo time.Duration
	isFault    bool
}

// check judges a history: one row for the baseline and one per fault.
func check(h History, cfg checkConfig) []Row {
	faults := append([]Fault(nil), h.Faults...)
	sort.Slice(faults, func(i, j int) bool { return faults[i].Start < faults[j].Start })
	var periods []*period
	baseEnd := h.End
	if len(faults) > 0 {
		baseEnd = faults[0].Start
	}
	periods = append(periods, &period{row: &Row{Fault: "baseline", AtS: secs(h.Begin)}, from: h.Begin, to: baseEnd})
	for i, f := range faults {
		end := h.End
		if i+1 < len(faults) {
			end = faults[i+1].Start
		}
		p := &period{row: &Row{Fault: f.Name, Target: f.Target, AtS: secs(f.Start)}, from: f.Start, to: end,
			wFrom: f.Start, wTo: f.Recovered, isFault: true}
		if f.Recovered == 0 {
			p.row.RecoveryMs = -1
			p.wTo = end
			p.row.Violations = append(p.row.Violations, fmt.Sprintf("%s (%s) at %.1fs: the group did not recover (healed at %.1fs)",
				f.Name, f.Target, secs(f.Start), secs(f.Healed)))
		} else {
			p.row.RecoveryMs = (f.Recovered - f.Start).Milliseconds()
		}
		periods = append(periods, p)
	}
	at := func(t time.Duration) *period {
		for i := len(periods) - 1; i >= 0; i-- {
			if t >= periods[i].from {
				return periods[i]
			}
		}
		return periods[0]
	}
	events := append([]Event(nil), h.Events...)
	sort.SliceStable(events, func(i, j int) bool { return events[i].At < events[j].At })

	// (c) operations.
	for _, o := range h.Ops {
		if o.Probe {
			continue
		}
		p := at(o.Start)
		p.row.Ops++
		if o.OK {
			continue
		}
		inWindow := false
		for _, q := range periods {
			if q.isFault && o.Start <= q.wTo && o.End >= q.wFrom {
				inWindow = true
				q.row.FailedOps++
				break
			}
		}
		if !inWindow {
			p.row.FailedOpsOutsideFault++
			what := o.Token
			if what == "" {
				what = o.Server // a drain or undrain
			}
			p.row.Violations = append(p.row.Violations, fmt.Sprintf("failed %s of %s at %s outside a fault window (%.2f–%.2fs): %s; the terminal saw: %s",
				o.Kind, what, o.Term, secs(o.Start), secs(o.End), o.Err, seen(events, o.Term, o.Start, o.End)))
		}
	}

	// (a) double attachment.
	ivs := intervals(events, h.End)
	byKey := map[string][]interval{}
	for _, iv := range ivs {
		byKey["token "+iv.token] = append(byKey["token "+iv.token], iv)
		if iv.session != "" {
			byKey["session "+iv.session] = append(byKey["session "+iv.session], iv)
		}
	}
	keys := make([]string, 0, len(byKey))
	for k := range byKey {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	type pairKey struct{ a, b string }
	counted := map[pairKey]bool{}
	for _, k := range keys {
		list := byKey[k]
		for i := range list {
			for j := i + 1; j < len(list); j++ {
				a, b := list[i], list[j]
				if a.term == b.term {
					continue
				}
				from, to := max(a.from, b.from), min(a.to, b.to)
				if to-from <= cfg.TakeoverWindow {
					continue
				}
				id := pairKey{fmt.Sprintf("%s/%d/%d", a.term, a.conn, a.from), fmt.Sprintf("%s/%d/%d", b.term, b.conn, b.from)}
				if counted[id] {
					continue // the same pair shares token and session
				}
				counted[id] = true
				p := at(from)
				p.row.DoubleAttached++
				p.row.MaxDoubleMs = max(p.row.MaxDoubleMs, (to - from).Milliseconds())
				p.row.Violations = append(p.row.Violations, fmt.Sprintf(
					"%s shown at two terminals for %dms (window %dms): %s session %s via %s %.2f–%.2fs and %s session %s via %s %.2f–%.2fs; %s saw: %s; %s saw: %s",
					k, (to-from).Milliseconds(), cfg.TakeoverWindow.Milliseconds(),
					a.term, a.session, a.server, secs(a.from), secs(a.to), b.term, b.session, b.server, secs(b.from), secs(b.to),
					a.term, seen(events, a.term, from, to+time.Second), b.term, seen(events, b.term, from-time.Second, to+time.Second)))
			}
		}
	}

	// (b) sessions lost silently.
	ended := map[string]bool{}
	for _, e := range events {
		if e.Kind == KindDetached && endsSession(e.Reason) {
			ended[e.Session] = true
		}
	}
	for _, o := range h.Ops {
		if o.Kind == "kill" {
			ended[o.Session] = true // a failed kill may have ended it too
		}
	}
	orphaned := map[string]bool{}
	for _, o := range h.Orphans {
		orphaned[o.Session] = true
	}
	lastShown := map[string]time.Duration{} // session → its last Attached
	for _, e := range events {
		if e.Kind == KindAttached && e.Session != "" {
			lastShown[e.Session] = e.At
		}
	}
	last := map[string]Event{} // token → its last Attached
	judged, replaced := map[string]bool{}, map[string]bool{}
	for _, e := range events {
		if e.Kind != KindAttached || e.Session == "" {
			continue
		}
		prev, ok := last[e.Token]
		last[e.Token] = e
		if !ok || prev.Session == e.Session {
			continue
		}
		if replaced[e.Session] {
			// The token back at a session another one replaced: an
			// orphan given back.
			at(e.At).row.OrphansRestored++
		}
		replaced[prev.Session] = true
		if judged[prev.Session] {
			continue
		}
		judged[prev.Session] = true
		p := at(e.At)
		switch {
		case ended[prev.Session]:
		case orphaned[prev.Session] || lastShown[prev.Session] > e.At:
			// Kept: listed as an orphan, or shown again later (given
			// back before any listing saw it orphaned).
			p.row.SessionsOrphaned++
		default:
			p.row.SessionsLost++
			p.row.Violations = append(p.row.Violations, fmt.Sprintf(
				"session %s of %s (on %s, last attached at %s %.2fs) replaced by new session %s on %s at %s %.2fs without being ended or listed as orphaned; registry: %s",
				prev.Session, e.Token, prev.Server, prev.Term, secs(prev.At), e.Session, e.Server, e.Term, secs(e.At),
				claimStory(h.Claims, prev.At, e.At, e.Token)))
		}
	}

	// The registry's side: an Attached needs the broker's claim.
	claims := map[string][]ClaimEvent{}
	if len(h.Claims) > 0 {
		cs := append([]ClaimEvent(nil), h.Claims...)
		sort.SliceStable(cs, func(i, j int) bool { return cs[i].Rev < cs[j].Rev })
		for _, c := range cs {
			claims[c.Token] = append(claims[c.Token], c)
		}
		for _, e := range events {
			if e.Kind != KindAttached || heldBy(claims[e.Token], e.Server, e.At, cfg.ClaimGrace, h.End) {
				continue
			}
			p := at(e.At)
			p.row.AttachedUnclaimed++
			p.row.Violations = append(p.row.Violations, fmt.Sprintf(
				"%s attached %s session %s at %.2fs while %s held no claim of it (±%dms); registry: %s",
				e.Server, e.Term, e.Session, secs(e.At), e.Server, cfg.ClaimGrace.Milliseconds(),
				claimStory(claims[e.Token], e.At-5*time.Second, e.At+cfg.ClaimGrace)))
		}
	}

	for _, v := range checkAdmin(h.Ops, events, ivs, cfg) {
		p := at(v.at)
		p.row.AdminViolations++
		p.row.Violations = append(p.row.Violations, v.what)
	}

	rows := make([]Row, len(periods))
	for i, p := range periods {
		rows[i] = *p.row
	}
	return rows
}

// heldBy reports whether server may have held the claim (cs: one token's
// claim events in revision order) at some moment of [t-grace, t+grace]. A
// claim may have started as early as its At and lasted until the next
// change was received: the watch's delays never make a violation.
func heldBy(cs []ClaimEvent, server string, t, grace, end time.Duration) bool {
	for i, c := range cs {
		to := end
		if i+1 < len(cs) {
			to = cs[i+1].Received
			if to == 0 {
				to = cs[i+1].At
			}
		}
		if !c.Deleted && c.Server == server && c.At <= t+grace && to >= t-grace {
			return true
		}
	}
	return false
}

// claimStory tells the claim changes between from and to (of token only,
// if given), the first 8 of them (story).
func claimStory(cs []ClaimEvent, from, to time.Duration, token ...string) string {
	var parts []string
	var last ClaimEvent
	for _, c := range cs {
		if c.At < from || c.At > to || (len(token) > 0 && c.Token != token[0]) {
			continue
		}
		if len(parts) > 0 && !c.Deleted && !last.Deleted && c.Server == last.Server && c.Session == last.Session {
			continue // an update of the same claim
		}
		last = c
		what := "claimed by"
		if c.Deleted {
			what = "deleted, was"
		}
		parts = append(parts, fmt.Sprintf("rev %d %.2fs %s %s %s", c.Rev, secs(c.At), what, c.Server, c.Session))
	}
	return story(parts, "no claim changes")
}

// endsSession reports whether a Detached reason ends the session (PROTOCOL.md
// §5: destroyed, and unknown reasons treated like it).
func endsSession(reason string) bool {
	switch reason {
	case "token_removed", "takeover", "shutdown", "admin", "locked":
		return false
	}
	return true
}

// intervals turns terminal events into the stretches each terminal showed
// a session. Intervals still open at end run to end.
func intervals(events []Event, end time.Duration) []interval {
	open := map[string]*interval{}
	var out []interval
	closeAt := func(term string, t time.Duration) {
		if iv := open[term]; iv != nil {
			iv.to = t
			out = append(out, *iv)
			delete(open, term)
		}
	}
	for _, e := range events {
		iv := open[e.Term]
		switch e.Kind {
		case KindAttached:
			closeAt(e.Term, e.At)
			open[e.Term] = &interval{term: e.Term, token: e.Token, session: e.Session, server: e.Server, conn: e.Conn, from: e.At}
		case KindDetached:
			if iv != nil && iv.session == e.Session {
				closeAt(e.Term, e.At)
			}
		case KindDisconnected:
			if iv != nil && iv.conn == e.Conn {
				closeAt(e.Term, e.At)
			}
		}
	}
	terms := make([]string, 0, len(open))
	for t := range open {
		terms = append(terms, t)
	}
	sort.Strings(terms)
	for _, t := range terms {
		closeAt(t, end)
	}
	return out
}

// seen summarises what term saw between from and to, the first 8 events
// (story).
func seen(events []Event, term string, from, to time.Duration) string {
	var parts []string
	for _, e := range events {
		if e.Term != term || e.At < from || e.At > to {
			continue
		}
		s := fmt.Sprintf("%.2fs %s", secs(e.At), e.Kind)
		if e.Server != "" {
			s += " " + e.Server
		}
		if e.Reason != "" {
			s += " " + e.Reason
		}
		if e.Detail != "" {
			s += " (" + e.Detail + ")"
		}
		parts = append(parts, s)
	}
	return story(parts, "nothing")
}

// story joins the parts of a violation's explanation, the first 8 and "…"
// if there are more; none stands for no parts.
func story(parts []string, none string) string {
	const most = 8
	if len(parts) == 0 {
		return none
	}
	if len(parts) > most {
		parts = append(parts[:most], "…")
	}
	return strings.Join(parts, "; ")
}

func secs(d time.Duration) float64 { return float64(d.Milliseconds()) / 1000 }
