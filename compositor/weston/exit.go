package weston

import (
	"context"
	"errors"
	"os"
	"syscall"
	"time"

	"github.com/hotdesk/hotdesk/compositor"
	"github.com/hotdesk/hotdesk/compositor/procsup"
)

// signal sends sig to the session's process group, after checking that an
// adopted process is still the recorded one.
func (b *Backend) signal(s *session, sig syscall.Signal) error {
	select {
	case <-s.exited:
		return nil
	default:
	}
	if s.adopted {
		if err := procsup.Check(b.cfg.procRoot, s.pid, s.startTicks); err != nil {
			if errors.Is(err, ErrProcessGone) || errors.Is(err, ErrPIDReused) {
				s.markExited(b, err)
				return nil
			}
			return err
		}
	}
	return procsup.SignalGroup(s.pid, sig)
}

// waitExited waits until the process has exited (true), d has passed on the
// injected clock (false; d == 0 means no limit), ctx ends or the Backend is
// closed. Adopted processes are polled quickly meanwhile.
func (b *Backend) waitExited(ctx context.Context, s *session, d time.Duration) (bool, error) {
	var expired chan struct{}
	if d > 0 {
		expired = make(chan struct{})
		t := b.clock.AfterFunc(d, func() { close(expired) })
		defer t.Stop()
	}
	var poll <-chan time.Time
	if s.adopted {
		tk := time.NewTicker(10 * time.Millisecond)
		defer tk.Stop()
		poll = tk.C
	}
	for {
		select {
		case <-s.exited:
			return true, nil
		case <-expired:
			return false, nil
		case <-ctx.Done():
			return false, ctx.Err()
		case <-b.done:
			return false, ErrClosed
		case <-poll:
			if err := procsup.Check(b.cfg.procRoot, s.pid, s.startTicks); errors.Is(err, ErrProcessGone) || errors.Is(err, ErrPIDReused) {
				s.markExited(b, err)
			}
		}
	}
}

// markExited records that the process is gone (once) and handles it.
func (s *session) markExited(b *Backend, err error) {
	s.once.Do(func() {
		s.exitErr = err
		close(s.exited)
		b.onExit(s)
	})
}

// onExit cleans up after a ready session's process ended: kills what is
// left of its process group, removes its state dir, forgets it and, unless
// Destroy asked for it, reports it on Exits. After Close it does nothing
// (the process is only reaped), and a session Create is still starting is
// left to Create.
func (b *Backend) onExit(s *session) {
	b.mu.Lock()
	if b.closed || !s.ready {
		b.mu.Unlock()
		return
	}
	stopping := s.stopping
	b.wg.Add(1)
	b.mu.Unlock()
	defer b.wg.Done()

	if !errors.Is(s.exitErr, ErrPIDReused) {
		// The leader is gone; its helpers and the session's applications
		// may not be.
		if err := procsup.SignalGroup(s.pid, syscall.SIGKILL); err != nil {
			s.logger.Warn("cannot kill process group", "pgid", s.pid, "error", err)
		}
		// SIGKILL is delivered asynchronously: until the group's helpers
		// are gone they may still hold what the session held (its RDP
		// listener, inherited by weston's clients). Destroy returns only
		// when nothing of the session is left.
		b.unguardPort(s, b.waitGroupGone(s))
	} else {
		// Whether the group is gone is unknown: keep the port guarded.
		b.unguardPort(s, false)
	}
	if !stopping {
		s.logger.Warn("compositor exited", "pid", s.pid, "error", s.exitErr, "log_tail", logTail(s.log))
	}
	if err := os.RemoveAll(s.dir); err != nil {
		s.logger.Warn("cannot remove state dir", "dir", s.dir, "error", err)
	}
	b.releaseAccount(s)
	b.mu.Lock()
	if b.sessions[s.id] == s {
		delete(b.sessions, s.id)
	}
	b.mu.Unlock()
	close(s.done)
	if !stopping {
		select {
		case b.exits <- compositor.Exit{SessionID: s.id, PID: s.pid, Err: s.exitErr}:
		case <-b.done:
		}
	}
}

// waitGroupGone waits, bounded by groupGoneTimeout, until no live process
// of the session's process group is left, and reports whether none is.
func (b *Backend) waitGroupGone(s *session) bool {
	if !procsup.WaitGroupGone(b.cfg.procRoot, s.pid, groupGoneTimeout, b.done) {
		s.logger.Warn("processes of the session outlived SIGKILL", "pgid", s.pid, "waited", groupGoneTimeout)
		return false
	}
	return true
}
