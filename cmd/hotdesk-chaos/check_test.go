package main

import (
	"strings"
	"testing"
	"time"
)

func s(x float64) time.Duration { return time.Duration(x * float64(time.Second)) }

func attached(at float64, term string, conn int64, token, session, server string) Event {
	return Event{At: s(at), Kind: KindAttached, Term: term, Conn: conn, Token: token, Session: session, Server: server}
}

func detached(at float64, term string, conn int64, session, reason string) Event {
	return Event{At: s(at), Kind: KindDetached, Term: term, Conn: conn, Session: session, Reason: reason}
}

func disconnected(at float64, term string, conn int64) Event {
	return Event{At: s(at), Kind: KindDisconnected, Term: term, Conn: conn}
}

func op(kind, term, token string, from, to float64, ok bool) Op {
	o := Op{Kind: kind, Term: term, Token: token, Start: s(from), End: s(to), OK: ok}
	if !ok {
		o.Err = "unavailable: no lease"
	}
	return o
}

// oneFault is a run with a baseline [1s, 10s), a fault injected at 10 s,
// recovered at 15 s, quiet until the end at 30 s.
func oneFault() History {
	return History{Begin: s(1), End: s(30), Faults: []Fault{{Name: "broker_kill9", Target: "b1", Start: s(10), Healed: s(11), Recovered: s(15)}}}
}

var cfg = checkConfig{TakeoverWindow: time.Second}

func rowsByFault(t *testing.T, rows []Row) (base, fault Row) {
	t.Helper()
	if len(rows) != 2 || rows[0].Fault != "baseline" || rows[1].Fault != "broker_kill9" {
		t.Fatalf("rows = %+v; want baseline and broker_kill9", rows)
	}
	return rows[0], rows[1]
}

// faultRow checks oneFault with events and returns the fault's row.
func faultRow(t *testing.T, events ...Event) Row {
	t.Helper()
	h := oneFault()
	h.Events = events
	_, f := rowsByFault(t, check(h, cfg))
	return f
}

func TestCheckCleanHistory(t *testing.T) {
	h := oneFault()
	h.Events = []Event{
		attached(2, "term-1", 1, "soft.a", "s-1", "b1"),
		detached(3, "term-1", 1, "s-1", "token_removed"),
		attached(4, "term-2", 2, "soft.a", "s-1", "b1"),
		// A takeover: the new terminal's Attached arrives 200 ms before the
		// old one's Detached, inside the window.
		attached(20, "term-3", 3, "soft.a", "s-1", "b1"),
		detached(20.2, "term-2", 2, "s-1", "takeover"),
	}
	h.Ops = []Op{op("insert", "term-1", "soft.a", 1.9, 2, true), op("remove", "term-1", "soft.a", 2.9, 3, true),
		op("insert", "term-2", "soft.a", 12, 13, false), op("takeover", "term-3", "soft.a", 19.9, 20, true),
		{Kind: "probe", Start: s(25), End: s(26), Probe: true}}
	base, f := rowsByFault(t, check(h, cfg))
	if base.Violated() || f.Violated() {
		t.Fatalf("violations in a clean history: %v %v", base.Violations, f.Violations)
	}
	if base.Ops != 2 || f.Ops != 2 || f.FailedOps != 1 || f.FailedOpsOutsideFault != 0 {
		t.Errorf("ops: baseline %d, fault %d failed %d outside %d; want 2, 2, 1, 0", base.Ops, f.Ops, f.FailedOps, f.FailedOpsOutsideFault)
	}
	if f.RecoveryMs != 5000 {
		t.Errorf("recovery_ms = %d; want 5000", f.RecoveryMs)
	}
}

func TestCheckDoubleAttachment(t *testing.T) {
	f := faultRow(t,
		attached(2, "term-1", 1, "soft.a", "s-1", "b1"),
		// The broker of term-1 is cut off at 10 s and keeps it attached;
		// another broker creates a session for the same token at 13 s.
		attached(13, "term-2", 2, "soft.a", "s-2", "b2"),
		detached(16.5, "term-1", 1, "s-1", "locked"),
	)
	if f.DoubleAttached != 1 || f.MaxDoubleMs != 3500 {
		t.Fatalf("double_attached = %d, max %d ms; want 1, 3500 ms (violations %v)", f.DoubleAttached, f.MaxDoubleMs, f.Violations)
	}
	if !strings.Contains(strings.Join(f.Violations, "\n"), "token soft.a shown at two terminals") {
		t.Errorf("violations = %v; want the token's double attachment described", f.Violations)
	}
}

func TestCheckDoubleAttachmentOfSession(t *testing.T) {
	// One session at two terminals through two tokens (aliases), never
	// detached at the first: it counts once, as a session.
	f := faultRow(t,
		attached(11, "term-1", 1, "soft.a", "s-1", "b1"),
		attached(12, "term-2", 2, "soft.b", "s-1", "b1"),
	)
	if f.DoubleAttached != 1 {
		t.Fatalf("double_attached = %d; want 1 (%v)", f.DoubleAttached, f.Violations)
	}
}

func TestCheckAttachmentEndsWithItsConnection(t *testing.T) {
	events := []Event{
		attached(2, "term-1", 7, "soft.a", "s-1", "b1"),
		disconnected(3, "term-1", 6), // an older connection: changes nothing
		disconnected(11, "term-1", 7),
		attached(12, "term-2", 8, "soft.a", "s-1", "b2"),
	}
	f := faultRow(t, events...)
	if f.DoubleAttached != 0 {
		t.Fatalf("double_attached = %d; want 0 (%v)", f.DoubleAttached, f.Violations)
	}
	events[2].Conn = 6 // the attaching connection never closes
	f = faultRow(t, events...)
	if f.DoubleAttached != 1 {
		t.Fatalf("double_attached = %d; want 1 (%v)", f.DoubleAttached, f.Violations)
	}
}

// TestCheckOrphanRestored: a token led back to a session a newer one had
// replaced (an orphan given back once the newer one ended) is a restore;
// the replaced session was kept, not lost, whether or not a listing saw
// it orphaned before it was given back.
func TestCheckOrphanRestored(t *testing.T) {
	for _, tc := range []struct {
		name    string
		orphans []Orphan
	}{
		{"listed", []Orphan{{At: s(18), Server: "b1", Session: "s-1", Token: "soft.a", Owner: "b2"}}},
		{"given back before any listing", nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := oneFault()
			h.Events = []Event{
				attached(2, "term-1", 1, "soft.a", "s-1", "b1"),
				detached(3, "term-1", 1, "s-1", "token_removed"),
				attached(16, "term-2", 2, "soft.a", "s-2", "b2"),
				detached(20, "term-2", 2, "s-2", "destroyed"),
				attached(22, "term-3", 3, "soft.a", "s-1", "b1"),
			}
			h.Orphans = tc.orphans
			_, f := rowsByFault(t, check(h, cfg))
			if f.OrphansRestored != 1 || f.SessionsOrphaned != 1 || f.SessionsLost != 0 || f.Violated() {
				t.Errorf("restored %d orphaned %d lost %d; want 1 1 0 (%v)", f.OrphansRestored, f.SessionsOrphaned, f.SessionsLost, f.Violations)
			}
		})
	}
}

func TestCheckLostSession(t *testing.T) {
	base := []Event{
		attached(2, "term-1", 1, "soft.a", "s-1", "b1"),
		detached(3, "term-1", 1, "s-1", "token_removed"),
		// After the fault the token leads to a new, empty session.
		attached(16, "term-2", 2, "soft.a", "s-2", "b2"),
	}
	for _, tc := range []struct {
		name           string
		extra          []Event
		orphans        []Orphan
		lost, orphaned int
	}{
		{name: "silently replaced", lost: 1},
		{name: "ended with a reason", extra: []Event{detached(12, "term-1", 1, "s-1", "destroyed")}},
		{name: "unknown reason ends it", extra: []Event{detached(12, "term-1", 1, "s-1", "reason(9)")}},
		{name: "locked is no end", extra: []Event{detached(12, "term-1", 1, "s-1", "locked")}, lost: 1},
		{name: "listed as orphaned", orphans: []Orphan{{At: s(18), Server: "b1", Session: "s-1", Token: "soft.a", Owner: "b2"}}, orphaned: 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := oneFault()
			h.Events = append(append([]Event(nil), base...), tc.extra...)
			h.Orphans = tc.orphans
			_, f := rowsByFault(t, check(h, cfg))
			if f.SessionsLost != tc.lost || f.SessionsOrphaned != tc.orphaned {
				t.Errorf("lost %d orphaned %d; want %d %d (%v)", f.SessionsLost, f.SessionsOrphaned, tc.lost, tc.orphaned, f.Violations)
			}
			if f.Violated() != (tc.lost > 0) {
				t.Errorf("violated = %v; want %v", f.Violated(), tc.lost > 0)
			}
		})
	}
}

func TestCheckFailedOpOutsideFault(t *testing.T) {
	for _, tc := range []struct {
		name                   string
		from, to               float64
		inFault, outside, base int
	}{
		{name: "in the window", from: 12, to: 13, inFault: 1},
		{name: "straddling the injection", from: 9.5, to: 10.5, inFault: 1},
		{name: "straddling the recovery", from: 14.9, to: 16, inFault: 1},
		{name: "in the quiet period", from: 20, to: 21, outside: 1},
		{name: "in the baseline", from: 5, to: 6, base: 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := oneFault()
			h.Events = []Event{{At: s(tc.from + 0.1), Kind: KindError, Term: "term-1", Token: "soft.a", Reason: "too_many_hops"}}
			h.Ops = []Op{op("insert", "term-1", "soft.a", tc.from, tc.to, false)}
			b, f := rowsByFault(t, check(h, cfg))
			if f.FailedOps != tc.inFault || f.FailedOpsOutsideFault != tc.outside || b.FailedOpsOutsideFault != tc.base {
				t.Fatalf("fault: failed %d outside %d, baseline outside %d; want %d %d %d",
					f.FailedOps, f.FailedOpsOutsideFault, b.FailedOpsOutsideFault, tc.inFault, tc.outside, tc.base)
			}
			violated := f.Violated() || b.Violated()
			if violated != (tc.outside+tc.base > 0) {
				t.Errorf("violated = %v; want %v", violated, tc.outside+tc.base > 0)
			}
			if tc.outside > 0 && !strings.Contains(f.Violations[0], "too_many_hops") {
				t.Errorf("violation %q does not say what the terminal saw", f.Violations[0])
			}
		})
	}
}

func TestCheckNoRecovery(t *testing.T) {
	h := oneFault()
	h.Faults[0].Recovered = 0
	h.Ops = []Op{op("insert", "term-1", "soft.a", 25, 26, false)}
	_, f := rowsByFault(t, check(h, cfg))
	if f.RecoveryMs != -1 || !f.Violated() {
		t.Fatalf("recovery_ms = %d, violations %v; want -1 and a violation", f.RecoveryMs, f.Violations)
	}
	// Without a recovery the whole period is the fault window.
	if f.FailedOps != 1 || f.FailedOpsOutsideFault != 0 {
		t.Errorf("failed %d outside %d; want 1, 0", f.FailedOps, f.FailedOpsOutsideFault)
	}
}

func TestCheckAttachedWithoutClaim(t *testing.T) {
	claims := []ClaimEvent{
		{At: s(2), Rev: 5, Token: "soft.a", Server: "b1", Session: "s-1"},
		// The lease of b1 is revoked at 12 s: its claim is deleted.
		{At: s(12), Rev: 9, Token: "soft.a", Server: "b1", Session: "s-1", Deleted: true},
		{At: s(20), Rev: 12, Token: "soft.a", Server: "b1", Session: "s-1"},
	}
	ccfg := checkConfig{TakeoverWindow: time.Second, ClaimGrace: 2 * time.Second}
	for _, tc := range []struct {
		name      string
		at        float64
		server    string
		unclaimed int
		story     string
	}{
		{name: "claim held", at: 4, server: "b1"},
		{name: "within the grace of the deletion", at: 13.5, server: "b1"},
		{name: "claim gone", at: 15, server: "b1", unclaimed: 1, story: "rev 9"},
		{name: "within the grace of the re-claim", at: 18.5, server: "b1"},
		{name: "another broker's claim", at: 4, server: "b2", unclaimed: 1, story: "rev 5"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := oneFault()
			h.Claims = claims
			h.Events = []Event{attached(tc.at, "term-1", 1, "soft.a", "s-1", tc.server)}
			b, f := rowsByFault(t, check(h, ccfg))
			if got := b.AttachedUnclaimed + f.AttachedUnclaimed; got != tc.unclaimed {
				t.Fatalf("attached_unclaimed = %d; want %d (%v %v)", got, tc.unclaimed, b.Violations, f.Violations)
			}
			if tc.unclaimed > 0 && !strings.Contains(strings.Join(append(b.Violations, f.Violations...), "\n"), tc.story) {
				t.Errorf("violations %v do not tell the registry's story", append(b.Violations, f.Violations...))
			}
		})
	}
}

// A watch that lagged (its etcd member was killed) received b1's deletion
// and b2's claim late; b2 attached in between. b2's claim is stamped by its
// writer before the Attached: no violation.
func TestCheckClaimsFromALaggingWatch(t *testing.T) {
	h := oneFault()
	h.Claims = []ClaimEvent{
		{At: s(2), Received: s(2), Rev: 5, Token: "soft.a", Server: "b1", Session: "s-1"},
		{At: s(16), Received: s(16), Rev: 9, Token: "soft.a", Server: "b1", Session: "s-1", Deleted: true},
		{At: s(10.5), Received: s(16), Rev: 10, Token: "soft.a", Server: "b2", Session: "s-2"},
	}
	h.Events = []Event{
		attached(4, "term-1", 1, "soft.a", "s-1", "b1"),
		attached(11, "term-2", 2, "soft.a", "s-2", "b2"),
	}
	b, f := rowsByFault(t, check(h, checkConfig{TakeoverWindow: time.Second, ClaimGrace: 2 * time.Second}))
	if b.AttachedUnclaimed+f.AttachedUnclaimed != 0 {
		t.Fatalf("attached_unclaimed = %d; want 0 (%v)", b.AttachedUnclaimed+f.AttachedUnclaimed, f.Violations)
	}
}

// TestCheckAdmin: an administrator's kill, disconnect or lock must be
// honoured (the session no longer shown a window after the answer; a
// killed one never again) and a drained server takes no new session; the
// same actions honoured, and a session created before the drain or after
// the undrain, are not violations.
func TestCheckAdmin(t *testing.T) {
	admin := func(kind, token, session string, from, to float64) Op {
		o := op(kind, "admin@b2", token, from, to, true)
		o.Session = session
		return o
	}
	drain := func(kind, server string, from, to float64) Op {
		o := op(kind, "admin@b3", "", from, to, true)
		o.Server = server
		return o
	}
	ins := func(term, token, session string, from, to float64) Op {
		o := op("insert", term, token, from, to, true)
		o.Session = session
		return o
	}
	for _, c := range []struct {
		name   string
		events []Event
		ops    []Op
		want   string // "" for no violation
	}{
		{"kill honoured", []Event{
			attached(2, "term-1", 1, "soft.a", "s-1", "b1"),
			detached(3.1, "term-1", 1, "s-1", "destroyed"),
			attached(5, "term-1", 1, "soft.a", "s-2", "b1"),
		}, []Op{ins("term-1", "soft.a", "s-1", 1.9, 2), admin("kill", "soft.a", "s-1", 3, 3.2), ins("term-1", "soft.a", "s-2", 4.9, 5)}, ""},
		{"killed session attached again", []Event{
			attached(2, "term-1", 1, "soft.a", "s-1", "b1"),
			detached(3.1, "term-1", 1, "s-1", "destroyed"),
			attached(5, "term-2", 2, "soft.a", "s-1", "b1"),
		}, []Op{admin("kill", "soft.a", "s-1", 3, 3.2)}, "killed (admin@b2, answered at 3.20s) attached again at term-2"},
		{"kill not shown to the terminal", []Event{
			attached(2, "term-1", 1, "soft.a", "s-1", "b1"),
			detached(6, "term-1", 1, "s-1", "destroyed"),
		}, []Op{admin("kill", "soft.a", "s-1", 3, 3.2)}, "still shown at term-1 until 6.00s after the administrator's kill"},
		{"disconnect honoured, then resumed", []Event{
			attached(2, "term-1", 1, "soft.a", "s-1", "b1"),
			detached(3.5, "term-1", 1, "s-1", "admin"),
			attached(5, "term-2", 2, "soft.a", "s-1", "b1"),
		}, []Op{admin("disconnect", "soft.a", "s-1", 3, 3.2)}, ""},
		{"lock ignored", []Event{
			attached(2, "term-1", 1, "soft.a", "s-1", "b1"),
		}, []Op{admin("lock", "soft.a", "s-1", 3, 3.2)}, "still shown at term-1 until 30.00s after the administrator's lock"},
		{"drain honoured", []Event{
			attached(2, "term-1", 1, "soft.a", "s-1", "b2"), // before the drain
			detached(2.5, "term-1", 1, "s-1", "token_removed"),
			attached(6, "term-2", 2, "soft.b", "s-2", "b1"), // placed elsewhere
			attached(7, "term-3", 3, "soft.a", "s-1", "b2"), // resumed on the drained server
			attached(9, "term-4", 4, "soft.c", "s-3", "b2"), // after the undrain
		}, []Op{ins("term-1", "soft.a", "s-1", 1.9, 2), drain("drain", "b2", 3, 3.1),
			ins("term-2", "soft.b", "s-2", 5.9, 6), ins("term-3", "soft.a", "s-1", 6.9, 7),
			drain("undrain", "b2", 8, 8.1), ins("term-4", "soft.c", "s-3", 8.9, 9)}, ""},
		{"new session on a drained server", []Event{
			attached(6, "term-2", 2, "soft.b", "s-2", "b2"),
		}, []Op{drain("drain", "b2", 3, 3.1), ins("term-2", "soft.b", "s-2", 5.9, 6), drain("undrain", "b2", 8, 8.1)},
			"new session s-2 of soft.b placed on b2, attached at term-2 6.00s (insert begun at 5.90s), while b2 was drained (from 3.10s)"},
		{"an insert that outlasted the drain", []Event{
			attached(8.5, "term-2", 2, "soft.b", "s-2", "b2"),
		}, []Op{drain("drain", "b2", 3, 3.1), ins("term-2", "soft.b", "s-2", 5.9, 8.5), drain("undrain", "b2", 8, 8.1)}, ""},
		{"a drain never undone", []Event{
			attached(6, "term-2", 2, "soft.b", "s-2", "b2"),
		}, []Op{drain("drain", "b2", 3, 3.1), drain("undrain", "b1", 4, 4.1), ins("term-2", "soft.b", "s-2", 5.9, 6)},
			"placed on b2"},
		{"disable honoured", []Event{
			attached(2, "term-1", 1, "soft.a", "s-1", "b1"),
			detached(3.05, "term-1", 1, "s-1", "locked"),
			attached(9, "term-2", 2, "soft.a", "s-1", "b1"), // after the enable
		}, []Op{admin("disable", "soft.a", "", 2.9, 3), op("refused", "term-2", "soft.a", 4, 4.2, true), admin("enable", "soft.a", "", 8, 8.1)}, ""},
		{"disabled token attached", []Event{
			attached(5, "term-2", 2, "soft.a", "s-1", "b1"),
			detached(5.5, "term-2", 2, "s-1", "token_removed"),
		}, []Op{admin("disable", "soft.a", "", 2.9, 3), admin("enable", "soft.a", "", 8, 8.1)},
			"disabled (or deleted) token soft.a attached at term-2 via b1 at 5.00s (session s-1; from 3.00s)"},
		{"disabled token still shown", []Event{
			attached(2, "term-1", 1, "soft.a", "s-1", "b1"),
			detached(6, "term-1", 1, "s-1", "locked"),
		}, []Op{admin("disable", "soft.a", "", 2.9, 3), admin("enable", "soft.a", "", 8, 8.1)},
			"disabled (or deleted) token soft.a still shown at term-1 until 6.00s"},
		{"delete honoured", []Event{
			attached(2, "term-1", 1, "soft.p", "s-1", "b1"),
			detached(3.05, "term-1", 1, "s-1", "locked"),
		}, []Op{admin("delete", "soft.p", "", 2.9, 3), op("refused", "term-1", "soft.p", 4.1, 4.2, true)}, ""},
		{"deleted token still shown", []Event{
			attached(2, "term-1", 1, "soft.p", "s-1", "b1"),
			detached(4.5, "term-1", 1, "s-1", "token_removed"),
		}, []Op{admin("delete", "soft.p", "", 2.9, 3)},
			"disabled (or deleted) token soft.p still shown at term-1 until 4.50s"},
		{"deleted token attached again", []Event{
			attached(20, "term-2", 2, "soft.p", "s-2", "b2"),
		}, []Op{admin("delete", "soft.p", "", 2.9, 3)},
			"disabled (or deleted) token soft.p attached at term-2 via b2 at 20.00s"},
		{"a failed drain", []Event{
			attached(6, "term-2", 2, "soft.b", "s-2", "b2"),
		}, []Op{op("drain", "admin@b1", "", 3, 3.1, false), ins("term-2", "soft.b", "s-2", 5.9, 6)}, ""},
	} {
		t.Run(c.name, func(t *testing.T) {
			// A fault window (2.5–4 s): the failed drain's.
			h := History{Begin: s(1), End: s(30), Events: c.events, Ops: c.ops,
				Faults: []Fault{{Name: "broker_partition", Target: "b1", Start: s(2.5), Healed: s(3.5), Recovered: s(4)}}}
			acfg := cfg
			acfg.DisableGrace = time.Second
			rows := check(h, acfg)
			var got []string
			admin := 0
			for _, r := range rows {
				got = append(got, r.Violations...)
				admin += r.AdminViolations
			}
			if c.want == "" {
				if len(got) > 0 {
					t.Fatalf("violations %q; want none", got)
				}
				return
			}
			if len(got) != 1 || !strings.Contains(got[0], c.want) || admin != 1 {
				t.Fatalf("violations %q (%d counted as the administrator's); want one saying %q", got, admin, c.want)
			}
		})
	}
}
