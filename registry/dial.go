package registry

import (
	"time"

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
