package registry

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
)

// Clocks.
//
// The group compares times its members wrote by their own clocks (a
// lockout's end, a pairing code's expiry, a terminal record's last
// refresh), so it works only while those clocks agree (ClearSkew). To tell
// when they do not, each broker puts its clock's time now and then under
// clocks/<server>, attached to its lease, and every broker watches the
// directory: a reading received at time t of the receiver's clock says the
// writer's clock was at most (reading − t) ahead of the receiver's, less
// the time the reading took to arrive.

// ClockReading is one member's clock, as it put it.
type ClockReading struct {
	ServerID string `json:"server_id"`
	UnixMs   int64  `json:"unix_ms"`
	// Received is when WatchClocks received it, by the store's clock.
	Received time.Time `json:"-"`
}

// PutClock puts this server's clock reading (the registry's clock now).
// It is refused while the lease is lost or unhealthy.
func (r *Registry) PutClock(ctx context.Context) error {
	reading := ClockReading{ServerID: r.id, UnixMs: r.opts.clock.Now().UnixMilli()}
	if err := r.putLeased(ctx, r.opts.prefix+"clocks/"+r.id, reading); err != nil {
		return fmt.Errorf("registry: put clock: %w", err)
	}
	return nil
}

// WatchClocks streams the clock readings the group's members put from now
// on (this server's own included), each stamped with when etcd delivered
// it (Received), until
// ctx ends (the channel is then closed). A watch that fails is started
// again a second later, from then on: a reading is of use only at once. A
// reading whose key does not name its server, or whose server id no member
// could have (validateKey: a member's id is one), is skipped: anyone who
// may write to etcd can put one, and an id of hundreds of kilobytes would
// be kept, logged and exported by every broker.
func (r *Store) WatchClocks(ctx context.Context) <-chan ClockReading {
	out := make(chan ClockReading, 16)
	prefix := r.opts.prefix + "clocks/"
	go func() {
		defer close(out)
		for ctx.Err() == nil {
			wctx, cancel := r.watchCtx(ctx, r.rw.next(), "clocks")
			for wr := range r.watcher.Watch(wctx, prefix, clientv3.WithPrefix()) {
				if err := wr.Err(); err != nil {
					r.log.Debug("clock watch failed; watching again", "error", err)
					break
				}
				for _, ev := range wr.Events {
					if ev.Type != clientv3.EventTypePut {
						continue
					}
					id := strings.TrimPrefix(string(ev.Kv.Key), prefix)
					var c ClockReading
					if validateKey(id) != nil || json.Unmarshal(ev.Kv.Value, &c) != nil || c.ServerID != id {
						continue
					}
					c.Received = r.opts.clock.Now()
					select {
					case out <- c:
					default: // a reading is of use only at once: never wait
					}
				}
			}
			cancel()
			select {
			case <-ctx.Done():
			case <-time.After(time.Second):
			}
		}
	}()
	return out
}
