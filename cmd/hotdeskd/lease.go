package main

import (
	"context"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/hashicorp/go-hclog"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/hotdesk/hotdesk/broker"
	"github.com/hotdesk/hotdesk/internal/atomicfile"
	"github.com/hotdesk/hotdesk/internal/clock"
	"github.com/hotdesk/hotdesk/registry"
)

// leaseSupervisor keeps the broker on a live registry lease: when the lease
// in use is lost it builds a new registry (a new lease) and moves the
// broker's sessions to it, with backoff, until that succeeds. Every attempt
// starts from a fresh registry: one whose lease died during a failed
// attempt (a flapping link) is abandoned, never retried, so the broker
// cannot stay not ready while etcd is healthy.
type leaseSupervisor struct {
	// newRegistry builds a registry with a new lease that takes this
	// server's record over from lease prev.
	newRegistry func(ctx context.Context, prev clientv3.LeaseID) (*registry.Registry, error)
	// reestablish moves the broker's sessions to reg (broker.Reestablish).
	reestablish func(ctx context.Context, reg *registry.Registry) ([]broker.SessionInfo, error)
	current     func() *registry.Registry
	install     func(*registry.Registry)
	log         hclog.Logger
	clk         clock.Clock // the backoff between attempts runs on it
	minBackoff  time.Duration
	maxBackoff  time.Duration
	// etcd, if set, tells when etcd answers again (registry.Store's
	// WaitAnswering): after an attempt etcd did not answer, the next starts
	// as soon as it does, not at the end of its backoff (a broker is ready
	// again as soon as etcd is, not up to maxBackoff later).
	etcd interface {
		WaitAnswering(ctx context.Context) bool
	}
	// cutAt is when etcd's answer last cut a pause short (on clk): at
	// most once a maxBackoff, so that attempts that keep failing fast as
	// unanswered while etcd answers reads cannot run without a pause.
	cutAt time.Time
}

// run supervises until ctx ends.
func (s *leaseSupervisor) run(ctx context.Context) {
	for {
		old := s.current()
		select {
		case <-ctx.Done():
			return
		case <-old.Done():
		}
		if ctx.Err() != nil {
			return
		}
		s.log.Error("registry lease lost: not attaching or claiming until it is re-established")
		s.recover(ctx, old)
	}
}

// recover replaces old (whose lease is lost) by a fresh registry. If ctx
// ends first (the daemon stops) after an attempt built one, the last
// such registry is installed, abandoned as it is: it holds the server
// record (and the sessions re-claimed so far) now, so it is what the stop
// must revoke, or leave to the next run in the lease file, not old.
func (s *leaseSupervisor) recover(ctx context.Context, old *registry.Registry) {
	backoff := s.minBackoff
	prev := old.LeaseID()
	var abandoned []clientv3.LeaseID
	var last *registry.Registry // the last registry built, abandoned
	defer func() {
		if ctx.Err() != nil && last != nil {
			s.install(last)
		}
	}()
	for ctx.Err() == nil {
		fresh, err := s.newRegistry(ctx, prev)
		if err == nil {
			var orphans []broker.SessionInfo
			orphans, err = s.reestablish(ctx, fresh)
			if err == nil {
				last = nil // fresh is installed, live
				s.install(fresh)
				rctx, cancel := context.WithTimeout(ctx, 5*time.Second)
				_ = old.Close(rctx) // its lease, if still alive, holds nothing we run now
				for _, id := range abandoned {
					_ = fresh.RevokeLease(rctx, id)
				}
				cancel()
				for _, o := range orphans {
					s.log.Warn("orphaned session kept suspended", "session", o.ID, "token", o.Token, "owner", o.OrphanOwner)
				}
				s.log.Info("registry lease re-established", "orphans", len(orphans))
				return
			}
			// Never reuse fresh: its lease may be dead already. What it
			// holds (our record, sessions re-claimed so far) passes to the
			// next registry, which takes the record over from its lease.
			fresh.Abandon()
			last = fresh
			prev = fresh.LeaseID()
			abandoned = append(abandoned, prev)
		}
		s.log.Warn("re-establishing registry lease", "error", err, "retry_in", backoff)
		if s.pause(ctx, backoff, registry.Unanswered(err)) {
			s.log.Info("etcd answers again: re-establishing the registry lease now")
		}
		backoff = min(2*backoff, s.maxBackoff)
	}
}

// pause waits d on s.clk; after an attempt etcd did not answer
// (unanswered), only until etcd answers again (it then reports true), at
// most once a maxBackoff. It returns when ctx ends, and what it starts has
// ended when it returns. An attempt refused by an etcd that answers (a
// server id in use) waits its whole backoff.
func (s *leaseSupervisor) pause(ctx context.Context, d time.Duration, unanswered bool) (answers bool) {
	if s.etcd == nil || !unanswered || (!s.cutAt.IsZero() && s.clk.Now().Sub(s.cutAt) < s.maxBackoff) {
		clock.Sleep(ctx, s.clk, d)
		return false
	}
	wctx, cancel := context.WithCancel(ctx)
	probed := make(chan bool, 1)
	go func() {
		b := s.etcd.WaitAnswering(wctx)
		if b {
			cancel() // ends the sleep
		}
		probed <- b
	}()
	clock.Sleep(wctx, s.clk, d)
	cancel()
	if answers = <-probed && ctx.Err() == nil; answers {
		s.cutAt = s.clk.Now()
	}
	return answers
}

// leaseFile names the file in the data directory holding the lease in use,
// so that the next run of this server (after a stop that kept the desktops,
// or a crash) can take its record and claims over.
const leaseFile = "registry.lease"

func readLeaseFile(dir string) clientv3.LeaseID {
	b, err := os.ReadFile(filepath.Join(dir, leaseFile))
	if err != nil {
		return 0
	}
	id, err := strconv.ParseInt(strings.TrimSpace(string(b)), 16, 64)
	if err != nil || id <= 0 {
		return 0
	}
	return clientv3.LeaseID(id)
}

func writeLeaseFile(dir string, id clientv3.LeaseID, logger hclog.Logger) {
	err := atomicfile.Write(filepath.Join(dir, leaseFile), []byte(strconv.FormatInt(int64(id), 16)+"\n"), 0o600)
	if err != nil {
		logger.Warn("recording the registry lease", "error", err)
	}
}
