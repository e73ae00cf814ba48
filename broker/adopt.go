package broker

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"strconv"
	"sync"
	"time"

	"github.com/hotdesk/hotdesk/compositor"
	"github.com/hotdesk/hotdesk/registry"
	"github.com/hotdesk/hotdesk/tokens"
)

// Labels the broker keeps with each compositor (compositor.Spec.Labels) so
// that a restarted broker knows which token a running desktop belongs to.
const (
	labelToken   = "hotdesk.token"
	labelCreated = "hotdesk.created_unix_ms"
)

// Adopt takes over desktops a previous broker process left running (the
// backend's Adopt found and verified them): each becomes a suspended
// session again, its token re-claimed in the registry, its suspend timer
// counting from the suspension its previous claim recorded (an orphan's:
// its record in the orphan index; from now if none). A claim the previous
// process still holds for the same session (its lease kept alive across a
// restart, or not yet expired after a crash) is moved to this process's
// lease keeping its fence, so terminals redirected before the restart are
// still welcome. A desktop whose token another server claimed meanwhile
// is kept as an orphan; one without a token label is reported lost and
// left to the caller. Call before serving terminals.
//
// A token may have several desktops here: an orphan the previous process
// kept (its token was claimed elsewhere while it had lost its lease) and
// the session it later created for the token when it came back. They are
// taken one after another, newest first: the one the token's claim names
// is its session, and where the claim names none of them (it expired) the
// newest is (an orphan is always older than a session created for its
// token after it). The others are kept as orphans again, never stopped:
// they hold someone's work.
func (b *Broker) Adopt(ctx context.Context, infos []compositor.Info) (adopted []SessionInfo, lost []compositor.Exit) {
	// Side by side, a few at a time: each takes two etcd round trips (its
	// claim read, then moved), and a server restarted with a hundred
	// desktops would otherwise wait for them one after another before it
	// serves a terminal. A token's desktops go one after another, newest
	// first, in one worker.
	var mu sync.Mutex
	var wg sync.WaitGroup
	sem := make(chan struct{}, adoptWorkers)
	for _, group := range byToken(infos) {
		sem <- struct{}{}
		wg.Go(func() {
			defer func() { <-sem }()
			for _, info := range group {
				si, ex := b.adoptOne(ctx, info)
				mu.Lock()
				if si != nil {
					adopted = append(adopted, *si)
				}
				if ex != nil {
					lost = append(lost, *ex)
				}
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	b.countChanged()
	return adopted, lost
}

// byToken groups desktops by their token label, in the order of infos;
// within a group the newest (the creation its label records) comes first.
// A desktop without a valid label is a group of its own.
func byToken(infos []compositor.Info) [][]compositor.Info {
	var groups [][]compositor.Info
	at := map[string]int{}
	for _, info := range infos {
		token := info.Labels[labelToken]
		i, ok := at[token]
		if !ok || !validToken(token) {
			at[token] = len(groups)
			groups = append(groups, []compositor.Info{info})
			continue
		}
		groups[i] = append(groups[i], info)
	}
	for _, g := range groups {
		sort.SliceStable(g, func(i, j int) bool { return createdAt(g[i]).After(createdAt(g[j])) })
	}
	return groups
}

// createdAt is when a desktop's session was created: its label, else the
// process's start.
func createdAt(info compositor.Info) time.Time {
	if ms, err := strconv.ParseInt(info.Labels[labelCreated], 10, 64); err == nil {
		return time.UnixMilli(ms)
	}
	return info.Started
}

// validToken reports whether token is a token id (a desktop's label).
func validToken(token string) bool {
	_, _, err := tokens.ParseID(token)
	return err == nil
}

// adoptWorkers bounds the desktops Adopt takes over at once.
const adoptWorkers = 8

// adoptOne takes over one desktop for Adopt: its session, or why it was
// not adopted.
func (b *Broker) adoptOne(ctx context.Context, info compositor.Info) (*SessionInfo, *compositor.Exit) {
	token := info.Labels[labelToken]
	if _, _, err := tokens.ParseID(token); err != nil {
		return nil, &compositor.Exit{SessionID: info.SessionID, PID: info.PID,
			Err: fmt.Errorf("broker: adopt: no valid token label: %w", err)}
	}
	now := b.clk.Now()
	// The claim's key is known before the claim itself: if etcd does
	// not answer now, a later Reclaim still knows which key is ours.
	s := &Session{ID: info.SessionID, Token: token, User: info.User, state: Suspended, info: info,
		created: createdAt(info), updated: now, suspendedAt: now, claim: registry.Claim{Key: token}}
	unlock := b.keys.Lock(token)
	b.mu.Lock()
	prev := b.byToken[token]
	b.byID[s.ID] = s
	if prev == nil {
		b.byToken[token] = s
	}
	s.timer = b.clk.AfterFunc(b.cfg.SuspendTimeout, func() { b.expire(s) })
	b.mu.Unlock()
	if err := b.cfg.Compositor.Suspend(ctx, s.ID); err != nil {
		b.log.Warn("adopted compositor could not be marked suspended", "session", s.ID, "error", err)
	}
	if prev != nil {
		// An older desktop of a token whose session was adopted just
		// before: the orphan it was, again.
		b.adoptOrphanTokenLocked(ctx, s, b.cfg.ServerID)
	} else {
		b.claimAdopted(ctx, s)
	}
	unlock()
	b.mu.Lock()
	si := b.infoLocked(s)
	b.mu.Unlock()
	b.log.Info("session adopted", "session", s.ID, "token", token, "pid", info.PID, "orphaned", s.orphaned)
	return &si, nil
}

// claimAdopted claims adopted session s's token (adoptClaim): s is its
// session, or an orphan if another holds the claim, or kept unclaimed and
// claimed in the background if the registry does not answer. Caller holds
// the token lock.
func (b *Broker) claimAdopted(ctx context.Context, s *Session) {
	c, won, err := b.adoptClaim(ctx, s)
	switch {
	case err != nil:
		// Kept, unclaimed (fence 0), and claimed in the background
		// as soon as the registry answers (reclaimAdopted).
		b.log.Warn("adopted session not claimed yet; retrying", "session", s.ID, "error", err)
		b.mu.Lock()
		s.locked = true // its lock is unknown until the claim is read: fail closed
		b.mu.Unlock()
		b.goAttach(func() { b.reclaimAdopted(s) })
	case won:
		b.mu.Lock()
		s.setClaimLocked(c)
		b.mu.Unlock()
	default:
		b.adoptOrphanTokenLocked(ctx, s, c.Session.ServerID)
	}
}

// reclaimAdopted claims adopted session s whose claim failed at Adopt,
// once a second until it is claimed or orphaned, it ends, or the broker
// shuts down. Until then the previous run's lease must not be revoked
// (Unclaimed): the claim it still holds is what this takes over.
func (b *Broker) reclaimAdopted(s *Session) {
	tick := make(chan struct{}, 1)
	for {
		t := b.clk.AfterFunc(time.Second, func() {
			select {
			case tick <- struct{}{}:
			default:
			}
		})
		select {
		case <-b.stop:
			t.Stop()
			return
		case <-tick:
		}
		unlock := b.keys.Lock(s.Token)
		b.mu.Lock()
		done := s.claim.Fence != 0 || s.orphaned
		b.mu.Unlock()
		if done || b.current(s) == nil {
			unlock()
			return
		}
		c, won, err := b.adoptClaim(b.life, s)
		switch {
		case err != nil:
			b.log.Debug("adopted session still not claimed", "session", s.ID, "error", err)
		case won:
			b.mu.Lock()
			s.setClaimLocked(c)
			b.mu.Unlock()
			b.log.Info("adopted session claimed", "session", s.ID, "fence", c.Fence)
		default:
			b.adoptOrphanTokenLocked(b.life, s, c.Session.ServerID)
		}
		unlock()
		if err == nil {
			b.countChanged()
			return
		}
	}
}

// Unclaimed reports how many adopted sessions are not claimed yet (the
// registry did not answer at Adopt): while any is, the previous run's
// lease, which may still hold their claims, must be left to expire.
func (b *Broker) Unclaimed() int {
	b.mu.Lock()
	defer b.mu.Unlock()
	n := 0
	for _, s := range b.byID {
		if s.claim.Fence == 0 && !s.orphaned && s.state != Creating {
			n++
		}
	}
	return n
}

// adoptClaim claims s's token for an adopted desktop: the previous
// process's claim of the same session is taken over (Reclaim keeps its
// fence); an absent key is claimed anew. won=false: c is another owner's.
// An administrator's lock is read from the previous claim; when there is
// none to read (it expired, or someone removed it) the session is taken as
// locked: its next resume logs in, whatever the policy says of hot-desks.
func (b *Broker) adoptClaim(ctx context.Context, s *Session) (c registry.Claim, won bool, err error) {
	reg := b.registry()
	lctx, cancel := context.WithTimeout(ctx, remoteTimeout)
	defer cancel()
	cur, err := reg.Lookup(lctx, s.Token)
	switch {
	case errors.Is(err, registry.ErrNotFound):
		b.mu.Lock()
		s.locked = true // fail closed: a lock may have been lost with the claim
		b.mu.Unlock()
		return reg.Claim(lctx, s.Token, b.record(s, nil))
	case err != nil:
		return registry.Claim{}, false, err
	case cur.Session.ServerID != b.cfg.ServerID || cur.Session.ID != s.ID:
		return cur, false, nil
	}
	// An administrator's lock outlives the restart, and so does the
	// suspension's start: the suspend timeout counts from it, not from
	// the restart (a broker restarted more often than the timeout would
	// keep a suspended desktop for ever).
	b.mu.Lock()
	s.locked = cur.Session.Locked
	if s.lastTerminal == "" && cur.Session.State == Suspended.String() {
		s.lastTerminal = cur.Session.LastTerminal
	}
	if ms := cur.Session.SuspendedUnixMs; ms > 0 && cur.Session.State == Suspended.String() {
		b.suspendedSinceLocked(s, time.UnixMilli(ms))
	}
	// So does the resume key's hash, and with it the grace of the
	// terminal that showed the session (reconnect.go): this claim is our
	// own of this very session, so the key is one this server gave.
	b.restoreResumeLocked(s, cur.Session)
	b.mu.Unlock()
	rc, ok := reg.(Reclaimer)
	if !ok {
		return cur, true, nil
	}
	return rc.Reclaim(lctx, cur, b.record(s, nil))
}

// suspendedSinceLocked moves the start of adopted s's suspension back to
// at, if that is earlier, its suspend timer counting from it. Caller holds
// b.mu.
func (b *Broker) suspendedSinceLocked(s *Session, at time.Time) {
	if !at.Before(s.suspendedAt) {
		return
	}
	s.suspendedAt = at
	if s.timer != nil {
		s.timer.Stop()
	}
	s.timer = b.clk.AfterFunc(max(b.cfg.SuspendTimeout-b.clk.Now().Sub(at), 0), func() { b.expire(s) })
}

// adoptOrphanTokenLocked keeps adopted s as an orphan (owner holds its
// token's claim). Its suspension's start is read from the record the
// previous process wrote in the orphan index, still there under its lease
// after a restart within the lease's TTL: an orphan's suspend timeout then
// counts from its suspension, not from the restart. Caller holds the
// token lock.
func (b *Broker) adoptOrphanTokenLocked(ctx context.Context, s *Session, owner string) {
	if idx, ok := b.registry().(OrphanIndex); ok {
		lctx, cancel := context.WithTimeout(ctx, remoteTimeout)
		recs, err := idx.Orphans(lctx, s.Token)
		cancel()
		for _, o := range recs {
			if o.ServerID == b.cfg.ServerID && o.SessionID == s.ID && o.SuspendedUnixMs > 0 {
				b.mu.Lock()
				b.suspendedSinceLocked(s, time.UnixMilli(o.SuspendedUnixMs))
				b.mu.Unlock()
			}
		}
		if err != nil {
			b.log.Debug("orphan index not read: the orphan's suspension counts from now", "session", s.ID, "error", err)
		}
	}
	b.orphanTokenLocked(s, owner)
}
