package broker

import (
	"context"
	"maps"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/go-hclog"

	"github.com/hotdesk/hotdesk/internal/burstlog"
	"github.com/hotdesk/hotdesk/internal/event"
)

// EventSink receives the broker's events. Emit is called synchronously on
// the broker's paths, often under a session's token lock: it must not
// block or call back into the broker.
type EventSink interface {
	Emit(event.Event)
}

// emit stamps e with this server and the clock and hands it to the sink.
func (b *Broker) emit(e event.Event) {
	sink := b.cfg.Events
	if sink == nil {
		return
	}
	e.Server = b.cfg.ServerID
	if e.Time.IsZero() {
		e.Time = b.clk.Now()
	}
	sink.Emit(e)
}

// sessionEvent is an event about s at t (t may be nil).
func sessionEvent(kind event.Kind, s *Session, t *terminal, reason string) event.Event {
	e := event.Event{Kind: kind, Session: s.ID, User: s.User, Token: s.Token, Reason: reason}
	if t != nil {
		e.Terminal, e.Hops = t.id, int(t.hops)
	}
	return e
}

// endEvent is the event of s ceasing to be shown (suspended, destroyed):
// it names the terminal that showed it until then, if one did (t; nil for
// a session that was not shown), without that connection's hops.
func endEvent(kind event.Kind, s *Session, t *terminal, reason string) event.Event {
	e := sessionEvent(kind, s, nil, reason)
	if t != nil {
		e.Terminal = t.id
	}
	return e
}

// attachEvent is the event of s becoming active at t, named by the state it
// came from; a takeover names the terminal it was taken from (prev).
func attachEvent(s *Session, t, prev *terminal, from State) event.Event {
	switch from {
	case Suspended:
		return sessionEvent(event.SessionResumed, s, t, "")
	case Active:
		e := sessionEvent(event.SessionTakeover, s, t, "")
		if prev != nil {
			e.Target = prev.id
		}
		return e
	}
	return sessionEvent(event.SessionAttached, s, t, "created")
}

func terminalEvent(kind event.Kind, t *terminal, token, reason string) event.Event {
	return event.Event{Kind: kind, Terminal: t.id, TerminalName: t.name, Remote: t.remote, Hops: int(t.hops),
		Token: token, Reason: reason}
}

// Bus is an EventSink that writes one structured info line per event and
// fans events out to subscribers. A subscriber that falls behind loses
// events (counted by Dropped) rather than slowing the broker.
type Bus struct {
	log     hclog.Logger
	flood   *burstlog.Logger // lines of floodKinds: one per kind per floodLogEvery
	dropped atomic.Uint64

	mu        sync.Mutex
	subs      map[*Subscription]struct{} // guarded by mu
	droppedBy map[string]uint64          // by subscriber name; guarded by mu
	closed    bool                       // guarded by mu
}

var _ EventSink = (*Bus)(nil)

// NewBus returns a Bus logging to logger (nil: no log lines).
func NewBus(logger hclog.Logger) *Bus {
	if logger == nil {
		logger = hclog.NewNullLogger()
	}
	return &Bus{log: logger, flood: burstlog.New(logger, floodLogEvery, nil), subs: make(map[*Subscription]struct{}),
		droppedBy: make(map[string]uint64)}
}

// floodKinds are the events a client can cause at will, as fast as it can
// send (a token presented, removed or refused, a refused login: up to the
// token event rate per connection): the Bus logs them one line per kind
// per floodLogEvery, with the count ("burst", "count"), so an attack costs
// a line, not a line per attempt. Subscribers (the event log, the hook,
// metrics, presence) still get every one.
var floodKinds = map[event.Kind]bool{
	event.TokenInserted: true, event.TokenRemoved: true, event.TokenRefused: true, event.LoginRefused: true,
}

const floodLogEvery = 10 * time.Second

// Subscription receives events on C until Close (or the Bus's Close), which
// closes C.
type Subscription struct {
	C    <-chan event.Event
	c    chan event.Event
	bus  *Bus
	name string
}

// Each calls fn with every event of s, in order, until C closes or ctx
// ends; the consumers of a subscription (event log, hook, metrics) are
// this loop around their own fn.
func (s *Subscription) Each(ctx context.Context, fn func(event.Event)) {
	for {
		select {
		case <-ctx.Done():
			return
		case e, ok := <-s.C:
			if !ok {
				return
			}
			fn(e)
		}
	}
}

// Subscribe returns a subscription buffering up to buf events (at least 1).
// name says who reads it (a fixed name, e.g. "hook"): the events it loses
// are counted under it (DroppedBy) and logged with it.
func (b *Bus) Subscribe(name string, buf int) *Subscription {
	c := make(chan event.Event, max(buf, 1))
	s := &Subscription{C: c, c: c, bus: b, name: name}
	b.mu.Lock()
	defer b.mu.Unlock()
	b.droppedBy[name] += 0 // listed from now on, at 0 until it loses one
	if b.closed {
		close(c)
		return s
	}
	b.subs[s] = struct{}{}
	return s
}

// Close ends the subscription and closes C. Safe to call more than once.
func (s *Subscription) Close() {
	b := s.bus
	b.mu.Lock()
	defer b.mu.Unlock()
	if _, ok := b.subs[s]; ok {
		delete(b.subs, s)
		close(s.c)
	}
}

// Emit logs e and offers it to every subscriber without blocking.
func (b *Bus) Emit(e event.Event) {
	args := []any{"kind", string(e.Kind), "server", e.Server}
	for _, kv := range [][2]string{{"session", e.Session}, {"user", e.User}, {"token", e.Token},
		{"terminal", e.Terminal}, {"target", e.Target}, {"reason", e.Reason}} {
		if kv[1] != "" {
			args = append(args, kv[0], logValue(kv[1])) // tokens and terminal ids come from peers
		}
	}
	if floodKinds[e.Kind] {
		b.flood.Info(string(e.Kind), "event", args...)
	} else {
		b.log.Info("event", args...)
	}
	var behind []string
	b.mu.Lock()
	for s := range b.subs {
		select {
		case s.c <- e:
		default:
			b.dropped.Add(1)
			b.droppedBy[s.name]++
			behind = append(behind, s.name)
		}
	}
	b.mu.Unlock()
	for _, name := range behind {
		b.flood.Warn("events dropped for "+name, "event subscriber fell behind: events dropped", "subscriber", name)
	}
}

// Dropped is the number of events subscribers lost by falling behind.
func (b *Bus) Dropped() uint64 { return b.dropped.Load() }

// DroppedBy is Dropped by subscriber name, every name subscribed so far
// listed (closed subscriptions' included).
func (b *Bus) DroppedBy() map[string]uint64 {
	b.mu.Lock()
	defer b.mu.Unlock()
	return maps.Clone(b.droppedBy)
}

// Close closes every subscription; later Emits only log.
func (b *Bus) Close() {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.closed = true
	for s := range b.subs {
		delete(b.subs, s)
		close(s.c)
	}
}
