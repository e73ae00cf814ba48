package main

import (
	"context"
	"encoding/json"
	"fmt"
	"sync"
	"syscall"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
)

// faultFn injects a fault, holds it, heals it, and returns its target.
type faultFn func(ctx context.Context, h *harness, f *Fault) string

func faultFunc(name string) faultFn {
	switch name {
	case "broker_kill9":
		return brokerKill9
	case "broker_sigstop":
		return brokerSigstop
	case "broker_restart":
		return brokerRestart
	case "lease_revoke":
		return leaseRevoke
	case "etcd_leader_kill":
		return etcdLeaderKill
	case "etcd_quorum_loss":
		return etcdQuorumLoss
	case "etcd_outage":
		return etcdOutage
	case "broker_partition":
		return brokerPartition
	case "broker_flap":
		return brokerFlap
	case "policy_reload":
		return policyReload
	case "broker_upgrade":
		return brokerUpgrade
	case "broker_downgrade":
		return brokerDowngrade
	}
	return nil
}

// randomBroker picks the broker that owns the most sessions in the
// registry (a fault there hurts), at random among equals.
func (h *harness) randomBroker() *hotdeskd {
	owned := map[string]int{}
	cctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	resp, err := h.etcd.Get(cctx, registryPrefix+"sessions/", clientv3.WithPrefix())
	cancel()
	if err == nil {
		for _, kv := range resp.Kvs {
			var rs struct {
				ServerID string `json:"server_id"`
			}
			if json.Unmarshal(kv.Value, &rs) == nil {
				owned[rs.ServerID]++
			}
		}
	}
	most := -1
	var best []*hotdeskd
	for _, b := range h.brokers {
		switch n := owned[b.id]; {
		case n > most:
			most, best = n, []*hotdeskd{b}
		case n == most:
			best = append(best, b)
		}
	}
	return best[h.intn(len(best))]
}

// brokerKill9: SIGKILL, and the broker is started again a second later
// (as systemd's Restart= would).
func brokerKill9(ctx context.Context, h *harness, _ *Fault) string {
	b := h.randomBroker()
	b.stop(syscall.SIGKILL, 5*time.Second)
	h.sleep(ctx, time.Second)
	if err := b.start(); err != nil {
		h.logf("restart %s: %v", b.id, err)
	}
	return b.id
}

// brokerSigstop: the broker freezes for twice the lease TTL.
func brokerSigstop(ctx context.Context, h *harness, _ *Fault) string {
	b := h.randomBroker()
	b.signal(syscall.SIGSTOP)
	h.sleep(ctx, 2*h.opts.leaseTTL)
	b.signal(syscall.SIGCONT)
	return b.id
}

// brokerRestart: SIGTERM (a clean stop), then start again at once.
func brokerRestart(ctx context.Context, h *harness, _ *Fault) string {
	b := h.randomBroker()
	b.stop(syscall.SIGTERM, 25*time.Second)
	if err := b.start(); err != nil {
		h.logf("restart %s: %v", b.id, err)
	}
	return b.id
}

// leaseRevoke revokes the lease that holds the broker's server record,
// as `etcdctl lease revoke` would.
func leaseRevoke(ctx context.Context, h *harness, _ *Fault) string {
	b := h.randomBroker()
	cctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	resp, err := h.etcd.Get(cctx, registryPrefix+"servers/"+b.id)
	if err != nil || len(resp.Kvs) == 0 {
		h.logf("lease_revoke: no server record for %s: %v", b.id, err)
		return b.id
	}
	lease := clientv3.LeaseID(resp.Kvs[0].Lease)
	if _, err := h.etcd.Revoke(cctx, lease); err != nil {
		h.logf("lease_revoke: revoke %x: %v", lease, err)
	}
	return fmt.Sprintf("%s lease %x", b.id, int64(lease))
}

// etcdLeaderKill: kill -9 of the raft leader, started again one TTL later.
func etcdLeaderKill(ctx context.Context, h *harness, _ *Fault) string {
	i, err := leader(ctx, h.etcd, h.members)
	if err != nil {
		h.logf("etcd_leader_kill: %v; killing m0", err)
		i = 0
	}
	m := h.members[i]
	m.stop(syscall.SIGKILL, 5*time.Second)
	h.sleep(ctx, h.opts.leaseTTL)
	if err := m.start(); err != nil {
		h.logf("restart %s: %v", m.name, err)
	}
	return m.name + " (leader)"
}

// etcdQuorumLoss: 2 of the 3 members (the leader and one other) stopped for
// twice the TTL, then started again.
func etcdQuorumLoss(ctx context.Context, h *harness, _ *Fault) string {
	i, err := leader(ctx, h.etcd, h.members)
	if err != nil {
		i = 0
	}
	j := (i + 1 + h.intn(2)) % len(h.members)
	stopMembers(ctx, h, []*member{h.members[i], h.members[j]}, 2*h.opts.leaseTTL)
	return h.members[i].name + "+" + h.members[j].name
}

// etcdOutage stops every etcd member at once for 10 × TTL, then starts
// them all again: a whole cluster down (a power cut, an upgrade gone wrong)
// long enough that every broker's lease is lost and its attempts to take a
// new one have backed off, and every lease etcd kept across its restart
// comes back with its TTL renewed.
func etcdOutage(ctx context.Context, h *harness, _ *Fault) string {
	stopMembers(ctx, h, h.members, 10*h.opts.leaseTTL)
	return "every member"
}

// stopMembers stops ms all at once (a member stopping after the quorum is
// gone cannot stop cleanly: it is killed after 3 s), holds them stopped for
// hold, then starts them again.
func stopMembers(ctx context.Context, h *harness, ms []*member, hold time.Duration) {
	var wg sync.WaitGroup
	for _, m := range ms {
		wg.Add(1)
		go func() { defer wg.Done(); m.stop(syscall.SIGTERM, 3*time.Second) }()
	}
	wg.Wait()
	h.sleep(ctx, hold)
	for _, m := range ms {
		if err := m.start(); err != nil {
			h.logf("restart %s: %v", m.name, err)
		}
	}
}

// brokerPartition cuts one broker from every etcd member for twice the TTL.
func brokerPartition(ctx context.Context, h *harness, _ *Fault) string {
	b := h.randomBroker()
	b.setCut(true)
	h.sleep(ctx, 2*h.opts.leaseTTL)
	b.setCut(false)
	return b.id
}

// brokerFlap cuts and restores one broker's link at random for 4 × TTL:
// cuts of 0.3–1.2 TTL (some long enough to lose the lease), up for
// 0.2–1 s (often too short to re-establish it).
func brokerFlap(ctx context.Context, h *harness, _ *Fault) string {
	b := h.randomBroker()
	ttl := h.opts.leaseTTL
	end := time.Now().Add(4 * ttl)
	for time.Now().Before(end) && ctx.Err() == nil {
		b.setCut(true)
		h.sleep(ctx, h.jitter(3*ttl/10, 12*ttl/10))
		b.setCut(false)
		h.sleep(ctx, h.jitter(200*time.Millisecond, time.Second))
	}
	b.setCut(false)
	return b.id
}
