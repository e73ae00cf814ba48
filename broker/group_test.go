package broker

import (
	"context"
	"crypto/ed25519"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/hotdesk/hotdesk/auth"
	"github.com/hotdesk/hotdesk/internal/testutil"
	"github.com/hotdesk/hotdesk/proto"
	"github.com/hotdesk/hotdesk/registry"
	"github.com/hotdesk/hotdesk/registry/etcdtest"
)

// group is three brokers on a three-member etcd cluster, each broker's
// client dialing a different member.
type group struct {
	eps     []string
	members []*registry.Embedded
	b       []*env
}

// newGroup starts a group whose brokers keep their leases (defaultTestTTL).
func newGroup(t *testing.T) *group {
	t.Helper()
	return newGroupTTL(t, 0)
}

// newGroupTTL starts a group whose first broker, b1, has a lease of
// firstTTL (defaultTestTTL if 0), for a test in which b1 loses it; the
// others keep theirs (defaultTestTTL).
func newGroupTTL(t *testing.T, firstTTL time.Duration) *group {
	t.Helper()
	eps, members := etcdtest.StartCluster(t, 3)
	g := &group{eps: eps, members: members}
	for i := 0; i < 3; i++ {
		ttl := time.Duration(0)
		if i == 0 {
			ttl = firstTTL
		}
		g.b = append(g.b, newEnvWith(t, fmt.Sprintf("b%d", i+1), envOptions{
			eps: eps, clientEps: []string{eps[i], eps[(i+1)%3], eps[(i+2)%3]}, ttl: ttl,
		}))
	}
	// The brokers shut down (destroying their desktops) all at once, before
	// each env's own cleanup, to which Shutdown is then a no-op.
	t.Cleanup(func() {
		var wg sync.WaitGroup
		for _, e := range g.b {
			wg.Add(1)
			go func() {
				defer wg.Done()
				ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
				defer cancel()
				e.b.Shutdown(ctx)
			}()
		}
		wg.Wait()
	})
	return g
}

// outcome follows redirects from tm's insert of tok until a definite answer:
// the session attached (and where) or an error code.
type outcome struct {
	server  string
	session string
	code    proto.ErrorCode
	hops    int
	term    *term
}

func follow(t *testing.T, tm *term, tok string, key ed25519.PrivateKey) outcome {
	t.Helper()
	for hops := 0; ; hops++ {
		switch m := tm.next().(type) {
		case *proto.Attached:
			return outcome{server: m.ServerID, session: m.SessionID, hops: hops, term: tm}
		case *proto.Error:
			return outcome{code: m.Code, hops: hops, term: tm}
		case *proto.Redirect:
			if hops >= proto.MaxHops {
				t.Fatalf("terminal %s redirected more than %d times", tm.id, proto.MaxHops)
			}
			next := dialTerm(t, m.Addr, m.Fingerprint, proto.Hello{Versions: []uint16{proto.Version},
				TerminalID: tm.id, Hops: uint8(hops + 1), Fence: m.Fence, Token: tok})
			tm.conn.Close()
			next.present(tok, key)
			tm = next
		default:
			t.Fatalf("terminal %s: unexpected %T %+v", tm.id, m, m)
		}
	}
}

// TestGroupCrossServerHotDesk: a session on b1 is found from b2 and b3 and
// the terminal ends up attached to it on b1 through one redirect.
func TestGroupCrossServerHotDesk(t *testing.T) {
	t.Parallel()
	g := newGroup(t)
	tok, key := g.b[0].enroll("ivy")
	t1 := g.b[0].dial("term-1")
	t1.present(tok, key)
	first := follow(t, t1, tok, key)
	if first.server != "b1" || first.hops != 0 {
		t.Fatalf("first insert at b1 = %+v; want a session on b1 without redirect", first)
	}
	t1.remove(tok)
	expectMsg[proto.Detached](t1)
	for i, e := range g.b[1:] {
		tm := e.dial(fmt.Sprintf("term-%d", i+2))
		tm.present(tok, key)
		o := follow(t, tm, tok, key)
		if o.server != "b1" || o.session != first.session || o.hops != 1 {
			t.Fatalf("insert at %s = %+v; want session %s on b1 after one redirect", e.b.cfg.ServerID, o, first.session)
		}
		o.term.remove(tok)
		expectMsg[proto.Detached](o.term)
	}
}

// TestGroupRace inserts one fresh token at three terminals on the three
// brokers at the same instant, many times: every terminal gets a definite
// answer, all end on one session, and etcd's history shows exactly one
// creation of the token's key. The rounds are independent (a token each)
// and run in three lanes at once, subtests started together (not parallel
// subtests, which would queue for -parallel slots behind the package's
// other tests): rounds racing each other only add to the race within each.
func TestGroupRace(t *testing.T) {
	t.Parallel()
	g := newGroup(t)
	cli := etcdtest.Client(t, g.eps)
	const rounds, lanes = 25, 3
	var wg sync.WaitGroup
	for l := range lanes {
		wg.Add(1)
		go func() {
			defer wg.Done()
			t.Run(fmt.Sprintf("lane-%d", l), func(t *testing.T) {
				for r := l; r < rounds; r += lanes {
					raceRound(t, g, cli, r)
				}
			})
		}()
	}
	wg.Wait()
}

// raceRound is round r of TestGroupRace.
func raceRound(t *testing.T, g *group, cli *clientv3.Client, r int) {
	t.Helper()
	tok, key := enrollAs(t, g.b[r%3], "race")
	startRev := currentRev(t, cli)
	terms := make([]*term, 3)
	for i, e := range g.b {
		terms[i] = dialTerm(t, e.addr, e.pin, proto.Hello{Versions: []uint16{proto.Version}, TerminalID: fmt.Sprintf("race-%d-%d", r, i)})
		terms[i].hold(tok, key)
	}
	var wg sync.WaitGroup
	start := make(chan struct{})
	for _, tm := range terms {
		wg.Add(1)
		go func() { defer wg.Done(); <-start; tm.insert(tok) }()
	}
	close(start)
	wg.Wait()
	sessions := map[string]bool{}
	for _, tm := range terms {
		o := follow(t, tm, tok, key)
		if o.session == "" {
			t.Fatalf("round %d: terminal %s got no session: %+v", r, tm.id, o)
		}
		sessions[o.session] = true
		defer o.term.conn.Close()
	}
	if len(sessions) != 1 {
		t.Fatalf("round %d: %d sessions for one token: %v", r, len(sessions), sessions)
	}
	if n := creations(t, cli, "/hotdesk/sessions/"+tok, startRev); n != 1 {
		t.Fatalf("round %d: the session key was created %d times in etcd's history; want 1", r, n)
	}
}

func currentRev(t *testing.T, cli *clientv3.Client) int64 {
	t.Helper()
	resp, err := cli.Get(context.Background(), "/hotdesk/none")
	if err != nil {
		t.Fatal(err)
	}
	return resp.Header.Revision
}

// creations counts puts that created key (create revision == mod revision)
// in etcd's history after rev.
func creations(t *testing.T, cli *clientv3.Client, key string, rev int64) int {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	now := currentRev(t, cli)
	n := 0
	wch := cli.Watch(ctx, key, clientv3.WithRev(rev+1))
	for wr := range wch {
		if err := wr.Err(); err != nil {
			t.Fatal(err)
		}
		for _, ev := range wr.Events {
			if ev.Type == clientv3.EventTypePut && ev.Kv.CreateRevision == ev.Kv.ModRevision {
				n++
			}
		}
		if wr.Header.Revision >= now {
			break
		}
	}
	return n
}

// TestGroupBrokerDies: a broker that stops renewing its lease (its process
// died) loses its sessions from the registry within the TTL; its tokens
// then start new sessions on the surviving brokers.
func TestGroupBrokerDies(t *testing.T) {
	t.Parallel()
	// b1's lease is short (it dies and the test waits for it to expire),
	// yet long enough to stay healthy on a loaded machine until then
	// (renewed every 500 ms, fenced after 2 s without a renewal); b2 and b3
	// keep theirs.
	g := newGroupTTL(t, 3*time.Second)
	tok, key := g.b[0].enroll("jo")
	t1 := g.b[0].dial("term-1")
	t1.present(tok, key)
	if o := follow(t, t1, tok, key); o.server != "b1" {
		t.Fatalf("created on %s; want b1", o.server)
	}
	g.b[0].die(t1)
	waitGone(t, g.b[1].reg, tok)
	t2 := g.b[1].dial("term-2")
	t2.present(tok, key)
	o := follow(t, t2, tok, key)
	if o.server == "b1" || o.session == "" {
		t.Fatalf("after b1 died: %+v; want a new session on a live broker", o)
	}
}

// die makes e's broker look to the group as if its process was killed: its
// etcd client goes away without revoking the lease, which expires in its
// own time, and the connections of tms drop. What the process ran is torn
// down meanwhile, in the background (each registry call on the closed
// client fails only after the client's retries, ~1.5 s); the test waits
// for it when it ends, before e's own cleanup.
func (e *env) die(tms ...*term) {
	e.t.Helper()
	e.cli.Close()
	for _, tm := range tms {
		tm.conn.Close()
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		e.b.Shutdown(ctx)
		e.reg.Close(ctx)
	}()
	e.t.Cleanup(func() { <-done })
}

func waitGone(t *testing.T, reg *registry.Registry, key string) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) {
		if _, err := reg.Lookup(context.Background(), key); errors.Is(err, registry.ErrNotFound) {
			return
		}
		time.Sleep(100 * time.Millisecond)
	}
	t.Fatalf("claim of %s still in the registry after 30s", key)
}

// TestGroupMemberKilled: with one etcd member stopped the group keeps
// creating and finding sessions.
func TestGroupMemberKilled(t *testing.T) {
	t.Parallel()
	g := newGroup(t)
	if err := g.members[2].Close(); err != nil {
		t.Fatal(err)
	}
	tok, key := g.b[1].enroll("kim")
	t2 := g.b[1].dial("term-2")
	t2.present(tok, key)
	o := follow(t, t2, tok, key)
	if o.session == "" {
		t.Fatalf("with a member down: %+v; want a session", o)
	}
	o.term.remove(tok)
	expectMsg[proto.Detached](o.term)
	t3 := g.b[2].dial("term-3") // b3's client prefers the dead member
	t3.present(tok, key)
	if o3 := follow(t, t3, tok, key); o3.session != o.session {
		t.Fatalf("from b3: %+v; want session %s", o3, o.session)
	}
}

// TestGroupDrain: a drained server places new sessions elsewhere but keeps
// resuming its own; undrained it takes new ones again.
func TestGroupDrain(t *testing.T) {
	t.Parallel()
	g := newGroup(t)
	b1 := g.b[0]
	old, oldKey := b1.enroll("lea")
	t1 := b1.dial("term-1")
	t1.present(old, oldKey)
	existing := follow(t, t1, old, oldKey)
	t1.remove(old)
	expectMsg[proto.Detached](t1)

	if err := b1.reg.SetDraining(b1.ctx, "b1", true); err != nil {
		t.Fatal(err)
	}
	tok, key := b1.enroll("max")
	tn := b1.dial("term-n")
	tn.present(tok, key)
	o := follow(t, tn, tok, key)
	if o.server == "b1" || o.session == "" || o.hops != 1 {
		t.Fatalf("new session on a draining server: %+v; want it placed on another server", o)
	}
	t1.insert(old)
	if r := follow(t, t1, old, oldKey); r.session != existing.session || r.server != "b1" {
		t.Fatalf("existing session on the draining server: %+v; want %s resumed on b1", r, existing.session)
	}
	if err := b1.reg.SetDraining(b1.ctx, "b1", false); err != nil {
		t.Fatal(err)
	}
	tok2, key2 := b1.enroll("ned")
	tu := b1.dial("term-u")
	tu.present(tok2, key2)
	if u := follow(t, tu, tok2, key2); u.server == "" || u.session == "" {
		t.Fatalf("after undrain: %+v; want a session", u)
	}
}

// TestStaleFenceRefused: a terminal arriving with a fence older than the
// session's claim is refused.
func TestStaleFenceRefused(t *testing.T) {
	t.Parallel()
	e := newEnv(t, "b1", nil)
	tok, key := e.enroll("olga")
	t1 := e.dial("term-1")
	t1.present(tok, key)
	expectMsg[proto.Attached](t1)
	c := e.claim(t, tok)
	stale := dialTerm(t, e.addr, e.pin, proto.Hello{Versions: []uint16{proto.Version}, TerminalID: "term-s",
		Hops: 1, Fence: c.Fence - 1, Token: tok})
	stale.present(tok, key)
	if er := expectMsg[proto.Error](stale); er.Code != proto.ErrStaleFence {
		t.Fatalf("stale fence: %+v; want stale fence", er)
	}
	ok := dialTerm(t, e.addr, e.pin, proto.Hello{Versions: []uint16{proto.Version}, TerminalID: "term-f",
		Hops: 1, Fence: c.Fence, Token: tok})
	ok.present(tok, key)
	expectMsg[proto.Attached](ok)
}

// TestGroupCutOffAndHealed cuts b1 off from etcd through a TCP proxy: it
// stops attaching on its own timer, its lease expires, another broker takes
// one of its tokens; healed, b1 re-claims what is still its own and keeps
// the taken session suspended as an orphan — nothing is destroyed — and
// gives it back to its token once the token's session at b2 has ended.
func TestGroupCutOffAndHealed(t *testing.T) {
	t.Parallel()
	eps, _ := etcdtest.StartCluster(t, 3)
	proxy := etcdtest.NewProxy(t, strings.TrimPrefix(eps[0], "http://"))
	// b1's lease is short (it is cut off and the test waits for it to
	// expire), yet long enough to stay healthy on a loaded machine until
	// then (renewed every 500 ms, fenced after 2 s without a renewal); b2
	// keeps its lease.
	const ttl = 3 * time.Second
	b1 := newEnvWith(t, "b1", envOptions{eps: eps, clientEps: []string{proxy.URL()}, ttl: ttl})

	kept, keptKey := b1.enroll("pat")
	taken, takenKey := b1.enroll("quin")
	sess := map[string]string{}
	for _, tk := range []struct {
		tok string
		key ed25519.PrivateKey
	}{{kept, keptKey}, {taken, takenKey}} {
		tm := b1.dial("term-" + tk.tok[5:9])
		tm.present(tk.tok, tk.key)
		sess[tk.tok] = follow(t, tm, tk.tok, tk.key).session
		tm.remove(tk.tok)
		expectMsg[proto.Detached](tm)
	}
	keptClaim := b1.claim(t, kept)
	// b2 joins once both sessions run on b1 (else placement spreads them).
	b2 := newEnvWith(t, "b2", envOptions{eps: eps, clientEps: eps[1:]})

	proxy.Blackhole()
	waitFor(t, "b1 not ready after losing etcd", func() bool { return b1.b.Ready() != nil })
	probe := b1.dial("term-probe")
	probe.present(kept, keptKey)
	if er := expectMsg[proto.Error](probe); er.Code != proto.ErrUnavailable {
		t.Fatalf("insert at a cut-off broker: %+v; want unavailable", er)
	}
	// b1's lease expires in etcd; b2 may now claim b1's tokens.
	waitGone(t, b2.reg, taken)
	tb := b2.dial("term-b2")
	tb.present(taken, takenKey)
	atB2 := follow(t, tb, taken, takenKey)
	if atB2.server != "b2" {
		t.Fatalf("taken token at b2: %+v; want a session on b2", atB2)
	}

	proxy.Heal()
	select {
	case <-b1.reg.Done():
	case <-time.After(30 * time.Second):
		t.Fatal("b1's registry never reported its lease lost")
	}
	fresh := b1.reopenRegistry(t, defaultTestTTL, b1.reg.LeaseID())
	orphans, err := b1.b.Reestablish(b1.ctx, fresh)
	if err != nil {
		t.Fatal(err)
	}
	if len(orphans) != 1 || orphans[0].ID != sess[taken] || orphans[0].OrphanOwner != "b2" {
		t.Fatalf("orphans = %+v; want session %s owned by b2 now", orphans, sess[taken])
	}
	if b1.b.Ready() != nil {
		t.Fatalf("b1 not ready after re-establishing: %v", b1.b.Ready())
	}
	// Its record in the orphan index, written under the new lease.
	testutil.WaitFor(t, 10*time.Second, "the orphan's record under b1's new lease", func() bool {
		os, err := b2.reg.Orphans(b2.ctx, taken)
		return err == nil && len(os) == 1 && os[0].SessionID == sess[taken] && os[0].ServerID == "b1"
	})
	// Nothing was destroyed: both compositors still run; the orphan is suspended.
	for _, si := range b1.b.Sessions() {
		if !pidAlive(si.PID) || si.State != Suspended {
			t.Fatalf("session %+v after healing; want suspended with a live compositor", si)
		}
	}
	c, err := fresh.Lookup(b1.ctx, kept)
	if err != nil || c.Session.ServerID != "b1" || c.Session.ID != sess[kept] {
		t.Fatalf("kept token after re-claim: %+v, %v; want session %s on b1", c, err, sess[kept])
	}
	// b1's old lease expired, so the key was created anew: a newer fence.
	if c.Fence <= keptClaim.Fence {
		t.Fatalf("re-claimed fence %d; want newer than %d", c.Fence, keptClaim.Fence)
	}
	tk := b1.dial("term-back")
	tk.present(kept, keptKey)
	if o := follow(t, tk, kept, keptKey); o.session != sess[kept] || o.server != "b1" {
		t.Fatalf("kept token after healing: %+v; want session %s on b1", o, sess[kept])
	}

	// Later b2's session of the taken token ends and the token comes back
	// to b1, which gives it its orphan back (the desktop its person left
	// there, not an empty new one); then b1 restarts keeping its desktops:
	// both are the tokens' sessions again, none an orphan.
	if err := b2.b.Kill(b2.ctx, atB2.session); err != nil {
		t.Fatal(err)
	}
	tn := b1.dial("term-new")
	tn.present(taken, takenKey)
	again := follow(t, tn, taken, takenKey)
	if again.server != "b1" || again.session != sess[taken] {
		t.Fatalf("taken token back at b1: %+v; want its orphan %s restored on b1", again, sess[taken])
	}
	tn = again.term
	tn.remove(taken)
	expectMsg[proto.Detached](tn)
	b1.reg = fresh // the registry b1 runs on since it was healed
	nb, _ := restartKeeping(t, b1, nil)
	got := nb.Sessions()
	for _, si := range got {
		if (si.ID != sess[kept] && si.ID != sess[taken]) || si.Orphaned || !pidAlive(si.PID) {
			t.Fatalf("after the restart: %+v; want %s and %s, neither an orphan, each with its compositor", got, sess[kept], sess[taken])
		}
	}
	if len(got) != 2 {
		t.Fatalf("after the restart: %+v; want %s and %s", got, sess[kept], sess[taken])
	}
	tr := b1.serve(t, nb)("term-after")
	tr.present(taken, takenKey)
	if o := follow(t, tr, taken, takenKey); o.session != sess[taken] || o.server != "b1" {
		t.Fatalf("taken token after the restart: %+v; want its session %s on b1", o, sess[taken])
	}
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) {
		if cond() {
			return
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Fatalf("timed out waiting: %s", what)
}

// lockWaiters is how many hold or wait for key's lock.
func (k *keyLock) lockWaiters(key string) int {
	k.mu.Lock()
	defer k.mu.Unlock()
	if m := k.locks[key]; m != nil {
		return m.refs
	}
	return 0
}

// TestTokenDisabledMidInsert: a token disabled while an insert of it was
// being verified (its challenge answered, the session not shown yet, so
// TokenChanged had nothing to lock) is refused, not attached.
func TestTokenDisabledMidInsert(t *testing.T) {
	t.Parallel()
	e := newEnv(t, "b1", nil)
	tok, key, _ := createAt(t, e, "dora")
	unlock := sync.OnceFunc(e.b.keys.Lock(tok)) // the insert waits here once verified
	defer unlock()
	tm := e.dial("term-2")
	tm.present(tok, key)
	testutil.WaitFor(t, 10*time.Second, "the insert verified and waiting for the token's lock", func() bool {
		return e.b.keys.lockWaiters(tok) == 2
	})
	rec := e.disableToken(tok)
	changed := make(chan struct{})
	go func() {
		defer close(changed)
		e.b.TokenChanged(registry.TokenChange{ID: tok, Record: rec}) // as the token watch would
	}()
	// It returns at once (the next change must not wait for a login that
	// holds this token's lock); its lock-and-suspend waits in the background.
	select {
	case <-changed:
	case <-time.After(10 * time.Second):
		unlock()
		t.Fatal("TokenChanged waited for the token's lock")
	}
	testutil.WaitFor(t, 10*time.Second, "the token change's lock waiting", func() bool {
		return e.b.keys.lockWaiters(tok) == 3
	})
	unlock()
	if er := expectMsg[proto.Error](tm); er.Code != proto.ErrTokenDisabled {
		t.Fatalf("insert of a token disabled while it was verified: %+v; want token_disabled", er)
	}
	// And the cache does not keep serving the token as enabled.
	tm.present(tok, key)
	if er := expectMsg[proto.Error](tm); er.Code != proto.ErrTokenDisabled {
		t.Fatalf("insert after the change: %+v; want token_disabled", er)
	}
}

// TestTokenDisabledMidLogin: a token disabled while its login prompt is
// open is refused when the login ends, not shown.
func TestTokenDisabledMidLogin(t *testing.T) {
	t.Parallel()
	ga := &gatedAuth{Kiosk: auth.Kiosk{User: "kiosk"}, entered: make(chan struct{}, 1)}
	e := newEnvWith(t, "b1", envOptions{authn: ga})
	tok, key := e.enroll("lena")
	release := ga.hold()
	defer release()
	tm := e.dial("term-1")
	tm.present(tok, key)
	<-ga.entered // the login is under way
	rec := e.disableToken(tok)
	e.b.TokenChanged(registry.TokenChange{ID: tok, Record: rec})
	release()
	if er := expectMsg[proto.Error](tm); er.Code != proto.ErrTokenDisabled {
		t.Fatalf("login that ended after its token was disabled: %+v; want token_disabled", er)
	}
	if n := len(e.b.Sessions()); n != 0 {
		t.Fatalf("%d sessions; want none created", n)
	}
}

// disableToken disables tok in the registry, as an administrator would,
// and returns its record for TokenChanged (the token watch's part).
func (e *env) disableToken(tok string) registry.TokenRecord {
	e.t.Helper()
	if err := e.reg.UpdateToken(e.ctx, tok, func(r *registry.TokenRecord) { r.Disabled = true }); err != nil {
		e.t.Fatal(err)
	}
	rec, err := e.reg.Token(e.ctx, tok)
	if err != nil {
		e.t.Fatal(err)
	}
	return rec
}

// TestTokenCacheForgetsExpired: the token cache drops records past their
// TTL (never served again) instead of holding every token ever read until
// it reaches maxCachedTokens: over a long day it holds the tokens read
// within the last two TTLs.
func TestTokenCacheForgetsExpired(t *testing.T) {
	t.Parallel()
	e := newEnv(t, "tcache", nil)
	read := func(tok string) {
		t.Helper()
		if _, err := e.b.tokenRecord(e.ctx, tok); err != nil {
			t.Fatal(err)
		}
	}
	cached := func() int {
		e.b.mu.Lock()
		defer e.b.mu.Unlock()
		return len(e.b.tokenCache)
	}
	for i := range 20 {
		tok, _ := e.enroll(fmt.Sprint("tcuser", i))
		read(tok)
	}
	if n := cached(); n != 20 {
		t.Fatalf("cached records = %d; want 20", n)
	}
	e.clk.Advance(tokenCacheTTL)
	fresh, _ := e.enroll("tcfresh")
	read(fresh)
	if n := cached(); n != 1 {
		t.Errorf("cached records a TTL later = %d; want 1 (the one just read)", n)
	}
}

// TestTokenCacheReadsOutOfOrder: a read that started before another one
// (whose start stamped the sweep and its record) and finishes after it
// neither sweeps again nor drops that fresher record.
func TestTokenCacheReadsOutOfOrder(t *testing.T) {
	t.Parallel()
	e := newEnv(t, "tcorder", nil)
	early, _ := e.enroll("tcearly")
	later, _ := e.enroll("tclater")
	// The later read, started 2 s after the early one, finished first:
	// its record and the sweep bear its start.
	if _, err := e.b.tokenRecord(e.ctx, later); err != nil {
		t.Fatal(err)
	}
	e.b.mu.Lock()
	rec := e.b.tokenCache[later]
	rec.at = e.clk.Now().Add(2 * time.Second)
	e.b.tokenCache[later] = rec
	e.b.tokenCacheSwept = rec.at
	e.b.mu.Unlock()
	// The early read finishes: its start is now.
	if _, err := e.b.tokenRecord(e.ctx, early); err != nil {
		t.Fatal(err)
	}
	e.b.mu.Lock()
	got, kept := e.b.tokenCache[later]
	n := len(e.b.tokenCache)
	e.b.mu.Unlock()
	if !kept || got.at != rec.at || n != 2 {
		t.Errorf("after the early read finished: the later record kept %v (at %v, want %v), %d records; want it kept and 2", kept, got.at, rec.at, n)
	}
}

// TestEnableEffectiveAtOnce: a token enabled again through another broker
// works at this one at once, before its watch has told it (the chaos
// harness saw a takeover 5 ms after the enable's answer refused
// token_disabled from the token cache): a disabled record is confirmed
// with the registry before the token is refused.
func TestEnableEffectiveAtOnce(t *testing.T) {
	t.Parallel()
	e := newEnv(t, "b1", nil)
	tok, key := e.enroll("ena")
	rec := e.disableToken(tok)
	e.b.TokenChanged(registry.TokenChange{ID: tok, Record: rec}) // as the token watch would
	t1 := e.dial("term-1")
	t1.present(tok, key)
	if er := expectMsg[proto.Error](t1); er.Code != proto.ErrTokenDisabled {
		t.Fatalf("disabled token: %+v; want %s", er, proto.ErrTokenDisabled)
	}
	// Enabled elsewhere; this broker's watch has not told it yet.
	if err := e.reg.UpdateToken(e.ctx, tok, func(r *registry.TokenRecord) { r.Disabled = false }); err != nil {
		t.Fatal(err)
	}
	t1.present(tok, key)
	if att := expectMsg[proto.Attached](t1); att.Token != tok {
		t.Fatalf("token enabled again: %+v; want it attached", att)
	}
}
