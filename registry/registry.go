// Package registry records where sessions live across a hotdesk server group,
// on etcd.
//
// Every broker holds exactly one etcd lease, renewed by the Registry's own
// keepalive every sixth of the TTL, each counted from when it was sent (not
// the etcd client's KeepAlive, which looks only every 500 ms: too coarse for
// a 1 s lease). Its server record and every session claim it makes are attached
// to that lease, so when the broker dies (or Close revokes the lease) all of
// them vanish at once, within the lease TTL.
//
// Lease health is judged on the broker's own timer, not etcd's: Healthy is
// true only while the last successful renewal is younger than the safe window
// (default 2/3 of the TTL), so a broker cut off from etcd stops claiming
// (ErrUnhealthy) before the server could expire its lease; it becomes healthy
// again by itself if renewals resume in time. Done is closed as soon as the
// lease is known to be lost; after that the Registry refuses to claim
// (ErrLeaseLost) and the owner builds a new one (New with WithPreviousLease)
// and re-claims what it still runs (Reclaim): a key that another server took
// meanwhile is reported, never overwritten.
//
// What needs no lease is a Store (NewStore): token records, pairing codes,
// drain flags, the command queue, the event log, the watches and reads. A
// Registry embeds its server's Store; the Store outlives every lease, so
// code that must keep working across a lease change holds the Store, never
// a Registry that a lease loss has closed.
//
// Key layout under the prefix (default "/hotdesk/"), values are small JSON:
//
//	servers/<id>    ServerRecord, under the server's lease
//	sessions/<key>  Session, under the owning server's lease
//	tokens/<id>     TokenRecord, no lease (outlives servers)
//	pairing/<id>    Pairing, under a lease of its own (expires by itself)
//	paired/<id>     Pairing a redemption left (the code as it was and the
//	                token it enrolled), under the code's lease: lets a
//	                retried redemption of one key be recognised
//	                (RedeemedPairing) for as long as the code was valid
//	drain/<id>      drain flag of a server, no lease (survives restarts)
//	lockouts/<hash> Lockout (a login lockout for the group, or its clearing),
//	                under a lease that ends with it; <hash> names the key
//	                without the user or token in it
//	failures/<hash> Failures (the group's count of failed logins of a
//	                limiter key in its window), under a lease shared with
//	                the counts begun about then; <hash> as for lockouts
//
// A failure count is one record per key, incremented by compare-and-swap:
// Txn(If(ModRevision(k)==read)).Then(Put(k, count+1)), retried when
// another broker's increment came first (CountFailure). The alternative, a
// count per broker under that broker's lease with the sum read by watch,
// needs no retries but gives no broker an exact total when failures
// arrive at several brokers at once, and every broker would have to sum
// (and start a lockout) on watch lag; with the txn the increment that
// reaches max_failures is known to exactly one broker, which deletes the
// count in that txn and starts the lockout. Failures are rare enough for
// one read and one txn each (a key in a burst at once costs at most a
// retry per concurrent writer). The counts begun at about the same time
// share a lease, of the limiter's window and a little more (a tenth, at
// most a minute; see failureLease), so counts expire about as the
// limiter's do (the stored time of the first failure ends a window on
// time) and a spray of failures of many keys costs etcd a few leases,
// not one per key; a success, a lockout and an administrator's clearing
// delete a count, never its lease.
//
// A claim is made with Txn(If(CreateRevision(k)==0)).Then(Put(k, WithLease))
// .Else(Get(k)): exactly one claimant wins, the others see the winner's
// claim. The claim's Fence is the key's create revision; Update and Release
// are fenced on it, so a writer holding a stale claim (its key was deleted and
// re-created by someone else meanwhile) is refused with ErrFenced.
//
// Every remote call is bounded by the caller's context and a per-call
// timeout (default 5 s). Keys and ids are validated: non-empty, at most 256
// bytes of UTF-8, no '/', whitespace or control characters, not "." or "..".
// The Registry is safe for concurrent use.
package registry

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/go-hclog"
	"go.etcd.io/etcd/api/v3/mvccpb"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/hotdesk/hotdesk/internal/clock"
)

// Errors. Test for them with errors.Is.
var (
	// ErrNotFound: the key, record or code does not exist (or has expired).
	ErrNotFound = errors.New("registry: not found")
	// ErrFenced: the claim's key is gone or was re-created by another owner.
	ErrFenced = errors.New("registry: fenced: claim no longer held")
	// ErrExists: create-if-absent found the id taken.
	ErrExists = errors.New("registry: already exists")
	// ErrServerIDInUse: another live lease holds the server record.
	ErrServerIDInUse = errors.New("registry: server id in use")
	// ErrLeaseLost: the server's lease (and with it its registrations) is gone.
	ErrLeaseLost = errors.New("registry: lease lost")
	// ErrUnhealthy: the lease was not renewed within the safe window, so it
	// may be about to expire; writes under it are refused until a renewal
	// succeeds (or Done closes). errors.Is(err, ErrLeaseLost) is true for it
	// as well, so code that only knows ErrLeaseLost stays safe; test for
	// ErrUnhealthy first to tell "wait" from "rebuild".
	ErrUnhealthy error = unhealthyError{}
	// ErrInvalidKey: a key or id failed validation (never sent to etcd).
	ErrInvalidKey = errors.New("registry: invalid key")
	// ErrCorrupt: a stored value could not be decoded.
	ErrCorrupt = errors.New("registry: corrupt record")
	// ErrTooLarge: a record is over its size bound (never sent to etcd).
	ErrTooLarge = errors.New("registry: record too large")
)

const (
	// DefaultPrefix is the root of all registry keys.
	DefaultPrefix = "/hotdesk/"
	// DefaultLeaseTTL is the server lease TTL; MinLeaseTTL is the smallest
	// accepted. etcd raises a TTL below 1.5 election timeouts (rounded up to
	// whole seconds: 2 s with its default 1 s election timeout) to that
	// minimum; a 1 s lease needs an election timeout of at most 666 ms.
	DefaultLeaseTTL = 5 * time.Second
	MinLeaseTTL     = 1 * time.Second
	// DefaultCallTimeout bounds every remote call on top of the caller's context.
	DefaultCallTimeout = 5 * time.Second
	// MaxKeyLen bounds keys and ids, in bytes.
	MaxKeyLen = 256

	listPageSize = 500
)

// ServerRecord describes one broker of the group; it lives under the
// broker's lease.
type ServerRecord struct {
	ID            string `json:"id"`
	Addr          string `json:"addr"`
	Fingerprint   []byte `json:"fingerprint,omitempty"`
	Capacity      int    `json:"capacity,omitempty"`
	Weight        int    `json:"weight,omitempty"`
	Sessions      int    `json:"sessions"`
	Draining      bool   `json:"draining,omitempty"`
	StartedUnixMs int64  `json:"started_unix_ms"`
	Version       string `json:"version,omitempty"` // hotdeskd's version
	// Settings are the settings every member must share, by name, as
	// the member runs with them (hotdeskd's group settings); members
	// compare them and warn where they differ. Opaque here.
	Settings map[string]string `json:"settings,omitempty"`
}

// Session is the registry's view of one desktop session, stored under
// sessions/<Key> and the owning server's lease.
type Session struct {
	ID            string `json:"id"`
	Key           string `json:"key"`
	ServerID      string `json:"server_id"`
	User          string `json:"user,omitempty"`
	Terminal      string `json:"terminal,omitempty"`
	State         string `json:"state,omitempty"`
	Locked        bool   `json:"locked,omitempty"` // locked by an administrator: the next resume logs in
	CreatedUnixMs int64  `json:"created_unix_ms"`
	UpdatedUnixMs int64  `json:"updated_unix_ms"`
	// SuspendedUnixMs is when a suspended session was suspended (its
	// suspend timeout counts from it, across restarts of its broker).
	SuspendedUnixMs int64 `json:"suspended_unix_ms,omitempty"`
	// LastTerminal is the terminal a suspended session was last shown at
	// (kept across restarts of its broker, for administrators).
	LastTerminal string `json:"last_terminal,omitempty"`
	// ResumeTerminal and ResumeKeySHA256 are the terminal the session's
	// last Attached.ResumeKey was given to and the SHA-256 of that key
	// (hex; never the key itself, which every member of the group could
	// read here), while that terminal may come back within
	// session.reconnect_grace without logging in again: set while the
	// session is shown there, and while it is suspended because that
	// terminal's connection, or its broker, ended; absent otherwise (the
	// token removed, the session detached, taken over or locked). Its
	// broker restarted restores them only from its own claim of the same
	// session, so a key never opens a session at a broker that did not
	// give it. Records written before they existed have neither.
	ResumeTerminal  string `json:"resume_terminal,omitempty"`
	ResumeKeySHA256 string `json:"resume_key_sha256,omitempty"`
}

// Claim is a session key as read from etcd.
type Claim struct {
	Key     string
	Fence   int64 // create revision of the key: identifies this ownership
	ModRev  int64 // revision of the last write
	Session Session
}

type unhealthyError struct{}

func (unhealthyError) Error() string { return "registry: lease unhealthy: renewal overdue" }

// Is makes ErrUnhealthy match ErrLeaseLost too.
func (unhealthyError) Is(target error) bool { return target == ErrLeaseLost }

type options struct {
	prefix      string
	leaseTTL    time.Duration
	safeWindow  time.Duration
	callTimeout time.Duration
	logger      hclog.Logger
	clock       clock.Clock
	prevLease   clientv3.LeaseID
	maxLockout  time.Duration
}

func defaultOptions() options {
	return options{
		prefix:      DefaultPrefix,
		leaseTTL:    DefaultLeaseTTL,
		callTimeout: DefaultCallTimeout,
		logger:      hclog.NewNullLogger(),
		clock:       clock.Real{},
		maxLockout:  DefaultMaxLockout,
	}
}

// Option configures New and NewStore.
type Option func(*options)

// WithPrefix sets the key prefix (default "/hotdesk/"); a missing trailing
// "/" is added. "" keeps the default.
func WithPrefix(p string) Option {
	return func(o *options) {
		if p == "" {
			return
		}
		if p[len(p)-1] != '/' {
			p += "/"
		}
		o.prefix = p
	}
}

// WithLeaseTTL sets the server lease TTL: default 5 s, at least 1 s, rounded
// up to whole seconds. Zero keeps the default. The lease is what the group
// waits for before a dead server's sessions are given up (and its tokens
// work elsewhere): between 2/3 of the TTL and the TTL after its death, plus
// up to 0.5 s until etcd notices.
func WithLeaseTTL(d time.Duration) Option {
	return func(o *options) {
		if d > 0 {
			o.leaseTTL = max(d, MinLeaseTTL)
		}
	}
}

// WithCallTimeout sets the bound on each remote call (default 5 s).
func WithCallTimeout(d time.Duration) Option {
	return func(o *options) {
		if d > 0 {
			o.callTimeout = d
		}
	}
}

// WithLogger sets the logger (default: none).
func WithLogger(l hclog.Logger) Option {
	return func(o *options) {
		if l != nil {
			o.logger = l
		}
	}
}

// WithSafeWindow sets how long after the last successful lease renewal the
// Registry still counts as healthy (default 2/3 of the TTL, at most the TTL).
// The rest of the TTL is the margin for the renewal's round trip and for
// clock drift between the broker and etcd. Zero keeps the default.
func WithSafeWindow(d time.Duration) Option {
	return func(o *options) {
		if d > 0 {
			o.safeWindow = d
		}
	}
}

// WithPreviousLease names this server's own previous lease (from a Registry
// whose Done has closed, or from the previous run of this process). If that
// lease still holds servers/<id>, New moves the record to the new lease
// instead of failing with ErrServerIDInUse. The previous lease is left alone:
// Reclaim moves the sessions still run, then RevokeLease drops the rest (or
// it expires by itself).
func WithPreviousLease(id clientv3.LeaseID) Option {
	return func(o *options) { o.prevLease = id }
}

// WithClock sets the clock used to fill in zero timestamps, to check pairing
// expiry and to time lease renewals for Healthy (default clock.Real). With a
// fake clock, Healthy compares the fake now with the fake time of the last
// renewal: advancing it by more than the safe window makes the Registry
// unhealthy until the next renewal arrives (at most TTL/6 of real time).
func WithClock(c clock.Clock) Option {
	return func(o *options) {
		if c != nil {
			o.clock = c
		}
	}
}

// WithMaxLockout sets the longest lockout the group's limiters impose
// (auth.max_lockout; default DefaultMaxLockout). An administrator's
// clearing (ClearLockout) is kept that long, and ClearSkew, so that a
// lockout imposed before it and published late is refused, never
// imposed again (see PublishLockout). The group's servers should share
// the setting: a clearing made at a server with a shorter one may expire
// before a lockout of a longer one ends. Zero keeps the default.
func WithMaxLockout(d time.Duration) Option {
	return func(o *options) {
		if d > 0 {
			o.maxLockout = d
		}
	}
}

// Registry is one broker's lease on the group registry: the server record,
// the session claims and everything else that lives under the lease
// (terminal records, commands sent), fenced on it. Build it with New;
// release it with Close. The lease-independent storage it embeds (*Store)
// outlives it: hand the Store, not the Registry, to whatever must keep
// working across a lease change.
type Registry struct {
	*Store
	lease  clientv3.LeaseID
	ttl    time.Duration // as granted (whole seconds)
	window time.Duration // safe window

	mu     sync.Mutex
	server ServerRecord // last record written
	// recordRev is the revision of the last write of the server record:
	// one read older than it is a restored etcd (see rewind.go).
	recordRev atomic.Int64

	hmu         sync.Mutex
	lastRenewal time.Time   // by opts.clock; guarded by hmu
	overdueT    clock.Timer // fires when the safe window has passed; guarded by hmu
	overdue     atomic.Bool // logged as overdue, not renewed since

	// unhealthy receives a value each time the safe window passes without
	// a renewal (see Unhealthy).
	unhealthy chan struct{}

	kaCancel  context.CancelFunc
	lostWhy   atomic.Pointer[string] // why loseLease ended the keepalive; nil: it did not
	done      chan struct{}          // closed by keepAlive when the lease is lost
	watchDone chan struct{}          // closed when watchRecord returns
	stopOnce  sync.Once
	closeOnce sync.Once
	closing   chan struct{}
	closeErr  error
}

// New grants the broker's lease (TTL from WithLeaseTTL), keeps it alive with
// its own keepalive (a renewal every TTL/6, recording when the last
// successful one was sent), and creates the server record under it. If another live
// lease already holds servers/<id> — another process, or this server's
// previous incarnation whose lease has not expired yet — New fails with
// ErrServerIDInUse and the caller may retry after the lease TTL, unless that
// lease is the one named by WithPreviousLease: then the record is moved to
// the new lease (fenced on the holder lease). On any failure the new lease is
// revoked again.
//
// The lease outlives ctx: ctx only bounds the start-up calls; the keepalive
// runs until Close, a lost lease, or the client's Close. A zero
// server.StartedUnixMs is set to the clock's now.
func New(ctx context.Context, cli *clientv3.Client, server ServerRecord, opts ...Option) (*Registry, error) {
	o := defaultOptions()
	for _, opt := range opts {
		opt(&o)
	}
	if err := validateKey(server.ID); err != nil {
		return nil, fmt.Errorf("registry: new: server id: %w", err)
	}
	if cli == nil {
		return nil, errors.New("registry: new: nil etcd client")
	}
	if server.StartedUnixMs == 0 {
		server.StartedUnixMs = o.clock.Now().UnixMilli()
	}
	ttl := int64((o.leaseTTL + time.Second - 1) / time.Second)
	r := &Registry{
		Store:     newStore(cli, server.ID, o),
		server:    server,
		ttl:       time.Duration(ttl) * time.Second,
		done:      make(chan struct{}),
		closing:   make(chan struct{}),
		unhealthy: make(chan struct{}, 1),
		watchDone: make(chan struct{}),
	}
	r.window = o.safeWindow
	if r.window <= 0 {
		r.window = r.ttl * 2 / 3
	}
	r.window = min(r.window, r.ttl)

	// The lease's clock starts when etcd grants it, after this moment. A
	// grant answered a TTL or more after it (a request that waited for etcd
	// to come back) would be a lease counted lost at once: the wait is
	// bounded by the TTL, and the caller tries again.
	granted, grantedReal := o.clock.Now(), time.Now()
	cctx, cancel := context.WithTimeout(ctx, min(o.callTimeout, r.ttl))
	grant, err := r.leases.Grant(cctx, ttl)
	cancel()
	if err != nil {
		return nil, fmt.Errorf("registry: new: grant lease: %w", err)
	}
	r.lease = grant.ID
	if got := time.Duration(grant.TTL) * time.Second; got > r.ttl {
		// etcd's minimum (1.5 election timeouts) is above what we asked
		// for: fence on the lease etcd keeps, and say why failover is
		// slower than configured.
		r.log.Warn("etcd granted a longer lease than configured (its minimum is 1.5 election timeouts)",
			"requested_s", ttl, "granted_s", grant.TTL)
		r.ttl = got
		if o.safeWindow <= 0 {
			r.window = r.ttl * 2 / 3
		}
	}
	// The keepalive's context is the client's: it lives until Close, a lost
	// lease, or the client's Close.
	kctx, kcancel := context.WithCancel(cli.Ctx())
	r.kaCancel = kcancel
	r.renewed(granted)
	go r.keepAlive(kctx, grantedReal)

	m := r.rw.mark()
	rev, err := r.register(ctx, server)
	if err == nil {
		// A restored etcd (rewind.go) is noticed by the first write on
		// it: this registry is made on what it holds now, the watches
		// start again from it.
		r.rw.answered(m, rev)
	}
	back := r.rw.next() // a rewind from now on ends the lease (watchRecord)
	if err != nil {
		close(r.closing) // not a lost lease: keepAlive need not report it
		close(r.watchDone)
		kcancel()
		<-r.done
		r.stopOverdueTimer()
		r.revokeDetached(ctx)
		return nil, err
	}
	// A revoked lease (etcdctl lease revoke, an administrator) deletes our
	// record at once; the keepalive would only notice at its next round.
	r.recordRev.Store(rev)
	go r.watchRecord(kctx, back)
	r.log.Info("registered server", "server_id", r.id, "lease_id", fmt.Sprintf("%x", int64(r.lease)),
		"ttl_s", int64(r.ttl/time.Second), "safe_window_ms", r.window.Milliseconds())
	return r, nil
}

// register creates servers/<id> under our lease if absent, or moves it from
// our previous lease (WithPreviousLease) to the new one.
func (r *Registry) register(ctx context.Context, server ServerRecord) (int64, error) {
	k := r.serverKey(r.id)
	v, err := json.Marshal(server)
	if err != nil {
		return 0, fmt.Errorf("registry: new: %w", err)
	}
	// A record that keeps changing between our reads (expiring, taken) is
	// retried a few times, then reported as in use.
	const attempts = 3
	holder := int64(0)
	for range attempts {
		rev, cur, err := r.putUnderLease(ctx, k, v, []clientv3.Cmp{createdAt(k, 0)})
		if err != nil {
			// Outcome unknown: the caller revokes our lease, which removes
			// the record if it was written.
			return 0, fmt.Errorf("registry: new: register server: %w", err)
		}
		if rev != 0 {
			return rev, nil
		}
		if cur == nil {
			continue
		}
		holder = cur.Lease
		if r.opts.prevLease == 0 || clientv3.LeaseID(holder) != r.opts.prevLease {
			break
		}
		rev, _, err = r.putUnderLease(ctx, k, v, []clientv3.Cmp{clientv3.Compare(clientv3.LeaseValue(k), "=", r.opts.prevLease)})
		if err != nil {
			return 0, fmt.Errorf("registry: new: take over server record: %w", err)
		}
		if rev != 0 {
			r.log.Info("took over server record from previous lease", "server_id", r.id,
				"previous_lease_id", fmt.Sprintf("%x", int64(r.opts.prevLease)))
			return rev, nil
		}
	}
	return 0, fmt.Errorf("registry: new: server %q held by lease %x: %w", r.id, holder, ErrServerIDInUse)
}

// keepAlive consumes the lease's keepalive responses, records each renewal,
// and closes done when the channel closes: the lease expired or was revoked
// (etcd answered TTL 0), no renewal arrived within the TTL (etcd may have
// expired it), Close cancelled the keepalive, or the client was closed.
func (r *Registry) keepAlive(ctx context.Context, granted time.Time) {
	defer close(r.done)
	why := r.renew(ctx, granted)
	if w := r.lostWhy.Load(); w != nil {
		why = *w // renew only saw its context cancelled
	}
	r.stopOverdueTimer()
	select {
	case <-r.closing:
	default:
		r.log.Error("registry lease lost", "server_id", r.id, "lease_id", fmt.Sprintf("%x", int64(r.lease)), "reason", why)
	}
}

// renewInterval is how often the lease is renewed: a sixth of the TTL
// (at least every 100 ms), so that a renewal or two may be late or lost,
// or answered slowly, before the safe window (2/3 of the TTL) passes: a
// renewal counts from when it was sent. The etcd client's own
// KeepAlive renews after a third of the TTL but only looks every 500 ms:
// a 1 s lease was renewed every 500 ms, and one round trip over 170 ms
// made the next renewal come a whole TTL later.
func renewInterval(ttl time.Duration) time.Duration { return max(ttl/6, 100*time.Millisecond) }

// maxRenewals bounds the renewals awaiting an answer at once (a tick is a
// sixth of the TTL; each is bounded by the safe window, four ticks).
const maxRenewals = 4

// renew renews the lease every renewInterval until ctx ends (Close, Abandon,
// the client's Close) or the lease is lost: etcd no longer knows it, or no
// renewal succeeded for a whole TTL since the last one (real time; granted
// is when the lease was granted), after which etcd has expired it or may at
// any moment. Each attempt is bounded by the safe window and by that TTL;
// a failed one is retried at the next tick. Ticks count from granted, not
// from when renew starts: the grant's round trip may have taken a good
// part of the safe window already (a 1 s lease on a loaded machine went
// unhealthy before its first renewal). It returns why it stopped.
func (r *Registry) renew(ctx context.Context, granted time.Time) string {
	every := renewInterval(r.ttl)
	t := time.NewTimer(every - time.Since(granted)) // fires at once if overdue
	defer t.Stop()
	// Renewals are sent every tick without waiting for the previous answer
	// (at most maxRenewals at once): over a slow link each answer then
	// vouches for a send at most one tick old, not one a round trip older.
	type result struct {
		sent, sentClock time.Time
		ttl             int64
		err             error
	}
	results := make(chan result, maxRenewals)
	var wg sync.WaitGroup
	defer wg.Wait()
	actx, cancelAll := context.WithCancel(ctx)
	defer cancelAll() // before wg.Wait: the attempts end with it
	inFlight := 0
	last := granted
	for {
		select {
		case <-ctx.Done():
			return "stopped"
		case res := <-results:
			inFlight--
			switch {
			case res.err == nil && res.ttl > 0:
				// A renewal counts from when it was sent: etcd restarts
				// the TTL somewhere between sending and the answer, never
				// before. Counting from a slow answer would call the lease
				// healthy for up to a third of the TTL after it may have
				// expired.
				if res.sent.After(last) {
					last = res.sent
					r.renewed(res.sentClock)
				}
			case errors.Is(res.err, rpctypes.ErrLeaseNotFound) || (res.err == nil && res.ttl <= 0):
				return "lease not found"
			case ctx.Err() != nil:
				return "stopped"
			default:
				r.log.Debug("lease renewal failed; retrying", "server_id", r.id, "error", res.err)
			}
		case <-t.C:
			t.Reset(every)
			left := r.ttl - time.Since(last)
			if left <= 0 {
				return "not renewed for a whole TTL"
			}
			if inFlight >= maxRenewals {
				break // every slot waits for an answer; each is bounded below
			}
			inFlight++
			wg.Add(1)
			sent, sentClock := time.Now(), r.opts.clock.Now()
			go func() {
				defer wg.Done()
				cctx, cancel := context.WithTimeout(actx, min(r.window, left))
				resp, err := r.leases.KeepAliveOnce(cctx, r.lease)
				cancel()
				res := result{sent: sent, sentClock: sentClock, err: err}
				if err == nil {
					res.ttl = resp.TTL
				}
				results <- res // buffered for every attempt in flight
			}()
		}
		if time.Since(last) >= r.ttl {
			return "not renewed for a whole TTL"
		}
	}
}

// renewed records a successful renewal at t and re-arms the overdue timer,
// which only logs: Healthy computes health from lastRenewal itself.
func (r *Registry) renewed(t time.Time) {
	r.hmu.Lock()
	defer r.hmu.Unlock()
	r.lastRenewal = t
	if r.overdueT != nil {
		r.overdueT.Stop()
	}
	if r.overdue.Swap(false) {
		r.log.Info("lease renewals resumed", "server_id", r.id)
	}
	r.overdueT = r.opts.clock.AfterFunc(r.window, func() {
		select {
		case <-r.done:
			return
		default:
		}
		select {
		case r.unhealthy <- struct{}{}:
		default:
		}
		if !r.overdue.Swap(true) {
			r.log.Warn("lease renewal overdue; refusing claims until it is renewed",
				"server_id", r.id, "safe_window_ms", r.window.Milliseconds())
		}
	})
}

func (r *Registry) stopOverdueTimer() {
	r.hmu.Lock()
	defer r.hmu.Unlock()
	if r.overdueT != nil {
		r.overdueT.Stop()
		r.overdueT = nil
	}
}

// Healthy reports whether the lease was renewed recently enough that it
// cannot have expired on the server: Done is not closed, and the time since
// the last successful renewal (by the injected clock) is less than the safe
// window (WithSafeWindow, default 2/3 of the TTL). A broker stops claiming
// and attaching while !Healthy, before etcd would expire the lease; Claim,
// Update and Reclaim refuse with ErrUnhealthy meanwhile. When renewals
// resume before the lease expired, Healthy becomes true again by itself.
// Reads (Lookup, Server, Servers, ...) do not depend on it.
func (r *Registry) Healthy() bool {
	if r.lost() {
		return false
	}
	r.hmu.Lock()
	last := r.lastRenewal
	r.hmu.Unlock()
	return r.opts.clock.Now().Sub(last) < r.window
}

// SafeWindow returns the health window in use.
func (r *Registry) SafeWindow() time.Duration { return r.window }

// writable returns ErrLeaseLost once Done is closed and ErrUnhealthy while
// the lease is overdue; nil otherwise.
func (r *Registry) writable() error {
	if r.lost() {
		return ErrLeaseLost
	}
	if !r.Healthy() {
		if r.lost() {
			return ErrLeaseLost
		}
		return ErrUnhealthy
	}
	return nil
}

// putLeased writes v, as JSON, at key k under this server's lease: refused
// while the lease is lost or unhealthy (writable), a failure because the
// lease is gone told as ErrLeaseLost (leaseErr).
func (r *Registry) putLeased(ctx context.Context, k string, v any) error {
	if err := r.writable(); err != nil {
		return err
	}
	b, err := json.Marshal(v)
	if err != nil {
		return err
	}
	cctx, cancel := r.callCtx(ctx)
	defer cancel()
	if _, err := r.kv.Put(cctx, k, string(b), clientv3.WithLease(r.lease)); err != nil {
		return r.leaseErr(err)
	}
	return nil
}

// revokeDetached revokes our lease with a fresh bounded context: used on
// failure paths where the caller's ctx may already be done.
func (r *Registry) revokeDetached(ctx context.Context) {
	rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), r.opts.callTimeout)
	defer cancel()
	if _, err := r.leases.Revoke(rctx, r.lease); err != nil && !errors.Is(err, rpctypes.ErrLeaseNotFound) {
		r.log.Warn("revoke lease failed; it expires by itself", "lease_id", fmt.Sprintf("%x", int64(r.lease)), "error", err)
	}
}

// ServerID returns this broker's server id.
func (r *Registry) ServerID() string { return r.id }

// LeaseID returns the broker's lease.
func (r *Registry) LeaseID() clientv3.LeaseID { return r.lease }

// Done is closed when the lease is definitely lost: etcd reported it expired
// or revoked (by Close or by anyone else; a revoke is seen within
// recordPollInterval because the server record vanishes with it), no
// renewal succeeded within the TTL, or the etcd client was closed. After that the server record and all
// claims are gone (or going within the TTL) and writes fail with
// ErrLeaseLost; the owner builds a new Registry and calls Reclaim.
func (r *Registry) Done() <-chan struct{} { return r.done }

func (r *Registry) lost() bool {
	select {
	case <-r.done:
		return true
	default:
		return false
	}
}

// Close stops the keepalive and revokes the lease: the server record and all
// its claims vanish at once (a clean shutdown does not wait for the TTL).
// Done is closed when Close returns. Close is
// idempotent; only the first call's ctx is used. A lease that is already
// gone is not an error; if the revoke fails the lease expires by itself
// within its TTL. Close after Abandon only revokes.
func (r *Registry) Close(ctx context.Context) error {
	r.closeOnce.Do(func() {
		r.stopKeepAlive()
		cctx, cancel := r.callCtx(ctx)
		defer cancel()
		if _, err := r.leases.Revoke(cctx, r.lease); err != nil && !errors.Is(err, rpctypes.ErrLeaseNotFound) {
			r.closeErr = fmt.Errorf("registry: close: revoke lease: %w", err)
		}
		r.log.Info("released server", "server_id", r.id)
	})
	return r.closeErr
}

// Abandon stops the keepalive and the record watch without revoking the
// lease: whatever lives under it (the server record, claims) stays until
// the lease expires by itself, or until a new Registry built with
// WithPreviousLease(LeaseID()) takes the record over and Reclaim moves the
// claims. Done is closed when Abandon returns; it is idempotent. Use it for
// a registry that must not be used again but whose claims must not vanish
// at once: a failed re-establishment, or a stop that keeps the desktops.
func (r *Registry) Abandon() {
	r.stopKeepAlive()
}

func (r *Registry) stopKeepAlive() {
	r.stopOnce.Do(func() {
		close(r.closing)
		r.kaCancel()
		<-r.done
		<-r.watchDone
	})
}

// Unhealthy receives a value (buffered, at most one pending) each time the
// safe window passes without a renewal, so an owner can act at once instead
// of polling Healthy. Done closing is signalled by Done only.
func (r *Registry) Unhealthy() <-chan struct{} { return r.unhealthy }

// recordPollInterval bounds how long a revoked lease (etcdctl lease
// revoke, an administrator) goes unnoticed: the keepalive alone would only
// see it at its next round, up to a third of the TTL later.
const recordPollInterval = 500 * time.Millisecond

// watchRecord reads servers/<id> every recordPollInterval (a unary read: a
// long-lived watch stream per broker would hold etcd members' graceful
// stops): if it is gone (the lease was revoked or expired) or held by
// another lease, the lease is lost and the keepalive is cancelled, which
// closes Done. So it is when etcd went back in time (a restore from a
// snapshot, see rewind.go: noticed by this read or by any other store of
// the client after back was taken, or the record read is older than the
// last one written): the claims made since the snapshot are gone, those
// released since are back, and only a new lease and a Reclaim of every
// session put the registry right. A failed read is ignored: an
// unreachable etcd is what the safe window (Healthy) is for. It returns
// when ctx (the keepalive's) ends.
func (r *Registry) watchRecord(ctx context.Context, back <-chan struct{}) {
	defer close(r.watchDone)
	k := r.serverKey(r.id)
	t := time.NewTicker(recordPollInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-back:
			r.loseLease("etcd went back in time (restored from a snapshot?)")
			return
		case <-t.C:
		}
		wrote, m := r.recordRev.Load(), r.rw.mark()
		gctx, cancel := r.callCtx(ctx)
		resp, err := r.kv.Get(gctx, k)
		cancel()
		if err != nil || ctx.Err() != nil {
			continue
		}
		why := ""
		if before, rewound := r.rw.answered(m, resp.Header.Revision); rewound {
			why = fmt.Sprintf("etcd's revision went back from %d to %d (restored from a snapshot?)", before, resp.Header.Revision)
		}
		switch {
		case why != "":
		case len(resp.Kvs) == 0:
			why = "server record deleted"
		case clientv3.LeaseID(resp.Kvs[0].Lease) != r.lease:
			why = "server record taken by another lease"
		case resp.Kvs[0].ModRevision < wrote:
			why = fmt.Sprintf("server record went back from revision %d to %d (etcd restored from a snapshot?)", wrote, resp.Kvs[0].ModRevision)
			r.rw.rewound(resp.Header.Revision)
		default:
			continue
		}
		r.loseLease(why)
		return
	}
}

// RevokeLease revokes another lease of this server, typically its previous
// one (WithPreviousLease) once Reclaim has moved every session it still runs:
// whatever is still attached to it (sessions no longer run, a stale server
// record) vanishes at once instead of after the TTL. A lease that is already
// gone is not an error. Revoking the Registry's own lease is refused: use
// Close.
func (r *Registry) RevokeLease(ctx context.Context, id clientv3.LeaseID) error {
	if id == r.lease {
		return errors.New("registry: revoke lease: refusing to revoke the registry's own lease (use Close)")
	}
	cctx, cancel := r.callCtx(ctx)
	defer cancel()
	if _, err := r.leases.Revoke(cctx, id); err != nil && !errors.Is(err, rpctypes.ErrLeaseNotFound) {
		return fmt.Errorf("registry: revoke lease %x: %w", int64(id), err)
	}
	return nil
}

// callCtx bounds one remote call by ctx and the per-call timeout.
func (r *Store) callCtx(ctx context.Context) (context.Context, context.CancelFunc) {
	return context.WithTimeout(ctx, r.opts.callTimeout)
}

// UpdateServer applies f to a copy of this server's record and writes it
// under the lease, provided the record is still ours. The ID cannot be
// changed. ErrLeaseLost if the lease or the record is gone,
// ErrServerIDInUse if another lease holds the record now.
func (r *Registry) UpdateServer(ctx context.Context, f func(*ServerRecord)) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.lost() {
		return fmt.Errorf("registry: update server: %w", ErrLeaseLost)
	}
	rec := r.server
	rec.Fingerprint = append([]byte(nil), rec.Fingerprint...)
	f(&rec)
	rec.ID = r.id
	v, err := json.Marshal(rec)
	if err != nil {
		return fmt.Errorf("registry: update server: %w", err)
	}
	k := r.serverKey(r.id)
	rev, cur, err := r.putUnderLease(ctx, k, v, []clientv3.Cmp{clientv3.Compare(clientv3.LeaseValue(k), "=", r.lease)})
	switch {
	case err != nil:
		return fmt.Errorf("registry: update server: %w", r.leaseErr(err))
	case rev == 0 && cur == nil:
		return fmt.Errorf("registry: update server: record gone: %w", ErrLeaseLost)
	case rev == 0:
		return fmt.Errorf("registry: update server: %w", ErrServerIDInUse)
	}
	r.recordRev.Store(rev)
	r.server = rec
	return nil
}

// Servers lists every registered server, ordered by id. Draining is true if
// the server's drain flag is set (SetDraining) or its record says so.
func (r *Store) Servers(ctx context.Context) ([]ServerRecord, error) {
	drained := map[string]bool{}
	err := r.list(ctx, r.opts.prefix+"drain/", func(name string, _ *mvccpb.KeyValue) {
		drained[name] = true
	})
	if err != nil {
		return nil, fmt.Errorf("registry: servers: drain flags: %w", err)
	}
	out, err := listRecords(ctx, r, r.opts.prefix+"servers/", "server record", func(name string, kv *mvccpb.KeyValue) (ServerRecord, error) {
		rec, err := decodeServer(name, kv.Value)
		rec.Draining = rec.Draining || drained[name]
		return rec, err
	})
	if err != nil {
		return nil, fmt.Errorf("registry: servers: %w", err)
	}
	return out, nil
}

// Server returns the record of server id; ErrNotFound if it is not registered.
func (r *Store) Server(ctx context.Context, id string) (ServerRecord, error) {
	return r.readServer(ctx, id)
}

// ServerLocal is Server answered by the etcd member the client talks to
// (a serializable read, possibly slightly stale): for redirects, whose
// target is verified by the terminal's pin and re-checks the session.
func (r *Store) ServerLocal(ctx context.Context, id string) (ServerRecord, error) {
	return r.readServer(ctx, id, clientv3.WithSerializable())
}

func (r *Store) readServer(ctx context.Context, id string, opts ...clientv3.OpOption) (ServerRecord, error) {
	if err := validateKey(id); err != nil {
		return ServerRecord{}, fmt.Errorf("registry: server: %w", err)
	}
	kv, err := r.get(ctx, r.serverKey(id), opts...)
	if err != nil {
		return ServerRecord{}, fmt.Errorf("registry: server %q: %w", id, err)
	}
	rec, err := decodeServer(id, kv.Value)
	if err != nil {
		return ServerRecord{}, fmt.Errorf("registry: server %q: %w", id, err)
	}
	if !rec.Draining {
		switch _, err := r.get(ctx, r.drainKey(id), opts...); {
		case err == nil:
			rec.Draining = true
		case !errors.Is(err, ErrNotFound):
			return ServerRecord{}, fmt.Errorf("registry: server %q: draining: %w", id, err)
		}
	}
	return rec, nil
}

func decodeServer(id string, val []byte) (ServerRecord, error) {
	return decodeRecord(id, val, "record id", func(rec *ServerRecord) *string { return &rec.ID })
}

// leaseErr turns etcd's "lease not found" (a put under our lease, revoked
// or expired) into ErrLeaseLost, and then ends the keepalive at once (Done
// closes): the lease is definitely gone, and the renewals or the record
// poll would only tell within their interval, while the broker still
// attached terminals.
func (r *Registry) leaseErr(err error) error {
	if !errors.Is(err, rpctypes.ErrLeaseNotFound) {
		return err
	}
	if r.kaCancel != nil && !r.lost() {
		r.loseLease("lease not found by a write")
	}
	return fmt.Errorf("%w: %v", ErrLeaseLost, err)
}

// loseLease ends the keepalive because the lease is known to be gone; why
// is what keepAlive logs as the reason (once, whoever noticed first).
func (r *Registry) loseLease(why string) {
	r.lostWhy.CompareAndSwap(nil, &why)
	r.kaCancel()
}
