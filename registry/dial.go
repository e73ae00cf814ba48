package registry

import (
	"context"
	"errors"
	"time"

	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	"google.golang.org/grpc"
	"google.golang.org/grpc/backoff"
)

// ReconnectEvery is the longest a broker's etcd client waits between two
// attempts to reach a member it lost (about; gRPC adds a fifth either way).
const ReconnectEvery = time.Second

// DialOptions are the gRPC options of a broker's etcd client
// (clientv3.Config.DialOptions): connections are dialled again every
// ReconnectEvery while a member is down, each attempt bounded by
// dialTimeout. gRPC's default backs off to two minutes (1 s, then 1.6
// times longer each time): after the whole etcd cluster was restarted, its
// brokers saw it back only at their next attempt, and stayed not ready
// meanwhile: 14 s after etcd was back from a 30 s stop, up to two
// minutes after a longer one.
func DialOptions(dialTimeout time.Duration) []grpc.DialOption {
	return []grpc.DialOption{grpc.WithConnectParams(grpc.ConnectParams{
		Backoff: backoff.Config{
			BaseDelay:  ReconnectEvery,
			Multiplier: 1,
			Jitter:     0.2,
			MaxDelay:   ReconnectEvery,
		},
		MinConnectTimeout: dialTimeout,
	})}
}

// Unanswered reports whether err is a request etcd did not answer: its
// deadline passed, or etcd timed it out or had no leader. etcd may be
// unreachable or without a quorum; WaitAnswering tells when it is back.
func Unanswered(err error) bool {
	for _, e := range []error{context.DeadlineExceeded, rpctypes.ErrTimeout, rpctypes.ErrTimeoutDueToLeaderFail,
		rpctypes.ErrTimeoutDueToConnectionLost, rpctypes.ErrNoLeader} {
		if errors.Is(err, e) {
			return true
		}
	}
	return false
}

// WaitAnswering blocks until etcd answers a read that needs its quorum (the
// group's revision), and reports true; or until ctx ends (false). It asks at
// once and then about every ReconnectEvery (real time, as the client's
// dialling): a broker whose lease could not be renewed or granted learns
// that etcd is back within a second, whether it was unreachable or without
// a quorum.
func (r *Store) WaitAnswering(ctx context.Context) bool {
	t := time.NewTimer(0)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return false
		case <-t.C:
		}
		t.Reset(ReconnectEvery)
		pctx, cancel := context.WithTimeout(ctx, ReconnectEvery)
		_, err := r.Revision(pctx)
		cancel()
		if err == nil {
			return true
		}
	}
}
