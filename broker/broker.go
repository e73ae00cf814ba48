// Package broker is the session state machine and the hot-desking flow of
// hotdesk (ADR-004):
//
//	NoSession --insert--> Creating --> Active --remove--> Suspended --timeout--> Destroyed
//	                                     ^  |                 |
//	                                     |  +--insert at another terminal (takeover)
//	                                     +-----insert (same or other terminal)
//
// A Broker accepts terminal connections (package proto), turns their token
// events into transitions, keeps each session's location in the group
// registry (package registry) and drives the compositor backend (package
// compositor). Every transition of a session runs under its token's lock,
// so concurrent events for one token are applied one at a time; events for
// different tokens never wait for each other. Timers come from an injected
// clock. The broker never blocks one terminal on another terminal's
// authentication or compositor start.
//
// Who closes what: Serve returns when its context is cancelled or its
// listener fails; Shutdown detaches every terminal (reason shutdown) and
// destroys the sessions the broker runs unless told to keep them.
package broker

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base32"
	"errors"
	"fmt"
	"io"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/hashicorp/go-hclog"

	"github.com/hotdesk/hotdesk/auth"
	"github.com/hotdesk/hotdesk/compositor"
	"github.com/hotdesk/hotdesk/internal/burstlog"
	"github.com/hotdesk/hotdesk/internal/clock"
	"github.com/hotdesk/hotdesk/internal/defaults"
	"github.com/hotdesk/hotdesk/proto"
	"github.com/hotdesk/hotdesk/registry"
	"github.com/hotdesk/hotdesk/registry/pairing"
)

// Registry is the part of the group registry the broker uses; *registry.Registry implements it.
type Registry interface {
	ServerID() string
	Claim(ctx context.Context, key string, s registry.Session) (registry.Claim, bool, error)
	Update(ctx context.Context, c registry.Claim, s registry.Session) (registry.Claim, error)
	Release(ctx context.Context, c registry.Claim) error
	Lookup(ctx context.Context, key string) (registry.Claim, error)
	LookupLocal(ctx context.Context, key string) (registry.Claim, error)
	Server(ctx context.Context, id string) (registry.ServerRecord, error)
	ServerLocal(ctx context.Context, id string) (registry.ServerRecord, error)
	Servers(ctx context.Context) ([]registry.ServerRecord, error)
	Sessions(ctx context.Context) ([]registry.Claim, error)
	EnrollToken(ctx context.Context, t registry.TokenRecord) error
	Token(ctx context.Context, id string) (registry.TokenRecord, error)
	// Healthy reports whether the lease was renewed recently enough that
	// it cannot have expired: the broker attaches and claims only then.
	Healthy() bool
	Done() <-chan struct{}
	UpdateServer(ctx context.Context, f func(*registry.ServerRecord)) error
}

// Reclaimer is a fresh registry (new lease) the broker moves its sessions to
// after losing its lease; *registry.Registry implements it.
type Reclaimer interface {
	Registry
	Reclaim(ctx context.Context, old registry.Claim, s registry.Session) (registry.Claim, bool, error)
}

// Pairer redeems one-time pairing codes; *pairing.Pairer implements it.
type Pairer interface {
	Redeem(ctx context.Context, source string, req pairing.Request) (pairing.Enrolment, error)
}

// Config holds what a Broker needs. Registry, Compositor and Auth are required.
type Config struct {
	ServerID   string
	Registry   Registry
	Compositor compositor.Backend
	Auth       auth.Authenticator
	Pairer     Pairer // nil: pairing refused
	// Claims, if set, streams the group's session keys: a hot-desk to a
	// session of this server then skips the registry read that confirms
	// its claim while the stream shows the claim unchanged. Nil: every
	// such hot-desk reads.
	Claims         ClaimWatcher
	Clock          clock.Clock
	Logger         hclog.Logger
	SuspendTimeout time.Duration // default 24h; SetSuspendTimeout changes it
	PingInterval   time.Duration // default 15s; a silent terminal is dropped after SilentIntervals
	// ProofTimeout bounds a token challenge; AuthTimeout one authentication.
	ProofTimeout time.Duration // default 10s
	AuthTimeout  time.Duration // default 2m
	// ReconnectGrace (0: none) is how long after a terminal's connection
	// was lost while it showed a session that the same terminal (its id
	// and the session's resume key, reconnect.go), connected again,
	// resumes it with the token alone, as a hot-desk under
	// reauth_on_hotdesk = false does: the link dropped under a person who
	// never left (their token stayed in; whoever is at that terminal saw
	// the desktop until then anyway). Only the account is checked again.
	ReconnectGrace time.Duration
	// KeepSessionsOnShutdown leaves compositors running at Shutdown.
	KeepSessionsOnShutdown bool
	// MaxSessions caps the sessions this server runs (0: no cap); a full
	// server places new sessions elsewhere in the group.
	MaxSessions int
	// Policies, if set, enables the policy features the broker enforces
	// itself: password logins without a card (tokens "user.<name>"),
	// self-registration of unknown cards, and per-user session limits.
	// Groups returns a user's groups for policy resolution.
	Policies auth.PolicySource
	Groups   func(user string) []string
	// AttachAddr, if set, is the advertised address of the attach gateway
	// (ServeAttach): Attached then carries "hotdesk-attach://AttachAddr" and
	// a single-use ticket instead of the compositor's own endpoint.
	AttachAddr string
	// Limits bound connections, handshakes and attach tickets (zero fields:
	// defaults, see Limits).
	Limits Limits
	// Events, if set, receives every event of this broker (events.go).
	Events EventSink
}

// State is a session's lifecycle state.
type State uint8

const (
	Creating State = iota + 1
	Active
	Suspended
	Destroyed
)

func (s State) String() string {
	switch s {
	case Creating:
		return "creating"
	case Active:
		return "active"
	case Suspended:
		return "suspended"
	case Destroyed:
		return "destroyed"
	}
	return fmt.Sprintf("state(%d)", uint8(s))
}

// Session is one brokered desktop. Fields are guarded by the broker's mutex
// and changed only under the session token's key lock.
type Session struct {
	ID      string
	Token   string
	User    string
	state   State
	term    *terminal
	claim   registry.Claim
	info    compositor.Info
	created time.Time
	updated time.Time
	// suspendedAt and timer are set while Suspended; lastTerminal is the
	// terminal it was suspended from ("" if unknown).
	suspendedAt  time.Time
	timer        clock.Timer
	lastTerminal string
	// orphaned: another server claimed the token while this one had lost
	// its lease; owner names it. An orphan stays suspended until killed or
	// timed out and is no longer found by its token here.
	orphaned bool
	owner    string
	// locked: an administrator locked the session; the next resume
	// authenticates whatever the policy says of hot-desks (a card or kiosk
	// policy has nothing more to ask than the token).
	locked bool
	// lost is set when the connection of the terminal showing the session
	// ended (Config.ReconnectGrace), or its broker stopped keeping it;
	// cleared when it is shown again. resumeKey is the ResumeKey of its
	// last Attached, resumeHash its SHA-256 and resumeTerm the terminal
	// it was given to (reconnect.go): the hash and the terminal are in
	// the session's claim and outlive a restart of the broker; the key
	// does not (nil in a session adopted from the previous run).
	lost       lostTerminal
	resumeKey  []byte
	resumeHash [sha256.Size]byte
	resumeTerm string
	// login is the PAM session opened for the desktop (nil if none); it is
	// closed when the session is destroyed.
	login auth.Session
	// streams are the display connections spliced by the attach gateway;
	// closed when the session leaves its terminal.
	streams map[io.Closer]struct{}
	// fences are the fences of every claim this session held, newest
	// last (bounded): a redirect carrying one of them is not stale.
	fences []int64
	// pubDirty: the registry record is behind; pubRunning: a publisher
	// goroutine is writing it (one per session at a time, in order).
	pubDirty, pubRunning bool
}

// maxFences bounds Session.fences.
const maxFences = 8

// setClaimLocked records c as s's claim. Caller holds the broker's mutex.
func (s *Session) setClaimLocked(c registry.Claim) {
	s.claim = c
	if n := len(s.fences); n > 0 && s.fences[n-1] == c.Fence {
		return
	}
	if len(s.fences) == maxFences {
		s.fences = append(s.fences[:0], s.fences[1:]...)
	}
	s.fences = append(s.fences, c.Fence)
}

// heldFence reports whether s held a claim with fence f. Caller holds the
// broker's mutex.
func (s *Session) heldFence(f int64) bool {
	for _, h := range s.fences {
		if h == f {
			return true
		}
	}
	return false
}

// SessionInfo is a snapshot of a session for administrators.
type SessionInfo struct {
	ID          string
	Token       string
	User        string
	State       State
	Terminal    string
	ServerID    string
	Endpoint    string
	PID         int
	Fence       int64
	Created     time.Time
	Updated     time.Time
	SuspendedAt time.Time // zero unless suspended
	ExpiresAt   time.Time // zero unless suspended
	// LastTerminal is the terminal a suspended session was suspended from
	// (recorded in its claim: it outlives a restart); "" if unknown.
	LastTerminal string
	Orphaned     bool // token owned by OrphanOwner now
	OrphanOwner  string
	Locked       bool // locked by an administrator: its next resume logs in again
}

// Errors returned by administrative calls.
var (
	ErrNotFound       = errors.New("broker: session not found")
	ErrClosed         = errors.New("broker: shut down")
	ErrLeaseLost      = errors.New("broker: registry lease lost")
	ErrLeaseUnhealthy = errors.New("broker: registry lease not renewed in time")
)

// Broker runs the sessions of one server.
type Broker struct {
	cfg Config
	log hclog.Logger
	clk clock.Clock
	// keys is the per-token lock that serialises one token's transitions.
	// A method named …TokenLocked expects its caller to hold the lock of
	// its session's token; one named …Locked, the broker's mutex mu.
	keys keyLock
	// userLocks serialize the per-user session count with the claim.
	userLocks keyLock

	// wg counts every goroutine the broker starts (goAttach); Shutdown
	// waits for them. wgMu orders those starts with the wait: a start
	// holds it shared and adds to wg only while stopping is unset, and
	// Shutdown sets stopping under it, before it waits, so that no Add
	// comes concurrently with or after the Wait (a misuse of WaitGroup).
	wg       sync.WaitGroup
	wgMu     sync.RWMutex
	stopping bool // guarded by wgMu
	countCh  chan struct{}
	// orphanCh asks indexOrphans to bring the registry's orphan index
	// in line with this broker's orphans.
	orphanCh chan struct{}
	stop     chan struct{} // closed by Shutdown
	// life is the broker's lifetime: the context of the transitions no
	// caller waits for (timers, compositor exits, lease loss, token
	// changes); Shutdown cancels it when it returns.
	life    context.Context
	endLife context.CancelFunc
	// regChanged is signalled when Reestablish installs a new registry.
	regChanged chan struct{}
	members    memberCache // group members for Welcome (members.go; own mutex)

	mu sync.Mutex
	// The fields below, up to the blank line, are guarded by mu.
	reg     Registry // swapped by Reestablish
	byID    map[string]*Session
	byToken map[string]*Session
	terms   map[*terminal]struct{}
	closed  bool
	hooks   Hooks
	// tokenCache holds token records read recently; see tokenRecord.
	tokenCache map[string]cachedToken
	// tokenCacheSwept is when expired records were last dropped from
	// tokenCache (tokenRecord).
	tokenCacheSwept time.Time
	// tokenGen counts TokenChanged calls: a record read, or an insert
	// verified, across a change is not trusted (see tokenRecord, insert).
	tokenGen  uint64
	tickets   map[string]ticket // attach gateway tickets
	claims    claimView         // the session keys as Config.Claims shows them
	ticketSeq uint64            // last ticket's issue number

	lim  Limits           // cfg.Limits with defaults
	blog *burstlog.Logger // limit and accept-error lines, once per burst
	// termGate and attachGate are the listeners' connection gates, set by
	// Serve and ServeAttach (nil before); see ConnCounts.
	termGate, attachGate *connGate
}

// Hooks observe transitions; tests and the benchmark use them. Each hook
// runs synchronously after the transition, outside the broker's locks.
type Hooks struct {
	OnTransition func(sessionID string, from, to State)
}

// New returns a Broker. It starts three goroutines (compositor exits into
// destroyed sessions, the session count into the registry, the lease
// supervisor), and a fourth that follows Config.Claims if set; Shutdown
// stops them and waits for them.
func New(cfg Config) (*Broker, error) {
	if cfg.Registry == nil || cfg.Compositor == nil || cfg.Auth == nil {
		return nil, errors.New("broker: registry, compositor and auth are required")
	}
	if cfg.ServerID == "" {
		cfg.ServerID = cfg.Registry.ServerID()
	}
	if cfg.Clock == nil {
		cfg.Clock = clock.Real{}
	}
	if cfg.Logger == nil {
		cfg.Logger = hclog.NewNullLogger()
	}
	defaults.Set(&cfg.SuspendTimeout, 24*time.Hour)
	defaults.Set(&cfg.PingInterval, proto.DefaultPingInterval)
	defaults.Set(&cfg.ProofTimeout, 10*time.Second)
	defaults.Set(&cfg.AuthTimeout, 2*time.Minute)
	b := &Broker{
		cfg:        cfg,
		reg:        cfg.Registry,
		log:        cfg.Logger,
		clk:        cfg.Clock,
		byID:       make(map[string]*Session),
		byToken:    make(map[string]*Session),
		terms:      make(map[*terminal]struct{}),
		countCh:    make(chan struct{}, 1),
		orphanCh:   make(chan struct{}, 1),
		tokenCache: make(map[string]cachedToken),
		tickets:    make(map[string]ticket),
		stop:       make(chan struct{}),
		regChanged: make(chan struct{}, 1),
		lim:        cfg.Limits.withDefaults(),
	}
	b.life, b.endLife = context.WithCancel(context.Background())
	b.blog = burstlog.New(b.log, logEvery, nil)
	b.goAttach(b.watchExits)
	b.goAttach(b.publishCounts)
	b.goAttach(b.indexOrphans)
	b.goAttach(b.superviseLease)
	if cfg.Claims != nil {
		ctx, cancel := context.WithCancel(b.life)
		changes := cfg.Claims.WatchClaims(ctx)
		b.goAttach(func() { defer cancel(); b.followClaims(ctx, changes) })
	}
	return b, nil
}

// goAttach runs f on a goroutine of its own that Shutdown waits for, and
// reports true; once Shutdown has begun waiting for the broker's
// goroutines it runs nothing and reports false, and the caller undoes
// what it prepared for f. Every goroutine the broker owns is started here.
func (b *Broker) goAttach(f func()) bool {
	b.wgMu.RLock()
	defer b.wgMu.RUnlock()
	if b.stopping {
		return false
	}
	b.wg.Add(1)
	go func() {
		defer b.wg.Done()
		f()
	}()
	return true
}

// SetHooks installs observation hooks; call before serving.
func (b *Broker) SetHooks(h Hooks) {
	b.mu.Lock()
	b.hooks = h
	b.mu.Unlock()
}

// Ready reports whether the broker can attach and claim: it holds its
// registry lease and is not shut down.
func (b *Broker) Ready() error {
	b.mu.Lock()
	closed := b.closed
	b.mu.Unlock()
	if closed {
		return ErrClosed
	}
	reg := b.registry()
	select {
	case <-reg.Done():
		return ErrLeaseLost
	default:
	}
	if !reg.Healthy() {
		return ErrLeaseUnhealthy
	}
	return nil
}

// registry returns the registry in use.
func (b *Broker) registry() Registry {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.reg
}

// Sessions returns a snapshot of every session this broker runs, oldest first.
func (b *Broker) Sessions() []SessionInfo {
	b.mu.Lock()
	defer b.mu.Unlock()
	out := make([]SessionInfo, 0, len(b.byID))
	for _, s := range b.byID {
		out = append(out, b.infoLocked(s))
	}
	sort.Slice(out, func(i, j int) bool {
		if !out[i].Created.Equal(out[j].Created) {
			return out[i].Created.Before(out[j].Created)
		}
		return out[i].ID < out[j].ID
	})
	return out
}

func (b *Broker) infoLocked(s *Session) SessionInfo {
	si := SessionInfo{
		ID: s.ID, Token: s.Token, User: s.User, State: s.state,
		ServerID: b.cfg.ServerID, Endpoint: s.info.Endpoint, PID: s.info.PID,
		Fence: s.claim.Fence, Created: s.created, Updated: s.updated,
		Orphaned: s.orphaned, OrphanOwner: s.owner, Locked: s.locked,
	}
	if s.term != nil {
		si.Terminal = s.term.id
	}
	if s.state == Suspended {
		si.SuspendedAt = s.suspendedAt
		si.ExpiresAt = s.suspendedAt.Add(b.cfg.SuspendTimeout)
		si.LastTerminal = s.lastTerminal
	}
	return si
}

// Kill destroys the session with the given id (administrator action); its
// terminal, if any, is told the reason.
func (b *Broker) Kill(ctx context.Context, id string) error {
	b.mu.Lock()
	s := b.byID[id]
	b.mu.Unlock()
	if s == nil {
		return fmt.Errorf("broker: kill %q: %w", id, ErrNotFound)
	}
	unlock := b.keys.Lock(s.Token)
	defer unlock()
	if b.current(s) == nil {
		return fmt.Errorf("broker: kill %q: %w", id, ErrNotFound)
	}
	// Detached reason 3 (destroyed), as PROTOCOL.md §5 says: the session
	// is gone, not merely detached.
	b.destroyTokenLocked(ctx, s, proto.DetachDestroyed, "killed by an administrator")
	return nil
}

// current returns s if it is still the live session for its token.
func (b *Broker) current(s *Session) *Session {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.byID[s.ID] == s && s.state != Destroyed {
		return s
	}
	return nil
}

// shutdownDestroyers bounds the sessions Shutdown destroys at once.
const shutdownDestroyers = 8

// Shutdown detaches every terminal, closes their connections and, unless
// KeepSessionsOnShutdown, destroys every session (shutdownDestroyers at a
// time). Then it starts no more goroutines (a connection accepted after
// that is closed at once) and returns when every goroutine of the broker
// has ended or when ctx expires; either way the broker's lifetime context
// is cancelled when it returns.
func (b *Broker) Shutdown(ctx context.Context) error {
	b.mu.Lock()
	if b.closed {
		b.mu.Unlock()
		return nil
	}
	defer b.endLife()
	b.closed = true
	close(b.stop)
	terms := make([]*terminal, 0, len(b.terms))
	for t := range b.terms {
		terms = append(terms, t)
	}
	sessions := make([]*Session, 0, len(b.byID))
	for _, s := range b.byID {
		sessions = append(sessions, s)
	}
	b.mu.Unlock()

	for _, t := range terms {
		t.detachAll(proto.DetachShutdown, "server shutting down")
		t.close()
	}
	if !b.cfg.KeepSessionsOnShutdown {
		// Side by side, a few at a time: one after another, a stop grace
		// per desktop that does not quit at once would add up past what a
		// service manager waits for a stop.
		sem := make(chan struct{}, shutdownDestroyers)
		var wg sync.WaitGroup
		for _, s := range sessions {
			sem <- struct{}{}
			wg.Add(1)
			go func() {
				defer wg.Done()
				defer func() { <-sem }()
				unlock := b.keys.Lock(s.Token)
				defer unlock()
				if b.current(s) != nil {
					b.destroyTokenLocked(ctx, s, proto.DetachShutdown, "server shutting down")
				}
			}()
		}
		wg.Wait()
	}
	b.wgMu.Lock()
	b.stopping = true
	b.wgMu.Unlock()
	done := make(chan struct{})
	go func() { b.wg.Wait(); close(done) }()
	select {
	case <-done:
	case <-ctx.Done():
		return fmt.Errorf("broker: shutdown: %w", ctx.Err())
	}
	return nil
}

// watchExits turns compositors that ended on their own into destroyed
// sessions, until Shutdown or until the backend closes Exits.
func (b *Broker) watchExits() {
	exits := b.cfg.Compositor.Exits()
	for {
		select {
		case <-b.stop:
			return
		case ex, ok := <-exits:
			if !ok {
				return
			}
			b.compositorExited(ex)
		}
	}
}

// compositorExited destroys the session whose compositor ended on its own.
func (b *Broker) compositorExited(ex compositor.Exit) {
	b.mu.Lock()
	s := b.byID[ex.SessionID]
	b.mu.Unlock()
	if s == nil {
		return
	}
	reason := "compositor exited"
	if ex.Err != nil {
		reason = fmt.Sprintf("compositor exited: %v", ex.Err)
	}
	b.log.Warn("compositor exited", "session", s.ID, "pid", ex.PID, "error", ex.Err)
	unlock := b.keys.Lock(s.Token)
	defer unlock()
	if b.current(s) != nil {
		b.mu.Lock()
		s.info.PID = 0 // already gone: do not try to stop it again
		b.mu.Unlock()
		b.destroyTokenLocked(b.life, s, proto.DetachDestroyed, reason)
	}
}

var sessionIDEncoding = base32.NewEncoding("abcdefghijklmnopqrstuvwxyz234567").WithPadding(base32.NoPadding)

func newSessionID() string {
	var b [10]byte
	if _, err := rand.Read(b[:]); err != nil {
		panic(err) // crypto/rand never fails on Linux
	}
	return "s-" + sessionIDEncoding.EncodeToString(b[:])
}

func newNonce() []byte {
	b := make([]byte, 32)
	if _, err := rand.Read(b); err != nil {
		panic(err)
	}
	return b
}

func (b *Broker) transitioned(s *Session, from, to State) {
	b.mu.Lock()
	h := b.hooks.OnTransition
	b.mu.Unlock()
	b.log.Debug("session transition", "session", s.ID, "from", from.String(), "to", to.String())
	if h != nil {
		h(s.ID, from, to)
	}
}

func sanitize(s string) string {
	return strings.Map(func(r rune) rune {
		if r < 0x20 || r == 0x7f {
			return '?'
		}
		return r
	}, s)
}

// unhealthyNotifier is implemented by registries that signal at once when
// their lease is overdue (*registry.Registry does).
type unhealthyNotifier interface {
	Unhealthy() <-chan struct{}
}

// superviseLease enforces the group invariant that a terminal is attached
// only while this broker holds a live lease: when the registry reports its
// lease overdue (no renewal within the safe window, before etcd could
// expire it) or lost, every terminal is detached (reason locked) and its
// display streams are cut. The sessions stay suspended and are re-claimed
// by Reestablish. It returns at Shutdown.
func (b *Broker) superviseLease() {
	for {
		reg := b.registry()
		var unhealthy <-chan struct{}
		if n, ok := reg.(unhealthyNotifier); ok {
			unhealthy = n.Unhealthy()
		}
		select {
		case <-b.stop:
			return
		case <-b.regChanged:
		case <-unhealthy:
			if b.Ready() != nil {
				b.detachUnleased("server cannot renew its registry lease")
			}
		case <-reg.Done():
			b.detachUnleased("server lost its registry lease")
			select {
			case <-b.stop:
				return
			case <-b.regChanged:
			}
		}
	}
}

// detachUnleased suspends every active session while the broker is not
// ready, telling its terminal why.
func (b *Broker) detachUnleased(msg string) {
	b.mu.Lock()
	active := make([]*Session, 0, len(b.byID))
	for _, s := range b.byID {
		if s.term != nil {
			active = append(active, s)
		}
	}
	b.mu.Unlock()
	if len(active) > 0 {
		b.log.Warn("detaching every terminal: no live registry lease", "sessions", len(active))
	}
	// Each under its own token's lock, side by side: a lock held by a
	// login in progress (a PIN prompt, up to the auth timeout) must not
	// keep every other terminal showing its desktop without a lease.
	var wg sync.WaitGroup
	for _, s := range active {
		wg.Add(1)
		go func() {
			defer wg.Done()
			unlock := b.keys.Lock(s.Token)
			defer unlock()
			b.mu.Lock()
			shown := s.term != nil
			b.mu.Unlock()
			if shown && b.current(s) != nil && b.Ready() != nil {
				b.suspendTokenLocked(b.life, s, proto.DetachLocked, msg+"; present the token again shortly")
			}
		}()
	}
	wg.Wait()
}
