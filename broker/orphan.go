package broker

import (
	"cmp"
	"context"
	"slices"
	"strings"
	"time"

	"github.com/hotdesk/hotdesk/auth"
	"github.com/hotdesk/hotdesk/internal/event"
	"github.com/hotdesk/hotdesk/proto"
	"github.com/hotdesk/hotdesk/registry"
)

// Orphans. A session whose token another session claimed while this
// broker was cut off (or frozen, or restarting past the lease's TTL) is
// kept, suspended, as an orphan: it is listed, never destroyed silently
// (PROTOCOL.md §12). When its token has no session anywhere again (the
// other one ended), the token's next presentation gives the orphan back
// (restoreTokenLocked) rather than an empty new desktop: the person finds
// the work they left there. Presented at another broker, the token is
// sent here: each broker writes where its orphans are in the registry
// (OrphanIndex, indexOrphans), and a broker about to start a new session
// for a token looks there first (orphanElsewhere).

// OrphanIndex is an optional capability of a Registry (*registry.Registry
// has it): where the group's orphans are, each broker's records under its
// lease.
type OrphanIndex interface {
	PutOrphan(ctx context.Context, o registry.OrphanRecord) error
	DeleteOrphan(ctx context.Context, token, session string) error
	Orphans(ctx context.Context, token string) ([]registry.OrphanRecord, error)
}

// orphanRetry is how long after a failed write of the orphan index it is
// tried again.
const orphanRetry = 5 * time.Second

// orphansChanged asks indexOrphans to write the orphan index again;
// bursts of changes are coalesced.
func (b *Broker) orphansChanged() {
	select {
	case b.orphanCh <- struct{}{}:
	default:
	}
}

// indexOrphans keeps the registry's orphan index in line with this
// broker's orphans until Shutdown: it writes the record of each orphan
// and deletes those of sessions that are orphans no more, when asked
// (orphansChanged) and orphanRetry after a failure. A new registry (a
// new lease, Reestablish) starts with no record: the old lease's went
// with it.
func (b *Broker) indexOrphans() {
	var (
		reg     Registry
		written = map[string]string{} // session → token, written under reg
	)
	for {
		select {
		case <-b.stop:
			return
		case <-b.orphanCh:
		}
		cur := b.registry()
		idx, ok := cur.(OrphanIndex)
		if !ok {
			continue
		}
		if cur != reg {
			reg, written = cur, map[string]string{}
		}
		if !cur.Healthy() {
			// Lost or overdue: Reestablish asks again with the next
			// lease; an overdue one may come back by itself.
			b.clk.AfterFunc(orphanRetry, b.orphansChanged)
			continue
		}
		want := b.orphanRecords()
		failed := false
		for id, o := range want {
			if _, ok := written[id]; ok {
				continue
			}
			ctx, cancel := context.WithTimeout(b.life, remoteTimeout)
			err := idx.PutOrphan(ctx, o)
			cancel()
			if err != nil {
				b.log.Warn("writing an orphan's record failed", "session", id, "error", err)
				failed = true
				continue
			}
			written[id] = o.Token
		}
		for id, token := range written {
			if _, ok := want[id]; ok {
				continue
			}
			ctx, cancel := context.WithTimeout(b.life, remoteTimeout)
			err := idx.DeleteOrphan(ctx, token, id)
			cancel()
			if err != nil {
				b.log.Warn("deleting an orphan's record failed", "session", id, "error", err)
				failed = true
				continue
			}
			delete(written, id)
		}
		if failed {
			b.clk.AfterFunc(orphanRetry, b.orphansChanged)
		}
	}
}

// orphanRecords are the index records of this broker's suspended orphans,
// by session id.
func (b *Broker) orphanRecords() map[string]registry.OrphanRecord {
	b.mu.Lock()
	defer b.mu.Unlock()
	out := map[string]registry.OrphanRecord{}
	for _, s := range b.byID {
		if !s.orphaned || s.state != Suspended {
			continue
		}
		o := registry.OrphanRecord{Token: s.Token, SessionID: s.ID, ServerID: b.cfg.ServerID, User: s.User,
			CreatedUnixMs: s.created.UnixMilli()}
		if !s.suspendedAt.IsZero() {
			o.SuspendedUnixMs = s.suspendedAt.UnixMilli()
		}
		out[s.ID] = o
	}
	return out
}

// orphanElsewhere returns the group member that holds the newest orphan of
// token, if another does: a token without a session is sent there to get
// it back. Any failure to read the index or to find the member is "none":
// the token then gets a new session, as it would without the index.
func (b *Broker) orphanElsewhere(ctx context.Context, token string) (registry.ServerRecord, bool) {
	idx, ok := b.registry().(OrphanIndex)
	if !ok {
		return registry.ServerRecord{}, false
	}
	lctx, cancel := context.WithTimeout(ctx, remoteTimeout)
	defer cancel()
	recs, err := idx.Orphans(lctx, token)
	if err != nil {
		b.log.Warn("reading the orphan index failed; a new session instead", "token", token, "error", err)
		return registry.ServerRecord{}, false
	}
	slices.SortFunc(recs, func(a, c registry.OrphanRecord) int { return cmp.Compare(c.CreatedUnixMs, a.CreatedUnixMs) })
	for _, o := range recs {
		if o.ServerID == b.cfg.ServerID {
			continue // a record of ours the index writer has not deleted yet
		}
		srv, err := b.registry().ServerLocal(lctx, o.ServerID)
		if err != nil {
			continue // its lease gone or going: its records go with it
		}
		return srv, true
	}
	return registry.ServerRecord{}, false
}

// orphanTokenLocked marks s as orphaned: another server owns its token now. The
// session is suspended (its terminal told why) and no longer located by its
// token here. Caller holds the token lock.
func (b *Broker) orphanTokenLocked(s *Session, owner string) {
	b.log.Warn("session orphaned: its token is owned by another session now", "session", s.ID, "owner", owner)
	b.emit(event.Event{Kind: event.SessionOrphaned, Session: s.ID, User: s.User, Token: s.Token, Target: owner})
	b.mu.Lock()
	s.orphaned = true
	s.owner = owner
	if b.byToken[s.Token] == s {
		delete(b.byToken, s.Token)
	}
	active := s.state == Active
	b.mu.Unlock()
	if active {
		msg := "session locked: its token belongs to another session now"
		if owner != "" && owner != b.cfg.ServerID {
			msg = "session locked: its token moved to server " + owner
		}
		b.suspendTokenLocked(b.life, s, proto.DetachLocked, msg)
	}
	b.countChanged()
	b.orphansChanged() // suspended now: indexed
}

// orphanFor returns the orphan of token this broker would give back at the
// token's next presentation: the newest suspended one, nil if none.
func (b *Broker) orphanFor(token string) *Session {
	b.mu.Lock()
	defer b.mu.Unlock()
	var best *Session
	for _, s := range b.byID {
		if !s.orphaned || s.Token != token || s.state != Suspended {
			continue
		}
		if best == nil || s.created.After(best.created) || (s.created.Equal(best.created) && s.ID > best.ID) {
			best = s
		}
	}
	return best
}

// restoreTokenLocked gives orphan o back to its token, presented at t when
// the token has no session in the group: after a login as for a new
// session (an orphan is resumed as a locked session is), o claims the
// token's key as a new session would (the user's session limit counted);
// won, it is the token's session again, resumed at t. Lost to another
// broker's claim meanwhile, o stays an orphan and t goes to the winner.
// A login that resolves to another user than o's (the token enrolled
// for someone else since) leaves o as it is: done is false and the
// insert goes on to a new session. Caller holds the token lock.
func (b *Broker) restoreTokenLocked(ctx context.Context, t *terminal, o *Session, rec registry.TokenRecord, hops uint8) (done bool, err error) {
	// A token enrolled for another user since the orphan was made asks no
	// login for a desktop it would not get, where the policy says whose
	// the session is before the login (every kind but kiosk: the token's
	// user; names match case-insensitively). The check after the login
	// decides in every case.
	if pol := b.policy(o.Token, rec.User); pol.Kind != "" && pol.Kind != auth.KindKiosk && !strings.EqualFold(rec.User, o.User) {
		b.log.Warn("orphan not restored: its token is enrolled for another user now", "session", o.ID, "user", rec.User)
		return false, nil
	}
	res, err := b.authenticate(ctx, t, o.Token, rec, true, true, false)
	if err != nil {
		return true, err
	}
	b.closeLogin(res.Session) // the desktop keeps the PAM session it was created with
	if res.User != o.User {
		b.log.Warn("orphan not restored: its token resolves to another user now", "session", o.ID, "user", res.User)
		return false, nil
	}
	maxUser := b.userLimit(o.Token, o.User)
	unlockUser := b.lockUserLimit(o.Token, o.User)
	b.mu.Lock()
	o.locked = true // until attached: a failed resume below leaves it asking a login
	b.mu.Unlock()
	cctx, cancel := context.WithTimeout(ctx, remoteTimeout)
	c, won, err := b.claimNew(cctx, o.Token, b.record(o, nil), maxUser)
	cancel()
	unlockUser()
	if err != nil {
		return true, err
	}
	if !won {
		if c.Session.ServerID == b.cfg.ServerID {
			return true, fail(proto.ErrInternal, "claim held by this server without a session", nil)
		}
		return true, b.redirect(ctx, t, c, hops)
	}
	b.mu.Lock()
	alive := b.byID[o.ID] == o && o.state == Suspended && o.orphaned
	if alive {
		o.orphaned, o.owner = false, ""
		o.setClaimLocked(c)
		b.byToken[o.Token] = o
	}
	b.mu.Unlock()
	if !alive {
		// Killed or timed out during the login: the key goes back.
		rctx, cancel := context.WithTimeout(b.life, remoteTimeout)
		_ = b.registry().Release(rctx, c)
		cancel()
		return true, fail(proto.ErrUnavailable, "session ended; present the token again", nil)
	}
	b.log.Info("orphan restored to its token", "session", o.ID, "user", o.User, "terminal", t.id, "fence", c.Fence)
	b.emit(sessionEvent(event.SessionRestored, o, t, "its token had no session"))
	b.countChanged()
	b.orphansChanged()
	if err := b.resumeDesktopTokenLocked(ctx, o); err != nil {
		return true, err
	}
	return true, b.attachTokenLocked(ctx, t, o, true, nil)
}
