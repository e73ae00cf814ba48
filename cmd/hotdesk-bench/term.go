package main

import (
	"context"
	"crypto/ed25519"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/hotdesk/hotdesk/proto"
	"github.com/hotdesk/hotdesk/registry"
	"github.com/hotdesk/hotdesk/tokens/soft"
)

const (
	// opTimeout bounds one hot-desk (insert to attached, redirects included).
	opTimeout = 10 * time.Second
	// dialTimeout bounds a dial, the TLS handshake and the Hello/Welcome.
	dialTimeout = 10 * time.Second
	// inboxSize bounds messages read from the broker but not yet consumed.
	inboxSize = 64
	// barrierToken is a malformed token id (no type): the broker refuses it
	// at once, without a registry call. Its Error comes back through the
	// terminal's event queue after everything sent before it was handled
	// (not the registry writes that follow in the background: see settled).
	barrierToken = "bench-barrier"
)

var errClosed = errors.New("bench: terminal connection closed")

// terminal is a simulated thin client speaking the real protocol: TLS with
// a pinned certificate, Hello/Welcome, token events, proofs of possession
// signed with soft token keys. Its reader goroutine answers Challenges and
// Pings itself and queues everything else on msgs.
type terminal struct {
	id      string
	conn    *proto.Conn
	welcome proto.Welcome
	keys    *keyring
	cache   tls.ClientSessionCache // TLS sessions of this terminal, or nil
	msgs    chan any
	stop    chan struct{}
	once    sync.Once
	done    chan struct{} // reader ended
}

// dialTerminal connects to a broker at addr whose certificate has
// fingerprint pin and says hello. With a session cache (one per simulated
// terminal, as hotdesk-term keeps one) a broker seen before is dialled
// with TLS 1.3 session resumption; nil makes every handshake a full one.
func dialTerminal(ctx context.Context, addr string, pin []byte, hello proto.Hello, keys *keyring, cache tls.ClientSessionCache) (*terminal, error) {
	cfg, err := proto.ClientTLSConfig("", pin, nil)
	if err != nil {
		return nil, fmt.Errorf("bench: terminal %s: %w", hello.TerminalID, err)
	}
	cfg.ClientSessionCache = cache
	dctx, cancel := context.WithTimeout(ctx, dialTimeout)
	defer cancel()
	c, err := proto.Dial(dctx, addr, cfg)
	if err != nil {
		return nil, fmt.Errorf("bench: terminal %s: %w", hello.TerminalID, err)
	}
	stop := context.AfterFunc(dctx, func() { c.Close() }) // bounds the Welcome wait
	hello.Versions = []uint16{proto.Version}
	w, err := proto.ClientHandshake(c, hello)
	if !stop() || err != nil {
		c.Close()
		if err == nil {
			err = dctx.Err()
		}
		return nil, fmt.Errorf("bench: terminal %s: %w", hello.TerminalID, err)
	}
	t := &terminal{
		id: hello.TerminalID, conn: c, welcome: w, keys: keys, cache: cache,
		msgs: make(chan any, inboxSize), stop: make(chan struct{}), done: make(chan struct{}),
	}
	go t.read()
	go t.keepalive()
	return t, nil
}

func (t *terminal) read() {
	defer close(t.done)
	defer close(t.msgs)
	for {
		m, err := t.conn.Recv()
		if err != nil {
			return
		}
		switch b := m.Body.(type) {
		case *proto.Challenge:
			if err := t.prove(b); err == nil {
				continue
			}
		case *proto.Ping:
			_ = t.conn.Send(&proto.Pong{Seq: b.Seq})
			continue
		case *proto.Pong:
			continue
		}
		select {
		case t.msgs <- m.Body:
		case <-t.stop:
			return
		}
	}
}

// prove answers a challenge with the token's key.
func (t *terminal) prove(ch *proto.Challenge) error {
	key := t.keys.get(ch.Token)
	if key == nil {
		return errNoKey
	}
	msg, err := soft.ChallengeMessage(t.id, ch.ServerID, t.welcome.Nonce, ch.Nonce, ch.Token)
	if err != nil {
		return err
	}
	return t.conn.Send(&proto.Proof{ID: ch.ID, Token: ch.Token, Signature: ed25519.Sign(key, msg)})
}

// keepalive pings the broker twice per ping interval so that an idle
// terminal is not dropped.
func (t *terminal) keepalive() {
	tick := time.NewTicker(t.welcome.PingEvery() / 2)
	defer tick.Stop()
	var seq uint64
	for {
		select {
		case <-tick.C:
			seq++
			if err := t.conn.Send(&proto.Ping{Seq: seq}); err != nil {
				return
			}
		case <-t.stop:
			return
		case <-t.done:
			return
		}
	}
}

func (t *terminal) close() {
	t.once.Do(func() {
		close(t.stop)
		t.conn.Close()
	})
	<-t.done
}

func (t *terminal) send(m any) error {
	if err := t.conn.Send(m); err != nil {
		return fmt.Errorf("bench: terminal %s: %w", t.id, err)
	}
	return nil
}

// await returns the broker's answer to an insert of token: Attached,
// Redirect or an Error (returned as an error). Other messages (Detached
// after a takeover, answers to earlier events) are skipped.
func (t *terminal) await(ctx context.Context, token string) (any, error) {
	for {
		select {
		case m, ok := <-t.msgs:
			if !ok {
				return nil, errClosed
			}
			switch v := m.(type) {
			case *proto.Attached:
				if v.Token == token {
					return v, nil
				}
			case *proto.Redirect:
				if v.Token == token {
					return v, nil
				}
			case *proto.Error:
				if v.Token == token || v.Token == "" {
					return nil, fmt.Errorf("bench: terminal %s: %v: %s", t.id, v.Code, v.Message)
				}
			}
		case <-ctx.Done():
			return nil, fmt.Errorf("bench: terminal %s: waiting for %s: %w", t.id, token, ctx.Err())
		}
	}
}

// outcome is the result of one hot-desk.
type outcome struct {
	total      time.Duration // TokenInserted sent → Attached received
	first      time.Duration // TokenInserted sent → first answer (Redirect or Attached)
	dial       time.Duration // the redirect's dial + TLS + Hello/Welcome
	owner      time.Duration // TokenInserted at the owner → Attached
	redirected bool
	tlsResumed bool // the redirect's TLS handshake was a resumption
	resumed    bool
	server     string
	// at is the connection that got Attached: t itself or a new one to the
	// owner, which the caller closes when done with it.
	at *terminal
}

// hotdesk inserts token at t and follows redirects (at most proto.MaxHops)
// until a broker attaches the session, within opTimeout.
func hotdesk(ctx context.Context, t *terminal, token string) (o outcome, err error) {
	ctx, cancel := context.WithTimeout(ctx, opTimeout)
	defer cancel()
	cur := t
	defer func() {
		if err != nil && cur != t {
			cur.close()
		}
	}()
	start := time.Now()
	if err := t.send(&proto.TokenInserted{Token: token, Reader: "bench"}); err != nil {
		return o, err
	}
	sentAt := start
	for hops := 0; ; hops++ {
		m, err := cur.await(ctx, token)
		if err != nil {
			return o, err
		}
		if hops == 0 {
			o.first = time.Since(start)
		}
		switch v := m.(type) {
		case *proto.Attached:
			now := time.Now()
			o.total, o.owner = now.Sub(start), now.Sub(sentAt)
			o.resumed, o.server, o.at = v.Resumed, v.ServerID, cur
			return o, nil
		case *proto.Redirect:
			if hops >= proto.MaxHops {
				return o, fmt.Errorf("bench: terminal %s: more than %d redirects", t.id, proto.MaxHops)
			}
			o.redirected = true
			d0 := time.Now()
			nt, err := dialTerminal(ctx, v.Addr, v.Fingerprint, proto.Hello{
				TerminalID: t.id, Hops: uint8(hops + 1), Fence: v.Fence, Token: token,
			}, t.keys, t.cache)
			if err != nil {
				return o, err
			}
			o.dial += time.Since(d0)
			if tc, ok := nt.conn.NetConn().(*tls.Conn); ok && tc.ConnectionState().DidResume {
				o.tlsResumed = true
			}
			if cur != t {
				cur.close()
			}
			cur = nt
			sentAt = time.Now()
			if err := cur.send(&proto.TokenInserted{Token: token, Reader: "bench"}); err != nil {
				return o, err
			}
		}
	}
}

// park pulls token from t (the session is suspended) and waits until the
// broker has handled the removal (its terminal queue). The registry write
// of the suspension follows in the background, off the queue (issue 9):
// sequential scenarios wait for it with bench.settle before the next
// measured hot-desk.
func park(ctx context.Context, t *terminal, token string) error {
	if err := t.send(&proto.TokenRemoved{Token: token, Reader: "bench"}); err != nil {
		return err
	}
	return t.barrier(ctx)
}

// leave parks token where the hot-desk o attached it and then closes that
// connection, unless it is t, the terminal's own.
func (o outcome) leave(ctx context.Context, t *terminal, token string) error {
	err := park(ctx, o.at, token)
	if o.at != t {
		o.at.close()
	}
	return err
}

// barrier returns once the broker has handled every event t sent before.
func (t *terminal) barrier(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, opTimeout)
	defer cancel()
	if err := t.send(&proto.TokenInserted{Token: barrierToken}); err != nil {
		return err
	}
	for {
		select {
		case m, ok := <-t.msgs:
			if !ok {
				return errClosed
			}
			if e, ok := m.(*proto.Error); ok && e.Token == barrierToken {
				return nil
			}
		case <-ctx.Done():
			return fmt.Errorf("bench: terminal %s: barrier: %w", t.id, ctx.Err())
		}
	}
}

// settleTimeout bounds the wait for a broker's background registry write.
const settleTimeout = 5 * time.Second

// settled waits until the group's registry shows token's session
// suspended at no terminal: the owner's background writes of the last
// hot-desk and its suspension (made after Attached and after the barrier,
// off the terminal's queue) have landed. A sequential scenario waits for
// it between trials so that each measured hot-desk runs on a quiet group,
// as it did when those writes were made before the broker answered; the
// wait is reported (settle_p50_ms/p99), not hidden.
func (g *group) settled(ctx context.Context, token string) (time.Duration, error) {
	ctx, cancel := context.WithTimeout(ctx, settleTimeout)
	defer cancel()
	key := registry.DefaultPrefix + "sessions/" + token
	start := time.Now()
	for {
		resp, err := g.observer.Get(ctx, key)
		if err != nil {
			return 0, fmt.Errorf("bench: settle %s: %w", token, err)
		}
		if len(resp.Kvs) == 1 {
			var s registry.Session
			if json.Unmarshal(resp.Kvs[0].Value, &s) == nil && s.State == "suspended" && s.Terminal == "" {
				return time.Since(start), nil
			}
		}
		select {
		case <-ctx.Done():
			return 0, fmt.Errorf("bench: settle %s: the registry never showed it suspended: %w", token, ctx.Err())
		case <-time.After(time.Millisecond):
		}
	}
}
