package broker

import (
	"context"
	"fmt"

	"github.com/hotdesk/hotdesk/internal/event"
	"github.com/hotdesk/hotdesk/proto"
)

// Disconnect suspends the session with the given id (administrator
// action): its terminal is told why and the desktop keeps running until its
// user presents a token again. A session that is already suspended is left
// as it is.
func (b *Broker) Disconnect(ctx context.Context, id string) error {
	return b.adminSuspend(ctx, id, "disconnect", proto.DetachAdmin, "disconnected by an administrator", false)
}

// Lock suspends the session with the given id, if it is active, and tells
// its terminal it was locked; suspended or not, whoever resumes it next must
// log in as the policy asks of a new session, even where it lets hot-desks
// resume without a prompt (reauth_on_hotdesk = false). Under a card or kiosk
// policy there is nothing to ask but the token: a lock is a disconnect.
func (b *Broker) Lock(ctx context.Context, id string) error {
	return b.adminSuspend(ctx, id, "lock", proto.DetachAdmin, "session locked by an administrator", true)
}

func (b *Broker) adminSuspend(ctx context.Context, id, op string, reason proto.DetachReason, msg string, lock bool) error {
	b.mu.Lock()
	s := b.byID[id]
	b.mu.Unlock()
	if s == nil {
		return fmt.Errorf("broker: %s %q: %w", op, id, ErrNotFound)
	}
	unlock := b.keys.Lock(s.Token)
	defer unlock()
	if b.current(s) == nil {
		return fmt.Errorf("broker: %s %q: %w", op, id, ErrNotFound)
	}
	b.mu.Lock()
	active := s.state == Active
	if lock {
		s.locked = true
	}
	b.mu.Unlock()
	if active {
		b.suspendTokenLocked(ctx, s, reason, msg)
	} else if lock {
		b.publish(s) // the lock outlives a restart: it is in the session's record
		b.emit(sessionEvent(event.SessionLocked, s, nil, msg))
	}
	return nil
}
