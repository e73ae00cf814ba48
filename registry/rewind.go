package registry

import (
	"context"
	"sync"

	clientv3 "go.etcd.io/etcd/client/v3"
)

// Rewinds. An etcd cluster restored from a snapshot (etcdutl snapshot
// restore) goes back in time: its keys are the snapshot's (claims made
// since are gone, claims released since are back, under leases that are
// back too and renewed as before), and, unless the restore bumped it
// (--bump-revision), so is its revision. The etcd client resumes every
// watch on the restored cluster from the revision it had reached, which
// the restored cluster reaches again only after as many writes as were
// made since the snapshot: until then every watch is silent, and etcd
// answers its progress requests as if it were current. Nothing fails, so
// nothing would be re-read: a token disabled after the restore stayed
// enabled at the other brokers, a lockout was not shared, and the claim
// view took its silence for "unchanged"; and a broker whose lease came
// back did not know that the claims it made since the snapshot were gone
// (another broker could give such a token a second session).
//
// So every store on one client notes the revisions of its linearizable
// reads (the lease's record poll, the watches' listings): one lower than
// a revision seen before the read was sent is a rewind (a linearizable
// read never goes back otherwise). A registry also compares its server
// record with the last one it wrote (a restore that bumped the revision
// still brings back an older record). A rewind restarts every watch of
// the client's stores from what etcd holds now (WatchTokens,
// WatchClaims, WatchLockouts, WatchGroup, WatchClocks) and ends the
// registries' leases: the broker re-establishes its lease and re-claims
// every session it runs, as after any lost lease.

// rewinds is what the stores of one etcd client know of its revisions.
type rewinds struct {
	mu    sync.Mutex
	high  int64         // the highest revision a linearizable read answered
	epoch int64         // rewinds so far
	ch    chan struct{} // closed at the next rewind
}

func newRewinds() *rewinds { return &rewinds{ch: make(chan struct{})} }

// clientState is what every store and registry built on one etcd client
// shares: its rewinds and its space (space.go).
type clientState struct {
	rw    *rewinds
	space *space
}

func newClientState() *clientState { return &clientState{rw: newRewinds(), space: &space{}} }

// clientStates holds each live client's state; an entry goes when its
// client is closed.
var clientStates sync.Map // *clientv3.Client → *clientState

func clientStateOf(cli *clientv3.Client) *clientState {
	if cli == nil {
		return newClientState()
	}
	if v, ok := clientStates.Load(cli); ok {
		return v.(*clientState)
	}
	v, loaded := clientStates.LoadOrStore(cli, newClientState())
	if !loaded {
		go func() {
			<-cli.Ctx().Done()
			clientStates.Delete(cli)
		}()
	}
	return v.(*clientState)
}

// revMark is what was known before a read was sent.
type revMark struct{ high, epoch int64 }

// mark returns what is known now; pass it to answered with the revision
// of a linearizable read sent after this call.
func (w *rewinds) mark() revMark {
	w.mu.Lock()
	defer w.mu.Unlock()
	return revMark{w.high, w.epoch}
}

// answered notes rev, the revision of a linearizable read sent after m
// was taken. A revision below m's is a rewind: it is signalled and true
// returned with the revision seen before. A read sent before the last
// rewind tells nothing.
func (w *rewinds) answered(m revMark, rev int64) (before int64, back bool) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if m.epoch != w.epoch {
		return 0, false
	}
	if rev >= m.high {
		w.high = max(w.high, rev)
		return 0, false
	}
	w.rewoundLocked(rev)
	return m.high, true
}

// rewound signals a rewind known otherwise (an older server record);
// rev is the revision etcd answered it with.
func (w *rewinds) rewound(rev int64) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.rewoundLocked(rev)
}

func (w *rewinds) rewoundLocked(rev int64) {
	w.epoch++
	w.high = rev
	close(w.ch)
	w.ch = make(chan struct{})
}

// next returns a channel closed at the next rewind.
func (w *rewinds) next() <-chan struct{} {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.ch
}

// watchCtx is the context of a watch: it requires a leader and ends with
// ctx or at a rewind after back was taken (take it, with next, before
// reading the revision the watch starts from); what names the watch in
// the log.
func (r *Store) watchCtx(ctx context.Context, back <-chan struct{}, what string) (context.Context, context.CancelFunc) {
	wctx, cancel := context.WithCancel(clientv3.WithRequireLeader(ctx))
	go func() {
		select {
		case <-back:
			r.log.Warn("etcd went back in time (restored from a snapshot?): watching again from what it holds now", "watch", what)
			cancel()
		case <-wctx.Done():
		}
	}()
	return wctx, cancel
}
