package broker

import (
	"context"
	"fmt"

	"github.com/hotdesk/hotdesk/proto"
)

// Disconnect suspends the session with the given id (administrator
// action): its terminal is told why and the desktop keeps running until its
// user presents a token again. A session that is already suspended is left
// as it is.
func (b *Broker) Disconnect(ctx context.Context, id string) error {
	return b.adminSuspend(ctx, id, "disconnect", proto.DetachAdmin, "disconnected by an administrator")
}

// Lock suspends the session with the given id and tells its terminal it was
// locked: the user must present a token (and log in again when the policy
// asks) to get it back.
func (b *Broker) Lock(ctx context.Context, id string) error {
	return b.adminSuspend(ctx, id, "lock", proto.DetachAdmin, "session locked by an administrator")
}

func (b *Broker) adminSuspend(ctx context.Context, id, op string, reason proto.DetachReason, msg string) error {
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
	b.mu.Unlock()
	if active {
		b.suspendTokenLocked(ctx, s, reason, msg)
	}
	return nil
}
