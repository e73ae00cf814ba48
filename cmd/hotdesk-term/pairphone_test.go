package main

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/tls"
	"errors"
	"fmt"
	"reflect"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hotdesk/hotdesk/cmd/hotdesk-term/greeter"
	"github.com/hotdesk/hotdesk/internal/clock"
	"github.com/hotdesk/hotdesk/internal/testutil"
	"github.com/hotdesk/hotdesk/proto"
	"github.com/hotdesk/hotdesk/tokens"
	"github.com/hotdesk/hotdesk/tokens/nfc"
	"github.com/hotdesk/hotdesk/tokens/soft"
)

// fakeCards is a card reader provider that, like tokens/pcsc, allows one
// Watch at a time; insert puts a card in front of the current watch.
type fakeCards struct {
	mu      sync.Mutex
	out     chan tokens.Event
	watched chan struct{} // closed at the first Watch
	// hold, if set, keeps Watch from returning (the readers are taken
	// already) until it is closed, as PC/SC's setup takes a while.
	hold  chan struct{}
	once  sync.Once
	keys  map[string]ed25519.PublicKey
	privs map[string]ed25519.PrivateKey
	// sign, if set, is what Sign does (the phone's side of SIGN); if not,
	// the phone signs with its key.
	sign func(ctx context.Context, token string, msg []byte) ([]byte, error)
}

func newFakeCards() *fakeCards {
	return &fakeCards{watched: make(chan struct{}), keys: map[string]ed25519.PublicKey{}, privs: map[string]ed25519.PrivateKey{}}
}

// checkPairSig fails t unless pair's Signature is its key's signature of
// the pairing transcript of p's connection (PROTOCOL.md §8.4).
func checkPairSig(t *testing.T, p *peer, pair *proto.Pair) {
	t.Helper()
	msg, err := soft.PairMessage(p.hello.TerminalID, p.welcome.ServerID, p.welcome.Nonce, pair.Code, pair.Kind, pair.PublicKey)
	if err != nil {
		t.Fatal(err)
	}
	if err := soft.Verify(pair.PublicKey, msg, pair.Signature); err != nil {
		t.Fatalf("Pair signature: %v; want the key's signature of this connection's pairing transcript", err)
	}
}

func (f *fakeCards) Watch(ctx context.Context) (<-chan tokens.Event, error) {
	f.mu.Lock()
	if f.out != nil {
		f.mu.Unlock()
		return nil, errors.New("fake cards: already watching")
	}
	ch := make(chan tokens.Event, 16)
	f.out = ch
	f.once.Do(func() { close(f.watched) })
	hold := f.hold
	f.mu.Unlock()
	go func() {
		<-ctx.Done()
		f.mu.Lock()
		defer f.mu.Unlock()
		close(ch)
		f.out = nil
	}()
	if hold != nil {
		<-hold
	}
	return ch, nil
}

// insert presents a phone with a new key at reader r0 and returns its
// token id and key.
func (f *fakeCards) insertPhone(t *testing.T) (string, ed25519.PublicKey) {
	t.Helper()
	pub, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tok := nfc.HCETokenID(pub)
	f.mu.Lock()
	defer f.mu.Unlock()
	f.keys[tok] = pub
	f.privs[tok] = priv
	if f.out == nil {
		t.Fatal("fake cards: nobody watches")
	}
	f.out <- tokens.Event{Kind: tokens.Inserted, Token: tok, Reader: "r0", At: time.Now()}
	return tok, pub
}

// insertCard presents a locate-only card tok at reader.
func (f *fakeCards) insertCard(t *testing.T, tok, reader string) {
	t.Helper()
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.out == nil {
		t.Fatal("fake cards: nobody watches")
	}
	f.out <- tokens.Event{Kind: tokens.Inserted, Token: tok, Reader: reader, At: time.Now()}
}

func (f *fakeCards) Sign(ctx context.Context, token string, msg []byte) ([]byte, error) {
	f.mu.Lock()
	sign := f.sign
	f.mu.Unlock()
	if sign != nil {
		return sign(ctx, token, msg)
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if k, ok := f.privs[token]; ok {
		return ed25519.Sign(k, msg), nil
	}
	return nil, errors.New("fake cards: not present")
}

// onSign has the phone call before at each Sign, then sign with its key.
func (f *fakeCards) onSign(before func()) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.sign = func(_ context.Context, token string, msg []byte) ([]byte, error) {
		before()
		f.mu.Lock()
		defer f.mu.Unlock()
		return ed25519.Sign(f.privs[token], msg), nil
	}
}

func (f *fakeCards) PublicKey(_ context.Context, token string) ([]byte, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if k, ok := f.keys[token]; ok {
		return k, nil
	}
	return nil, errors.New("fake cards: not present")
}

// startCardAgent starts a broker and an agent whose card readers are fake
// cards and whose UI is ui, accepts the agent's connection to the broker
// and waits for the agent to watch the readers. It returns the broker, the
// cards, the agent and its connection.
func startCardAgent(t *testing.T, ui func(event)) (*fakeBroker, *fakeCards, *testAgent, *peer) {
	t.Helper()
	home := startBroker(t, "broker-a", time.Minute)
	fc := newFakeCards()
	ta := startAgent(t, home, func(c *Config) {
		c.Cards = fc
		c.UI = ui
	})
	p := home.accept()
	awaitWatched(t, fc)
	return home, fc, ta, p
}

// awaitWatched waits for the agent to watch fc's readers.
func awaitWatched(t *testing.T, fc *fakeCards) {
	t.Helper()
	select {
	case <-fc.watched:
	case <-time.After(waitBound):
		t.Fatal("the agent does not watch the card readers")
	}
}

// startPairPhone runs a.PairPhone with the code abcd-efgh-jkmn in a
// goroutine; its error comes on the returned channel.
func startPairPhone(ctx context.Context, a *agent, label string, wait time.Duration) <-chan error {
	done := make(chan error, 1)
	go func() {
		_, err := a.PairPhone(ctx, "abcd-efgh-jkmn", label, wait)
		done <- err
	}()
	return done
}

// pairPhoneWaiting is startPairPhone, returning once the pairing waits for
// a phone (a send on waiting, waitingUI's); it fails the test if it does
// not.
func pairPhoneWaiting(t *testing.T, ctx context.Context, a *agent, waiting <-chan struct{}, label string, wait time.Duration) <-chan error {
	t.Helper()
	done := startPairPhone(ctx, a, label, wait)
	awaitWaiting(t, waiting, "PairPhone does not wait for a phone")
	return done
}

// stillPairing fails the test if the pairing whose error comes on done
// (startPairPhone's) has ended; when says when it should not have.
func stillPairing(t *testing.T, done <-chan error, when string) {
	t.Helper()
	select {
	case err := <-done:
		t.Fatalf("%s: PairPhone = %v; want it still waiting", when, err)
	default:
	}
}

// awaitPairing waits for the error of the pairing whose error comes on
// done (startPairPhone's); it fails the test with failure if none comes.
func awaitPairing(t *testing.T, done <-chan error, failure string) error {
	t.Helper()
	select {
	case err := <-done:
		return err
	case <-time.After(waitBound):
		t.Fatal(failure)
		return nil
	}
}

// enrollPhone presents a new phone to a pairing that waits for one (its
// error to come on done), answers the Pair on the connection it makes to
// home, and waits for the pairing to succeed. It returns the phone's
// token id.
func enrollPhone(t *testing.T, fc *fakeCards, home *fakeBroker, done <-chan error) string {
	t.Helper()
	tok, _ := fc.insertPhone(t)
	enroll := home.accept()
	expect[proto.Pair](enroll)
	enroll.send(&proto.Paired{Token: tok, User: "alice"})
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	return tok
}

// waitingUI returns a UI that sends on the returned channel when the agent
// waits for a phone to pair.
func waitingUI() (func(event), <-chan struct{}) {
	waiting := make(chan struct{}, 1)
	return func(ev event) {
		if ev.name == "waiting" {
			waiting <- struct{}{}
		}
	}, waiting
}

// awaitWaiting waits for a send on waiting (waitingUI's: the pairing
// waits for a phone) and fails the test with failure if none comes.
func awaitWaiting(t *testing.T, waiting <-chan struct{}, failure string) {
	t.Helper()
	select {
	case <-waiting:
	case <-time.After(waitBound):
		t.Fatal(failure)
	}
}

// TestAgentPairPhoneWhileRunning: a phone paired from the greeter (F2)
// while the agent runs and watches the card readers itself: the pairing
// gets the phone the readers see (it does not watch them a second time,
// which the PC/SC provider refuses: "pcsc: already watching"), enrolls
// its key with the code, and the phone is not presented to the broker as
// a token meanwhile.
func TestAgentPairPhoneWhileRunning(t *testing.T) {
	t.Parallel()
	ui, waiting := waitingUI()
	home, fc, ta, p := startCardAgent(t, ui)
	type result struct {
		token string
		err   error
	}
	done := make(chan result, 1)
	go func() {
		tok, err := ta.PairPhone(context.Background(), "abcd-efgh-jkmn", "Desk 1", waitBound)
		done <- result{tok, err}
	}()
	select {
	case <-waiting:
	case r := <-done:
		t.Fatalf("PairPhone = %q, %v before a phone was presented; want it to wait for one", r.token, r.err)
	case <-time.After(waitBound):
		t.Fatal("PairPhone does not wait for a phone")
	}
	tok, pub := fc.insertPhone(t)
	enroll := home.accept()
	pair := expect[proto.Pair](enroll)
	if pair.Kind != "hce" || string(pair.PublicKey) != string(pub) || pair.Code != "abcd-efgh-jkmn" {
		t.Fatalf("Pair = %+v; want kind hce with the phone's key and the code", pair)
	}
	checkPairSig(t, enroll, pair)
	enroll.send(&proto.Paired{Token: tok, User: "alice"})
	select {
	case r := <-done:
		if r.err != nil || r.token != tok {
			t.Fatalf("PairPhone = %q, %v; want %s", r.token, r.err, tok)
		}
	case <-time.After(waitBound):
		t.Fatal("PairPhone did not return")
	}
	// The agent's broker connection saw nothing of the phone.
	p.ping(1)
}

// TestAgentPairPhoneSentAgain: a phone pairing answered "unavailable"
// (the broker could not judge it: its registry out of reach) is sent again
// on its connection, the same Pair with the phone's signature of that
// connection: the phone signs once and need not be held to the reader
// again. It used to end with the broker's error, the person told to try
// again with the phone.
func TestAgentPairPhoneSentAgain(t *testing.T) {
	t.Parallel()
	ui, waiting := waitingUI()
	home, fc, ta, _ := startCardAgent(t, ui)
	var signs atomic.Int32
	fc.onSign(func() { signs.Add(1) })
	done := pairPhoneWaiting(t, context.Background(), ta.agent, waiting, "Desk 1", waitBound)
	tok, _ := fc.insertPhone(t)
	enroll := home.accept()
	first := expect[proto.Pair](enroll)
	checkPairSig(t, enroll, first)
	enroll.send(&proto.Error{Code: proto.ErrUnavailable, Message: "pairing unavailable (registry out of reach); try again"})
	awaitWaiting(t, waiting, "the agent does not say it sends the Pair again")
	again := expect[proto.Pair](enroll)
	if !reflect.DeepEqual(again, first) {
		t.Fatalf("Pair sent again = %+v; want the first one, %+v", again, first)
	}
	enroll.send(&proto.Paired{Token: tok, User: "alice"})
	if err := awaitPairing(t, done, "PairPhone did not return"); err != nil {
		t.Fatalf("PairPhone = %v; want the phone paired", err)
	}
	if n := signs.Load(); n != 1 {
		t.Errorf("the phone signed %d times; want once", n)
	}
}

// TestAgentPairPhoneWhileStarting: a pairing begun while the agent is
// still taking the readers (its Watch has them but has not returned) waits
// for the agent's loop, and does not watch them a second time ("already
// watching", as PC/SC answers).
func TestAgentPairPhoneWhileStarting(t *testing.T) {
	t.Parallel()
	ui, waiting := waitingUI()
	home := startBroker(t, "broker-a", time.Minute)
	fc := newFakeCards()
	fc.hold = make(chan struct{})
	ta := startAgent(t, home, func(c *Config) {
		c.Cards = fc
		c.UI = ui
	})
	release := sync.OnceFunc(func() { close(fc.hold) })
	t.Cleanup(release) // before the agent's stop
	p := home.accept()
	awaitWatched(t, fc)
	done := startPairPhone(context.Background(), ta.agent, "Desk 1", waitBound)
	select {
	case err := <-done:
		t.Fatalf("PairPhone while the agent takes the readers = %v; want it to wait for the agent", err)
	case <-time.After(200 * time.Millisecond):
	}
	release()
	awaitWaiting(t, waiting, "PairPhone does not wait for a phone once the agent runs")
	enrollPhone(t, fc, home, done)
	p.ping(1) // the agent's connection saw nothing of the phone
}

// TestAgentPairedPhoneNotPresentedLater: a phone read for a pairing, left
// at the reader after it, is not presented to the broker by a later
// connection either (the agent presents the cards at the readers on each
// connection): it was, while its removal, still taken as the pairing's,
// was not reported, so the broker kept it inserted and a login it started
// stayed on the terminal after the phone was taken away.
func TestAgentPairedPhoneNotPresentedLater(t *testing.T) {
	t.Parallel()
	ui, waiting := waitingUI()
	home, fc, ta, p := startCardAgent(t, ui)
	done := pairPhoneWaiting(t, context.Background(), ta.agent, waiting, "Desk 1", waitBound)
	tok := enrollPhone(t, fc, home, done)
	p.ping(1)

	// The broker connection is lost and made again, the phone still there.
	p.c.Close()
	p2 := home.accept()
	p2.ping(2) // nothing presented
	// Taken away and held again: now a login.
	fc.mu.Lock()
	fc.out <- tokens.Event{Kind: tokens.Removed, Token: tok, Reader: "r0", At: time.Now()}
	fc.out <- tokens.Event{Kind: tokens.Inserted, Token: tok, Reader: "r0", At: time.Now()}
	fc.mu.Unlock()
	p2.inserted(tok)
	fc.mu.Lock()
	fc.out <- tokens.Event{Kind: tokens.Removed, Token: tok, Reader: "r0", At: time.Now()}
	fc.mu.Unlock()
	p2.removed(tok)
}

// TestGreeterPairPhoneKeepsCodeLabel: a phone paired from the greeter is
// sent without a label of the terminal's, so the broker keeps the label
// the administrator gave the code ("bob's phone"), not the desk's name.
func TestGreeterPairPhoneKeepsCodeLabel(t *testing.T) {
	t.Parallel()
	ui, waiting := waitingUI()
	home, fc, ta, _ := startCardAgent(t, ui)
	in := &greeterInput{ctx: context.Background(), a: ta.agent, pairWait: waitBound}
	in.submit(greeter.PairCode, "abcd-efgh-jkmn")
	awaitWaiting(t, waiting, "the greeter's pairing does not wait for a phone")
	tok, _ := fc.insertPhone(t)
	enroll := home.accept()
	if pair := expect[proto.Pair](enroll); pair.Label != "" {
		t.Fatalf("Pair label %q; want none, so that the code's label stays", pair.Label)
	}
	enroll.send(&proto.Paired{Token: tok, User: "bob"})
	in.wg.Wait()
}

// TestPromptSaysWhoseCard: with two cards at a terminal's readers, a PIN
// prompt names the card whose login asks (AuthPrompt.Token), and the
// greeter's title says so; with one card it does not.
func TestPromptSaysWhoseCard(t *testing.T) {
	t.Parallel()
	var mu sync.Mutex
	var titles []string
	ui := &greeterUI{scr: screenFunc(func(s greeter.State) {
		mu.Lock()
		titles = append(titles, s.Title)
		mu.Unlock()
	})}
	_, fc, ta, p := startCardAgent(t, ui.event)
	ta.out.wait("connected")
	fc.insertCard(t, "uid.01020304", "Reader A")
	p.inserted("uid.01020304")
	p.send(&proto.AuthPrompt{ID: 1, Style: proto.PromptEchoOff, Text: "PIN: ", Token: "uid.01020304"})
	if ev := ta.out.wait("prompt"); ev["for"] != nil || ev["token"] != "uid.01020304" {
		t.Fatalf("prompt event with one card = %v; want its token and no \"for\"", ev)
	}
	fc.insertCard(t, "uid.0a0b0c0d", "Reader B")
	p.inserted("uid.0a0b0c0d")
	p.send(&proto.AuthPrompt{ID: 2, Style: proto.PromptEchoOff, Text: "PIN: ", Token: "uid.0a0b0c0d"})
	if ev := ta.out.wait("prompt"); ev["for"] != "the card in Reader B" {
		t.Fatalf("prompt event with two cards = %v; want it for the card in Reader B", ev)
	}
	mu.Lock()
	defer mu.Unlock()
	if last := titles[len(titles)-1]; !strings.Contains(last, "the card in Reader B") {
		t.Fatalf("greeter title %q; want it to name the card in Reader B", last)
	}
}

// screenFunc is a screen that calls f for each state shown.
type screenFunc func(greeter.State)

func (f screenFunc) Show(s greeter.State) { f(s) }
func (screenFunc) Close()                 {}

// TestAgentPhoneSignKeepsConnection: while a phone signs a challenge (a few
// APDUs; a phone that stops answering mid-chain holds the exchange until
// the agent's timeout) the agent still answers the broker. It signed in its
// loop: a stalled phone left the broker's pings unanswered and the broker
// closed the connection for its read timeout (found with a virtual HCE
// phone written from proto/HCE.md). The proof, once the phone answers,
// goes to the connection the challenge came on.
func TestAgentPhoneSignKeepsConnection(t *testing.T) {
	t.Parallel()
	_, fc, _, p := startCardAgent(t, nil)
	signing := make(chan []byte, 1)
	release := make(chan struct{})
	returned := make(chan struct{})
	sig := make([]byte, ed25519.SignatureSize)
	sig[0] = 0x5a
	fc.mu.Lock()
	fc.sign = func(ctx context.Context, _ string, msg []byte) ([]byte, error) {
		defer close(returned)
		signing <- msg
		select {
		case <-release:
			return sig, nil
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
	fc.mu.Unlock()
	tok, _ := fc.insertPhone(t)
	if ins := expect[proto.TokenInserted](p); ins.Token != tok {
		t.Fatalf("TokenInserted = %+v; want %s", ins, tok)
	}
	chNonce := nonce(t)
	p.send(&proto.Challenge{ID: 9, Token: tok, Nonce: chNonce, ServerID: "broker-a"})
	select {
	case <-signing:
	case <-time.After(waitBound):
		t.Fatal("the agent did not ask the phone to sign")
	}
	p.ping(1)
	select {
	case <-returned:
		t.Fatal("the agent answered the ping only after the phone's Sign had given up")
	default:
	}
	close(release)
	proof := expect[proto.Proof](p)
	if proof.ID != 9 || proof.Token != tok || string(proof.Signature) != string(sig) {
		t.Fatalf("Proof = %+v; want ID 9, token %s and the phone's signature", proof, tok)
	}
}

// TestAgentPhoneSignErrorIsCardError: a phone in the field that does not
// sign the challenge (it declines, 69 82; answers garbage; stops answering)
// is reported as a card error at its reader, as one at identification (the
// greeter says the card could not be read), not as "no key for token", and
// no Proof is sent. It was reported as no_key, which the greeter ignores:
// the person saw "Checking your card…" until the broker gave up.
func TestAgentPhoneSignErrorIsCardError(t *testing.T) {
	t.Parallel()
	_, fc, ta, p := startCardAgent(t, nil)
	fc.mu.Lock()
	fc.sign = func(context.Context, string, []byte) ([]byte, error) {
		return nil, &nfc.StatusError{Op: "sign", SW: nfc.SWSecurityNotSatisfied}
	}
	fc.mu.Unlock()
	tok, _ := fc.insertPhone(t)
	if ins := expect[proto.TokenInserted](p); ins.Token != tok {
		t.Fatalf("TokenInserted = %+v; want %s", ins, tok)
	}
	if ev := ta.out.wait("card"); ev["kind"] != "inserted" {
		t.Fatalf("card event = %v; want the insertion first", ev)
	}
	p.send(&proto.Challenge{ID: 11, Token: tok, Nonce: nonce(t), ServerID: "broker-a"})
	ev := ta.out.wait("card")
	if ev["kind"] != "error" || ev["reader"] != "r0" || !strings.Contains(fmt.Sprint(ev["error"]), "6982") {
		t.Errorf("card event = %v; want a card error at r0 with the phone's status", ev)
	}
	p.ping(1) // and no Proof
}

// TestAgentPairPhonePingsWhileSigning: the phone signs the pairing
// transcript on the broker connection the Pair goes on (its Welcome nonce
// is signed), and a phone may take seconds (its user confirms): longer
// than the broker waits for a frame (4 ping intervals). The agent pings
// that connection meanwhile, every ping interval, until the broker's
// answer; the Pair carries the phone's signature.
func TestAgentPairPhonePingsWhileSigning(t *testing.T) {
	t.Parallel()
	waiting, clk, home, fc, ta := startPhoneAgent(t, time.Minute)
	signing, release := make(chan struct{}), make(chan struct{})
	fc.onSign(func() {
		close(signing)
		<-release
	})
	done := pairPhoneWaiting(t, context.Background(), ta.agent, waiting, "", waitBound)
	tok, _ := fc.insertPhone(t)
	enroll := home.accept()
	select {
	case <-signing:
	case <-time.After(waitBound):
		t.Fatal("the phone was not asked to sign")
	}
	for seq := uint64(1); seq <= 3; seq++ {
		clk.Advance(time.Minute) // the broker's ping interval
		if ping := expect[proto.Ping](enroll); ping.Seq != seq {
			t.Fatalf("Ping %+v; want Seq %d", ping, seq)
		}
	}
	close(release)
	pair := expect[proto.Pair](enroll)
	checkPairSig(t, enroll, pair)
	// The pings go on until the broker's answer (a pairing it queued
	// behind others, on a loaded server, outlasted its read timeout:
	// TestPolicyE2E's four pairings at once were cut with "read
	// timeout").
	clk.Advance(time.Minute)
	if ping := expect[proto.Ping](enroll); ping.Seq != 4 {
		t.Fatalf("Ping %+v after the Pair; want Seq 4", ping)
	}
	enroll.send(&proto.Paired{Token: tok, User: "alice"})
	if err := <-done; err != nil {
		t.Fatalf("PairPhone = %v", err)
	}
}

// TestAgentPairPhoneSignWait: a phone gets phoneSignWait (on the agent's
// clock) to sign the pairing transcript, as HCE.md §3.3 says, not that
// and the agent's timeout: then the pairing ends saying the phone did not
// sign in time, and no Pair is sent. The wait was the whole exchange's
// (-timeout plus 30 s, on the wall clock), so a phone could take 39 s and
// leave the broker 1 s to answer.
func TestAgentPairPhoneSignWait(t *testing.T) {
	t.Parallel()
	waiting, clk, home, fc, ta := startPhoneAgent(t, time.Hour)
	signing := make(chan struct{})
	fc.mu.Lock()
	fc.sign = func(ctx context.Context, _ string, _ []byte) ([]byte, error) {
		close(signing)
		<-ctx.Done()
		return nil, ctx.Err()
	}
	fc.mu.Unlock()
	done := pairPhoneWaiting(t, context.Background(), ta.agent, waiting, "", time.Hour)
	fc.insertPhone(t)
	enroll := home.accept()
	select {
	case <-signing:
	case <-time.After(waitBound):
		t.Fatal("the phone was not asked to sign")
	}
	clk.Advance(phoneSignWait - time.Millisecond)
	stillPairing(t, done, "before the phone's time was up")
	clk.Advance(time.Millisecond)
	err := awaitPairing(t, done, fmt.Sprintf("PairPhone still waits for the phone %v after it was asked to sign", phoneSignWait))
	if err == nil || !strings.Contains(err.Error(), "did not sign within 30s") {
		t.Fatalf("PairPhone = %v; want the phone did not sign within 30s", err)
	}
	if m, err := enroll.c.Recv(); err == nil {
		t.Fatalf("broker got %T %+v after the phone did not sign; want the connection closed, no Pair", m.Body, m.Body)
	}
}

// startPhoneAgent starts an agent on a fake clock with fake card readers,
// connected to a fake home broker (pinging every pingInterval) and
// watching the readers; waiting is signalled when its UI shows the
// pairing's wait for a phone.
func startPhoneAgent(t *testing.T, pingInterval time.Duration) (waiting <-chan struct{}, clk *clock.Fake, home *fakeBroker, fc *fakeCards, ta *testAgent) {
	t.Helper()
	ui, waiting := waitingUI()
	clk = clock.NewFake(time.Now())
	home = startBroker(t, "broker-a", pingInterval)
	fc = newFakeCards()
	ta = startAgent(t, home, func(c *Config) {
		c.Cards = fc
		c.UI = ui
		c.Clock = clk
	})
	home.accept()
	awaitWatched(t, fc)
	return waiting, clk, home, fc, ta
}

// TestAgentPairPhoneCancelled: a pairing whose context is cancelled while
// it waits for a phone (hotdesk-term -pcsc pair stopped by SIGTERM, the
// greeter's Esc) says the pairing was cancelled and the code is still
// valid, in an error that is not context.Canceled (the pair command
// prints it and exits 1: nothing was paired); it said "no phone presented
// within 1m0s" after 3 s. The wait elapsing still says that.
func TestAgentPairPhoneCancelled(t *testing.T) {
	t.Parallel()
	for _, tt := range []struct {
		name   string
		wait   time.Duration
		cancel bool
		want   string
	}{
		{"cancelled", time.Hour, true, "pair: pairing cancelled before a phone was read (the code is still valid)"},
		{"wait elapsed", time.Millisecond, false, "pair: no phone presented within 1ms"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			ui, waiting := waitingUI()
			a, err := newAgent(Config{Server: "127.0.0.1:1", TLS: &tls.Config{}, TerminalID: "t", Keystore: mustKeystore(t),
				Cards: newFakeCards(), UI: ui, Logger: testLogger(t)})
			if err != nil {
				t.Fatal(err)
			}
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			done := pairPhoneWaiting(t, ctx, a, waiting, "", tt.wait)
			if tt.cancel {
				cancel()
			}
			err = awaitPairing(t, done, "PairPhone did not return")
			if err == nil || err.Error() != tt.want {
				t.Fatalf("PairPhone = %v; want %q", err, tt.want)
			}
			if errors.Is(err, context.Canceled) {
				t.Errorf("PairPhone = %v matches context.Canceled: the pair command would exit 0 without a word", err)
			}
		})
	}
}

// TestAgentPairPhoneWaitOnClock: the wait for a phone is on the agent's
// clock: a millisecond before it is over the pairing still waits, at its
// end it says no phone was presented.
func TestAgentPairPhoneWaitOnClock(t *testing.T) {
	t.Parallel()
	ui, waiting := waitingUI()
	clk := clock.NewFake(time.Unix(1_000_000, 0))
	a, err := newAgent(Config{Server: "127.0.0.1:1", TLS: &tls.Config{}, TerminalID: "t", Keystore: mustKeystore(t),
		Cards: newFakeCards(), UI: ui, Clock: clk, Logger: testLogger(t)})
	if err != nil {
		t.Fatal(err)
	}
	done := pairPhoneWaiting(t, context.Background(), a, waiting, "", time.Hour)
	testutil.WaitFor(t, waitBound, "the wait for a phone set on the clock", func() bool { return clk.Pending() == 1 })
	clk.Advance(time.Hour - time.Millisecond)
	if n := clk.Pending(); n != 1 {
		t.Fatalf("a millisecond before the wait's end: %d timers pending; want the wait's", n)
	}
	stillPairing(t, done, "a millisecond before the wait's end")
	clk.Advance(time.Millisecond)
	err = awaitPairing(t, done, "PairPhone did not return at the wait's end on the clock")
	if want := "pair: no phone presented within 1h0m0s"; err == nil || err.Error() != want {
		t.Fatalf("PairPhone = %v; want %q", err, want)
	}
}

// TestAgentPairPhoneHoldsOtherCards: a card that is not a phone, presented
// while a pairing waits for the phone (a badge, where the phone should
// be), is not presented to the broker — no login starts under the
// pairing's screen — but answered with a not_phone event; the pairing
// still takes the phone that comes next. The card's removal is not
// reported either; presented again after the pairing, it logs in. It was
// presented: the greeter left the pairing's screen for the card's PIN
// prompt while the pairing stayed armed.
func TestAgentPairPhoneHoldsOtherCards(t *testing.T) {
	t.Parallel()
	ui, waiting := waitingUI()
	home, fc, ta, p := startCardAgent(t, ui)
	done := pairPhoneWaiting(t, context.Background(), ta.agent, waiting, "", waitBound)
	fc.insertCard(t, "uid.01020304", "r1")
	if ev := ta.out.wait("not_phone"); ev["token"] != "uid.01020304" || ev["reader"] != "r1" {
		t.Fatalf("not_phone = %v; want uid.01020304 at r1", ev)
	}
	p.ping(1) // not presented
	tok, _ := fc.insertPhone(t)
	if ev := ta.out.wait("pair_phone"); ev["token"] != tok {
		t.Fatalf("pair_phone = %v; want %s", ev, tok)
	}
	enroll := home.accept()
	expect[proto.Pair](enroll)
	enroll.send(&proto.Paired{Token: tok, User: "alice"})
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	fc.send(t, tokens.Event{Kind: tokens.Removed, Token: "uid.01020304", Reader: "r1", At: time.Now()})
	p.ping(2) // its removal not reported
	fc.insertCard(t, "uid.01020304", "r1")
	p.inserted("uid.01020304")
}

// lockedScreen records the states shown, from any goroutine.
type lockedScreen struct {
	testutil.Recorded[greeter.State]
}

func (s *lockedScreen) Show(st greeter.State) { s.Add(st) }

func (*lockedScreen) Close() {}

// last is what was shown last (the zero State if nothing was).
func (s *lockedScreen) last() greeter.State {
	st, _ := s.Last(nil)
	return st
}

// TestGreeterPairingArmedOnlyOnScreen: a phone pairing started on the
// greeter (F2, a code, Enter) is armed only while its screen is shown.
// A badge presented during it is not logged in but answered on that
// screen, which stays; anything that takes the screen instead — the PIN
// prompt of a badge that reached the broker as the pairing started, the
// broker lost — or Esc cancels the pairing, and a phone tapped afterwards
// at the screen that replaced it is presented as a login, not enrolled:
// the broker gets no Pair. The pairing stayed armed, with nothing of it
// on the screen, for the rest of its minute, and a different person's
// phone tapped at the idle screen was enrolled to the code's user.
func TestGreeterPairingArmedOnlyOnScreen(t *testing.T) {
	t.Parallel()
	for _, tt := range []struct {
		name string
		// leave takes the pairing's screen away (in holds busy while
		// begun is false: the pairing does not have the readers yet)
		// and returns the connection the agent's tokens now go to.
		leave  func(t *testing.T, ta *testAgent, in *greeterInput, fc *fakeCards, home *fakeBroker, p *peer) *peer
		begun  bool
		screen greeter.Screen
	}{
		{"a badge's PIN prompt", func(t *testing.T, ta *testAgent, in *greeterInput, fc *fakeCards, _ *fakeBroker, p *peer) *peer {
			// Presented as the code was entered, before the pairing
			// took the readers: it reaches the broker, which asks for
			// its PIN.
			fc.insertCard(t, "uid.0a0b0c0d", "r1")
			p.inserted("uid.0a0b0c0d")
			p.send(&proto.AuthPrompt{ID: 1, Style: proto.PromptEchoOff, Text: "PIN: ", Token: "uid.0a0b0c0d"})
			ta.out.wait("prompt")
			in.busy.Unlock()
			return p
		}, false, greeter.Prompt},
		{"broker lost", func(t *testing.T, ta *testAgent, _ *greeterInput, _ *fakeCards, home *fakeBroker, p *peer) *peer {
			p.c.Close()
			ta.out.wait("disconnected")
			p2 := home.accept()
			p2.ping(1) // the agent's connection now
			return p2
		}, true, greeter.Idle},
		{"Esc", func(t *testing.T, _ *testAgent, in *greeterInput, _ *fakeCards, _ *fakeBroker, p *peer) *peer {
			in.submit(greeter.Cancel, "")
			return p
		}, true, greeter.Idle},
	} {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			scr := &lockedScreen{}
			ui := &greeterUI{scr: scr}
			home, fc, ta, p := startCardAgent(t, ui.event)
			ta.out.wait("connected")
			ctx, cancel := context.WithCancel(context.Background())
			in := &greeterInput{ctx: ctx, a: ta.agent, ui: ui, pairWait: time.Hour}
			t.Cleanup(func() {
				cancel()
				in.wg.Wait()
			})
			if !tt.begun {
				in.busy.Lock() // the pairing waits for the one before it
			}
			in.submit(greeter.PairCode, "abcd-efgh-jkmn")
			if s := scr.last(); s.Screen != greeter.PairWait {
				t.Fatalf("after the code: shown %+v; want the pairing's screen", s)
			}
			if tt.begun {
				ta.out.wait("waiting")
				// A badge where the phone should be: said on the
				// pairing's screen, not logged in.
				fc.insertCard(t, "uid.01020304", "r1")
				ta.out.wait("not_phone")
				p.ping(9)
				if s := scr.last(); s.Screen != greeter.PairWait || !strings.Contains(s.Message, "not a phone") {
					t.Fatalf("a badge during the pairing: shown %+v; want the pairing's screen saying it is not a phone", s)
				}
			}
			p = tt.leave(t, ta, in, fc, home, p)
			ended := make(chan struct{})
			go func() {
				in.wg.Wait()
				close(ended)
			}()
			select {
			case <-ended:
			case <-time.After(waitBound):
				t.Fatal("the pairing is still armed after its screen was left")
			}
			if s := scr.last(); s.Screen == greeter.PairWait || s.Screen != tt.screen {
				t.Errorf("after the pairing's screen was left: shown %+v; want %s", s, tt.screen)
			}
			tok, _ := fc.insertPhone(t)
			p.inserted(tok) // a login
			select {
			case c := <-home.peers:
				m, err := c.c.Recv()
				t.Fatalf("the broker got a connection after the pairing was cancelled (first message %v %v); want no Pair", m, err)
			default:
			}
		})
	}
}
