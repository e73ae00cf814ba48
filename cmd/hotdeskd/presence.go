package main

import (
	"context"
	"errors"
	"maps"
	"slices"
	"sync"
	"time"

	"github.com/hashicorp/go-hclog"

	"github.com/hotdesk/hotdesk/broker"
	"github.com/hotdesk/hotdesk/internal/clock"
	"github.com/hotdesk/hotdesk/internal/event"
	"github.com/hotdesk/hotdesk/registry"
)

// Terminal presence bounds (see README "Administering a group"):
//   - a terminal whose connection ends leaves the registry as soon as this
//     broker handles the disconnect event (one etcd delete);
//   - a terminal that goes silent is dropped when the broker's read
//     timeout closes its connection (4 × the ping interval, a sixth of the
//     lease TTL: 3.3 s with the default 5 s lease);
//   - the terminals of a broker that dies leave with its lease (lease TTL);
//   - a record not refreshed for presenceStale (a broker that holds its
//     lease but stopped refreshing) is hidden from listings.
const (
	presenceHeartbeat = 10 * time.Second
	presenceStale     = 3 * presenceHeartbeat
	maxTrackedTokens  = 8 // tokens per terminal kept in its record (the broker reports at most 8 held)
)

// presence turns the broker's events into terminal records in the group
// registry and remembers where each session was last shown. Its
// subscription drops events when it falls behind (the registry slow or out
// of reach): every heartbeat drops the connections the broker no longer
// holds (live), or a lost TerminalDisconnected would leave its terminal
// listed, refreshed, for ever, and forgets where the sessions the broker
// no longer runs were shown (sessions), or a lost SessionDestroyed would
// leave its entry in lastTerm for ever.
type presence struct {
	d   *daemon
	log hclog.Logger
	// live returns the broker's terminal connections; ok false while
	// there is no broker to ask (nothing is dropped then).
	live func() (conns []broker.TerminalConn, ok bool)
	// sessions returns the ids of the sessions the broker runs; ok false
	// while there is no broker to ask (nothing is forgotten then).
	sessions func() (ids []string, ok bool)

	mu       sync.Mutex
	terms    map[string]*presenceEntry // terminal id → entry; guarded by mu
	lastTerm map[string]string         // session id → last terminal; guarded by mu
}

type presenceEntry struct {
	// conns are the open connections of this terminal id to this broker,
	// oldest first. The id is the peer's word: another client may name
	// it too. The record shows the newest one, and one leaving never
	// takes the others' record with it.
	conns []termConn
	rec   registry.TerminalRecord
	// refused: the registry refused this record for what it holds
	// (badRecord); logged once per terminal.
	refused bool
}

type termConn struct{ addr, name string }

func newPresence(d *daemon, logger hclog.Logger) *presence {
	p := &presence{d: d, log: logger, terms: map[string]*presenceEntry{}, lastTerm: map[string]string{}}
	p.live = func() ([]broker.TerminalConn, bool) {
		if d == nil || d.broker == nil {
			return nil, false
		}
		return d.broker.TerminalConns(), true
	}
	p.sessions = func() ([]string, bool) {
		if d == nil || d.broker == nil {
			return nil, false
		}
		ss := d.broker.Sessions()
		ids := make([]string, len(ss))
		for i, s := range ss {
			ids[i] = s.ID
		}
		return ids, true
	}
	return p
}

// lastTerminal returns where session id was last shown ("" if unknown).
func (p *presence) lastTerminal(id string) string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.lastTerm[id]
}

// connected is the number of terminals connected to this broker.
func (p *presence) connected() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return len(p.terms)
}

// run consumes events until sub closes or ctx ends; it refreshes every
// record on the heartbeat, every presenceHeartbeat on the daemon's clock
// (a beat that comes while a refresh runs is the next refresh; more are
// dropped, as a ticker's): that also re-creates the records after the
// registry lease was re-established. Records are stamped on that clock.
func (p *presence) run(ctx context.Context, sub *broker.Subscription) {
	beat := make(chan struct{}, 1)
	var t clock.Timer
	arm := func() {
		t = p.d.clk.AfterFunc(presenceHeartbeat, func() {
			select {
			case beat <- struct{}{}:
			default:
			}
		})
	}
	arm()
	defer func() { t.Stop() }()
	for {
		select {
		case <-ctx.Done():
			return
		case <-beat:
			arm()
			p.refresh(ctx)
		case e, ok := <-sub.C:
			if !ok {
				return
			}
			p.apply(ctx, e)
		}
	}
}

func (p *presence) apply(ctx context.Context, e event.Event) {
	put, del := p.update(e, p.d.clk.Now().UnixMilli())
	reg := p.d.registry()
	for _, r := range put {
		if err := p.put(ctx, reg, r); err != nil {
			p.log.Debug("terminal presence not written", "terminal", r.ID, "error", err)
		}
	}
	for _, id := range del {
		cctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		if err := reg.DeleteTerminal(cctx, id); err != nil {
			p.log.Debug("terminal presence not deleted", "terminal", id, "error", err)
		}
		cancel()
	}
}

// update applies e to the records at time now (ms) and returns those to
// write and the terminal ids to delete.
func (p *presence) update(e event.Event, now int64) (put []registry.TerminalRecord, del []string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	touch := func(id string) {
		if en := p.terms[id]; en != nil {
			en.rec.SeenUnixMs = now
			put = append(put, en.rec)
		}
	}
	switch e.Kind {
	case event.TerminalConnected:
		en := p.terms[e.Terminal]
		if en == nil {
			en = &presenceEntry{rec: registry.TerminalRecord{ID: e.Terminal, ConnectedUnixMs: now}}
			p.terms[e.Terminal] = en
		}
		en.conns = append(en.conns, termConn{addr: e.Remote, name: e.TerminalName})
		en.rec.Name, en.rec.Addr = e.TerminalName, e.Remote
		touch(e.Terminal)
	case event.TerminalDisconnected:
		if en := p.terms[e.Terminal]; en != nil {
			// Not found: dropped already (reconcile), or never seen.
			if i := slices.IndexFunc(en.conns, func(c termConn) bool { return c.addr == e.Remote }); i >= 0 {
				en.conns = slices.Delete(en.conns, i, i+1)
			}
			if len(en.conns) == 0 {
				delete(p.terms, e.Terminal)
				del = append(del, e.Terminal)
				break
			}
			last := en.conns[len(en.conns)-1]
			en.rec.Name, en.rec.Addr = last.name, last.addr
			touch(e.Terminal)
		}
	case event.TokenInserted:
		if en := p.terms[e.Terminal]; en != nil && !slices.Contains(en.rec.Tokens, e.Token) && len(en.rec.Tokens) < maxTrackedTokens {
			en.rec.Tokens = append(en.rec.Tokens, e.Token)
			touch(e.Terminal)
		}
	case event.TokenRemoved:
		if en := p.terms[e.Terminal]; en != nil {
			en.rec.Tokens = slices.DeleteFunc(en.rec.Tokens, func(t string) bool { return t == e.Token })
			touch(e.Terminal)
		}
	case event.SessionAttached, event.SessionResumed, event.SessionTakeover:
		for id, en := range p.terms {
			if en.rec.Session == e.Session && id != e.Terminal {
				en.rec.Session, en.rec.User = "", ""
				touch(id)
			}
		}
		p.lastTerm[e.Session] = e.Terminal
		if en := p.terms[e.Terminal]; en != nil {
			en.rec.Session, en.rec.User = e.Session, e.User
			touch(e.Terminal)
		}
	case event.SessionSuspended, event.SessionDestroyed, event.SessionOrphaned:
		for id, en := range p.terms {
			if en.rec.Session == e.Session {
				en.rec.Session, en.rec.User = "", ""
				touch(id)
			}
		}
		if e.Kind == event.SessionDestroyed {
			delete(p.lastTerm, e.Session)
		}
	}
	return put, del
}

// reconcile drops the connections not in live (the broker's, when ok;
// nothing is dropped otherwise) and the terminals left without any, and
// returns the records of the others stamped seen at now (ms) and the ids
// of the terminals dropped.
func (p *presence) reconcile(live []broker.TerminalConn, ok bool, now int64) (recs []registry.TerminalRecord, del []string) {
	held := make(map[broker.TerminalConn]bool, len(live))
	for _, c := range live {
		held[c] = true
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	recs = make([]registry.TerminalRecord, 0, len(p.terms))
	for id, en := range p.terms {
		if ok {
			n := len(en.conns)
			en.conns = slices.DeleteFunc(en.conns, func(c termConn) bool { return !held[broker.TerminalConn{ID: id, Remote: c.addr}] })
			if len(en.conns) == 0 {
				delete(p.terms, id)
				del = append(del, id)
				continue
			}
			if len(en.conns) < n {
				last := en.conns[len(en.conns)-1]
				en.rec.Name, en.rec.Addr = last.name, last.addr
			}
		}
		en.rec.SeenUnixMs = now
		recs = append(recs, en.rec)
	}
	if len(del) > 0 {
		p.log.Debug("terminals whose disconnection was missed dropped", "terminals", len(del))
	}
	return recs, del
}

// forgetGone forgets where the sessions not in ids were last shown (the
// broker's sessions, when ok; nothing is forgotten otherwise). A session is
// in the broker's listing before any event of it is emitted, so an entry
// for a session missing from it is one whose SessionDestroyed was lost (or
// is still queued: forgetting it first is harmless).
func (p *presence) forgetGone(ids []string, ok bool) {
	if !ok {
		return
	}
	runs := make(map[string]bool, len(ids))
	for _, id := range ids {
		runs[id] = true
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	n := len(p.lastTerm)
	maps.DeleteFunc(p.lastTerm, func(id, _ string) bool { return !runs[id] })
	if gone := n - len(p.lastTerm); gone > 0 {
		p.log.Debug("sessions whose destruction was missed forgotten", "sessions", gone)
	}
}

func (p *presence) refresh(ctx context.Context) {
	p.forgetGone(p.sessions())
	live, ok := p.live()
	recs, del := p.reconcile(live, ok, p.d.clk.Now().UnixMilli())
	reg := p.d.registry()
	for _, id := range del {
		cctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		err := reg.DeleteTerminal(cctx, id)
		cancel()
		if err != nil {
			p.log.Debug("terminal presence not deleted", "terminal", id, "error", err)
		}
	}
	// Every record in a few transactions (one etcd write each, not one
	// per terminal); one the registry refuses for itself goes alone
	// (put: without its tokens, or skipped).
	cctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	bad, err := reg.PutTerminals(cctx, recs)
	cancel()
	if err != nil {
		p.log.Debug("terminal presence not refreshed", "terminals", len(recs), "error", err)
		return // the registry is unwell; the next heartbeat retries
	}
	for _, r := range bad {
		if err := p.put(ctx, reg, r); err != nil {
			p.log.Debug("terminal presence not refreshed", "terminal", r.ID, "error", err)
			return
		}
	}
}

// badRecord reports whether the registry refused a record for what it
// holds, not for the registry's own state: the terminal's id is not a
// valid key, or its record is over the registry's bound. The id, name,
// address and tokens come from the peer.
func badRecord(err error) bool {
	return errors.Is(err, registry.ErrInvalidKey) || errors.Is(err, registry.ErrTooLarge)
}

// put writes r. A record over the registry's bound is written without
// its tokens instead; one the registry refuses even so, or for its id
// (badRecord), is skipped. Either is logged once per terminal and nil is
// returned, so that one terminal's record never stops the others'
// heartbeat. Any other error is returned.
func (p *presence) put(ctx context.Context, reg *registry.Registry, r registry.TerminalRecord) error {
	write := func(r registry.TerminalRecord) error {
		cctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		defer cancel()
		return reg.PutTerminal(cctx, r)
	}
	err := write(r)
	if err == nil || !badRecord(err) {
		return err
	}
	msg := "terminal presence refused by the registry; the terminal is not listed"
	if errors.Is(err, registry.ErrTooLarge) {
		trimmed := r
		trimmed.Tokens = nil
		switch terr := write(trimmed); {
		case terr == nil:
			msg = "terminal presence over the registry's bound; listed without its tokens"
		case !badRecord(terr):
			return terr
		}
	}
	p.mu.Lock()
	en := p.terms[r.ID]
	first := en != nil && !en.refused
	if en != nil {
		en.refused = true
	}
	p.mu.Unlock()
	if first {
		p.log.Warn(msg, "terminal", r.ID, "addr", r.Addr, "tokens", len(r.Tokens), "error", err)
	}
	return nil
}
