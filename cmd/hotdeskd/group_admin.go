package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/hotdesk/hotdesk/auth"
	"github.com/hotdesk/hotdesk/broker"
	"github.com/hotdesk/hotdesk/cmd/internal/adminapi"
	"github.com/hotdesk/hotdesk/internal/event"
	"github.com/hotdesk/hotdesk/registry"
)

// Group-wide administration: any broker's admin API answers for the whole
// group. Listings and actions about sessions another broker runs are
// forwarded to it through etcd (registry.SendCommand, proto/ADMIN.md);
// terminals and events are read from the registry directly.

// commandTimeout bounds one forwarded command.
const commandTimeout = 5 * time.Second

// Command ops (proto/ADMIN.md).
const (
	opSessions   = "sessions"
	opKill       = "kill"
	opDisconnect = "disconnect"
	opLock       = "lock"
)

// localSessions lists the sessions this broker runs that pass f.
func (a *adminBackend) localSessions(f adminapi.SessionFilter) []adminapi.SessionInfo {
	ss := a.d.broker.Sessions()
	out := make([]adminapi.SessionInfo, 0, len(ss))
	for _, s := range ss {
		si := adminapi.SessionInfo{
			ID: s.ID, Token: s.Token, User: s.User, State: s.State.String(), Terminal: s.Terminal,
			ServerID: s.ServerID, Endpoint: s.Endpoint, PID: s.PID, Created: s.Created, Updated: s.Updated,
			Orphaned: s.Orphaned, OrphanOwner: s.OrphanOwner, IdleSince: ptr(s.Updated),
		}
		if !s.SuspendedAt.IsZero() {
			si.SuspendedAt = ptr(s.SuspendedAt)
			si.ExpiresAt = ptr(s.ExpiresAt)
			si.IdleSince = ptr(s.SuspendedAt)
		}
		if s.Terminal == "" {
			si.LastTerminal = s.LastTerminal // from the claim: survives a restart
			if si.LastTerminal == "" && a.d.presence != nil {
				si.LastTerminal = a.d.presence.lastTerminal(s.ID)
			}
		}
		if f.Match(si) {
			out = append(out, si)
		}
	}
	return out
}

// Sessions lists the group's sessions: this broker's from memory, every
// other member's by asking it; a member that does not answer in time is
// named in Unanswered and listed from the registry (Partial rows, none if
// its lease expired meanwhile).
func (a *adminBackend) Sessions(ctx context.Context, f adminapi.SessionFilter) (adminapi.SessionList, error) {
	reg := a.d.registry()
	servers, err := reg.Servers(ctx)
	if err != nil {
		return adminapi.SessionList{}, err
	}
	self := a.d.cfg.ServerID
	out := a.localSessions(f)
	var mu sync.Mutex
	var wg sync.WaitGroup
	var missing []string
	for _, srv := range servers {
		if srv.ID == self || (f.Server != "" && f.Server != srv.ID) {
			continue
		}
		wg.Add(1)
		go func(id string) {
			defer wg.Done()
			args, _ := json.Marshal(f)
			cctx, cancel := context.WithTimeout(ctx, commandTimeout)
			res, err := reg.SendCommand(cctx, id, registry.Command{Op: opSessions, Args: args})
			cancel()
			var ss []adminapi.SessionInfo
			if err == nil && res.Code == "" {
				err = json.Unmarshal(res.Data, &ss)
			} else if err == nil {
				err = errors.New(res.Error)
			}
			mu.Lock()
			defer mu.Unlock()
			if err != nil {
				a.d.log.Warn("session listing: member did not answer; using the registry's view", "server_id", id, "error", err)
				missing = append(missing, id)
				return
			}
			out = append(out, ss...)
		}(srv.ID)
	}
	wg.Wait()
	if len(missing) > 0 {
		claims, err := reg.Sessions(ctx)
		if err != nil {
			return adminapi.SessionList{}, err
		}
		for _, c := range claims {
			if !slices.Contains(missing, c.Session.ServerID) {
				continue
			}
			si := adminapi.SessionInfo{ID: c.Session.ID, Token: c.Key, User: c.Session.User, State: c.Session.State,
				Terminal: c.Session.Terminal, ServerID: c.Session.ServerID, Created: time.UnixMilli(c.Session.CreatedUnixMs),
				Updated: time.UnixMilli(c.Session.UpdatedUnixMs), IdleSince: ptr(time.UnixMilli(c.Session.UpdatedUnixMs)), Partial: true}
			if f.Match(si) {
				out = append(out, si)
			}
		}
	}
	sort.SliceStable(out, func(i, j int) bool {
		if !out[i].Created.Equal(out[j].Created) {
			return out[i].Created.Before(out[j].Created)
		}
		return out[i].ID < out[j].ID
	})
	slices.Sort(missing)
	return adminapi.SessionList{Sessions: out, Unanswered: missing}, nil
}

// localAction runs op on a session of this broker.
func (a *adminBackend) localAction(ctx context.Context, op, id string) error {
	var err error
	switch op {
	case opKill:
		err = a.d.broker.Kill(ctx, id)
	case opDisconnect:
		err = a.d.broker.Disconnect(ctx, id)
	case opLock:
		err = a.d.broker.Lock(ctx, id)
	default:
		return fmt.Errorf("%w: unknown operation %q", adminapi.ErrInvalid, op)
	}
	if errors.Is(err, broker.ErrNotFound) {
		return fmt.Errorf("%w: session %s", adminapi.ErrNotFound, id)
	}
	return err
}

// action runs op on session id wherever it runs: here, at the owner the
// registry names, or (an orphan is in no claim) at whichever member has it.
func (a *adminBackend) action(ctx context.Context, op, id string) error {
	err := a.localAction(ctx, op, id)
	if !errors.Is(err, adminapi.ErrNotFound) {
		return err
	}
	reg := a.d.registry()
	var targets []string
	if claims, cerr := reg.Sessions(ctx); cerr == nil {
		for _, c := range claims {
			if c.Session.ID == id && c.Session.ServerID != a.d.cfg.ServerID {
				targets = append(targets, c.Session.ServerID)
			}
		}
	}
	if len(targets) == 0 {
		servers, serr := reg.Servers(ctx)
		if serr != nil {
			return serr
		}
		for _, s := range servers {
			if s.ID != a.d.cfg.ServerID {
				targets = append(targets, s.ID)
			}
		}
	}
	budget := commandTimeout
	if op == opKill {
		// The owner answers once the desktop is gone: a compositor that
		// ignores the stop request takes the stop grace, then SIGTERM's.
		budget += 2 * a.d.cfg.Compositor.StopGrace
	}
	for _, srv := range targets {
		cctx, cancel := context.WithTimeout(ctx, budget)
		res, err := reg.SendCommand(cctx, srv, registry.Command{Op: op, Session: id, By: "admin@" + a.d.cfg.ServerID})
		cancel()
		if err != nil {
			return fmt.Errorf("forwarding %s of %s to %s: %w", op, id, srv, err)
		}
		switch res.Code {
		case "":
			return nil
		case "not_found":
			continue
		case "invalid":
			return fmt.Errorf("%w: %s", adminapi.ErrInvalid, res.Error)
		default:
			return fmt.Errorf("server %s: %s", srv, res.Error)
		}
	}
	return fmt.Errorf("%w: session %s is not running anywhere in the group", adminapi.ErrNotFound, id)
}

func (a *adminBackend) KillSession(ctx context.Context, id string) error {
	return a.action(ctx, opKill, id)
}

func (a *adminBackend) DisconnectSession(ctx context.Context, id string) error {
	return a.action(ctx, opDisconnect, id)
}

func (a *adminBackend) LockSession(ctx context.Context, id string) error {
	return a.action(ctx, opLock, id)
}

// handleCommand runs a command another member forwarded to this broker.
func (a *adminBackend) handleCommand(ctx context.Context, cmd registry.Command) registry.CommandResult {
	switch cmd.Op {
	case opSessions:
		var f adminapi.SessionFilter
		if len(cmd.Args) > 0 {
			if err := json.Unmarshal(cmd.Args, &f); err != nil {
				return registry.CommandResult{Code: "invalid", Error: "bad filter"}
			}
		}
		data, _ := json.Marshal(a.localSessions(f))
		return registry.CommandResult{Data: data}
	case opKill, opDisconnect, opLock:
		err := a.localAction(ctx, cmd.Op, cmd.Session)
		switch {
		case err == nil:
			a.d.log.Info("session "+cmd.Op+" forwarded by a group member", "session_id", cmd.Session, "from", cmd.From, "by", cmd.By)
			return registry.CommandResult{}
		case errors.Is(err, adminapi.ErrNotFound):
			return registry.CommandResult{Code: "not_found", Error: err.Error()}
		default:
			return registry.CommandResult{Code: "error", Error: err.Error()}
		}
	}
	return registry.CommandResult{Code: "invalid", Error: "unknown operation " + cmd.Op}
}

// Terminals lists the group's terminal records, hiding stale ones.
func (a *adminBackend) Terminals(ctx context.Context) ([]adminapi.TerminalInfo, error) {
	recs, err := a.d.registry().Terminals(ctx)
	if err != nil {
		return nil, err
	}
	return convertAll(currentTerminals(recs, a.d.clk.Now().Add(-presenceStale)), nil, func(r registry.TerminalRecord) adminapi.TerminalInfo {
		return adminapi.TerminalInfo{ID: r.ID, Name: r.Name, Addr: r.Addr, ServerID: r.ServerID, Tokens: r.Tokens,
			Session: r.Session, User: r.User, Connected: time.UnixMilli(r.ConnectedUnixMs), LastSeen: time.UnixMilli(r.SeenUnixMs)}
	})
}

// Events writes the last n stored events of the group, then (follow) the
// live stream: every member's events and membership changes.
func (a *adminBackend) Events(ctx context.Context, n int, follow bool, emit func(event.Event) error) error {
	reg := a.d.registry()
	var live <-chan registry.GroupChange
	wctx, cancel := context.WithCancel(ctx)
	defer cancel()
	if follow {
		live = reg.WatchGroup(wctx) // before the history: nothing falls in between
	}
	if n > 0 {
		hist, err := reg.RecentEvents(ctx, n)
		if err != nil {
			return err
		}
		for _, raw := range hist {
			var e event.Event
			if json.Unmarshal(raw, &e) != nil {
				continue
			}
			if err := emit(e); err != nil {
				return err
			}
		}
	}
	if !follow {
		return nil
	}
	left := map[string]time.Time{} // servers whose own server_left was seen
	for gc := range live {
		e, ok := groupEvent(gc, left, a.d.clk.Now())
		if !ok {
			continue
		}
		if err := emit(e); err != nil {
			return err
		}
	}
	return nil
}

// groupEvent converts a registry change into an event line. Servers store
// their own membership events (joined, draining, undrained, left at a
// stop), so of the membership changes only a record that vanished without
// its server saying so (its lease expired or was revoked: it died) makes
// one here. left remembers the servers that said so, and when (now, on
// the daemon's clock): a record vanishing within a minute of its server's
// server_left is that stop's, unless the server came back in between (its
// record appeared again, or its server_joined was seen).
func groupEvent(gc registry.GroupChange, left map[string]time.Time, now time.Time) (event.Event, bool) {
	var e event.Event
	switch {
	case gc.Event != nil:
		if json.Unmarshal(gc.Event, &e) != nil {
			return e, false
		}
		switch e.Kind {
		case event.ServerLeft:
			if len(left) > 1024 {
				clear(left) // bounded
			}
			left[e.Server] = now
		case event.ServerJoined:
			delete(left, e.Server) // back: its next vanishing is its own
		}
		return e, true
	case gc.Joined:
		delete(left, gc.ServerID)
		return e, false // it says so itself (server_joined)
	case gc.Left:
		if at, ok := left[gc.ServerID]; ok && now.Sub(at) < time.Minute {
			return e, false // it said so itself
		}
		e.Kind, e.Reason = event.ServerLeft, "its record vanished: lease expired or revoked"
	default:
		return e, false
	}
	e.Server, e.Time = gc.ServerID, gc.At
	return e, true
}

func (a *adminBackend) Pairings(ctx context.Context) ([]adminapi.PairingInfo, error) {
	ps, err := a.d.registry().Pairings(ctx)
	return convertAll(ps, err, func(p registry.Pairing) adminapi.PairingInfo {
		return adminapi.PairingInfo{ID: p.ID, User: p.User, Label: p.Label, CreatedBy: p.CreatedBy,
			Expires: time.UnixMilli(p.ExpiresUnixMs)}
	})
}

func (a *adminBackend) Lockouts(ctx context.Context) ([]adminapi.LockoutInfo, error) {
	ls, err := a.d.store.Lockouts(ctx)
	return convertAll(ls, err, func(l registry.Lockout) adminapi.LockoutInfo {
		return adminapi.LockoutInfo{Key: l.Key, Server: l.Server, Until: time.UnixMilli(l.UntilUnixMs).UTC(), Level: l.Level}
	})
}

func (a *adminBackend) Failures(ctx context.Context) ([]adminapi.FailureInfo, error) {
	fs, err := a.d.store.FailureCounts(ctx)
	return convertAll(fs, err, func(f registry.Failures) adminapi.FailureInfo {
		return adminapi.FailureInfo{Key: f.Key, Count: f.Count, Since: time.UnixMilli(f.FirstUnixMs).UTC(), Server: f.Server}
	})
}

// ClearLockout ends key's lockout; a user's ("user:NAME", the name in
// any case: the limiter folds it, auth.UserKey) together with that of
// their password login's token ("token:user.NAME"), which the same
// failures locked.
func (a *adminBackend) ClearLockout(ctx context.Context, key string) error {
	name, isUser := strings.CutPrefix(key, "user:")
	if isUser {
		key = auth.UserKey(name)
	}
	err := a.d.store.ClearLockout(ctx, key)
	if isUser {
		terr := a.d.store.ClearLockout(ctx, "token:user."+name)
		switch {
		case terr == nil && errors.Is(err, registry.ErrNotFound):
			err = nil // only the token's was in force
		case terr != nil && !errors.Is(terr, registry.ErrNotFound) && (err == nil || errors.Is(err, registry.ErrNotFound)):
			err = terr
		}
	}
	if errors.Is(err, registry.ErrNotFound) {
		return fmt.Errorf("%w: no lockout of %s in force", adminapi.ErrNotFound, key)
	}
	return err
}

func (a *adminBackend) RevokePairing(ctx context.Context, id string) error {
	err := a.d.registry().RevokePairing(ctx, id)
	if errors.Is(err, registry.ErrNotFound) {
		return fmt.Errorf("%w: pairing code %s", adminapi.ErrNotFound, id)
	}
	if errors.Is(err, registry.ErrInvalidKey) {
		return fmt.Errorf("%w: %v", adminapi.ErrInvalid, err)
	}
	return err
}

// currentTerminals drops records not refreshed since cutoff and keeps one
// record per terminal: the one of its latest connection. A terminal is
// connected to one broker at a time, but the broker it left may not have
// deleted its record yet (or could not, its registry being unwell); that
// record must not hide where the terminal is now. Key order is kept.
func currentTerminals(recs []registry.TerminalRecord, cutoff time.Time) []registry.TerminalRecord {
	latest := make(map[string]int, len(recs)) // terminal id → index in out
	out := recs[:0:0]
	for _, r := range recs {
		if time.UnixMilli(r.SeenUnixMs).Before(cutoff) {
			continue
		}
		i, ok := latest[r.ID]
		if !ok {
			latest[r.ID] = len(out)
			out = append(out, r)
			continue
		}
		if p := out[i]; r.ConnectedUnixMs > p.ConnectedUnixMs || r.ConnectedUnixMs == p.ConnectedUnixMs && r.SeenUnixMs > p.SeenUnixMs {
			out[i] = r
		}
	}
	return out
}
