package broker

import (
	"context"
	"errors"
	"fmt"
	"math"
	"strconv"
	"sync"
	"time"

	"github.com/hotdesk/hotdesk/auth"
	"github.com/hotdesk/hotdesk/compositor"
	"github.com/hotdesk/hotdesk/internal/event"
	"github.com/hotdesk/hotdesk/proto"
	"github.com/hotdesk/hotdesk/registry"
	"github.com/hotdesk/hotdesk/tokens"
	"github.com/hotdesk/hotdesk/tokens/soft"
)

// remoteTimeout bounds one registry call on the hot path.
const remoteTimeout = 5 * time.Second

// insertError is an outcome to report to the terminal as a proto Error.
type insertError struct {
	code       proto.ErrorCode
	msg        string
	err        error  // cause, for the log only
	detail     string // proto.Error.Detail
	retryAfter time.Duration
}

func (e *insertError) Error() string {
	if e.err != nil {
		return fmt.Sprintf("%s: %v", e.msg, e.err)
	}
	return e.msg
}

func (e *insertError) Unwrap() error { return e.err }

func fail(code proto.ErrorCode, msg string, err error) *insertError {
	return &insertError{code: code, msg: msg, err: err}
}

// failDetail is fail with a proto.Error.Detail and, for a lockout in err,
// when it ends (RetryAfterMs).
func failDetail(code proto.ErrorCode, detail, msg string, err error) *insertError {
	e := &insertError{code: code, msg: msg, err: err, detail: detail}
	var lo *auth.LockoutError
	if errors.As(err, &lo) && lo.Remaining > 0 {
		e.retryAfter = lo.Remaining
	}
	return e
}

// proto returns the Error message that tells the terminal e about token.
func (e *insertError) proto(token string) *proto.Error {
	ms := (e.retryAfter + time.Millisecond - 1) / time.Millisecond
	return &proto.Error{Code: e.code, Message: e.msg, Token: token, Detail: e.detail, RetryAfterMs: uint32(min(ms, math.MaxUint32))}
}

// insert handles a token presented at terminal t: locate or create the
// session and attach it there, or redirect t to the session's owner. A
// token without a session gets its orphan back, here or at the server
// that holds it (orphan.go), before a new desktop is started.
func (b *Broker) insert(ctx context.Context, t *terminal, token string, resume []byte) error {
	if _, _, err := tokens.ParseID(token); err != nil {
		return fail(proto.ErrUnknownToken, "malformed token id", err)
	}
	if err := b.Ready(); err != nil {
		return fail(proto.ErrUnavailable, "server not ready", err)
	}
	// The Hello's redirect chain bounds this lookup only if it is the one
	// the chain was about; any other lookup starts at hop 0.
	hops, helloFence := t.chain(token)
	// A session on another server: redirect at once. The owner checks the
	// token (proof, login); checking it here too would only add an etcd read
	// and a round trip to the terminal on the cross-server path.
	b.mu.Lock()
	local := b.byToken[token] != nil
	b.mu.Unlock()
	if !local {
		// A stale answer is safe here: the owner re-checks, and a creation
		// goes through the claim transaction below.
		if done, err := b.redirectAway(ctx, t, token, hops); done {
			return err
		}
	}
	gen := b.tokenGeneration()
	rec, err := b.verifyToken(ctx, t, token)
	if err != nil {
		return err
	}

	unlock := b.keys.Lock(token)
	defer unlock()
	if err := ctx.Err(); err != nil {
		return fail(proto.ErrUnavailable, "token removed", err)
	}
	// The token registry changed while this insert was verified (a
	// challenge takes a round trip): TokenChanged could not lock a
	// session that was not shown yet. The login is checked the same way
	// (authenticate).
	if rec, err = b.recheckIfChanged(ctx, token, rec, gen); err != nil {
		return err
	}

	b.mu.Lock()
	s := b.byToken[token]
	var fence int64
	var heldFence bool
	if s != nil {
		fence = s.claim.Fence
		heldFence = s.heldFence(helloFence)
	}
	b.mu.Unlock()
	if s != nil {
		if helloFence != 0 && helloFence < fence && !heldFence {
			// Sent by a broker that saw an earlier ownership of the token
			// by another session: refuse it; the terminal starts again.
			return fail(proto.ErrStaleFence, "redirect is stale: the session moved", nil)
		}
		// Attach only if the key is still this session's: a redirect with
		// a newer fence than ours saw a claim made after ours, and our
		// lease may have been revoked since the key was last written (its
		// keys gone with it, another broker free to create a session for
		// the token) while the renewals have not told us yet. The claim
		// stream (Config.Claims) shows that without a read when it has
		// seen no other change of the key and the redirect (if any) knew
		// no newer claim; else one linearizable read, so that a token is
		// never shown at two terminals.
		if helloFence > fence || !b.claimHeld(s) {
			if err := b.confirmClaimTokenLocked(ctx, s); err != nil {
				return err
			}
		}
		return b.resumeTokenLocked(ctx, t, s, rec, resume)
	}

	lctx, cancel := context.WithTimeout(ctx, remoteTimeout)
	c, err := b.registry().Lookup(lctx, token)
	cancel()
	switch {
	case err == nil && c.Session.ServerID != b.cfg.ServerID:
		return b.redirect(ctx, t, c, hops)
	case err == nil:
		// Our own id holds a claim we do not run (a session lost before a
		// restart, or a crash mid-create). Release it so the token can start afresh.
		b.log.Warn("releasing stale claim of this server", "session", c.Session.ID, "fence", c.Fence)
		rctx, cancel := context.WithTimeout(ctx, remoteTimeout)
		rerr := b.registry().Release(rctx, c)
		cancel()
		if rerr != nil && !errors.Is(rerr, registry.ErrFenced) {
			return fail(proto.ErrUnavailable, "registry unavailable", rerr)
		}
	case !errors.Is(err, registry.ErrNotFound):
		return fail(proto.ErrUnavailable, "registry unavailable", err)
	}
	if o := b.orphanFor(token); o != nil {
		if done, err := b.restoreTokenLocked(ctx, t, o, rec, hops); done {
			return err
		}
	} else if srv, ok := b.orphanElsewhere(ctx, token); ok {
		return b.redirectTo(t, token, srv, 0, hops)
	}
	target, err := b.place(ctx, hops)
	if errors.Is(err, errNoCapacity) {
		b.limitHit(LimitSessions, "")
		b.blog.Warn(string(LimitSessions), "session refused: no server of the group has room", "terminal", logValue(t.id))
		return fail(proto.ErrUnavailable, "no server can take a new session now", err)
	}
	if err != nil {
		return fail(proto.ErrUnavailable, "registry unavailable", err)
	}
	if target.ID != b.cfg.ServerID {
		return b.redirectTo(t, token, target, 0, hops)
	}
	return b.create(ctx, t, token, rec, hops)
}

// selfRegistration marks the record verifyToken makes up for an unknown
// card that may enroll itself (it is not in the registry yet).
const selfRegistration = "self-registration"

// verifyToken checks that token may be used and that t holds its key.
func (b *Broker) verifyToken(ctx context.Context, t *terminal, token string) (registry.TokenRecord, error) {
	typ, name, _ := tokens.ParseID(token)
	if typ == "user" {
		// Password login without a card: the user name locates the session.
		if b.policy(token, name).Kind != auth.KindPassword {
			return registry.TokenRecord{}, fail(proto.ErrUnknownToken, "password login without a card is not enabled", nil)
		}
		return registry.TokenRecord{ID: token, Kind: "user", User: name}, nil
	}
	rec, err := b.tokenRecord(ctx, token)
	if errors.Is(err, registry.ErrNotFound) && (typ == "uid" || typ == "piv") && b.policy(token, "").SelfRegister {
		// An unknown card may enroll itself: the login decides whose it is.
		return registry.TokenRecord{ID: token, Kind: typ, RegisteredBy: selfRegistration}, nil
	}
	if errors.Is(err, registry.ErrNotFound) {
		return rec, fail(proto.ErrUnknownToken, "token not enrolled", err)
	}
	if err != nil {
		return rec, fail(proto.ErrUnavailable, "registry unavailable", err)
	}
	if rec.Disabled {
		return rec, fail(proto.ErrTokenDisabled, "token disabled", nil)
	}
	if rec.Kind != typ {
		return rec, fail(proto.ErrUnknownToken, "token kind does not match its id", nil)
	}
	switch rec.Kind {
	case "soft", "hce":
		// Key-holding tokens (software keys, phones by host card
		// emulation) prove possession by signing a fresh challenge.
		if err := b.challenge(ctx, t, token, rec.PublicKey); err != nil {
			return rec, err
		}
	case "uid", "piv":
		// Locate-only cards: their id can be copied, so they prove
		// nothing; the login policy decides what to ask (PIN, password).
	default:
		return rec, fail(proto.ErrUnknownToken, "token kind not supported: "+sanitize(rec.Kind), nil)
	}
	return rec, nil
}

// challenge asks t to sign a fresh nonce bound to terminal, server and
// connection with the token's key.
func (b *Broker) challenge(ctx context.Context, t *terminal, token string, pub []byte) error {
	nonce := newNonce()
	id, answer := t.expect()
	defer t.forget(id)
	if err := t.send(&proto.Challenge{ID: id, Token: token, Nonce: nonce, ServerID: b.cfg.ServerID}); err != nil {
		return fail(proto.ErrInternal, "terminal unreachable", err)
	}
	cctx, cancel := context.WithTimeout(ctx, b.cfg.ProofTimeout)
	defer cancel()
	var msg any
	select {
	case msg = <-answer:
	case <-cctx.Done():
		_ = t.send(&proto.Cancel{ID: id})
		if ctx.Err() != nil {
			// TokenRemoved cancelled the insert: the card was pulled
			// mid-challenge, which is not a failed proof.
			return fail(proto.ErrCancelled, "token removed before its proof", ctx.Err())
		}
		return fail(proto.ErrAuthFailed, "no proof of possession within the proof timeout", cctx.Err())
	}
	if _, declined := msg.(*proto.Cancel); declined {
		return fail(proto.ErrAuthFailed, "challenge declined by the terminal", nil)
	}
	p, ok := msg.(*proto.Proof)
	if !ok || p.Token != token {
		return fail(proto.ErrAuthFailed, "proof of possession failed", nil)
	}
	if ctx.Err() != nil {
		// The token left the terminal while its proof was on the way.
		return fail(proto.ErrCancelled, "token removed before its proof", ctx.Err())
	}
	signed, err := soft.ChallengeMessage(t.id, b.cfg.ServerID, t.nonce, nonce, token)
	if err != nil {
		return fail(proto.ErrAuthFailed, "proof of possession failed", err)
	}
	if err := soft.Verify(pub, signed, p.Signature); err != nil {
		b.log.Warn("token proof refused", "token", token, "terminal", t.id, "remote", t.remote)
		return fail(proto.ErrAuthFailed, "proof of possession failed", err)
	}
	return nil
}

func (b *Broker) authenticate(ctx context.Context, t *terminal, token string, rec registry.TokenRecord, existing, locked, reconnect bool) (auth.Result, error) {
	gen := b.tokenGeneration()
	res, err := b.login(ctx, t, token, rec, existing, locked, reconnect)
	if err != nil {
		return res, err
	}
	// A PIN prompt takes as long as its user: a token disabled or given
	// another key or user meanwhile is refused here, not shown.
	if _, err := b.recheckIfChanged(ctx, token, rec, gen); err != nil {
		b.closeLogin(res.Session)
		return auth.Result{}, err
	}
	return res, nil
}

// tokenGeneration is the count of token registry changes seen so far.
func (b *Broker) tokenGeneration() uint64 {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.tokenGen
}

// recheckIfChanged is recheckToken if the token registry changed since
// generation gen and rec is an enrolled token's record (a password login
// or an unknown card enrolling itself has none to read again); else rec.
func (b *Broker) recheckIfChanged(ctx context.Context, token string, rec registry.TokenRecord, gen uint64) (registry.TokenRecord, error) {
	enrolled := rec.Kind != "user" && !(rec.RegisteredBy == selfRegistration && rec.User == "")
	if !enrolled || b.tokenGeneration() == gen {
		return rec, nil
	}
	return b.recheckToken(ctx, token, rec)
}

// login runs the authenticator for token at t, mapping its errors to the
// terminal's.
func (b *Broker) login(ctx context.Context, t *terminal, token string, rec registry.TokenRecord, existing, locked, reconnect bool) (auth.Result, error) {
	actx, cancel := context.WithTimeout(ctx, b.cfg.AuthTimeout)
	defer cancel()
	res, err := b.cfg.Auth.Authenticate(actx, auth.Request{
		Token: token, User: rec.User, TerminalID: t.id, RemoteAddr: t.remote, Existing: existing, Locked: locked,
		Reconnect: reconnect,
	}, loginConversation{t: t, token: token})
	switch {
	case errors.Is(err, auth.ErrLocked):
		b.emit(event.Event{Kind: event.LoginLockout, Token: token, User: rec.User, Terminal: t.id})
		return res, failDetail(proto.ErrRateLimited, proto.DetailLockedOut, "too many failed logins; "+tryAgainIn(err), err)
	case errors.Is(err, auth.ErrBusy):
		return res, fail(proto.ErrRateLimited, "too many logins in progress; try again shortly", err)
	case err != nil && ctx.Err() != nil:
		// The token was removed mid-login (or the terminal left).
		return res, fail(proto.ErrCancelled, "login abandoned: token removed", err)
	case errors.Is(err, ErrPromptCancelled):
		return res, failDetail(proto.ErrAuthFailed, proto.DetailDeclined, "login cancelled at the terminal", err)
	case err != nil:
		b.log.Info("authentication failed", "token", token, "terminal", logValue(t.id), "error", err)
		b.emit(event.Event{Kind: event.LoginRefused, Token: token, User: rec.User, Terminal: t.id})
		switch {
		case errors.Is(err, auth.ErrAccount) && errors.Is(err, auth.ErrAccountExpired):
			// The account stack refused the account, no secret was
			// judged: the person is told what only an administrator can
			// change.
			return res, fail(proto.ErrAuthFailed, "account expired: ask your administrator", err)
		case errors.Is(err, auth.ErrAccount):
			return res, fail(proto.ErrAuthFailed, "account disabled or not allowed to log in here: ask your administrator", err)
		}
		if errors.Is(err, auth.ErrNoAnswer) {
			// Nothing was typed: the terminal tells it from a wrong secret.
			return res, failDetail(proto.ErrAuthFailed, proto.DetailNoAnswer, "authentication failed: no answer in time", err)
		}
		var lo *auth.LockoutError
		if errors.As(err, &lo) && lo.Started {
			// The failure that locked the token, user or terminal out
			// says so: the person learns it now, not on the next try.
			return res, failDetail(proto.ErrAuthFailed, proto.DetailLockoutStarted, "authentication failed; too many failed logins: "+tryAgainIn(err), err)
		}
		return res, fail(proto.ErrAuthFailed, "authentication failed", err)
	}
	granted := event.Event{Kind: event.LoginGranted, Token: token, User: res.User, Terminal: t.id}
	if reconnect && res.NoSecret {
		granted.Reason = "reconnected: the same terminal within session.reconnect_grace"
	}
	b.emit(granted)
	return res, nil
}

// tryAgainIn says when a lockout in err ends ("try again in 30 s"), or
// "try again later" when err does not say.
func tryAgainIn(err error) string {
	var lo *auth.LockoutError
	if !errors.As(err, &lo) {
		return "try again later"
	}
	return retryIn(lo.Remaining)
}

// retryIn says when a lockout of d more ends ("try again in 30 s", whole
// seconds rounded up), or "try again later" for none.
func retryIn(d time.Duration) string {
	if d <= 0 {
		return "try again later"
	}
	return fmt.Sprintf("try again in %d s", int((d+time.Second-1)/time.Second))
}

// policy resolves the login policy of token and user (zero Policy if the
// broker has no policies configured).
func (b *Broker) policy(token, user string) auth.Policy {
	if b.cfg.Policies == nil {
		return auth.Policy{}
	}
	var groups []string
	if b.cfg.Groups != nil && user != "" {
		groups = b.cfg.Groups(user)
	}
	return b.cfg.Policies.For(token, user, groups)
}

// closeLogin ends a PAM session opened by an authentication.
func (b *Broker) closeLogin(l auth.Session) {
	if l == nil {
		return
	}
	ctx, cancel := context.WithTimeout(b.life, remoteTimeout)
	defer cancel()
	if err := l.Close(ctx); err != nil {
		b.log.Warn("closing the PAM session failed", "error", err)
	}
}

// lockUserLimit takes user's limit lock when a per-user limit applies to
// token and user, and returns its release (idempotent; a no-op otherwise).
func (b *Broker) lockUserLimit(token, user string) func() {
	pol := b.policy(token, user)
	if pol.MaxSessions <= 0 || pol.Kind == auth.KindKiosk {
		return func() {}
	}
	unlock := b.userLocks.Lock(user)
	var once sync.Once
	return func() { once.Do(unlock) }
}

// checkUserLimit refuses a new session for a user who already holds the
// policy's maximum anywhere in the group.
func (b *Broker) checkUserLimit(ctx context.Context, token, user string) error {
	pol := b.policy(token, user)
	max := pol.MaxSessions
	// Kiosk sessions all carry one label user ("kiosk"), not a person: a
	// per-user limit would be one limit shared by every kiosk token.
	if max <= 0 || pol.Kind == auth.KindKiosk {
		return nil
	}
	lctx, cancel := context.WithTimeout(ctx, remoteTimeout)
	claims, err := b.registry().Sessions(lctx)
	cancel()
	if err != nil {
		return fail(proto.ErrUnavailable, "registry unavailable", err)
	}
	n := 0
	for _, c := range claims {
		if c.Session.User == user {
			n++
		}
	}
	if n >= max {
		return fail(proto.ErrSessionLimited, fmt.Sprintf("%s already has %d sessions (the most allowed)", user, n), nil)
	}
	return nil
}

// redirect sends t to the owner of claim c; hops is how many redirects
// this lookup followed so far.
func (b *Broker) redirect(ctx context.Context, t *terminal, c registry.Claim, hops uint8) error {
	if hops >= proto.MaxHops {
		return fail(proto.ErrTooManyHops, "too many redirects", nil)
	}
	lctx, cancel := context.WithTimeout(ctx, remoteTimeout)
	srv, err := b.registry().ServerLocal(lctx, c.Session.ServerID)
	cancel()
	if err != nil {
		// The owner's lease is gone or going: its claims vanish with it.
		return fail(proto.ErrUnavailable, "session owner unreachable; retry shortly", err)
	}
	return b.redirectTo(t, c.Key, srv, c.Fence, hops)
}

// redirectTo sends t to group member srv; fence is the session's claim, or
// 0 when srv is asked to create the session (placement).
func (b *Broker) redirectTo(t *terminal, token string, srv registry.ServerRecord, fence int64, hops uint8) error {
	if hops >= proto.MaxHops {
		return fail(proto.ErrTooManyHops, "too many redirects", nil)
	}
	if _, ok := memberOf(srv); !ok {
		return fail(proto.ErrUnavailable, "session owner has no usable published address", nil)
	}
	b.log.Debug("redirecting terminal", "terminal", t.id, "token", token, "server", srv.ID, "fence", fence)
	b.emit(event.Event{Kind: event.TerminalRedirected, Terminal: t.id, Token: token, Target: srv.ID, Hops: int(t.hops)})
	return t.send(&proto.Redirect{
		Token: token, ServerID: srv.ID, Addr: srv.Addr, Fingerprint: srv.Fingerprint, Fence: fence,
	})
}

// create starts a new session for token at t. Caller holds the token lock.
func (b *Broker) create(ctx context.Context, t *terminal, token string, rec registry.TokenRecord, hops uint8) error {
	res, err := b.authenticate(ctx, t, token, rec, false, false, false)
	if err != nil {
		return err
	}
	// The user's sessions are counted and the claim made in one registry
	// transaction (claimNew), so no two brokers overshoot the user's limit;
	// the user's lock here keeps this broker's own concurrent logins of one
	// user from retrying against each other.
	maxUser := b.userLimit(token, res.User)
	unlockUser := b.lockUserLimit(token, res.User)
	defer unlockUser()
	if rec.RegisteredBy == selfRegistration && rec.User == "" {
		rec.User, rec.RegisteredBy, rec.RegisteredUnixMs = res.User, "self:"+t.id, b.clk.Now().UnixMilli()
		ectx, cancel := context.WithTimeout(ctx, remoteTimeout)
		err := b.registry().EnrollToken(ectx, rec)
		cancel()
		if err != nil {
			b.closeLogin(res.Session)
			return fail(proto.ErrUnavailable, "could not register the card", err)
		}
		b.log.Info("card self-registered", "token", token, "user", res.User, "terminal", t.id)
		b.emit(event.Event{Kind: event.TokenRegistered, Token: token, User: res.User, Terminal: t.id, Reason: selfRegistration})
	}
	now := b.clk.Now()
	s := &Session{ID: newSessionID(), Token: token, User: res.User, state: Creating, created: now, updated: now, login: res.Session}
	cctx, cancel := context.WithTimeout(ctx, remoteTimeout)
	c, won, err := b.claimNew(cctx, token, b.record(s, t), maxUser)
	cancel()
	unlockUser()
	if err != nil {
		b.closeLogin(res.Session)
		return err
	}
	if !won {
		b.closeLogin(res.Session)
		// Another broker claimed the token first: the terminal goes to the winner.
		if c.Session.ServerID == b.cfg.ServerID {
			return fail(proto.ErrInternal, "claim held by this server without a session", nil)
		}
		return b.redirect(ctx, t, c, hops)
	}
	s.setClaimLocked(c)
	b.mu.Lock()
	b.byID[s.ID] = s
	b.byToken[token] = s
	b.mu.Unlock()
	b.countChanged()
	b.transitioned(s, 0, Creating)

	info, err := b.cfg.Compositor.Create(ctx, compositor.Spec{SessionID: s.ID, User: s.User, Env: res.Env, Limits: res.Limits,
		Labels: map[string]string{labelToken: token, labelCreated: strconv.FormatInt(now.UnixMilli(), 10)}})
	if err != nil {
		full := errors.Is(err, compositor.ErrFull)
		if full {
			b.limitHit(LimitSessions, "")
			b.blog.Warn(string(LimitSessions), "session refused: max_sessions reached", "session", s.ID, "error", err)
		} else {
			b.log.Error("compositor create failed", "session", s.ID, "error", err)
		}
		b.forget(s)
		b.closeLogin(res.Session)
		rctx, cancel := context.WithTimeout(b.life, remoteTimeout)
		_ = b.registry().Release(rctx, c)
		cancel()
		b.transitioned(s, Creating, Destroyed)
		if full {
			return fail(proto.ErrSessionLimited, "this server runs as many sessions as it may", err)
		}
		return fail(proto.ErrCompositor, "could not start the session", err)
	}
	b.mu.Lock()
	s.info = info
	b.mu.Unlock()
	if db, ok := res.Session.(auth.DesktopBinder); ok && info.PID > 0 {
		// The login lives as long as the desktop, across restarts of ours.
		if err := db.BindDesktop(info.PID); err != nil {
			b.log.Warn("login session not bound to its desktop: it ends if hotdeskd stops first", "session", s.ID, "error", err)
		}
	}
	b.log.Info("session created", "session", s.ID, "user", s.User, "terminal", t.id, "pid", info.PID)
	return b.attachTokenLocked(ctx, t, s, false, nil)
}

// resumeTokenLocked attaches existing session s at t: a resume of a suspended
// session or a takeover from another terminal. Caller holds the token lock.
func (b *Broker) resumeTokenLocked(ctx context.Context, t *terminal, s *Session, rec registry.TokenRecord, resume []byte) error {
	b.mu.Lock()
	st, old := s.state, s.term
	b.mu.Unlock()
	if st == Active && old == t {
		return t.send(b.attachedFor(s, t, true)) // the same terminal again: idempotent
	}
	b.mu.Lock()
	locked := s.locked
	reconnect := rec.Kind != "user" && b.reconnecting(s, t, old, resume) // a password login proves no token
	b.mu.Unlock()
	loginStart := b.clk.Now()
	res, err := b.authenticate(ctx, t, s.Token, rec, true, locked, reconnect)
	if err != nil {
		return err
	}
	// The desktop keeps the PAM session it was created with.
	b.closeLogin(res.Session)
	if res.User != s.User {
		b.log.Warn("token resolved to another user than its session's", "session", s.ID, "user", res.User)
		return fail(proto.ErrAuthFailed, "this session belongs to another user", nil)
	}
	if b.current(s) == nil {
		return fail(proto.ErrUnavailable, "session ended", nil)
	}
	// A login with a prompt takes as long as its user (up to the auth
	// timeout): the claim confirmed before it may have gone meanwhile, and
	// another broker may have given the token a new session. Confirm it
	// again (the claim stream answers without a read when it can).
	if b.clk.Now().Sub(loginStart) >= reconfirmAfter && !b.claimHeld(s) {
		if err := b.confirmClaimTokenLocked(ctx, s); err != nil {
			return err
		}
	}
	if st == Active && old != nil {
		b.detachTokenLocked(s, proto.DetachTakeover, "session taken over at terminal "+t.id, t.id)
	}
	if st == Suspended {
		if err := b.resumeDesktopTokenLocked(ctx, s); err != nil {
			return err
		}
	}
	return b.attachTokenLocked(ctx, t, s, true, old)
}

// resumeDesktopTokenLocked resumes suspended s's desktop. A desktop that is
// gone ends s; one that could not be resumed now leaves s suspended, with
// whatever its user had open, for the next try. Caller holds the token
// lock.
func (b *Broker) resumeDesktopTokenLocked(ctx context.Context, s *Session) error {
	info, err := b.cfg.Compositor.Resume(ctx, s.ID)
	if errors.Is(err, compositor.ErrNotFound) {
		b.log.Error("compositor resume failed: the desktop is gone", "session", s.ID, "error", err)
		b.destroyTokenLocked(ctx, s, proto.DetachDestroyed, "could not resume the session")
		return fail(proto.ErrCompositor, "could not resume the session", err)
	}
	if err != nil {
		// The desktop still runs (a full disk refused its record, its
		// compositor answered late).
		b.log.Error("compositor resume failed; the session stays suspended", "session", s.ID, "error", err)
		return fail(proto.ErrCompositor, "could not resume the session now; present the token again", err)
	}
	b.mu.Lock()
	s.info = info
	b.mu.Unlock()
	return nil
}

// reconfirmAfter is how long a resume's login may take before the
// session's claim is confirmed again ahead of the attach.
const reconfirmAfter = time.Second

// confirmClaimTokenLocked checks with the registry (a linearizable read) that
// the token's key is still s's claim, adopting the registry's fence. The key
// held by another session: s is orphaned and the terminal told to present
// the token again (it is redirected there). The key absent (our lease was
// revoked or expired, or someone deleted it): it is re-claimed under the
// current lease if that is live (never orphaned, since nobody else has it),
// else the terminal is told to retry. Caller holds the token lock.
func (b *Broker) confirmClaimTokenLocked(ctx context.Context, s *Session) error {
	b.mu.Lock()
	old := s.claim
	b.mu.Unlock()
	lctx, cancel := context.WithTimeout(ctx, remoteTimeout)
	defer cancel()
	reg := b.registry()
	c, err := reg.Lookup(lctx, s.Token)
	if errors.Is(err, registry.ErrNotFound) {
		rc, ok := reg.(Reclaimer)
		if !ok || b.Ready() != nil {
			return fail(proto.ErrUnavailable, "session claim being re-established; retry shortly", err)
		}
		var won bool
		c, won, err = rc.Reclaim(lctx, old, b.record(s, s.term))
		switch {
		case err != nil:
			b.log.Warn("re-claiming a vanished session claim failed", "session", s.ID, "error", err)
			return fail(proto.ErrUnavailable, "session claim being re-established; retry shortly", err)
		case won:
			b.log.Info("session claim re-created", "session", s.ID, "fence", c.Fence)
		}
	}
	switch {
	case err == nil && c.Session.ServerID == b.cfg.ServerID && c.Session.ID == s.ID:
		b.mu.Lock()
		s.setClaimLocked(c)
		b.mu.Unlock()
		return nil
	case err == nil:
		b.orphanTokenLocked(s, c.Session.ServerID)
		return fail(proto.ErrStaleFence, "the session's token belongs to another session now; present it again", nil)
	default:
		return fail(proto.ErrUnavailable, "registry unavailable", err)
	}
}

// attachTokenLocked makes s active at t and tells t; old is the terminal an
// active s was taken from (nil otherwise). Caller holds the token lock.
func (b *Broker) attachTokenLocked(ctx context.Context, t *terminal, s *Session, resumed bool, old *terminal) error {
	// The lease may have been lost while the insert ran: attach only
	// under a live lease (the lease supervisor detaches everything shown
	// when it is lost, under each token's lock).
	if err := b.Ready(); err != nil {
		// A new desktop, or one a takeover has just cut from its old
		// terminal (active, shown nowhere), is suspended: its timer runs
		// and the supervisor's sweep, which looks at shown sessions only,
		// need not find it.
		b.mu.Lock()
		orphanedHere := s.state == Creating || (s.state == Active && s.term == nil)
		b.mu.Unlock()
		if orphanedHere {
			b.suspendTokenLocked(ctx, s, proto.DetachLocked, "server lost its registry lease")
		}
		return fail(proto.ErrUnavailable, "server not ready", err)
	}
	// A terminal shows one session: whatever it showed before is suspended.
	if prev := t.attached(); prev != nil && prev != s {
		b.goAttach(func() {
			unlock := b.keys.Lock(prev.Token)
			defer unlock()
			if b.current(prev) != nil && prev.term == t {
				b.suspendTokenLocked(b.life, prev, proto.DetachTokenRemoved, "another token was presented")
			}
		})
	}
	b.mu.Lock()
	from := s.state
	if s.timer != nil {
		s.timer.Stop()
		s.timer = nil
	}
	s.state = Active
	s.term = t
	s.locked = false // whoever resumed it logged in as the policy asked
	s.lost = lostTerminal{}
	s.setResumeKeyLocked(newResumeKey(), t.id)
	s.suspendedAt = time.Time{}
	s.updated = b.clk.Now()
	b.mu.Unlock()
	t.setAttached(s)
	err := t.send(b.attachedFor(s, t, resumed))
	b.transitioned(s, from, Active)
	b.emit(attachEvent(s, t, old, from))
	b.publish(s)
	return err
}

// attachedFor is the Attached message for s at t, with a fresh ticket for
// the attach gateway if there is one.
func (b *Broker) attachedFor(s *Session, t *terminal, resumed bool) *proto.Attached {
	msg := b.attachedMsg(s, resumed)
	if tk := b.issueTicket(s, t); tk != nil {
		msg.Endpoint, msg.Ticket = "hotdesk-attach://"+b.cfg.AttachAddr, tk
	}
	return msg
}

func (b *Broker) attachedMsg(s *Session, resumed bool) *proto.Attached {
	b.mu.Lock()
	defer b.mu.Unlock()
	return &proto.Attached{
		SessionID: s.ID, Token: s.Token, User: s.User, Endpoint: s.info.Endpoint,
		Resumed: resumed, ServerID: b.cfg.ServerID, ResumeKey: s.resumeKey,
	}
}

// remove handles a token leaving terminal t: the session it shows there is suspended.
func (b *Broker) remove(ctx context.Context, t *terminal, token string) {
	unlock := b.keys.Lock(token)
	defer unlock()
	b.mu.Lock()
	s := b.byToken[token]
	here := s != nil && s.term == t
	b.mu.Unlock()
	if !here {
		return // not shown here (taken over meanwhile, or never attached)
	}
	b.suspendTokenLocked(ctx, s, proto.DetachTokenRemoved, "token removed")
}

// suspendTokenLocked cuts s from its terminal and starts the suspend timer.
// Caller holds the token lock.
func (b *Broker) suspendTokenLocked(ctx context.Context, s *Session, reason proto.DetachReason, msg string) {
	if b.current(s) == nil {
		return
	}
	shownAt := b.detachTokenLocked(s, reason, msg, "")
	if err := b.cfg.Compositor.Suspend(ctx, s.ID); err != nil && !errors.Is(err, compositor.ErrNotFound) {
		b.log.Error("compositor suspend failed", "session", s.ID, "error", err)
	}
	b.mu.Lock()
	from := s.state
	s.state = Suspended
	if shownAt != nil {
		s.lastTerminal = shownAt.id
	}
	s.suspendedAt = b.clk.Now()
	s.updated = s.suspendedAt
	if s.timer != nil {
		s.timer.Stop()
	}
	s.timer = b.clk.AfterFunc(b.cfg.SuspendTimeout, func() { b.expire(s) })
	b.mu.Unlock()
	b.log.Info("session suspended", "session", s.ID, "reason", msg)
	b.transitioned(s, from, Suspended)
	b.emit(endEvent(event.SessionSuspended, s, shownAt, msg))
	b.publish(s)
}

// SetSuspendTimeout makes d the suspend timeout (a configuration reload;
// d > 0): every session suspended now ends d after its suspension (one
// suspended longer ends at once), and the suspensions to come count d.
func (b *Broker) SetSuspendTimeout(d time.Duration) {
	if d <= 0 {
		return
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	b.cfg.SuspendTimeout = d
	for _, s := range b.byID {
		if s.state == Suspended && s.timer != nil {
			s.timer.Stop()
			s.timer = b.clk.AfterFunc(max(d-b.clk.Now().Sub(s.suspendedAt), 0), func() { b.expire(s) })
		}
	}
}

// expire destroys s if it is still suspended when its timer fires and the
// broker is not shut down (a session kept on shutdown is the next run's).
func (b *Broker) expire(s *Session) {
	unlock := b.keys.Lock(s.Token)
	defer unlock()
	b.mu.Lock()
	due := !b.closed && b.byID[s.ID] == s && s.state == Suspended &&
		!b.clk.Now().Before(s.suspendedAt.Add(b.cfg.SuspendTimeout))
	b.mu.Unlock()
	if due {
		b.destroyTokenLocked(b.life, s, proto.DetachDestroyed, "suspend timeout")
	}
}

// detachTokenLocked tells s's terminal it no longer shows s and returns that
// terminal (nil if s was not shown). Caller holds the token lock.
func (b *Broker) detachTokenLocked(s *Session, reason proto.DetachReason, msg, by string) *terminal {
	b.cutStreams(s) // the old terminal stops seeing the session at once
	b.mu.Lock()
	t := s.term
	s.term = nil
	b.mu.Unlock()
	if t == nil {
		return nil
	}
	t.clearAttached(s)
	if err := t.send(&proto.Detached{SessionID: s.ID, Reason: reason, Message: msg, Terminal: by}); err != nil {
		b.log.Debug("detach not delivered", "terminal", t.id, "error", err)
	}
	return t
}

// destroyTokenLocked ends s: terminal told, compositor stopped, claim released.
// Caller holds the token lock.
func (b *Broker) destroyTokenLocked(ctx context.Context, s *Session, reason proto.DetachReason, msg string) {
	shownAt := b.detachTokenLocked(s, reason, msg, "")
	b.mu.Lock()
	from := s.state
	pid := s.info.PID
	b.mu.Unlock()
	if pid != 0 {
		if err := b.cfg.Compositor.Destroy(ctx, s.ID); err != nil {
			b.log.Error("compositor destroy failed", "session", s.ID, "error", err)
		}
	}
	b.forget(s)
	b.mu.Lock()
	login := s.login
	s.login = nil
	claim := s.claim // a publish in flight may store its answer (under b.mu only)
	b.mu.Unlock()
	b.closeLogin(login)
	rctx, cancel := context.WithTimeout(b.life, remoteTimeout)
	if err := b.registry().Release(rctx, claim); err != nil && !errors.Is(err, registry.ErrFenced) {
		b.log.Warn("registry release failed", "session", s.ID, "error", err)
	}
	cancel()
	b.log.Info("session destroyed", "session", s.ID, "reason", msg)
	b.transitioned(s, from, Destroyed)
	b.emit(endEvent(event.SessionDestroyed, s, shownAt, msg))
}

// forget removes s from the broker's maps and stops its timer.
func (b *Broker) forget(s *Session) {
	b.mu.Lock()
	defer b.mu.Unlock()
	s.state = Destroyed
	if s.timer != nil {
		s.timer.Stop()
		s.timer = nil
	}
	if b.byID[s.ID] == s {
		delete(b.byID, s.ID)
	}
	if b.byToken[s.Token] == s {
		delete(b.byToken, s.Token)
	}
	b.countChanged()
	if s.orphaned {
		b.orphansChanged()
	}
}

// record is the registry view of s.
func (b *Broker) record(s *Session, t *terminal) registry.Session {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.recordLocked(s, t)
}

func (b *Broker) recordLocked(s *Session, t *terminal) registry.Session {
	r := registry.Session{
		ID: s.ID, Key: s.Token, ServerID: b.cfg.ServerID, User: s.User, State: s.state.String(), Locked: s.locked,
		CreatedUnixMs: s.created.UnixMilli(), UpdatedUnixMs: s.updated.UnixMilli(),
	}
	if t != nil {
		r.Terminal = t.id
	}
	if s.state == Suspended && !s.suspendedAt.IsZero() {
		r.SuspendedUnixMs = s.suspendedAt.UnixMilli()
		r.LastTerminal = s.lastTerminal
	}
	r.ResumeTerminal, r.ResumeKeySHA256 = b.resumeRecordLocked(s)
	return r
}

// publish has s's state written to the registry, fenced on its claim, in
// the background: a slow or hanging etcd never holds the token lock or the
// terminal's queue. Writes of one session are made one at a time, in
// order, each bounded by remoteTimeout; a burst of changes collapses into
// one write of the latest state. A fenced write is resolved by fenced.
func (b *Broker) publish(s *Session) {
	b.mu.Lock()
	if s.orphaned || s.state == Destroyed {
		b.mu.Unlock()
		return
	}
	s.pubDirty = true
	if s.pubRunning {
		b.mu.Unlock()
		return
	}
	s.pubRunning = true
	b.mu.Unlock()
	if !b.goAttach(func() { b.publisher(s) }) {
		b.mu.Lock()
		s.pubRunning = false // shut down: the record stays as it is
		b.mu.Unlock()
	}
}

// publisher writes s's record until it is up to date.
func (b *Broker) publisher(s *Session) {
	for {
		b.mu.Lock()
		if !s.pubDirty || s.orphaned || s.state == Destroyed || b.byID[s.ID] != s {
			s.pubDirty, s.pubRunning = false, false
			b.mu.Unlock()
			return
		}
		s.pubDirty = false
		c := s.claim
		rec := b.recordLocked(s, s.term)
		b.mu.Unlock()

		ctx, cancel := context.WithTimeout(b.life, remoteTimeout)
		nc, err := b.registry().Update(ctx, c, rec)
		cancel()
		switch {
		case err == nil:
			b.mu.Lock()
			if s.claim.Fence == c.Fence {
				s.claim = nc
			}
			b.mu.Unlock()
		case errors.Is(err, registry.ErrFenced):
			b.fenced(s, c)
		default:
			// Lease overdue or lost, or etcd unreachable: Reestablish
			// writes the record again under the next lease.
			b.log.Warn("registry update failed", "session", s.ID, "error", err)
		}
	}
}

// fenced resolves a write refused because claim c no longer holds s's key
// (confirmClaimTokenLocked), unless s was destroyed or re-claimed
// meanwhile; the record is written again when the key is s's.
func (b *Broker) fenced(s *Session, c registry.Claim) {
	unlock := b.keys.Lock(s.Token)
	defer unlock()
	b.mu.Lock()
	changed := s.claim.Fence != c.Fence
	b.mu.Unlock()
	if b.current(s) == nil || changed {
		return // destroyed, or re-claimed meanwhile
	}
	ctx, cancel := context.WithTimeout(b.life, remoteTimeout)
	defer cancel()
	if err := b.confirmClaimTokenLocked(ctx, s); err != nil {
		// Left to Reestablish (lease not live) or to the next hot-desk.
		b.log.Warn("session claim not confirmed after a refused write", "session", s.ID, "error", err)
		return
	}
	b.publish(s)
}
