package registry

import (
	"context"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/backoff"
	"google.golang.org/grpc/connectivity"
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

// Connected reports whether cli's connection to etcd is ready now.
func Connected(cli *clientv3.Client) bool {
	return cli.ActiveConnection().GetState() == connectivity.Ready
}

// Reconnected blocks until cli's connection to etcd comes back, that is
// becomes ready after it was not (when it is ready at the call, after it
// has stopped being ready first), and reports true; or until ctx ends
// (false). With several endpoints the connection is ready while any member
// is reachable: a member that is back but has no quorum wakes the caller
// too, whose next request then fails as before.
func Reconnected(ctx context.Context, cli *clientv3.Client) bool {
	conn := cli.ActiveConnection()
	for st := conn.GetState(); ; {
		if st == connectivity.Idle {
			conn.Connect() // an idle connection dials only when asked
		}
		// Ready after a change is a comeback: it was not ready before.
		if !conn.WaitForStateChange(ctx, st) {
			return false
		}
		if st = conn.GetState(); st == connectivity.Ready {
			return true
		}
	}
}
