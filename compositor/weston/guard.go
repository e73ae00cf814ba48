package weston

import (
	"context"
	"fmt"
	"slices"

	"github.com/hotdesk/hotdesk/internal/portguard"
)

// PortGuard keeps TCP connections to loopback ports to the daemon's uid
// (*portguard.Guard). A port added twice (freed by one session, picked by
// the next before the first is unguarded) must stay guarded until the
// second Remove; removing a port that is not guarded is not an error.
type PortGuard interface {
	Add(ctx context.Context, port int) error
	Remove(ctx context.Context, port int) error
}

// guardEnsurer is a PortGuard that can check itself and restore what a
// firewall reload removed (*portguard.Guard).
type guardEnsurer interface {
	Ensure(ctx context.Context) (restored bool, err error)
}

var _ guardEnsurer = (*portguard.Guard)(nil)
var _ PortGuard = (*portguard.Guard)(nil)

// rdpGuard returns the RDP port guard, setting up the default one if it
// is not yet; nil, nil with InsecureUnguardedRDP. The error wraps
// ErrRDPUnguarded.
func (b *Backend) rdpGuard(ctx context.Context) (PortGuard, error) {
	if b.cfg.InsecureUnguardedRDP {
		return nil, nil
	}
	b.guardMu.Lock()
	defer b.guardMu.Unlock()
	if b.guard != nil {
		return b.guard, nil
	}
	ctx, cancel := context.WithTimeout(ctx, guardCallTimeout)
	defer cancel()
	g, err := portguard.New(ctx, portguard.Config{Table: portguard.TableName(b.cfg.StateDir), Logger: b.log.Named("rdpguard")})
	if err != nil {
		return nil, fmt.Errorf("%w: %w; weston's RDP backend lets anyone who connects use the desktop, so no RDP session starts unguarded", ErrRDPUnguarded, err)
	}
	b.guard, b.ownGuard = g, true
	b.log.Info("rdp ports guarded", "table", g.Table(), "uid", g.UID())
	return g, nil
}

// guardPort adds s's RDP port to the guard before weston listens on it.
func (b *Backend) guardPort(ctx context.Context, s *session) error {
	g, err := b.rdpGuard(ctx)
	if err != nil {
		return err
	}
	if g == nil {
		return nil // InsecureUnguardedRDP
	}
	if err := g.Add(ctx, s.rdpPort); err != nil {
		return fmt.Errorf("%w: %w", ErrRDPUnguarded, err)
	}
	s.guarded = true
	return nil
}

// unguardPort removes s's RDP port from the guard once nothing of the
// session is left (gone); otherwise a process of it may still listen on
// the port, which then stays guarded.
func (b *Backend) unguardPort(s *session, gone bool) {
	if !s.guarded {
		return
	}
	if !gone {
		s.logger.Warn("rdp port stays guarded: processes of the session may still hold it", "port", s.rdpPort)
		return
	}
	b.guardMu.Lock()
	g := b.guard
	b.guardMu.Unlock()
	if g == nil {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), guardCallTimeout)
	defer cancel()
	if err := g.Remove(ctx, s.rdpPort); err != nil {
		s.logger.Warn("cannot unguard RDP port", "port", s.rdpPort, "error", err)
	}
}

// guardAdopted adds an adopted session's RDP port to the guard again (it
// stayed guarded if the table survived, which it does unless someone
// removed it). A failure is logged, not fatal: refusing the session would
// kill a running desktop.
func (b *Backend) guardAdopted(s *session) {
	s.guarded = true
	ctx, cancel := context.WithTimeout(context.Background(), guardCallTimeout)
	defer cancel()
	g, err := b.rdpGuard(ctx)
	if err == nil && g != nil {
		err = g.Add(ctx, s.rdpPort)
	}
	if err != nil {
		s.logger.Error("adopted desktop's RDP port may be open to every local user", "port", s.rdpPort, "error", err)
	}
}

// checkGuard checks the RDP guard, at most every guardCheckEvery while a
// guarded session runs, and restores what a firewall reload removed.
func (b *Backend) checkGuard(live []*session) {
	now := b.clock.Now()
	if now.Sub(b.guardChecked) < guardCheckEvery || !slices.ContainsFunc(live, func(s *session) bool { return s.guarded }) {
		return
	}
	b.guardChecked = now
	b.guardMu.Lock()
	g, ok := b.guard.(guardEnsurer)
	b.guardMu.Unlock()
	if !ok {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), guardCallTimeout)
	defer cancel()
	if restored, err := g.Ensure(ctx); err != nil {
		b.log.Error("cannot check the RDP port guard", "error", err)
	} else if restored {
		b.log.Warn("rdp port guard restored (its nftables table or rules had been removed)")
	}
}

// retireGuard deletes the default guard's table if its set is empty: no
// desktop of this state directory is left to protect.
func (b *Backend) retireGuard() {
	b.guardMu.Lock()
	g, own := b.guard.(*portguard.Guard)
	own = own && b.ownGuard
	b.guardMu.Unlock()
	if !own {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), guardCallTimeout)
	defer cancel()
	if deleted, err := g.Retire(ctx); err != nil {
		b.log.Warn("cannot remove the RDP guard's table", "table", g.Table(), "error", err)
	} else if deleted {
		b.log.Debug("rdp guard table removed: no desktop left", "table", g.Table())
	}
}
