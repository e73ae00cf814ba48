package registry

import (
	"context"
	"crypto/tls"
	"errors"
	"net"
	"net/url"
	"time"

	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	"google.golang.org/grpc"
	"google.golang.org/grpc/backoff"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
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
// deadline passed, the connection failed under it, or etcd timed it out or
// had no leader. etcd may be unreachable or without a quorum;
// WaitAnswering tells when it is back.
func Unanswered(err error) bool {
	if err == nil {
		return false
	}
	for _, e := range []error{context.DeadlineExceeded, rpctypes.ErrTimeout, rpctypes.ErrTimeoutDueToLeaderFail,
		rpctypes.ErrTimeoutDueToConnectionLost, rpctypes.ErrNoLeader} {
		if errors.Is(err, e) {
			return true
		}
	}
	switch status.Code(err) {
	case codes.Unavailable, codes.DeadlineExceeded:
		return true
	}
	return false
}

// WaitAnswering blocks until etcd answers a read that needs its quorum (the
// group's revision), and reports true; or until ctx ends (false). An
// answer that is an error of etcd's own (permission denied, say) is an
// answer: the caller's next request meets that error and says it. It asks
// at once and then about every ReconnectEvery (real time, as the client's
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
		if !Unanswered(err) && ctx.Err() == nil {
			return true
		}
	}
}

// Reach tries each endpoint as the etcd client reaches it: a TCP
// connection, then for an https:// endpoint a TLS handshake with tlsCfg,
// for a plain one whether it serves TLS only (a plain http:// endpoint of
// such an etcd connects, and is never answered), each bounded by timeout.
// It returns one line an endpoint, "ENDPOINT: ok" or "ENDPOINT: " and what
// failed (connection refused, a certificate the
// CA file does not vouch for…): what a broker that etcd does not answer
// tells its administrator. An endpoint reached is not proof that etcd
// answers (it may have no quorum).
func Reach(ctx context.Context, endpoints []string, tlsCfg *tls.Config, timeout time.Duration) []string {
	out := make([]string, 0, len(endpoints))
	for _, ep := range endpoints {
		out = append(out, ep+": "+reach(ctx, ep, tlsCfg, timeout))
	}
	return out
}

func reach(ctx context.Context, endpoint string, tlsCfg *tls.Config, timeout time.Duration) string {
	network, hostport, secure := "tcp", endpoint, false
	if u, err := url.Parse(endpoint); err == nil {
		switch u.Scheme {
		case "http", "https":
			hostport, secure = u.Host, u.Scheme == "https"
		case "unix", "unixs":
			network, hostport, secure = "unix", u.Host+u.Path, u.Scheme == "unixs"
		}
	}
	dctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	var d net.Dialer
	conn, err := d.DialContext(dctx, network, hostport)
	if err != nil {
		return err.Error()
	}
	defer conn.Close()
	if !secure {
		if servesTLS(dctx, conn, timeout) {
			return "TLS: the endpoint serves TLS only: name it https:// (with etcd.ca_file)"
		}
		return "ok"
	}
	cfg := &tls.Config{}
	if tlsCfg != nil {
		cfg = tlsCfg.Clone()
	}
	if cfg.ServerName == "" {
		if host, _, err := net.SplitHostPort(hostport); err == nil {
			cfg.ServerName = host
		}
	}
	if err := tls.Client(conn, cfg).HandshakeContext(dctx); err != nil {
		return "TLS: " + err.Error()
	}
	return "ok"
}

// servesTLS reports whether the endpoint conn reached completes a TLS
// handshake over it, within timeout and at most a second: a TLS server
// answers a ClientHello at once, a plain etcd with an HTTP 400. Its
// certificate is not checked (nothing is sent over the connection: the
// question is only whether the endpoint speaks TLS); an alert (a client
// certificate required) is an answer in TLS too.
func servesTLS(ctx context.Context, conn net.Conn, timeout time.Duration) bool {
	ctx, cancel := context.WithTimeout(ctx, min(timeout, time.Second))
	defer cancel()
	cfg := &tls.Config{InsecureSkipVerify: true, MinVersion: tls.VersionTLS12} // a probe: see above
	err := tls.Client(conn, cfg).HandshakeContext(ctx)
	var alert tls.AlertError
	return err == nil || errors.As(err, &alert)
}
