// Package adminapitest provides an in-memory adminapi.Backend for tests of
// the admin API and of its clients (hotdeskctl, the dashboard), in the way
// net/http/httptest serves tests of HTTP handlers.
//
// A Backend answers from a State the test gives it and changes that State
// as the daemon would change the group (a killed session is gone, a drained
// server is draining, a registered token is listed). Failures are injected
// through the State; a test can hold Sessions calls to see requests in
// flight. It checks no access rules: the Server in front of it does.
package adminapitest

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"time"

	"github.com/hotdesk/hotdesk/cmd/internal/adminapi"
	"github.com/hotdesk/hotdesk/internal/event"
)

// PairCode is the code PairToken answers; it expires at PairExpires.
const PairCode = "ABCD-EFGH-JKMN"

// PairExpires is when PairCode expires.
var PairExpires = time.Date(2030, 1, 2, 3, 4, 5, 0, time.UTC)

// State is what a Backend answers from. The zero State is an empty, ready
// group in which every call succeeds.
type State struct {
	Sessions  []adminapi.SessionInfo
	Terminals []adminapi.TerminalInfo
	Tokens    []adminapi.TokenInfo
	Pairings  []adminapi.PairingInfo
	Lockouts  []adminapi.LockoutInfo
	Failures  []adminapi.FailureInfo
	Servers   []adminapi.ServerInfo
	// Events are the recent events, oldest first: Events(n) replays the
	// last n of them.
	Events []event.Event

	// Unanswered are the members that do not answer a sessions listing:
	// Sessions reports those a listing would ask (every one, or the one
	// its filter's Server names). Their rows, if any, are in Sessions
	// (marked Partial, as the daemon marks them).
	Unanswered []string

	// NotReady is what Ready returns (nil: ready).
	NotReady error
	// SessionsErr and PairErr, when set, are what Sessions and PairToken
	// fail with.
	SessionsErr error
	PairErr     error
	// EventsErr, when set, is what Events fails with after replaying the
	// history (the registry lost mid-stream).
	EventsErr error

	// SessionsEntered, when set, receives a value each time Sessions is
	// called, before it does anything else.
	SessionsEntered chan<- struct{}
	// SessionsRelease, when set, holds every Sessions call until it is
	// closed or the call's context ends (then Sessions fails with the
	// context's error).
	SessionsRelease <-chan struct{}
}

// PairCall is one call of PairToken, as the Backend received it.
type PairCall struct {
	CreatedBy string
	Req       adminapi.PairRequest
}

// Backend is an in-memory adminapi.Backend, safe for the concurrent calls a
// Server makes. Make one with New.
type Backend struct {
	mu     sync.Mutex
	state  State
	killed []string   // ids KillSession removed, in order
	pairs  []PairCall // PairToken calls that got a code
	follow int        // followed Events streams open now
}

var _ adminapi.Backend = (*Backend)(nil)

// New returns a Backend that answers from a copy of s.
func New(s State) *Backend {
	s.Sessions = slices.Clone(s.Sessions)
	s.Terminals = slices.Clone(s.Terminals)
	s.Tokens = slices.Clone(s.Tokens)
	s.Pairings = slices.Clone(s.Pairings)
	s.Lockouts = slices.Clone(s.Lockouts)
	s.Failures = slices.Clone(s.Failures)
	s.Servers = slices.Clone(s.Servers)
	s.Events = slices.Clone(s.Events)
	s.Unanswered = slices.Clone(s.Unanswered)
	return &Backend{state: s}
}

// Update calls f with the Backend's State, holding the Backend's lock: the
// way a test changes the group (or injects a failure) while the Backend is
// being served.
func (b *Backend) Update(f func(*State)) {
	b.mu.Lock()
	defer b.mu.Unlock()
	f(&b.state)
}

// Killed returns the ids of the sessions KillSession removed, in order.
func (b *Backend) Killed() []string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return slices.Clone(b.killed)
}

// PairCalls returns the PairToken calls that were answered with a code.
func (b *Backend) PairCalls() []PairCall {
	b.mu.Lock()
	defer b.mu.Unlock()
	return slices.Clone(b.pairs)
}

// Sessions returns the sessions that pass f and the State's Unanswered
// members that a listing with f asks.
func (b *Backend) Sessions(ctx context.Context, f adminapi.SessionFilter) (adminapi.SessionList, error) {
	b.mu.Lock()
	entered, release := b.state.SessionsEntered, b.state.SessionsRelease
	b.mu.Unlock()
	if entered != nil {
		entered <- struct{}{}
	}
	if release != nil {
		select {
		case <-release:
		case <-ctx.Done():
			return adminapi.SessionList{}, ctx.Err()
		}
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.state.SessionsErr != nil {
		return adminapi.SessionList{}, b.state.SessionsErr
	}
	var out adminapi.SessionList
	for _, s := range b.state.Sessions {
		if f.Match(s) {
			out.Sessions = append(out.Sessions, s)
		}
	}
	for _, id := range b.state.Unanswered {
		if f.Server == "" || f.Server == id {
			out.Unanswered = append(out.Unanswered, id)
		}
	}
	return out, nil
}

// KillSession removes session id and records it (see Killed).
func (b *Backend) KillSession(_ context.Context, id string) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	if err := remove(&b.state.Sessions, sessionID, "session", id); err != nil {
		return err
	}
	b.killed = append(b.killed, id)
	return nil
}

// DisconnectSession suspends session id.
func (b *Backend) DisconnectSession(_ context.Context, id string) error {
	return b.suspend(id)
}

// LockSession suspends session id.
func (b *Backend) LockSession(_ context.Context, id string) error {
	return b.suspend(id)
}

// suspend makes session id suspended, its terminal its last one.
func (b *Backend) suspend(id string) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	i, err := find(b.state.Sessions, sessionID, "session", id)
	if err != nil {
		return err
	}
	s := &b.state.Sessions[i]
	if s.Terminal != "" {
		s.LastTerminal, s.Terminal = s.Terminal, ""
	}
	s.State = "suspended"
	return nil
}

// Terminals returns the State's terminals.
func (b *Backend) Terminals(context.Context) ([]adminapi.TerminalInfo, error) {
	return list(b, func(s *State) []adminapi.TerminalInfo { return s.Terminals }), nil
}

// Events emits the last n of the State's events; then, if follow, it waits
// for ctx to end (no new events come).
func (b *Backend) Events(ctx context.Context, n int, follow bool, emit func(event.Event) error) error {
	b.mu.Lock()
	evs := b.state.Events
	evs = slices.Clone(evs[len(evs)-min(max(n, 0), len(evs)):])
	b.mu.Unlock()
	for _, e := range evs {
		if err := emit(e); err != nil {
			return err
		}
	}
	b.mu.Lock()
	failed := b.state.EventsErr
	b.mu.Unlock()
	if failed != nil {
		return failed
	}
	if follow {
		b.mu.Lock()
		b.follow++
		b.mu.Unlock()
		<-ctx.Done()
		b.mu.Lock()
		b.follow--
		b.mu.Unlock()
	}
	return nil
}

// Following is how many followed Events streams are open now.
func (b *Backend) Following() int {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.follow
}

// Pairings returns the State's pending pairing codes.
func (b *Backend) Pairings(context.Context) ([]adminapi.PairingInfo, error) {
	return list(b, func(s *State) []adminapi.PairingInfo { return s.Pairings }), nil
}

// RevokePairing removes pairing code id.
func (b *Backend) RevokePairing(_ context.Context, id string) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	return remove(&b.state.Pairings, pairingID, "pairing code", id)
}

// Lockouts returns the State's lockouts.
func (b *Backend) Lockouts(context.Context) ([]adminapi.LockoutInfo, error) {
	return list(b, func(s *State) []adminapi.LockoutInfo { return s.Lockouts }), nil
}

// Failures returns the State's failure counts.
func (b *Backend) Failures(context.Context) ([]adminapi.FailureInfo, error) {
	return list(b, func(s *State) []adminapi.FailureInfo { return s.Failures }), nil
}

// ClearLockout removes the lockout of key.
func (b *Backend) ClearLockout(_ context.Context, key string) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	return remove(&b.state.Lockouts, lockoutKey, "lockout", key)
}

// PairToken records the call (see PairCalls) and answers PairCode, or fails
// with the State's PairErr.
func (b *Backend) PairToken(_ context.Context, createdBy string, req adminapi.PairRequest) (adminapi.PairResponse, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.state.PairErr != nil {
		return adminapi.PairResponse{}, b.state.PairErr
	}
	b.pairs = append(b.pairs, PairCall{CreatedBy: createdBy, Req: req})
	return adminapi.PairResponse{Code: PairCode, Expires: PairExpires}, nil
}

// Ready returns the State's NotReady.
func (b *Backend) Ready() error {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.state.NotReady
}

// Tokens returns the State's tokens.
func (b *Backend) Tokens(context.Context) ([]adminapi.TokenInfo, error) {
	return list(b, func(s *State) []adminapi.TokenInfo { return s.Tokens }), nil
}

// RegisterToken adds a token; an id already registered is ErrInvalid.
func (b *Backend) RegisterToken(_ context.Context, by string, req adminapi.RegisterRequest) (adminapi.TokenInfo, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.register(by, req)
}

// register adds a token. b.mu is held.
func (b *Backend) register(by string, req adminapi.RegisterRequest) (adminapi.TokenInfo, error) {
	if _, err := find(b.state.Tokens, tokenID, "token", req.ID); err == nil {
		return adminapi.TokenInfo{}, fmt.Errorf("adminapitest: token %s exists: %w", req.ID, adminapi.ErrInvalid)
	}
	ti := adminapi.TokenInfo{ID: req.ID, User: req.User, Label: req.Label, RegisteredBy: by}
	b.state.Tokens = append(b.state.Tokens, ti)
	return ti, nil
}

// AliasToken registers id to the user of token req.Of; an unknown req.Of
// is ErrNotFound.
func (b *Backend) AliasToken(_ context.Context, by, id string, req adminapi.AliasRequest) (adminapi.TokenInfo, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	of, err := find(b.state.Tokens, tokenID, "token", req.Of)
	if err != nil {
		return adminapi.TokenInfo{}, err
	}
	return b.register(by, adminapi.RegisterRequest{ID: id, User: b.state.Tokens[of].User, Label: req.Label})
}

// SetTokenDisabled disables or enables token id.
func (b *Backend) SetTokenDisabled(_ context.Context, id string, disabled bool) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	i, err := find(b.state.Tokens, tokenID, "token", id)
	if err != nil {
		return err
	}
	b.state.Tokens[i].Disabled = disabled
	return nil
}

// DeleteToken removes token id.
func (b *Backend) DeleteToken(_ context.Context, id string) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	return remove(&b.state.Tokens, tokenID, "token", id)
}

// Servers returns the State's servers.
func (b *Backend) Servers(context.Context) ([]adminapi.ServerInfo, error) {
	return list(b, func(s *State) []adminapi.ServerInfo { return s.Servers }), nil
}

// SetDraining drains or undrains server id ("" or "self": the server whose
// Self is set).
func (b *Backend) SetDraining(_ context.Context, id string, draining bool) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	self := id == "" || id == "self"
	i := slices.IndexFunc(b.state.Servers, func(s adminapi.ServerInfo) bool { return s.ID == id || (self && s.Self) })
	if i < 0 {
		return fmt.Errorf("adminapitest: server %s: %w", id, adminapi.ErrNotFound)
	}
	b.state.Servers[i].Draining = draining
	return nil
}

// list returns a copy of the list of the State that pick picks.
func list[T any](b *Backend, pick func(*State) []T) []T {
	b.mu.Lock()
	defer b.mu.Unlock()
	return slices.Clone(pick(&b.state))
}

// find returns the index in items of the element whose id (idOf) is id; an
// unknown id is an error wrapping ErrNotFound that calls it a what.
func find[T any](items []T, idOf func(T) string, what, id string) (int, error) {
	i := slices.IndexFunc(items, func(e T) bool { return idOf(e) == id })
	if i < 0 {
		return -1, fmt.Errorf("adminapitest: %s %s: %w", what, id, adminapi.ErrNotFound)
	}
	return i, nil
}

// remove deletes the element whose id is id from *items (see find).
func remove[T any](items *[]T, idOf func(T) string, what, id string) error {
	i, err := find(*items, idOf, what, id)
	if err != nil {
		return err
	}
	*items = slices.Delete(*items, i, i+1)
	return nil
}

func sessionID(s adminapi.SessionInfo) string  { return s.ID }
func pairingID(p adminapi.PairingInfo) string  { return p.ID }
func lockoutKey(l adminapi.LockoutInfo) string { return l.Key }
func tokenID(t adminapi.TokenInfo) string      { return t.ID }
