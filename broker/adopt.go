package broker

import (
	"context"
	"errors"
	"fmt"
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
// counting from the suspension its previous claim recorded (from now if
// none). A claim the previous process still holds for the same
// session (its lease kept alive across a restart, or not yet expired after
// a crash) is moved to this process's lease keeping its fence, so
// terminals redirected before the restart are still welcome. A desktop whose token another server claimed meanwhile is
// kept as an orphan; one without a token label is reported lost and left
// to the caller. Call before serving terminals.
func (b *Broker) Adopt(ctx context.Context, infos []compositor.Info) (adopted []SessionInfo, lost []compositor.Exit) {
	// Side by side, a few at a time: each takes two etcd round trips (its
	// claim read, then moved), and a server restarted with a hundred
	// desktops would otherwise wait for them one after another before it
	// serves a terminal.
	var mu sync.Mutex
	var wg sync.WaitGroup
	sem := make(chan struct{}, adoptWorkers)
	first := make(map[string]string, len(infos)) // token label → the session adopted for it
	for _, info := range infos {
		// The first desktop of a token in infos is its session, as when
		// they were adopted one after another; another is reported.
		token := info.Labels[labelToken]
		if id, dup := first[token]; dup && validToken(token) {
			mu.Lock()
			lost = append(lost, compositor.Exit{SessionID: info.SessionID, PID: info.PID,
				Err: fmt.Errorf("broker: adopt: token %s already has session %s", token, id)})
			mu.Unlock()
			continue
		}
		first[token] = info.SessionID
		sem <- struct{}{}
		wg.Go(func() {
			defer func() { <-sem }()
			si, ex := b.adoptOne(ctx, info)
			mu.Lock()
			defer mu.Unlock()
			if si != nil {
				adopted = append(adopted, *si)
			}
			if ex != nil {
				lost = append(lost, *ex)
			}
		})
	}
	wg.Wait()
	b.countChanged()
	return adopted, lost
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
	created := info.Started
	if ms, err := strconv.ParseInt(info.Labels[labelCreated], 10, 64); err == nil {
		created = time.UnixMilli(ms)
	}
	now := b.clk.Now()
	// The claim's key is known before the claim itself: if etcd does
	// not answer now, a later Reclaim still knows which key is ours.
	s := &Session{ID: info.SessionID, Token: token, User: info.User, state: Suspended, info: info,
		created: created, updated: now, suspendedAt: now, claim: registry.Claim{Key: token}}
	unlock := b.keys.Lock(token)
	b.mu.Lock()
	if prev := b.byToken[token]; prev != nil {
		b.mu.Unlock()
		unlock()
		return nil, &compositor.Exit{SessionID: info.SessionID, PID: info.PID,
			Err: fmt.Errorf("broker: adopt: token %s already has session %s", token, prev.ID)}
	}
	b.byID[s.ID] = s
	b.byToken[token] = s
	s.timer = b.clk.AfterFunc(b.cfg.SuspendTimeout, func() { b.expire(s) })
	b.mu.Unlock()
	if err := b.cfg.Compositor.Suspend(ctx, s.ID); err != nil {
		b.log.Warn("adopted compositor could not be marked suspended", "session", s.ID, "error", err)
	}
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
		b.orphanTokenLocked(s, c.Session.ServerID)
	}
	unlock()
	b.mu.Lock()
	si := b.infoLocked(s)
	b.mu.Unlock()
	b.log.Info("session adopted", "session", s.ID, "token", token, "pid", info.PID, "orphaned", s.orphaned)
	return &si, nil
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
			b.orphanTokenLocked(s, c.Session.ServerID)
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
		if at := time.UnixMilli(ms); at.Before(s.suspendedAt) {
			s.suspendedAt = at
			if s.timer != nil {
				s.timer.Stop()
			}
			s.timer = b.clk.AfterFunc(max(b.cfg.SuspendTimeout-b.clk.Now().Sub(at), 0), func() { b.expire(s) })
		}
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
