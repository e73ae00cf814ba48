package main

import (
	"context"
	"crypto/ed25519"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hotdesk/hotdesk/proto"
	"github.com/hotdesk/hotdesk/tokens/soft"
)

const (
	// opTimeout bounds one operation (insert → Attached, remove → Detached).
	opTimeout = 10 * time.Second
	// dialTimeout bounds a dial, TLS and Hello/Welcome.
	dialTimeout = 3 * time.Second
	// minBackoff and maxBackoff bound the reconnect delay.
	minBackoff = 250 * time.Millisecond
	maxBackoff = 2 * time.Second
	// maxStaleRestarts bounds the restarts at home after Error{stale_fence}
	// per insert; later ones are retried where the terminal is.
	maxStaleRestarts = 2
	// minRetry and maxRetry bound the delay before a token still inserted is
	// presented again after a transient answer (PROTOCOL.md §7.5, §5 Detached).
	minRetry = 250 * time.Millisecond
	maxRetry = 5 * time.Second
)

// broker is what a terminal needs to reach one broker.
type brokerAddr struct {
	id   string
	addr string
	pin  []byte
}

// keyring holds the soft token keys; every terminal holds every key (the
// person carries the token).
type keyring struct {
	mu   sync.RWMutex
	keys map[string]ed25519.PrivateKey
}

func (k *keyring) add(tok string, key ed25519.PrivateKey) {
	k.mu.Lock()
	defer k.mu.Unlock()
	if k.keys == nil {
		k.keys = map[string]ed25519.PrivateKey{}
	}
	k.keys[tok] = key
}

func (k *keyring) get(tok string) ed25519.PrivateKey {
	k.mu.RLock()
	defer k.mu.RUnlock()
	return k.keys[tok]
}

// terminal is a thin client speaking the real protocol, built from
// PROTOCOL.md: one current connection; Redirects followed with a pinned
// dial, Hello{Hops, Fence, Token} (Hops counts the redirects of one
// token's chain: H+1 for the chain's token, 1 for another) and the token
// presented again; stale_fence restarts at the home broker; the transient
// answers (unavailable, rate_limited, stale_fence, an unreachable redirect
// target, Detached locked) make it present the token again after a backoff
// (250 ms doubling to 5 s) while it is inserted; with returnHome an idle
// terminal, and every insert, goes back to the home broker; a lost
// connection is redialled with backoff (home first, then, with failover,
// the other brokers) and the token still in the reader is presented again;
// Ping every half PingInterval, the broker declared gone after
// 3 × PingInterval of silence.
// Everything it reads that matters is recorded. One goroutine (run) owns
// the state; ops talk to it through channels.
type terminal struct {
	id       string
	targets  []brokerAddr // home first
	failover bool
	// returnHome: an idle terminal (no token, no session) connected to a
	// broker a redirect led it to goes back to its home broker.
	returnHome bool
	keys       *keyring
	rec        *recorder

	cmds    chan termCmd
	inbox   chan inMsg
	dialed  chan dialResult
	answers chan Event
	up      atomic.Bool  // a current connection exists
	upAt    atomic.Int64 // when it last connected, on the recorder's clock (ns)
	done    chan struct{}
	serials *atomic.Int64

	// Loop state, owned by run.
	cur       *link
	dialing   bool
	present   string
	session   string
	sessToken string // the token of session
	attempt   int
	backoff   time.Duration
	nextRetry time.Time
	stale     int
	// presentAt, when set, is when the inserted token is presented again
	// after a transient answer; retry is the current delay.
	presentAt time.Time
	retry     time.Duration
}

type termCmd struct {
	ctx   context.Context // the terminal's: for dials the command starts
	op    string          // insert, remove, forget
	token string
	reply chan string // the session shown when the command ran
}

type link struct {
	serial   int64
	c        *proto.Conn
	w        proto.Welcome
	hops     uint8
	chain    string       // the token of the redirect chain that led here
	lastRecv atomic.Int64 // unix nanos
	lastSend time.Time
	seq      uint64
	once     sync.Once
}

func (l *link) close() { l.once.Do(func() { l.c.Close() }) }

type inMsg struct {
	l   *link
	m   proto.Msg
	err error
}

type target struct {
	b     brokerAddr
	hops  uint8
	fence int64
	token string
}

type dialResult struct {
	t   target
	l   *link
	err error
}

func newTerminal(id string, targets []brokerAddr, failover bool, keys *keyring, rec *recorder, serials *atomic.Int64) *terminal {
	return &terminal{
		id: id, targets: targets, failover: failover, keys: keys, rec: rec, serials: serials,
		cmds: make(chan termCmd), inbox: make(chan inMsg, 64), dialed: make(chan dialResult, 1),
		answers: make(chan Event, 256), done: make(chan struct{}), backoff: minBackoff, retry: minRetry,
	}
}

// run drives the terminal until ctx ends; it closes done when it returns.
func (t *terminal) run(ctx context.Context) {
	defer close(t.done)
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	defer func() {
		if t.cur != nil {
			t.cur.close()
		}
	}()
	t.startDial(ctx, target{b: t.targets[0]})
	for {
		select {
		case <-ctx.Done():
			return
		case c := <-t.cmds:
			c.ctx = ctx
			t.command(c)
		case in := <-t.inbox:
			if in.l != t.cur {
				continue
			}
			t.message(ctx, in)
		case r := <-t.dialed:
			t.dialDone(ctx, r)
		case now := <-tick.C:
			t.tick(ctx, now)
		}
	}
}

func (t *terminal) record(e Event) {
	e.Term = t.id
	t.rec.event(e)
	switch e.Kind {
	case KindAttached, KindDetached, KindError, KindDisconnected:
		select {
		case t.answers <- e:
		default:
		}
	}
}

func (t *terminal) command(c termCmd) {
	shown := ""
	if t.sessToken == c.token {
		shown = t.session
	}
	switch c.op {
	case "insert":
		t.present, t.stale = c.token, 0
		t.presentAt, t.retry = time.Time{}, minRetry
		if t.returnHome && t.cur != nil && t.cur.hops > 0 {
			// Present it at home: drop the connection a redirect led to.
			t.drop(t.cur, "back home before an insert")
			if !t.dialing {
				t.startDial(c.ctx, target{b: t.targets[0]})
			}
			break
		}
		t.send(&proto.TokenInserted{Token: c.token, Reader: "chaos"})
	case "remove":
		if t.present == c.token {
			t.present, t.presentAt = "", time.Time{}
		}
		t.send(&proto.TokenRemoved{Token: c.token, Reader: "chaos"})
	case "forget":
		if t.present == c.token {
			t.present, t.presentAt = "", time.Time{}
		}
	}
	c.reply <- shown
}

func (t *terminal) send(m any) {
	if t.cur == nil {
		return
	}
	t.cur.lastSend = time.Now()
	if err := t.cur.c.Send(m); err != nil {
		t.lost(fmt.Sprintf("send: %v", err))
	}
}

// lost drops the current connection and schedules a reconnect.
func (t *terminal) lost(why string) {
	if t.cur == nil {
		return
	}
	l := t.cur
	l.close()
	t.cur, t.session = nil, ""
	t.up.Store(false)
	t.record(Event{Kind: KindDisconnected, Conn: l.serial, Server: l.w.ServerID, Detail: why})
	t.nextRetry = time.Now().Add(t.backoff)
	t.backoff = min(2*t.backoff, maxBackoff)
}

func (t *terminal) message(ctx context.Context, in inMsg) {
	l := in.l
	if in.err != nil {
		t.lost(in.err.Error())
		return
	}
	switch m := in.m.Body.(type) {
	case *proto.Challenge:
		key := t.keys.get(m.Token)
		if key == nil {
			return // no key: the broker times the proof out
		}
		msg, err := soft.ChallengeMessage(t.id, m.ServerID, l.w.Nonce, m.Nonce, m.Token)
		if err != nil {
			return
		}
		t.send(&proto.Proof{ID: m.ID, Token: m.Token, Signature: ed25519.Sign(key, msg)})
	case *proto.Ping:
		t.send(&proto.Pong{Seq: m.Seq})
	case *proto.Pong:
	case *proto.Attached:
		t.session, t.sessToken = m.SessionID, m.Token
		if m.Token == t.present {
			t.presentAt, t.retry = time.Time{}, minRetry
		}
		t.record(Event{Kind: KindAttached, Conn: l.serial, Server: m.ServerID, Token: m.Token, Session: m.SessionID})
	case *proto.Detached:
		if t.session == m.SessionID {
			t.session = ""
		}
		t.record(Event{Kind: KindDetached, Conn: l.serial, Server: l.w.ServerID, Session: m.SessionID,
			Reason: m.Reason.String(), Detail: m.Message})
		if m.Reason == proto.DetachLocked && t.present != "" && t.present == t.sessToken {
			t.retryLater() // the token is still inserted: present it again shortly
		}
	case *proto.Error:
		if m.Code == proto.ErrStaleFence && m.Token != "" && m.Token == t.present && t.stale < maxStaleRestarts {
			// PROTOCOL.md §7.5: start again at the first broker.
			t.stale++
			t.rec.event(Event{Term: t.id, Kind: KindError, Conn: l.serial, Server: l.w.ServerID, Token: m.Token,
				Reason: m.Code.String(), Detail: "restarting at home: " + m.Message})
			t.drop(l, "stale fence: back home")
			t.startDial(ctx, target{b: t.targets[0]})
			return
		}
		if transient(m.Code) && m.Token != "" && m.Token == t.present {
			// Not an answer to give up on: present it again after a backoff.
			t.rec.event(Event{Term: t.id, Kind: KindError, Conn: l.serial, Server: l.w.ServerID, Token: m.Token,
				Reason: m.Code.String(), Detail: "retrying: " + m.Message})
			t.retryLater()
			return
		}
		t.record(Event{Kind: KindError, Conn: l.serial, Server: l.w.ServerID, Token: m.Token, Reason: m.Code.String(), Detail: m.Message})
	case *proto.Redirect:
		t.record(Event{Kind: KindRedirect, Conn: l.serial, Server: m.ServerID, Token: m.Token, Detail: fmt.Sprintf("fence %d", m.Fence)})
		t.drop(l, "redirect")
		hops := 1 // a new chain
		if m.Token == l.chain {
			hops = int(l.hops) + 1
		}
		if hops > proto.MaxHops || len(m.Fingerprint) == 0 {
			t.record(Event{Kind: KindError, Token: m.Token, Reason: "redirect_refused",
				Detail: fmt.Sprintf("redirect to %s would be hop %d (limit %d)", m.ServerID, hops, proto.MaxHops)})
			t.startDial(ctx, target{b: t.targets[0]})
			return
		}
		t.startDial(ctx, target{b: brokerAddr{id: m.ServerID, addr: m.Addr, pin: m.Fingerprint}, hops: uint8(hops), fence: m.Fence, token: m.Token})
	}
}

// transient reports the answers after which a terminal presents the token
// again while it is inserted (PROTOCOL.md §7.5).
func transient(c proto.ErrorCode) bool {
	return c == proto.ErrUnavailable || c == proto.ErrRateLimited || c == proto.ErrStaleFence
}

// retryLater schedules the inserted token to be presented again.
func (t *terminal) retryLater() {
	t.presentAt = time.Now().Add(t.retry)
	t.retry = min(2*t.retry, maxRetry)
}

// drop closes l (the current connection) on purpose, without a backoff.
func (t *terminal) drop(l *link, why string) {
	l.close()
	t.cur, t.session = nil, ""
	t.up.Store(false)
	t.record(Event{Kind: KindDisconnected, Conn: l.serial, Server: l.w.ServerID, Detail: why})
}

func (t *terminal) tick(ctx context.Context, now time.Time) {
	if l := t.cur; l != nil {
		iv := l.w.PingEvery()
		if silent := now.Sub(time.Unix(0, l.lastRecv.Load())); silent > 3*iv {
			t.lost(fmt.Sprintf("broker silent for %v", silent.Round(time.Millisecond)))
			return
		}
		if t.returnHome && l.hops > 0 && t.present == "" && t.session == "" && !t.dialing {
			t.drop(l, "idle: back home")
			t.startDial(ctx, target{b: t.targets[0]})
			return
		}
		if !t.presentAt.IsZero() && !now.Before(t.presentAt) {
			t.presentAt = time.Time{}
			if t.present != "" {
				t.send(&proto.TokenInserted{Token: t.present, Reader: "chaos"})
				return
			}
		}
		if now.Sub(l.lastSend) >= iv/2 {
			l.seq++
			t.send(&proto.Ping{Seq: l.seq})
		}
		return
	}
	if !t.dialing && !now.Before(t.nextRetry) {
		b := t.targets[0]
		if t.failover {
			b = t.targets[t.attempt%len(t.targets)]
		}
		t.attempt++
		t.startDial(ctx, target{b: b})
	}
}

func (t *terminal) startDial(ctx context.Context, tg target) {
	t.dialing = true
	go func() {
		l, err := t.dial(ctx, tg)
		select {
		case t.dialed <- dialResult{t: tg, l: l, err: err}:
		case <-ctx.Done():
			if l != nil {
				l.close()
			}
		}
	}()
}

func (t *terminal) dial(ctx context.Context, tg target) (*link, error) {
	cfg, err := proto.ClientTLSConfig("", tg.b.pin, nil)
	if err != nil {
		return nil, err
	}
	dctx, cancel := context.WithTimeout(ctx, dialTimeout)
	defer cancel()
	c, err := proto.Dial(dctx, tg.b.addr, cfg)
	if err != nil {
		return nil, err
	}
	stop := context.AfterFunc(dctx, func() { c.Close() })
	w, err := proto.ClientHandshake(c, proto.Hello{Versions: []uint16{proto.Version}, TerminalID: t.id,
		Hops: tg.hops, Fence: tg.fence, Token: tg.token})
	if !stop() || err != nil {
		c.Close()
		if err == nil {
			err = dctx.Err()
		}
		return nil, err
	}
	l := &link{serial: t.serials.Add(1), c: c, w: w, hops: tg.hops, chain: tg.token, lastSend: time.Now()}
	l.lastRecv.Store(time.Now().UnixNano())
	go func() {
		for {
			m, err := c.Recv()
			if err == nil {
				l.lastRecv.Store(time.Now().UnixNano())
			}
			select {
			case t.inbox <- inMsg{l: l, m: m, err: err}:
			case <-ctx.Done():
				return
			}
			if err != nil {
				return
			}
		}
	}()
	return l, nil
}

func (t *terminal) dialDone(ctx context.Context, r dialResult) {
	t.dialing = false
	if r.err != nil {
		if r.t.hops > 0 {
			var perr *proto.ProtocolError
			if errors.As(r.err, &perr) || errors.Is(r.err, proto.ErrPinMismatch) || errors.Is(r.err, proto.ErrALPN) {
				// The target answered and refused: not retried (it would loop).
				t.record(Event{Kind: KindError, Server: r.t.b.id, Token: r.t.token, Reason: "redirect_refused", Detail: r.err.Error()})
				t.startDial(ctx, target{b: t.targets[0]})
				return
			}
			// Unreachable (dead, restarting, partitioned): back home after
			// a backoff, where the token is presented again (§7.5).
			t.rec.event(Event{Term: t.id, Kind: KindError, Server: r.t.b.id, Token: r.t.token, Reason: "redirect_unreachable",
				Detail: "retrying from home: " + r.err.Error()})
			t.attempt = 0
		}
		t.nextRetry = time.Now().Add(t.backoff)
		t.backoff = min(2*t.backoff, maxBackoff)
		return
	}
	l := r.l
	t.cur, t.attempt, t.backoff, t.presentAt = l, 0, minBackoff, time.Time{}
	t.up.Store(true)
	t.upAt.Store(int64(t.rec.now()))
	t.record(Event{Kind: KindConnected, Conn: l.serial, Server: l.w.ServerID, Detail: fmt.Sprintf("hops %d", l.hops)})
	// The token still in the reader is presented again (after a redirect:
	// the redirected token, if it is still there).
	if t.present != "" && (r.t.token == "" || r.t.token == t.present) {
		t.send(&proto.TokenInserted{Token: t.present, Reader: "chaos"})
	}
}

// do sends a command to the loop and returns the session of the token
// shown then ("" if another token's session or none is shown).
func (t *terminal) do(ctx context.Context, op, token string) (string, error) {
	c := termCmd{op: op, token: token, reply: make(chan string, 1)}
	select {
	case t.cmds <- c:
	case <-ctx.Done():
		return "", ctx.Err()
	case <-t.done:
		return "", errors.New("terminal stopped")
	}
	return <-c.reply, nil
}

func (t *terminal) drain() {
	for {
		select {
		case <-t.answers:
		default:
			return
		}
	}
}

// insert presents token and waits for its Attached (redirects are followed
// by the loop); an Error about it fails the operation.
func (t *terminal) insert(ctx context.Context, token string) (string, error) {
	t.drain()
	if _, err := t.do(ctx, "insert", token); err != nil {
		return "", err
	}
	var session string
	err := t.await(ctx, func(e Event) (bool, error) {
		switch {
		case e.Kind == KindAttached && e.Token == token:
			session = e.Session
			return true, nil
		case e.Kind == KindError && (e.Token == token || e.Token == ""):
			return true, fmt.Errorf("%s: %s", e.Reason, e.Detail)
		}
		return false, nil
	}, func() error {
		return fmt.Errorf("no Attached within %v (connected: %v)", opTimeout, t.up.Load())
	})
	return session, err
}

// remove pulls token and waits until the session it showed is no longer
// shown (Detached, or the connection gone).
func (t *terminal) remove(ctx context.Context, token string) error {
	t.drain()
	shown, err := t.do(ctx, "remove", token)
	if err != nil || shown == "" {
		return err
	}
	return t.await(ctx, func(e Event) (bool, error) {
		switch {
		case e.Kind == KindDetached && e.Session == shown, e.Kind == KindDisconnected:
			return true, nil
		case e.Kind == KindError && e.Token == token:
			return true, fmt.Errorf("%s: %s", e.Reason, e.Detail)
		}
		return false, nil
	}, func() error {
		return fmt.Errorf("session %s still shown %v after the removal", shown, opTimeout)
	})
}

// await reads answers until match reports one done, and returns match's
// error for it; after opTimeout it returns late's error instead.
func (t *terminal) await(ctx context.Context, match func(Event) (done bool, err error), late func() error) error {
	timer := time.NewTimer(opTimeout)
	defer timer.Stop()
	for {
		select {
		case e := <-t.answers:
			if done, err := match(e); done {
				return err
			}
		case <-timer.C:
			return late()
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

// forget takes token out of the reader without telling the broker (the
// person walked away with it; it is about to be presented elsewhere).
func (t *terminal) forget(ctx context.Context, token string) {
	_, _ = t.do(ctx, "forget", token)
}

// pair enrolls a new soft token at b with a pairing code.
func pair(ctx context.Context, b brokerAddr, code string) (string, ed25519.PrivateKey, error) {
	pub, key, err := ed25519.GenerateKey(nil)
	if err != nil {
		return "", nil, err
	}
	cfg, err := proto.ClientTLSConfig("", b.pin, nil)
	if err != nil {
		return "", nil, err
	}
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	c, err := proto.Dial(ctx, b.addr, cfg)
	if err != nil {
		return "", nil, err
	}
	defer c.Close()
	stop := context.AfterFunc(ctx, func() { c.Close() })
	defer stop()
	w, err := proto.ClientHandshake(c, proto.Hello{Versions: []uint16{proto.Version}, TerminalID: "chaos-enroll"})
	if err != nil {
		return "", nil, err
	}
	// The proof of possession of the key, bound to this connection.
	msg, err := soft.PairMessage("chaos-enroll", w.ServerID, w.Nonce, code, soft.Kind, pub)
	if err != nil {
		return "", nil, err
	}
	if err := c.Send(&proto.Pair{Code: code, Kind: soft.Kind, PublicKey: pub, Label: "chaos", Signature: ed25519.Sign(key, msg)}); err != nil {
		return "", nil, err
	}
	for {
		m, err := c.Recv()
		if err != nil {
			return "", nil, err
		}
		switch v := m.Body.(type) {
		case *proto.Ping:
			// The pairing's code check is slow on purpose (argon2id): a
			// loaded broker may ping before it answers (PROTOCOL.md §10).
			if err := c.Send(&proto.Pong{Seq: v.Seq}); err != nil {
				return "", nil, err
			}
		case *proto.Paired:
			if v.Token != soft.TokenID(pub) {
				return "", nil, fmt.Errorf("paired as %s; want %s", v.Token, soft.TokenID(pub))
			}
			return v.Token, key, nil
		case *proto.Error:
			return "", nil, fmt.Errorf("pair: %v: %s", v.Code, v.Message)
		}
	}
}
