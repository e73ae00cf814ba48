package weston

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"os"
	"slices"
	"syscall"

	"github.com/hotdesk/hotdesk/compositor"
	"github.com/hotdesk/hotdesk/compositor/procsup"
)

// Adopt scans StateDir for session directories this Backend does not
// supervise. A session whose recorded process is alive, on this boot, with
// the recorded start time is adopted: supervised by polling from now on.
// Any other session directory is removed and reported in lost, with an Err
// wrapping ErrRebooted, ErrProcessGone, ErrPIDReused or ErrBadRecord; a
// process that cannot be verified is never signalled. If ctx ends, the
// sessions handled so far are returned with the error.
func (b *Backend) Adopt(ctx context.Context) (adopted []compositor.Info, lost []compositor.Exit, err error) {
	entries, err := os.ReadDir(b.cfg.StateDir)
	if err != nil {
		return nil, nil, fmt.Errorf("weston: adopt: %w", err)
	}
	var unguard []*session
	defer func() { b.unguardLost(unguard) }()
	for _, e := range entries {
		if err := ctx.Err(); err != nil {
			return adopted, lost, fmt.Errorf("weston: adopt: %w", err)
		}
		id := e.Name()
		if !e.IsDir() || ValidateSessionID(id) != nil {
			continue
		}
		s := newSession(b, id, "")
		s.adopted = true
		b.mu.Lock()
		if b.closed {
			b.mu.Unlock()
			return adopted, lost, fmt.Errorf("weston: adopt: %w", ErrClosed)
		}
		if b.sessions[id] != nil {
			b.mu.Unlock()
			continue
		}
		b.sessions[id] = s // reservation
		b.mu.Unlock()

		info, ex, ok := b.adoptOne(s, &unguard)
		b.mu.Lock()
		if ok {
			s.ready = true
			adopted = append(adopted, s.info())
		} else if b.sessions[id] == s {
			delete(b.sessions, id)
		}
		b.mu.Unlock()
		close(s.readyCh)
		if ok {
			s.logger.Info("compositor adopted", "pid", info.PID, "endpoint", info.Endpoint)
		} else {
			s.logger.Warn("compositor lost", "pid", ex.PID, "error", ex.Err)
			lost = append(lost, ex)
		}
	}
	return adopted, lost, nil
}

// unguardLost unguards the ports of lost sessions (gone: nothing of them
// is left) that no session of this Backend uses now.
func (b *Backend) unguardLost(lost []*session) {
	for _, s := range lost {
		b.mu.Lock()
		inUse := slices.ContainsFunc(slices.Collect(maps.Values(b.sessions)), func(o *session) bool { return o.rdpPort == s.rdpPort })
		b.mu.Unlock()
		if inUse {
			continue
		}
		b.unguardPort(s, s.lostGone)
	}
}

// adoptOne verifies the reserved session s from its record.
// A lost session with an RDP port is appended to unguard.
func (b *Backend) adoptOne(s *session, unguard *[]*session) (compositor.Info, compositor.Exit, bool) {
	lose := func(pid int, err error) (compositor.Info, compositor.Exit, bool) {
		if err := os.RemoveAll(s.dir); err != nil {
			s.logger.Warn("cannot remove state dir", "dir", s.dir, "error", err)
		}
		return compositor.Info{}, compositor.Exit{SessionID: s.id, PID: pid, Err: err}, false
	}
	// loseGuarded also has the lost session's RDP port unguarded once
	// Adopt is done, if nothing of it is left (gone).
	loseGuarded := func(rec record, gone bool, err error) (compositor.Info, compositor.Exit, bool) {
		if s.rdpPort = rdpPortOf(rec.Endpoint); s.rdpPort > 0 {
			s.guarded = true // by the daemon that started it
			s.lostGone = gone
			*unguard = append(*unguard, s)
		}
		return lose(rec.PID, err)
	}
	rec, err := readRecord(s.dir, s.id)
	switch {
	case errors.Is(err, os.ErrNotExist):
		return lose(0, fmt.Errorf("%w: no %s", ErrBadRecord, recordName))
	case errors.Is(err, ErrBadRecord):
		return lose(0, err)
	case err != nil:
		return lose(0, fmt.Errorf("%w: %w", ErrBadRecord, err))
	case rec.BootID != b.bootID:
		return loseGuarded(rec, true, ErrRebooted)
	}
	switch err := procsup.Check(b.cfg.procRoot, rec.PID, rec.StartTicks); {
	case errors.Is(err, ErrProcessGone):
		// Leftovers of its process group die with it.
		_ = procsup.SignalGroup(rec.PID, syscall.SIGKILL)
		gone := true
		if rdpPortOf(rec.Endpoint) > 0 {
			s.pid = rec.PID
			gone = b.waitGroupGone(s)
		}
		return loseGuarded(rec, gone, err)
	case err != nil:
		// Its pid is another process's: whether anything of the session
		// is left is unknown.
		return loseGuarded(rec, false, err)
	}
	s.user = rec.User
	if rec.Account != "" {
		s.account = rec.Account
		if b.accounts.owns(rec.Account) {
			s.pooled = true
			b.accounts.markUsed(rec.Account, s.id)
		}
	}
	s.labels = rec.Labels
	s.rdpPort = rdpPortOf(rec.Endpoint)
	if s.rdpPort > 0 {
		b.guardAdopted(s)
	}
	s.pid = rec.PID
	s.startTicks = rec.StartTicks
	s.started = rec.Started
	s.suspended = rec.Suspended
	return s.info(), compositor.Exit{}, true
}
