package main

import (
	"context"
	"fmt"
	"math"
	"sort"
	"strings"
	"time"

	"github.com/hotdesk/hotdesk/cmd/internal/adminapi"
)

// The administrator's part of the workload (-admin, on by default): while
// people hot-desk and faults come and go, an administrator ends,
// disconnects and locks sessions through any broker's admin socket (the
// group forwards the action to the session's owner), disables a token for
// a while (its owner tries it meanwhile), pairs new tokens (tried at once,
// one in two then lost while shown and deleted), and drains one broker at
// a time for a while, then undrains it. Each action is an operation of
// the history (Op.Term "admin@" and the broker asked); checkAdmin
// (check.go) says what the terminals and the group must show after it.

// adminEvery: one pick in adminEvery of a token is an administrator's
// action on its session or on it rather than a hot-desk.
const adminEvery = 10

// adminKinds are the actions on one token's session or the token, or
// (pair) on a new token, chosen at random.
var adminKinds = []string{"kill", "disconnect", "lock", "disable", "pair"}

// isAdmin reports whether an operation's kind is an administrator's.
func isAdmin(kind string) bool {
	for _, k := range adminKinds {
		if k == kind {
			return true
		}
	}
	return false
}

// anyBroker returns a broker chosen at random among those running (a
// stopped one cannot answer; a frozen one is asked and fails, inside its
// fault's window).
func (h *harness) anyBroker() *hotdeskd {
	var up []*hotdeskd
	for _, b := range h.brokers {
		if b.running() {
			up = append(up, b)
		}
	}
	if len(up) == 0 {
		return h.brokers[h.intn(len(h.brokers))]
	}
	return up[h.intn(len(up))]
}

// performAdmin runs an administrator's action on p.token's session as an
// administrator would: the group's listing first (through the broker
// asked), then the action on a session it shows for the token (its
// session or one of its orphans, at random: an administrator cleans
// orphans up). A session the listing does not show (ended, its owner not
// answering) is left alone and nothing is recorded: the checks of the
// hot-desks judge whether it should have been there.
func (h *harness) performAdmin(ctx context.Context, p *opPlan) {
	switch p.kind {
	case "disable":
		h.disableToken(ctx, p)
		return
	case "pair":
		h.pairToken(ctx, p)
		return
	}
	b := h.anyBroker()
	o := Op{Kind: p.kind, Term: "admin@" + b.id, Token: p.token, Start: h.rec.now()}
	actx, cancel := context.WithTimeout(ctx, opTimeout)
	defer cancel()
	ss, err := b.admin.Sessions(actx)
	if err == nil {
		var ids []string // the token's session and its orphans
		for _, s := range ss {
			if s.Token == p.token && !s.Partial {
				ids = append(ids, s.ID)
			}
		}
		if len(ids) == 0 {
			return
		}
		o.Session = ids[h.intn(len(ids))]
		switch p.kind {
		case "kill":
			err = b.admin.KillSession(actx, o.Session)
		case "disconnect":
			err = b.admin.DisconnectSession(actx, o.Session)
		case "lock":
			err = b.admin.LockSession(actx, o.Session)
		default:
			err = fmt.Errorf("chaos: unknown action %q", p.kind)
		}
	}
	h.done(ctx, o, err)
}

// disableToken disables p.token through a broker chosen at random; after
// the grace the group has to learn of it (checkConfig.DisableGrace) the
// person presents it at terminal p.to, where it must be refused
// (token_disabled: the "refused" operation); then, 0–3 s later, it is
// enabled again, asked until that is done (after a failed disable too: its
// outcome is unknown).
func (h *harness) disableToken(ctx context.Context, p *opPlan) {
	if h.setTokenDisabled(ctx, p.token, true) {
		h.sleep(ctx, h.checkConfig().DisableGrace)
		if !h.presentRefused(ctx, p.to, p.token, "token_disabled", "disabled") {
			return
		}
		_ = p.to.remove(ctx, p.token)
		h.sleep(ctx, h.jitter(0, 3*time.Second))
	}
	for ctx.Err() == nil && !h.setTokenDisabled(ctx, p.token, false) {
		h.sleep(ctx, time.Second)
	}
}

// pairToken: the administrator makes a pairing code for a new user
// through a broker chosen at random (the "code" operation); the person
// pairs a new software token with it through another broker chosen at
// random ("pair": the code is the group's, redeemed wherever it is
// presented), presents the token at terminal p.to, where it must get a new
// desktop ("insert"), and pulls it; then the administrator ends that
// desktop ("kill"), so that the group's session count stays bounded. One
// token in two is lost before it is pulled, and deleted (retireToken). A
// code whose pairing failed (inside a fault window) is left to expire.
func (h *harness) pairToken(ctx context.Context, p *opPlan) {
	user := fmt.Sprintf("paired%d", h.paired.Add(1))
	var code string
	if !h.adminCall(ctx, Op{Kind: "code"}, func(ctx context.Context, b *hotdeskd) error {
		pr, err := b.admin.PairToken(ctx, adminapi.PairRequest{User: user, Label: "chaos " + user})
		code = pr.Code
		return err
	}) {
		return
	}
	b := h.anyBroker()
	o := Op{Kind: "pair", Term: "pair@" + b.id, Start: h.rec.now()}
	tok, key, err := pair(ctx, b.brokerAddr(), code)
	o.Token = tok
	if !h.done(ctx, o, err) || err != nil {
		return
	}
	h.keys.add(tok, key)
	o = Op{Kind: "insert", Term: p.to.id, Token: tok, Start: h.rec.now()}
	session, err := p.to.insert(ctx, tok)
	o.Session = session
	done := h.done(ctx, o, err)
	if done && err == nil && h.intn(2) == 0 {
		h.retireToken(ctx, p.to, tok)
	}
	_ = p.to.remove(ctx, tok)
	if !done || err != nil {
		return
	}
	h.adminCall(ctx, Op{Kind: "kill", Token: tok, Session: session}, func(ctx context.Context, b *hotdeskd) error {
		return b.admin.KillSession(ctx, session)
	})
}

// retireToken: the token shown at terminal t is lost, and the
// administrator deletes it through a broker chosen at random ("delete").
// Its desktop must be locked (shown no longer than
// checkConfig.DisableGrace after the delete's answer: checkAdmin) and the
// token refused from then on at every broker: presented again at t after
// the grace, it must be refused as unknown ("refused").
func (h *harness) retireToken(ctx context.Context, t *terminal, tok string) {
	if !h.adminCall(ctx, Op{Kind: "delete", Token: tok}, func(ctx context.Context, b *hotdeskd) error {
		return b.admin.DeleteToken(ctx, tok)
	}) {
		return
	}
	h.sleep(ctx, h.checkConfig().DisableGrace)
	_ = t.remove(ctx, tok)
	h.presentRefused(ctx, t, tok, "unknown_token", "deleted")
}

// presentRefused presents tok at terminal t, where it must be refused
// with the error code ("refused": a desktop attached fails it, why says
// what the token is); it reports whether the operation was done (see
// done).
func (h *harness) presentRefused(ctx context.Context, t *terminal, tok, code, why string) bool {
	o := Op{Kind: "refused", Term: t.id, Token: tok, Start: h.rec.now()}
	session, err := t.insert(ctx, tok)
	switch {
	case err == nil:
		err = fmt.Errorf("attached session %s although the token is %s", session, why)
	case strings.HasPrefix(err.Error(), code+":"):
		err = nil
	}
	return h.done(ctx, o, err)
}

// setTokenDisabled disables (or enables) token through a broker chosen at
// random and records the operation; it reports whether it was done.
func (h *harness) setTokenDisabled(ctx context.Context, token string, disabled bool) bool {
	return h.adminCall(ctx, Op{Kind: either(disabled, "disable", "enable"), Token: token}, func(ctx context.Context, b *hotdeskd) error {
		return b.admin.SetTokenDisabled(ctx, token, disabled)
	})
}

// either returns yes if cond holds, else no.
func either(cond bool, yes, no string) string {
	if cond {
		return yes
	}
	return no
}

// adminCall makes call, an administrator's action o, through a broker
// chosen at random, and records it; it reports whether it was done.
func (h *harness) adminCall(ctx context.Context, o Op, call func(context.Context, *hotdeskd) error) bool {
	b := h.anyBroker()
	o.Term, o.Start = "admin@"+b.id, h.rec.now()
	actx, cancel := context.WithTimeout(ctx, opTimeout)
	err := call(actx, b)
	cancel()
	if h.done(ctx, o, err) && err == nil && o.Server != "" {
		h.logf("%s %s through %s", o.Kind, o.Server, b.id)
	}
	return err == nil && ctx.Err() == nil
}

// drainer drains one broker at a time (through any broker's admin
// socket), holds the drain 5–15 s, then undrains it, asking again every
// second until that works (at once after a drain that failed: its outcome
// is unknown); 5–20 s between drains. It returns when ctx ends.
func (h *harness) drainer(ctx context.Context) {
	for ctx.Err() == nil {
		h.sleep(ctx, h.jitter(5*time.Second, 20*time.Second))
		target := h.brokers[h.intn(len(h.brokers))].id
		if h.setDraining(ctx, target, true) {
			h.sleep(ctx, h.jitter(5*time.Second, 15*time.Second))
		} // else the drain may have been made all the same: undone now
		for ctx.Err() == nil && !h.setDraining(ctx, target, false) {
			h.sleep(ctx, time.Second)
		}
	}
}

// setDraining drains (or undrains) server through a broker chosen at
// random and records the operation; it reports whether it was done.
func (h *harness) setDraining(ctx context.Context, server string, draining bool) bool {
	return h.adminCall(ctx, Op{Kind: either(draining, "drain", "undrain"), Server: server}, func(ctx context.Context, b *hotdeskd) error {
		return b.admin.SetDraining(ctx, server, draining)
	})
}

// adminViolation is an administrator's action the history shows not
// honoured, and when.
type adminViolation struct {
	at   time.Duration
	what string
}

// checkAdmin judges the administrator's actions in ops, with the
// terminals' events (in time order) and the intervals they showed
// sessions (ivs):
//   - a session whose kill was answered is never attached again;
//   - a session shown when its kill, disconnect or lock was answered is
//     shown no longer than cfg.TakeoverWindow after it, at any terminal;
//   - a disabled token is not attached, nor shown, from cfg.DisableGrace
//     after the disable's answer until its enable was asked, nor a deleted
//     one from cfg.DisableGrace after the delete's answer;
//   - no insert made while a server was drained (begun from cfg.DrainGrace
//     after the drain's answer, attached before its undrain was asked:
//     one that waited out a fault may have been placed after the undrain)
//     created a session there.
func checkAdmin(ops []Op, events []Event, ivs []interval, cfg checkConfig) []adminViolation {
	var out []adminViolation
	add := func(at time.Duration, format string, args ...any) {
		out = append(out, adminViolation{at: at, what: fmt.Sprintf(format, args...)})
	}
	for _, o := range ops {
		if !o.OK || o.Session == "" || (o.Kind != "kill" && o.Kind != "disconnect" && o.Kind != "lock") {
			continue
		}
		for _, iv := range ivs {
			if iv.session == o.Session && iv.from < o.End && iv.to > o.End+cfg.TakeoverWindow {
				add(o.End, "session %s of %s still shown at %s until %.2fs after the administrator's %s (%s) was answered at %.2fs; %s saw: %s",
					o.Session, o.Token, iv.term, secs(iv.to), o.Kind, o.Term, secs(o.End), iv.term, seen(events, iv.term, o.Start, iv.to))
			}
		}
		if o.Kind != "kill" {
			continue
		}
		for _, e := range events {
			if e.Kind == KindAttached && e.Session == o.Session && e.At > o.End {
				add(e.At, "session %s of %s killed (%s, answered at %.2fs) attached again at %s via %s at %.2fs",
					o.Session, o.Token, o.Term, secs(o.End), e.Term, e.Server, secs(e.At))
				break
			}
		}
	}

	// The disables' windows, per token: from DisableGrace after the
	// disable's answer until its enable was asked.
	type span struct{ from, to time.Duration }
	disabled := map[string][]span{}
	since := map[string]time.Duration{}
	for _, o := range sortedByStart(ops) {
		switch {
		case (o.Kind == "disable" || o.Kind == "delete") && o.OK:
			if _, ok := since[o.Token]; !ok {
				since[o.Token] = o.End + cfg.DisableGrace
			}
		case o.Kind == "enable":
			if from, ok := since[o.Token]; ok {
				disabled[o.Token] = append(disabled[o.Token], span{from, o.Start}) // a failed enable may have been made
				delete(since, o.Token)
			}
		}
	}
	for tok, from := range since {
		disabled[tok] = append(disabled[tok], span{from, math.MaxInt64})
	}
	for _, e := range events {
		if e.Kind != KindAttached {
			continue
		}
		for _, w := range disabled[e.Token] {
			if e.At >= w.from && e.At <= w.to {
				add(e.At, "disabled (or deleted) token %s attached at %s via %s at %.2fs (session %s; from %.2fs)",
					e.Token, e.Term, e.Server, secs(e.At), e.Session, secs(w.from-cfg.DisableGrace))
			}
		}
	}
	for _, iv := range ivs {
		for _, w := range disabled[iv.token] {
			if iv.from < w.from && iv.to > w.from {
				add(w.from, "disabled (or deleted) token %s still shown at %s until %.2fs (session %s via %s; from %.2fs, %v allowed)",
					iv.token, iv.term, secs(iv.to), iv.session, iv.server, secs(w.from-cfg.DisableGrace), cfg.DisableGrace)
			}
		}
	}

	// The drains' windows, per server.
	type window struct {
		server   string
		from, to time.Duration
	}
	var windows []window
	drained := map[string]*window{}
	for _, o := range sortedByStart(ops) {
		switch {
		case o.Kind == "drain" && o.OK && drained[o.Server] == nil:
			drained[o.Server] = &window{server: o.Server, from: o.End + cfg.DrainGrace, to: math.MaxInt64}
		case o.Kind == "undrain" && drained[o.Server] != nil:
			w := drained[o.Server]
			w.to = o.Start // a failed undrain may have been made
			windows = append(windows, *w)
			delete(drained, o.Server)
		}
	}
	for _, w := range drained {
		windows = append(windows, *w)
	}
	first := map[string]Event{} // session → its first Attached
	for _, e := range events {
		if _, ok := first[e.Session]; e.Kind == KindAttached && e.Session != "" && !ok {
			first[e.Session] = e
		}
	}
	for _, o := range ops {
		if !o.OK || o.Session == "" || (o.Kind != "insert" && o.Kind != "takeover" && o.Kind != "probe") {
			continue
		}
		f, ok := first[o.Session]
		if !ok || f.At < o.Start {
			continue // not a session this insert created
		}
		for _, w := range windows {
			if f.Server == w.server && o.Start >= w.from && f.At <= w.to {
				add(f.At, "new session %s of %s placed on %s, attached at %s %.2fs (%s begun at %.2fs), while %s was drained (from %.2fs)",
					o.Session, o.Token, f.Server, f.Term, secs(f.At), o.Kind, secs(o.Start), w.server, secs(w.from-cfg.DrainGrace))
			}
		}
	}
	return out
}

// sortedByStart returns a copy of ops in the order they began.
func sortedByStart(ops []Op) []Op {
	sorted := append([]Op(nil), ops...)
	sort.SliceStable(sorted, func(i, j int) bool { return sorted[i].Start < sorted[j].Start })
	return sorted
}
