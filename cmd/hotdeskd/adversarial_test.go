package main

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/tls"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/hotdesk/hotdesk/cmd/internal/adminapi"
	"github.com/hotdesk/hotdesk/internal/testutil"
	"github.com/hotdesk/hotdesk/proto"
	"github.com/hotdesk/hotdesk/tokens/soft"
)

// The adversarial suite (budget: under 60 s on 2 busy cores) runs the real
// hotdeskd binary, with a low RLIMIT_NOFILE, and attacks it from other
// loopback source addresses (127.0.0.2 and up) while a well-behaved
// terminal pair at 127.0.0.1 keeps hot-desking one soft-token session
// between them. It asserts that the good terminal never failed, that every
// attack was refused, and that the daemon's descriptors, threads and
// memory return near their baseline; it prints the figures.

// advLimits are the daemon's limits in this test: the shipped defaults but
// a short handshake deadline, so slow clients are cut within the budget.
const (
	advHandshake = 2 * time.Second
	// The daemon's RLIMIT_NOFILE: what it reserves (648 here) plus 100
	// connections per listener (daemon.go connectionBudget), fewer than the
	// fd_exhaustion attack opens and than the gateway_hog attack holds.
	advNoFile      = 848
	advHogSources  = 8 // × max_unauthenticated_per_source (16) = 128 > 100
	advOpTimeout   = 15 * time.Second
	advPerSource   = 64
	advUnauthLimit = 128
)

// goodTerm is a well-behaved terminal: it answers challenges with its key
// and pings, and hands everything else to its owner.
type goodTerm struct {
	id      string
	conn    *proto.Conn
	welcome proto.Welcome
	key     ed25519.PrivateKey
	msgs    chan any
	done    chan struct{}

	mu        sync.Mutex
	lastProof *proto.Proof // the last proof it sent (an attacker replays it)
}

func dialFrom(ctx context.Context, src, addr string, cfg *tls.Config) (net.Conn, error) {
	d := net.Dialer{Timeout: 5 * time.Second}
	if src != "" {
		d.LocalAddr = &net.TCPAddr{IP: net.ParseIP(src)}
	}
	c, err := d.DialContext(ctx, "tcp", addr)
	if err != nil || cfg == nil {
		return c, err
	}
	tc := tls.Client(c, cfg)
	hctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	if err := tc.HandshakeContext(hctx); err != nil {
		c.Close()
		return nil, err
	}
	return tc, nil
}

// helloConn dials addr from src, completes TLS and Hello, and returns the
// connection and its Welcome.
func helloConn(ctx context.Context, src, addr string, pin []byte, id string) (*proto.Conn, proto.Welcome, error) {
	cfg, err := proto.ClientTLSConfig("", pin, nil)
	if err != nil {
		return nil, proto.Welcome{}, err
	}
	c, err := dialFrom(ctx, src, addr, cfg)
	if err != nil {
		return nil, proto.Welcome{}, err
	}
	pc := proto.NewConn(c)
	_ = c.SetDeadline(time.Now().Add(10 * time.Second))
	w, err := proto.ClientHandshake(pc, proto.Hello{Versions: []uint16{proto.Version}, TerminalID: id})
	if err != nil {
		pc.Close()
		return nil, proto.Welcome{}, err
	}
	_ = c.SetDeadline(time.Time{})
	return pc, w, nil
}

func newGoodTerm(ctx context.Context, addr string, pin []byte, id string, key ed25519.PrivateKey) (*goodTerm, error) {
	c, w, err := helloConn(ctx, "127.0.0.1", addr, pin, id)
	if err != nil {
		return nil, err
	}
	g := &goodTerm{id: id, conn: c, welcome: w, key: key, msgs: make(chan any, 64), done: make(chan struct{})}
	go g.read()
	go keepPinging(c, w, g.done)
	return g, nil
}

// keepPinging pings c as a real terminal does, at the interval its Welcome
// w announces, until done closes or a send fails: the broker drops a
// connection silent for 3 of them, and another terminal's hot-desk may
// keep a test terminal silent that long on a loaded machine.
func keepPinging(c *proto.Conn, w proto.Welcome, done <-chan struct{}) {
	every := time.Duration(w.PingInterval) * time.Millisecond
	if every <= 0 {
		every = 3 * time.Second
	}
	tick := time.NewTicker(every)
	defer tick.Stop()
	for seq := uint64(1); ; seq++ {
		select {
		case <-tick.C:
			if c.Send(&proto.Ping{Seq: seq}) != nil {
				return
			}
		case <-done:
			return
		}
	}
}

func (g *goodTerm) read() {
	defer close(g.done)
	for {
		m, err := g.conn.Recv()
		if err != nil {
			close(g.msgs)
			return
		}
		switch b := m.Body.(type) {
		case *proto.Challenge:
			msg, err := soft.ChallengeMessage(g.id, b.ServerID, g.welcome.Nonce, b.Nonce, b.Token)
			if err == nil {
				p := &proto.Proof{ID: b.ID, Token: b.Token, Signature: ed25519.Sign(g.key, msg)}
				g.mu.Lock()
				g.lastProof = p
				g.mu.Unlock()
				_ = g.conn.Send(p)
			}
			continue
		case *proto.Ping:
			_ = g.conn.Send(&proto.Pong{Seq: b.Seq})
			continue
		case *proto.Pong, *proto.Detached:
			continue
		}
		select {
		case g.msgs <- m.Body:
		default: // nobody waits: drop
		}
	}
}

// await returns the next Attached, Paired or Error.
func (g *goodTerm) await(ctx context.Context) (any, error) {
	for {
		select {
		case m, ok := <-g.msgs:
			if !ok {
				return nil, errors.New("connection closed")
			}
			switch m.(type) {
			case *proto.Attached, *proto.Paired, *proto.Error:
				return m, nil
			}
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
}

// hotdesk presents token at g and waits for Attached.
// pair enrols a software token with key for user, as a terminal does: a
// pairing code from admin, sent over g's connection with the proof of
// possession of key bound to it. It returns the token's id.
func (g *goodTerm) pair(ctx context.Context, admin *adminapi.Client, user string, key ed25519.PrivateKey) (string, error) {
	pr, err := admin.PairToken(ctx, adminapi.PairRequest{User: user})
	if err != nil {
		return "", err
	}
	pub := key.Public().(ed25519.PublicKey)
	if err := g.conn.Send(&proto.Pair{Code: pr.Code, Kind: soft.Kind, PublicKey: pub, Signature: pairSig(g.id, g.welcome, key, pr.Code)}); err != nil {
		return "", err
	}
	m, err := g.await(ctx)
	if err != nil {
		return "", err
	}
	p, ok := m.(*proto.Paired)
	if !ok {
		return "", fmt.Errorf("pair for %s: got %#v", user, m)
	}
	return p.Token, nil
}

// pairSig is key's proof of possession for a Pair of code (a soft token)
// on the connection of terminal id that got Welcome w (PROTOCOL.md §8.4).
func pairSig(id string, w proto.Welcome, key ed25519.PrivateKey, code string) []byte {
	msg, err := soft.PairMessage(id, w.ServerID, w.Nonce, code, soft.Kind, key.Public().(ed25519.PublicKey))
	if err != nil {
		panic(err)
	}
	return ed25519.Sign(key, msg)
}

func (g *goodTerm) hotdesk(ctx context.Context, token string) (*proto.Attached, time.Duration, error) {
	ctx, cancel := context.WithTimeout(ctx, advOpTimeout)
	defer cancel()
	start := time.Now()
	if err := g.conn.Send(&proto.TokenInserted{Token: token, Reader: "adv"}); err != nil {
		return nil, 0, err
	}
	m, err := g.await(ctx)
	if err != nil {
		return nil, 0, err
	}
	a, ok := m.(*proto.Attached)
	if !ok {
		return nil, 0, fmt.Errorf("got %#v; want attached", m)
	}
	return a, time.Since(start), nil
}

// procFigures reads a process's descriptors, threads and resident memory.
type procFigures struct {
	FDs, Threads int
	RSSKiB       int
}

func readProc(pid int) (procFigures, error) {
	var f procFigures
	fds, err := os.ReadDir(fmt.Sprintf("/proc/%d/fd", pid))
	if err != nil {
		return f, err
	}
	f.FDs = len(fds)
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return f, err
	}
	for _, l := range strings.Split(string(b), "\n") {
		fs := strings.Fields(l)
		if len(fs) < 2 {
			continue
		}
		switch fs[0] {
		case "Threads:":
			f.Threads, _ = strconv.Atoi(fs[1])
		case "VmRSS:":
			f.RSSKiB, _ = strconv.Atoi(fs[1])
		}
	}
	return f, nil
}

func percentile(d []time.Duration, p float64) time.Duration {
	if len(d) == 0 {
		return 0
	}
	s := slices.Clone(d)
	slices.Sort(s)
	i := int(float64(len(s)-1) * p)
	return s[i]
}

// attackLog counts attacks tried and refused.
type attackLog struct {
	mu      sync.Mutex
	tried   map[string]int
	breach  []string
	ordered []string
}

func (a *attackLog) try(kind string, refused bool, detail string) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.tried == nil {
		a.tried = map[string]int{}
	}
	if _, ok := a.tried[kind]; !ok {
		a.ordered = append(a.ordered, kind)
	}
	a.tried[kind]++
	if !refused && len(a.breach) < 20 {
		a.breach = append(a.breach, kind+": "+detail)
	}
}

// closedByServer reads c until the server closes it (or sends an Error
// frame and closes), within d; it reports whether it was closed.
func closedByServer(c net.Conn, d time.Duration) bool {
	_ = c.SetReadDeadline(time.Now().Add(d))
	_, err := io.Copy(io.Discard, io.LimitReader(c, 1<<20))
	var ne net.Error
	return !(errors.As(err, &ne) && ne.Timeout())
}

func frame(payload []byte) []byte {
	b := make([]byte, 4+len(payload))
	binary.BigEndian.PutUint32(b, uint32(len(payload)))
	copy(b[4:], payload)
	return b
}

// src returns attacker source address n (127.0.0.2 and up).
func src(n int) string { return fmt.Sprintf("127.0.%d.%d", 1+n/250, 2+n%250) }

// cardUserConfig returns the session and auth blocks of a daemon whose
// logins are passwords that PAM in pamDir checks (no PAM session, at most
// 30 s), but whose user logs in by card alone, without a prompt at a
// hot-desk: the adversarial test's and the soak's. authExtra is more of the
// auth block, lines ending in a newline.
func cardUserConfig(pamDir, user, authExtra string) string {
	return fmt.Sprintf(`
session {
  auth         = "password"
  keep_on_stop = false
}
auth {
  pam_dir      = %q
  open_session = false
  timeout      = "30s"
%s  policy {
    users             = [%q]
    auth              = "card"
    reauth_on_hotdesk = false
  }
}
`, pamDir, authExtra, user)
}

func TestAdversarial(t *testing.T) {
	t.Parallel() // its own daemon, data dir, ports and source addresses
	requireSecureE2E(t)
	testutil.NeedTools(t, "prlimit")
	bin := buildBinaries(t)
	dir := t.TempDir()
	pamDir := testutil.MatrixServices(t, dir, "advgood:pw:hotdesk\n", "", "hotdesk")
	addr := testutil.FreeAddr(t)
	cfg := testutil.DaemonConfig(t, "adv", dir, addr, "") + cardUserConfig(pamDir, "advgood", "") + fmt.Sprintf(`limits {
  handshake_timeout          = %q
  max_connections_per_source = %d
  max_unauthenticated        = %d
}
`, advHandshake.String(), advPerSource, advUnauthLimit)
	e := newE2E(t, bin, dir, addr, cfg)
	pin := e.fingerprint()
	logPath := e.d.LogPath()
	// The daemon runs with few descriptors (prlimit execs it: same pid).
	e.d.Wrap = []string{"prlimit", fmt.Sprintf("--nofile=%d:%d", advNoFile, advNoFile)}
	e.start()
	pid := e.d.PID()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()

	// Enrol the good terminal's soft token with a pairing code.
	admin := adminapi.NewClient(e.socket)
	defer admin.Close()
	pub, key, _ := ed25519.GenerateKey(rand.Reader)
	gA, err := newGoodTerm(ctx, e.addr, pin, "good-a", key)
	if err != nil {
		t.Fatal(err)
	}
	gB, err := newGoodTerm(ctx, e.addr, pin, "good-b", key)
	if err != nil {
		t.Fatal(err)
	}
	defer gA.conn.Close()
	defer gB.conn.Close()
	// An attacker holding a pairing code, who knows the good token's
	// public key, tries to enrol it first (so that the good terminal's
	// logins would land in the code's account): with its own key's
	// signature, and with none. Refused, and the key stays free: it
	// cannot prove the key. (Whose code it is does not matter: the proof
	// is checked before the code is.)
	evil, ew, err := helloConn(ctx, "127.0.0.77", e.addr, pin, "evil-pair")
	if err != nil {
		t.Fatal(err)
	}
	_, evilKey, _ := ed25519.GenerateKey(rand.Reader)
	for _, signed := range []bool{true, false} {
		pr, err := admin.PairToken(ctx, adminapi.PairRequest{User: "advgood"})
		if err != nil {
			t.Fatal(err)
		}
		var sig []byte
		if signed {
			msg, _ := soft.PairMessage("evil-pair", ew.ServerID, ew.Nonce, pr.Code, soft.Kind, pub)
			sig = ed25519.Sign(evilKey, msg)
		}
		if err := evil.Send(&proto.Pair{Code: pr.Code, Kind: soft.Kind, PublicKey: pub, Signature: sig}); err != nil {
			t.Fatal(err)
		}
		_ = evil.NetConn().SetReadDeadline(time.Now().Add(30 * time.Second))
		m, err := evil.Recv()
		for err == nil && (m.Type == proto.TypePing || m.Type == proto.TypePong) {
			m, err = evil.Recv()
		}
		if err != nil {
			t.Fatalf("pairing another's key (signed %v): %v", signed, err)
		}
		if e, ok := m.Body.(*proto.Error); !ok || e.Code != proto.ErrPairing || e.Detail != proto.DetailProofRefused {
			t.Fatalf("pairing another's key (signed %v): %#v; want Error{pairing, proof_refused}", signed, m.Body)
		}
	}
	evil.Close()
	token, err := gA.pair(ctx, admin, "advgood", key)
	if err != nil {
		t.Fatalf("pair: %v", err)
	}
	first, _, err := gA.hotdesk(ctx, token) // creates the desktop
	if err != nil {
		t.Fatalf("first insert: %v", err)
	}
	attachAddr := strings.TrimPrefix(first.Endpoint, "hotdesk-attach://")

	// The good terminal pair hot-desks until told to stop.
	var (
		goodMu        sync.Mutex
		before, under []time.Duration
		goodFailures  []string
		phase         atomic.Int32 // 0 baseline, 1 under attack, 2 done
		lastTicket    atomic.Pointer[proto.Attached]
		attachRedeems atomic.Int32
	)
	goodDone := make(chan struct{})
	go func() {
		defer close(goodDone)
		terms := []*goodTerm{gB, gA}
		for i := 0; phase.Load() < 2; i++ {
			a, d, err := terms[i%2].hotdesk(ctx, token)
			goodMu.Lock()
			switch {
			case err != nil:
				goodFailures = append(goodFailures, fmt.Sprintf("%s: %v", terms[i%2].id, err))
			case phase.Load() == 0:
				before = append(before, d)
			default:
				under = append(under, d)
			}
			goodMu.Unlock()
			if err == nil {
				if i%5 == 0 {
					// The display too: redeem the ticket at the gateway,
					// before the attackers see it (a ticket is single use,
					// valid or not: a theft attempt burns it).
					if err := goodRedeem(ctx, attachAddr, pin, a.Ticket, terms[i%2].id); err != nil {
						goodMu.Lock()
						goodFailures = append(goodFailures, fmt.Sprintf("attach %s: %v", terms[i%2].id, err))
						goodMu.Unlock()
					} else {
						attachRedeems.Add(1)
					}
				}
				lastTicket.Store(a)
			}
			time.Sleep(20 * time.Millisecond)
		}
	}()
	waitFor := func(cond func() bool) {
		deadline := time.Now().Add(30 * time.Second)
		for !cond() && time.Now().Before(deadline) {
			time.Sleep(20 * time.Millisecond)
		}
	}
	waitFor(func() bool { goodMu.Lock(); defer goodMu.Unlock(); return len(before) >= 40 })
	base, err := readProc(pid)
	if err != nil {
		t.Fatal(err)
	}
	phase.Store(1)
	attackStart := time.Now()
	var peak procFigures
	sample := func() {
		if f, err := readProc(pid); err == nil {
			peak.FDs, peak.Threads, peak.RSSKiB = max(peak.FDs, f.FDs), max(peak.Threads, f.Threads), max(peak.RSSKiB, f.RSSKiB)
		}
	}
	stopSampling := make(chan struct{})
	samplingDone := make(chan struct{})
	go func() {
		defer close(samplingDone)
		for {
			sample()
			select {
			case <-stopSampling:
				return
			case <-time.After(50 * time.Millisecond):
			}
		}
	}()

	al := &attackLog{}
	runAttacks(ctx, t, al, e, pin, token, attachAddr, gA, &lastTicket, &attachRedeems, bin)

	phase.Store(2)
	<-goodDone
	close(stopSampling)
	<-samplingDone
	attackDur := time.Since(attackStart)

	// Resources back near the baseline.
	var after procFigures
	settled := func() bool {
		after, err = readProc(pid)
		return err == nil && after.FDs <= base.FDs+8 && after.Threads <= base.Threads+32 && after.RSSKiB <= 2*base.RSSKiB+64<<10
	}
	waitFor(settled)
	logInfo, _ := os.Stat(logPath)
	logBytes := int64(0)
	if logInfo != nil {
		logBytes = logInfo.Size()
	}
	raw, _ := os.ReadFile(logPath)

	total := 0
	var kinds []string
	for _, k := range al.ordered {
		total += al.tried[k]
		kinds = append(kinds, fmt.Sprintf("%s=%d", k, al.tried[k]))
	}
	goodMu.Lock()
	fmt.Printf("adversarial: attacks tried %d (%s) in %s\n", total, strings.Join(kinds, " "), attackDur.Round(time.Millisecond))
	fmt.Printf("adversarial: good terminal hot-desks %d before, %d under attack, failures %d, display attaches %d\n",
		len(before), len(under), len(goodFailures), attachRedeems.Load())
	fmt.Printf("adversarial: good p50/p99 before %s/%s, under attack %s/%s\n",
		percentile(before, .5).Round(10*time.Microsecond), percentile(before, .99).Round(10*time.Microsecond),
		percentile(under, .5).Round(10*time.Microsecond), percentile(under, .99).Round(10*time.Microsecond))
	fmt.Printf("adversarial: daemon fds %d → peak %d → %d (limit %d), threads %d → %d → %d, rss %d → %d → %d MiB, log %d KiB\n",
		base.FDs, peak.FDs, after.FDs, advNoFile, base.Threads, peak.Threads, after.Threads,
		base.RSSKiB>>10, peak.RSSKiB>>10, after.RSSKiB>>10, logBytes>>10)
	defer goodMu.Unlock()

	if len(goodFailures) > 0 {
		t.Errorf("good terminal failed %d times: %q", len(goodFailures), goodFailures)
	}
	if len(under) < 20 {
		t.Errorf("good terminal hot-desked %d times under attack; want it to keep going", len(under))
	}
	if len(al.breach) > 0 {
		t.Errorf("attacks not refused: %q", al.breach)
	}
	if !settled() {
		t.Errorf("daemon resources after the attacks %+v; baseline %+v (fds +8, threads +32, rss 2x+64 MiB allowed)", after, base)
	}
	// The hostile token "user.\n\x1b[31mINJECTED" may appear sanitized
	// ("user.??[31mINJECTED"), never with its newline or escape.
	if bytes.Contains(raw, []byte("\x1b[31m")) || bytes.Contains(raw, []byte("\nINJECTED")) {
		t.Errorf("attacker text reached the log verbatim")
	}
	if logBytes > 4<<20 {
		t.Errorf("log grew %d bytes under attack; want it bounded", logBytes)
	}
	if err := syscall.Kill(e.d.PID(), syscall.Signal(0)); err != nil {
		t.Errorf("daemon gone after the attacks: %v", err)
	}
}

// goodRedeem redeems ticket as the good terminal's display path does
// (hotdesk-term's relay): a connection the gateway cut before answering
// (evicted at its cap of handshakes under the gateway_hog attack: the
// ticket unread) is tried once more; an answer other than AttachOK is not.
func goodRedeem(ctx context.Context, addr string, pin, ticket []byte, terminal string) error {
	err := redeem(ctx, "127.0.0.1", addr, pin, ticket, terminal)
	if err != nil && !errors.Is(err, errAnswered) && ctx.Err() == nil {
		err = redeem(ctx, "127.0.0.1", addr, pin, ticket, terminal)
	}
	return err
}

// errAnswered marks a gateway's answer other than AttachOK.
var errAnswered = errors.New("answered")

// redeem redeems ticket at the attach gateway as terminal and returns nil
// on AttachOK.
func redeem(ctx context.Context, from, addr string, pin, ticket []byte, terminal string) error {
	cfg, err := proto.ClientTLSConfig("", pin, nil)
	if err != nil {
		return err
	}
	c, err := dialFrom(ctx, from, addr, cfg)
	if err != nil {
		return err
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(10 * time.Second))
	pc := proto.NewConn(c)
	if err := pc.Send(&proto.Attach{Ticket: ticket, TerminalID: terminal}); err != nil {
		return err
	}
	m, err := pc.Recv()
	if err != nil {
		return err
	}
	if _, ok := m.Body.(*proto.AttachOK); !ok {
		return fmt.Errorf("attach: %w: got %#v", errAnswered, m.Body)
	}
	return nil
}
