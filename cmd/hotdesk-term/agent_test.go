package main

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/hotdesk/hotdesk/internal/testutil"
	"github.com/hotdesk/hotdesk/proto/prototest"

	"github.com/hotdesk/hotdesk/internal/clock"
	"github.com/hotdesk/hotdesk/proto"
	"github.com/hotdesk/hotdesk/tokens/nfc"
	"github.com/hotdesk/hotdesk/tokens/soft"
)

func nonce(t *testing.T) []byte {
	t.Helper()
	b := make([]byte, 32)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return b
}

func TestAgentSession(t *testing.T) {
	t.Parallel()
	a := startBroker(t, "broker-a", time.Minute)
	const secret = "s3cret-pw"
	ta := startAgent(t, a, func(c *Config) {
		c.Insert = []string{"default"}
		c.Answers = []string{secret}
	})
	p := a.accept()
	if p.hello.TerminalID != "term-1" || p.hello.Name != "Desk 1" || p.hello.Hops != 0 || p.hello.Fence != 0 {
		t.Errorf("hello = %+v; want terminal term-1, name Desk 1, no hops, no fence", p.hello)
	}
	if ev := ta.out.wait("connected"); ev["server"] != "broker-a" || ev["addr"] != a.addr {
		t.Errorf("connected event = %v; want server broker-a, addr %s", ev, a.addr)
	}
	ins := expect[proto.TokenInserted](p)
	if ins.Token != ta.key.Token || ins.Reader != "soft" {
		t.Fatalf("TokenInserted = %+v; want token %s, reader soft", ins, ta.key.Token)
	}

	// Proof of possession, bound to this terminal, broker and connection.
	chNonce := nonce(t)
	p.send(&proto.Challenge{ID: 7, Token: ta.key.Token, Nonce: chNonce, ServerID: "broker-a"})
	proof := expect[proto.Proof](p)
	if proof.ID != 7 || proof.Token != ta.key.Token {
		t.Errorf("proof = id %d token %s; want 7, %s", proof.ID, proof.Token, ta.key.Token)
	}
	msg, err := soft.ChallengeMessage("term-1", "broker-a", p.welcome.Nonce, chNonce, ta.key.Token)
	if err != nil {
		t.Fatal(err)
	}
	if err := soft.Verify(ta.key.Public, msg, proof.Signature); err != nil {
		t.Errorf("Verify(proof) = %v; want nil", err)
	}
	other, _ := soft.ChallengeMessage("term-2", "broker-a", p.welcome.Nonce, chNonce, ta.key.Token)
	if err := soft.Verify(ta.key.Public, other, proof.Signature); !errors.Is(err, soft.ErrBadProof) {
		t.Errorf("Verify(proof for another terminal) = %v; want ErrBadProof", err)
	}
	if ev := ta.out.wait("challenge"); ev["token"] != ta.key.Token {
		t.Errorf("challenge event = %v; want token %s", ev, ta.key.Token)
	}

	// A challenge for a token the terminal has no key for is not answered.
	p.send(&proto.Challenge{ID: 70, Token: "soft.unknown", Nonce: chNonce, ServerID: "broker-a"})
	if ev := ta.out.wait("error"); ev["name"] != errNoKey {
		t.Errorf("error event = %v; want name %s", ev, errNoKey)
	}

	// Prompts: the scripted answer first, then one typed on stdin.
	p.send(&proto.AuthPrompt{ID: 8, Style: proto.PromptEchoOff, Text: "Password: "})
	if ans := expect[proto.AuthAnswer](p); ans.ID != 8 || ans.Text != secret {
		t.Errorf("answer = %+v; want id 8 and the scripted answer", ans)
	}
	if ev := ta.out.wait("prompt"); ev["style"] != "echo_off" || ev["text"] != "Password: " {
		t.Errorf("prompt event = %v; want echo_off \"Password: \"", ev)
	}
	p.send(&proto.AuthPrompt{ID: 9, Style: proto.PromptEchoOn, Text: "Name: "})
	if ev := ta.out.wait("prompt"); ev["style"] != "echo_on" {
		t.Errorf("prompt event = %v; want echo_on", ev)
	}
	ta.command(t, "answer bob the builder")
	if ans := expect[proto.AuthAnswer](p); ans.ID != 9 || ans.Text != "bob the builder" {
		t.Errorf("answer = %+v; want id 9, \"bob the builder\"", ans)
	}
	p.send(&proto.AuthPrompt{ID: 10, Style: proto.PromptInfo, Text: "Welcome \x1b[31mback"})
	if ev := ta.out.wait("prompt"); ev["style"] != "info" || ev["text"] != "Welcome \x1b[31mback" {
		t.Errorf("prompt event = %v; want info", ev)
	}

	p.send(&proto.Attached{SessionID: "s1", Token: ta.key.Token, User: "alice", Endpoint: "rdp://127.0.0.1:3390", ServerID: "broker-a"})
	ev := ta.out.wait("attached")
	for k, want := range map[string]any{"session": "s1", "token": ta.key.Token, "user": "alice", "endpoint": "rdp://127.0.0.1:3390", "server": "broker-a", "resumed": false} {
		if ev[k] != want {
			t.Errorf("attached event %s = %v; want %v", k, ev[k], want)
		}
	}

	p.ping(5)

	ta.command(t, "status")
	st := ta.out.wait("status")
	if st["connected"] != true || st["server"] != "broker-a" || st["session"] != "s1" {
		t.Errorf("status = %v; want connected to broker-a, session s1", st)
	}
	if ins, _ := st["inserted"].([]any); len(ins) != 1 || ins[0] != ta.key.Token {
		t.Errorf("status inserted = %v; want [%s]", st["inserted"], ta.key.Token)
	}

	ta.command(t, "insert nosuchkey")
	if ev := ta.out.wait("error"); ev["name"] != errCommand {
		t.Errorf("error event = %v; want name %s", ev, errCommand)
	}
	ta.command(t, "remove default")
	if rm := expect[proto.TokenRemoved](p); rm.Token != ta.key.Token || rm.Reader != "soft" {
		t.Errorf("TokenRemoved = %+v; want token %s", rm, ta.key.Token)
	}
	p.send(&proto.Detached{SessionID: "s1", Reason: proto.DetachTokenRemoved, Message: "suspended"})
	if ev := ta.out.wait("detached"); ev["session"] != "s1" || ev["reason"] != "token_removed" || ev["message"] != "suspended" {
		t.Errorf("detached event = %v; want s1, token_removed, suspended", ev)
	}
	p.send(&proto.Error{Code: proto.ErrUnknownToken, Message: "not enrolled", Token: "soft.x"})
	if ev := ta.out.wait("error"); ev["code"] != float64(proto.ErrUnknownToken) || ev["name"] != "unknown_token" || ev["message"] != "not enrolled" {
		t.Errorf("error event = %v; want code 4 unknown_token", ev)
	}

	close(ta.lines) // end of input = quit
	select {
	case <-ta.done:
		if ta.err != nil {
			t.Errorf("Run = %v; want nil at end of input", ta.err)
		}
	case <-time.After(waitBound):
		t.Fatal("agent did not quit at end of input")
	}
	if strings.Contains(ta.out.text(), secret) {
		t.Errorf("an answer to an echo-off prompt was printed:\n%s", ta.out.text())
	}
}

// startTwoBrokers starts broker-a, the agent's home, and broker-b, which
// redirects lead to, each with a minute's ping interval (the agent sends
// no Ping within a test).
func startTwoBrokers(t *testing.T) (a, b *fakeBroker) {
	t.Helper()
	return startBroker(t, "broker-a", time.Minute), startBroker(t, "broker-b", time.Minute)
}

func TestAgentRedirect(t *testing.T) {
	t.Parallel()
	a, b := startTwoBrokers(t)
	ta, pa := startInserted(t, a)
	pb := pa.redirect(ta.key.Token, b, 42)
	if h := pb.hello; h.Hops != 1 || h.Fence != 42 || h.Token != ta.key.Token || h.TerminalID != "term-1" {
		t.Errorf("hello at b = %+v; want hops 1, fence 42, token %s, terminal term-1", h, ta.key.Token)
	}
	pb.inserted(ta.key.Token)
	if ev := ta.out.wait("redirect"); ev["server"] != "broker-b" || ev["addr"] != b.addr || ev["fence"] != float64(42) {
		t.Errorf("redirect event = %v; want broker-b at %s, fence 42", ev, b.addr)
	}
	if ev := ta.out.wait("connected"); ev["server"] != "broker-b" {
		t.Errorf("connected event = %v; want broker-b", ev)
	}
	// The agent left a.
	if m, err := pa.c.Recv(); err == nil {
		t.Errorf("a got %v after the redirect; want the connection closed", m.Type)
	}
	pb.send(&proto.Attached{SessionID: "s9", Token: ta.key.Token, Endpoint: "rdp://b", ServerID: "broker-b", Resumed: true})
	if ev := ta.out.wait("attached"); ev["server"] != "broker-b" || ev["resumed"] != true {
		t.Errorf("attached event = %v; want broker-b, resumed", ev)
	}
	// Removal goes to the broker the terminal is connected to.
	ta.command(t, "remove default")
	pb.removed(ta.key.Token)
}

func TestAgentRedirectHopLimit(t *testing.T) {
	t.Parallel()
	a, b := startTwoBrokers(t)
	ta, pa := startInserted(t, a)
	redirect := &proto.Redirect{Token: ta.key.Token, ServerID: "broker-b", Addr: b.addr, Fingerprint: b.fp, Fence: 7}
	pa.send(redirect)
	// b keeps redirecting to itself: hops 1, 2, 3, then the agent refuses.
	for hop := 1; hop <= proto.MaxHops; hop++ {
		pb := b.accept()
		if pb.hello.Hops != uint8(hop) {
			t.Fatalf("hello %d at b has hops %d; want %d", hop, pb.hello.Hops, hop)
		}
		expect[proto.TokenInserted](pb)
		pb.send(redirect)
	}
	ev := ta.out.wait("error")
	if ev["name"] != "too_many_hops" || ev["code"] != float64(proto.ErrTooManyHops) {
		t.Errorf("error event = %v; want too_many_hops", ev)
	}
	// Back home, without presenting the token again (it would loop).
	home := a.accept()
	if home.hello.Hops != 0 || home.hello.Fence != 0 {
		t.Errorf("hello back home = %+v; want no hops, no fence", home.hello)
	}
	home.ping(1) // no token re-presented before the Pong
	if got := b.accepted.Load(); got != proto.MaxHops {
		t.Errorf("connections to b = %d; want %d", got, proto.MaxHops)
	}
}

func TestAgentRedirectPinMismatch(t *testing.T) {
	t.Parallel()
	a, b := startTwoBrokers(t)
	ta, pa := startInserted(t, a)
	// The fingerprint is a's, but b answers at that address.
	pa.send(&proto.Redirect{Token: ta.key.Token, ServerID: "broker-b", Addr: b.addr, Fingerprint: a.fp, Fence: 3})
	ev := ta.out.wait("error")
	if ev["name"] != errRedirect || !strings.Contains(ev["message"].(string), "does not match") {
		t.Errorf("error event = %v; want %s about the pin", ev, errRedirect)
	}
	home := a.accept()
	if home.hello.Hops != 0 {
		t.Errorf("hello back home has hops %d; want 0", home.hello.Hops)
	}
	if got := b.accepted.Load(); got != 0 {
		t.Errorf("handshakes completed at b = %d; want 0", got)
	}
	// A redirect without a fingerprint is refused as well.
	home.send(&proto.Redirect{Token: ta.key.Token, ServerID: "broker-b", Addr: b.addr, Fence: 3})
	if ev := ta.out.wait("error"); ev["name"] != errRedirect {
		t.Errorf("error event = %v; want %s", ev, errRedirect)
	}
	a.accept()
	if got := b.accepted.Load(); got != 0 {
		t.Errorf("handshakes completed at b = %d; want 0", got)
	}
}

func TestAgentReconnect(t *testing.T) {
	t.Parallel()
	a := startBroker(t, "broker-a", time.Minute)
	ta, p := startInserted(t, a)
	p.c.Close()
	if ev := ta.out.wait("disconnected"); ev["error"] == "" {
		t.Errorf("disconnected event = %v; want an error text", ev)
	}
	p2 := a.accept()
	p2.inserted(ta.key.Token) // re-presented on the new connection
	ta.out.wait("connected")
}

// TestAgentReconnectResumeKey: the token whose session the terminal
// showed is presented again on the new connection with the ResumeKey of
// its last Attached (the broker resumes it without a login within its
// grace), after a Detached of a broker shutting down too (one that keeps
// its desktops lets the key in after its restart); any other Detached, or
// the token leaving the reader, forgets the key.
func TestAgentReconnectResumeKey(t *testing.T) {
	t.Parallel()
	a := startBroker(t, "broker-a", time.Minute)
	ta, p := startInserted(t, a)
	key := bytes.Repeat([]byte{7}, proto.ResumeKeyLen)
	p.send(&proto.Attached{SessionID: "s-1", Token: ta.key.Token, Endpoint: "wayland:/nonexistent", ServerID: "broker-a", ResumeKey: key})
	// reconnect drops the connection after the agent saw event and
	// returns how the agent presents the token on its next one.
	reconnect := func(event string) *proto.TokenInserted {
		t.Helper()
		ta.out.wait(event)
		p.c.Close()
		p = a.accept()
		ins := expect[proto.TokenInserted](p)
		if ins.Token != ta.key.Token {
			t.Fatalf("presented again as %+v; want %s", ins, ta.key.Token)
		}
		return ins
	}
	if ins := reconnect("attached"); !bytes.Equal(ins.Resume, key) {
		t.Fatalf("presented again as %+v; want the resume key", ins)
	}
	// The broker stopping: the key is kept for its next run.
	p.send(&proto.Detached{SessionID: "s-1", Reason: proto.DetachShutdown})
	if ins := reconnect("detached"); !bytes.Equal(ins.Resume, key) {
		t.Fatalf("presented again after the broker's shutdown as %+v; want the resume key", ins)
	}
	// Detached on a live connection: the key is spent.
	p.send(&proto.Detached{SessionID: "s-1", Reason: proto.DetachTakeover})
	if ins := reconnect("detached"); ins.Resume != nil {
		t.Fatalf("presented again after a Detached as %+v; want no resume key", ins)
	}
}

// The agent pings at the broker's interval and gives up after 3 missed
// pongs, then reconnects; all driven by a fake clock.
func TestAgentPingLoss(t *testing.T) {
	t.Parallel()
	a := startBroker(t, "broker-a", time.Second)
	clk := clock.NewFake(time.Now())
	ta := startAgent(t, a, func(c *Config) { c.Clock = clk; c.MinBackoff = time.Second; c.MaxBackoff = 4 * time.Second })
	p := a.accept()
	ta.out.wait("connected")
	advance := func() {
		t.Helper()
		deadline := time.Now().Add(waitBound)
		for clk.Pending() == 0 {
			if time.Now().After(deadline) {
				t.Fatal("no timer pending")
			}
			time.Sleep(time.Millisecond)
		}
		clk.Advance(time.Second)
	}
	advance()
	if ping := expect[proto.Ping](p); ping.Seq != 1 {
		t.Fatalf("ping seq = %d; want 1", ping.Seq)
	}
	// An answered ping resets the count. The broker's own ping, answered
	// after the pong was read, shows the agent has seen the pong.
	p.send(&proto.Pong{Seq: 1})
	p.ping(99)
	for seq := uint64(2); seq < 2+missedPongs; seq++ {
		advance()
		if ping := expect[proto.Ping](p); ping.Seq != seq {
			t.Fatalf("ping seq = %d; want %d", ping.Seq, seq)
		}
	}
	advance() // another interval without a pong: lost
	if ev := ta.out.wait("disconnected"); !strings.Contains(ev["error"].(string), "pings unanswered") {
		t.Errorf("disconnected event = %v; want pings unanswered", ev)
	}
	advance()
	advance() // the reconnect timer (backoff 1 s ± 20 %)
	a.accept()
	ta.out.wait("connected")
}

// TestAgentPairCodeTooLong: a code longer than any valid one
// (proto.MaxPairCodeLen) is refused before anything happens: no key
// generated, no phone asked to sign, no connection to the broker (an
// outside phone vendor saw such codes signed and sent, each costing the
// terminal's address one of its pairing attempts). A pairing cancelled
// says so (it exited 0 and silent on SIGTERM).
func TestAgentPairCodeTooLong(t *testing.T) {
	t.Parallel()
	ks, err := soft.OpenKeystore(filepath.Join(t.TempDir(), "tokens.json"))
	if err != nil {
		t.Fatal(err)
	}
	// No broker listens at Server: a dial would fail with another error.
	tcfg, err := proto.ClientTLSConfig("", bytes.Repeat([]byte{1}, 32), nil)
	if err != nil {
		t.Fatal(err)
	}
	ag, err := newAgent(Config{Server: "127.0.0.1:1", TLS: tcfg, TerminalID: "term-1", Keystore: ks, Timeout: waitBound,
		Logger: testLogger(t), Out: newOutput(t), JSON: true})
	if err != nil {
		t.Fatal(err)
	}
	code := strings.Repeat("A", proto.MaxPairCodeLen+1)
	if _, err := ag.Pair(context.Background(), code, "laptop", ""); err == nil || !strings.Contains(err.Error(), "at most 64") {
		t.Fatalf("Pair with a %d-byte code: %v; want refused for its length", len(code), err)
	}
	if keys := ks.List(); len(keys) != 0 {
		t.Fatalf("keystore after a refused code: %v; want no key generated", keys)
	}
	// Cancelled (a signal): an error saying so, not context.Canceled (the
	// command would exit 0 and print nothing), and no key saved.
	cctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := ag.Pair(cctx, "ABCD-EFGH-JKMN", "laptop", ""); err == nil || errors.Is(err, context.Canceled) || !strings.Contains(err.Error(), "cancelled") {
		t.Fatalf("Pair with a cancelled context: %v; want a pairing-cancelled error that is not context.Canceled", err)
	}
	ok := strings.Repeat("A", proto.MaxPairCodeLen)
	if _, err := ag.Pair(context.Background(), ok, "laptop", ""); err == nil || strings.Contains(err.Error(), "at most 64") {
		t.Fatalf("Pair with a %d-byte code: %v; want it tried (and the dial to fail)", len(ok), err)
	}
}

// TestAgentPairRetriesSameKey: a pairing answered "unavailable" is sent
// again on its connection (the same Pair: its signature is good for the
// connection), one whose connection ended after the Pair was sent is sent
// again with the same key, re-signed, on a new connection: the broker may
// have enrolled it and answers the same Pair Paired; the key is then
// saved. A new key would be refused as a used code, the enrolled one
// lost.
func TestAgentPairRetriesSameKey(t *testing.T) {
	t.Parallel()
	a := startBroker(t, "broker-a", time.Minute)
	out := newOutput(t)
	path, done := startPair(t, a, out, "abcd-efgh-jkmn", "")
	p := a.accept()
	first := expect[proto.Pair](p)
	checkPairSig(t, p, first)
	key := first.PublicKey
	p.send(&proto.Error{Code: proto.ErrUnavailable, Message: "pairing unavailable (registry out of reach); try again"})
	if ev := out.wait("waiting"); ev["in_ms"] != float64(1000) || !strings.Contains(ev["reason"].(string), "registry out of reach") {
		t.Errorf("waiting event %v; want the Pair sent again in 1 s, the broker's answer the reason", ev)
	}
	if again := expect[proto.Pair](p); !reflect.DeepEqual(again, first) {
		t.Fatalf("Pair sent again on its connection = %+v; want the first one, %+v", again, first)
	}
	p.c.Close()
	p = a.accept()
	last := expect[proto.Pair](p)
	checkPairSig(t, p, last)
	if !bytes.Equal(last.PublicKey, key) {
		t.Fatalf("Pair on a new connection sent another key; want the first one again")
	}
	p.send(&proto.Paired{Token: soft.TokenID(key), User: "alice"})
	var r pairResult
	select {
	case r = <-done:
	case <-time.After(waitBound):
		t.Fatal("Pair did not return")
	}
	if r.err != nil || r.token != soft.TokenID(key) {
		t.Fatalf("Pair = %q, %v; want %s", r.token, r.err, soft.TokenID(key))
	}
	reopened, err := soft.OpenKeystore(path)
	if err != nil {
		t.Fatal(err)
	}
	if k, err := reopened.Get("laptop"); err != nil || !bytes.Equal(k.Public, key) {
		t.Errorf("saved key = %+v, %v; want the key paired", k, err)
	}
}

func TestAgentPair(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name    string
		reply   func(pub []byte) any
		wantErr bool
		event   string
	}{
		{"paired", func(pub []byte) any { return &proto.Paired{Token: soft.TokenID(pub), User: "alice"} }, false, "paired"},
		{"refused", func([]byte) any {
			return &proto.Error{Code: proto.ErrPairing, Message: "pairing code invalid, expired or used"}
		}, true, "error"},
		{"wrong token id", func([]byte) any { return &proto.Paired{Token: "soft.other"} }, true, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			a := startBroker(t, "broker-a", time.Minute)
			out := newOutput(t)
			path, done := startPair(t, a, out, " abcd-efgh-jkmn ", "Alice's laptop")
			p := a.accept()
			pair := expect[proto.Pair](p)
			if pair.Code != "abcd-efgh-jkmn" || pair.Kind != "soft" || len(pair.PublicKey) != 32 || pair.Label != "Alice's laptop" {
				t.Errorf("pair = %+v; want the code, kind soft, a 32-byte key, the label", pair)
			}
			checkPairSig(t, p, pair)
			p.send(tt.reply(pair.PublicKey))
			var r pairResult
			select {
			case r = <-done:
			case <-time.After(waitBound):
				t.Fatal("Pair did not return")
			}
			if gotErr := r.err != nil; gotErr != tt.wantErr {
				t.Fatalf("Pair = %q, %v; want error %v", r.token, r.err, tt.wantErr)
			}
			if tt.event != "" {
				ev := out.wait(tt.event)
				if tt.event == "paired" && ev["token"] != soft.TokenID(pair.PublicKey) {
					t.Errorf("paired event = %v; want token %s", ev, soft.TokenID(pair.PublicKey))
				}
				if tt.event == "error" && ev["name"] != "pairing" {
					t.Errorf("error event = %v; want name pairing", ev)
				}
			}
			reopened, err := soft.OpenKeystore(path)
			if err != nil {
				t.Fatal(err)
			}
			key, err := reopened.Get("laptop")
			if tt.wantErr {
				if !errors.Is(err, soft.ErrNotFound) {
					t.Errorf("keystore after a failed pairing: Get = %+v, %v; want ErrNotFound", key, err)
				}
				return
			}
			if err != nil || key.Token != r.token || !bytes.Equal(key.Public, pair.PublicKey) || key.Label != "Alice's laptop" {
				t.Errorf("saved key = %+v, %v; want token %s with the sent public key", key, err, r.token)
			}
		})
	}
}

type pairResult struct {
	token string
	err   error
}

// startPair starts an agent with a new keystore (at path) that pairs a
// soft token "laptop" (label) with code at broker a; its result comes on
// done.
func startPair(t *testing.T, a *fakeBroker, out *output, code, label string) (path string, done <-chan pairResult) {
	t.Helper()
	tcfg, _ := proto.ClientTLSConfig("", a.fp, nil)
	path = filepath.Join(t.TempDir(), "hotdesk", "tokens.json")
	ks, err := soft.OpenKeystore(path)
	if err != nil {
		t.Fatal(err)
	}
	ag, err := newAgent(Config{Server: a.addr, TLS: tcfg, TerminalID: "term-1", Keystore: ks, Timeout: waitBound,
		Logger: testLogger(t), Out: out, JSON: true})
	if err != nil {
		t.Fatal(err)
	}
	ch := make(chan pairResult, 1)
	go func() {
		tok, err := ag.Pair(context.Background(), code, "laptop", label)
		ch <- pairResult{tok, err}
	}()
	return path, ch
}

// TestAgentRedirectToDeadOwnerRetried: a redirect to a broker that does not
// answer (dead or restarting) is not lost: the agent goes home and presents
// the token again.
// TestAgentRedirectToDeadOwnerRetried: a redirect whose target does not
// answer (the owner died and the registry still names it) does not lose
// the insert: the token is presented again, on the connection the
// redirect came on (no reconnect), at a short steady interval, until the
// group answers otherwise.
func TestAgentRedirectToDeadOwnerRetried(t *testing.T) {
	t.Parallel()
	a := startBroker(t, "broker-a", time.Minute)
	dead := testutil.FreeAddr(t)
	ta, pa := startInserted(t, a)
	const attempts = 4
	for i := 0; i < attempts; i++ {
		pa.send(&proto.Redirect{Token: ta.key.Token, ServerID: "broker-dead", Addr: dead, Fingerprint: a.fp, Fence: 5})
		if ev := ta.out.wait("error"); ev["name"] != errRedirect {
			t.Errorf("error event = %v; want %s", ev, errRedirect)
		}
		// Presented again on the same connection.
		if ins := expect[proto.TokenInserted](pa); ins.Token != ta.key.Token {
			t.Fatalf("attempt %d: TokenInserted %+v; want %s presented again", i+1, ins, ta.key.Token)
		}
	}
	// The owner's lease expired: home takes the token.
	pa.send(&proto.Attached{SessionID: "s5", Token: ta.key.Token, Endpoint: "rdp://a", ServerID: "broker-a"})
	ta.out.wait("attached")
	pa.ping(1)
	if got := a.accepted.Load(); got != 1 {
		t.Errorf("connections to home = %d; want 1 (retries on the connection the redirect came on)", got)
	}
}

// TestOwnerRetryDelay: steady attempts while a dead owner's lease may still
// name it, then a backoff to maxRedirectBackoff.
func TestOwnerRetryDelay(t *testing.T) {
	t.Parallel()
	for _, tt := range []struct {
		fails int
		want  time.Duration
	}{{1, ownerRetry}, {ownerFastRetries, ownerRetry}, {ownerFastRetries + 1, 2 * ownerRetry}, {ownerFastRetries + 3, 8 * ownerRetry}, {ownerFastRetries + 4, maxRedirectBackoff}, {1000, maxRedirectBackoff}} {
		a := &agent{redirFails: tt.fails}
		if got := a.ownerRetryDelay(); got != tt.want {
			t.Errorf("delay after %d failures = %v; want %v", tt.fails, got, tt.want)
		}
	}
}

// TestAgentHopsPerLookup: hops count one lookup's redirect chain. A
// terminal redirected for one token and then for others (each a new
// lookup) says Hops 1 every time, never accumulating towards the limit.
func TestAgentHopsPerLookup(t *testing.T) {
	t.Parallel()
	a, b := startTwoBrokers(t)
	_, pa := startInserted(t, a)
	// Redirects about other tokens (new lookups), back and forth.
	p, other := pa, []*fakeBroker{b, a}
	for i := 0; i < 2*proto.MaxHops; i++ {
		tok := fmt.Sprintf("uid.%02x", i)
		to := other[i%2]
		p = p.redirect(tok, to, int64(10+i))
		if p.hello.Hops != 1 || p.hello.Token != tok {
			t.Fatalf("redirect %d: hello %+v; want hops 1 for token %s", i, p.hello, tok)
		}
	}
}

// TestAgentRetriesUnavailable: a token answered "unavailable" (broker not
// ready, owner unreachable) is presented again while it stays inserted,
// until an answer other than unavailable; a removed token is not.
func TestAgentRetriesUnavailable(t *testing.T) {
	t.Parallel()
	a := startBroker(t, "broker-a", time.Minute)
	ta := startAgent(t, a, func(c *Config) { c.Insert = []string{"default"} })
	p := a.accept()
	for i := 0; i < 3; i++ {
		p.inserted(ta.key.Token)
		p.send(&proto.Error{Code: proto.ErrUnavailable, Message: "server not ready", Token: ta.key.Token})
	}
	p.inserted(ta.key.Token)
	p.send(&proto.Attached{SessionID: "s1", Token: ta.key.Token, Endpoint: "rdp://x:1", ServerID: "broker-a"})
	ta.out.wait("attached")

	// Removed while a retry is pending: nothing more is presented.
	p.send(&proto.Error{Code: proto.ErrUnavailable, Message: "owner unreachable", Token: ta.key.Token})
	ta.command(t, "remove default")
	p.removed(ta.key.Token)
	p.ping(1)
	p.quiet(2)
}

// TestAgentLockoutNotRetried: a token refused because its user is locked
// out after failed logins is not presented again while it stays inserted:
// the lockout lasts 30 s and more, and each retry was one more audit line
// and lockout event at the broker (8 for one lockout, 2 s apart). A token
// refused for coming too fast is still retried.
func TestAgentLockoutNotRetried(t *testing.T) {
	t.Parallel()
	a := startBroker(t, "broker-a", time.Minute)
	ta := startAgent(t, a, func(c *Config) { c.Insert = []string{"default"} })
	p := a.accept()
	p.inserted(ta.key.Token)
	p.send(&proto.Error{Code: proto.ErrRateLimited, Message: "too many failed logins; try again later", Token: ta.key.Token, Detail: proto.DetailLockedOut})
	ta.out.wait("error")
	p.quiet(1)

	// Presented again by the person: a new insertion.
	ta.command(t, "remove default")
	p.removed(ta.key.Token)
	ta.command(t, "insert default")
	p.inserted(ta.key.Token)
	p.send(&proto.Error{Code: proto.ErrRateLimited, Message: "too many logins in progress; try again shortly", Token: ta.key.Token})
	p.inserted(ta.key.Token)
}

// TestAgentReturnsHome: a terminal that a redirect led to another broker
// stays there while it shows the session, and goes back to its home broker
// once it is idle (session detached, no token inserted; PROTOCOL.md §7.5),
// where the next insert starts.
func TestAgentReturnsHome(t *testing.T) {
	t.Parallel()
	a, b := startTwoBrokers(t)
	ta, pa := startInserted(t, a)
	pb := pa.redirect(ta.key.Token, b, 4)
	expect[proto.TokenInserted](pb)
	pb.send(&proto.Attached{SessionID: "s4", Token: ta.key.Token, Endpoint: "rdp://b", ServerID: "broker-b", Resumed: true})
	ta.out.wait("attached")

	// While the session is shown the agent stays.
	pb.ping(1)
	// Pulled, but not yet detached: it stays for the broker's answer.
	ta.command(t, "remove default")
	pb.removed(ta.key.Token)
	pb.ping(2) // still at b before Detached
	pb.send(&proto.Detached{SessionID: "s4", Reason: proto.DetachTokenRemoved})

	// Idle: back home, with no hops and nothing presented.
	home := a.accept()
	if home.hello.Hops != 0 || home.hello.Fence != 0 || home.hello.Token != "" {
		t.Errorf("hello back home = %+v; want no hops, fence or token", home.hello)
	}
	if m, err := pb.c.Recv(); err == nil {
		t.Errorf("b got %v after the terminal went home; want the connection closed", m.Type)
	}
	// The next insert starts at home.
	ta.command(t, "insert default")
	home.inserted(ta.key.Token)
	if got := b.accepted.Load(); got != 1 {
		t.Errorf("connections to b = %d; want 1", got)
	}
}

// resumeServer is a broker-like TLS server (the broker's own TLS settings,
// which issue session tickets) that records, per completed TLS handshake,
// whether it was a resumption.
type resumeServer struct {
	addr    string
	fp      []byte
	resumed chan bool
	ln      *fakeListener
}

// listenResume starts a resumeServer on addr ("" for a free port).
func listenResume(t *testing.T, addr string) (*resumeServer, error) {
	t.Helper()
	cert, fp := testCert(t)
	s := &resumeServer{fp: fp, resumed: make(chan bool, 16)}
	cfg := proto.ServerTLSConfig(cert)
	verify := cfg.VerifyConnection
	cfg.VerifyConnection = func(cs tls.ConnectionState) error {
		s.resumed <- cs.DidResume
		return verify(cs)
	}
	var err error
	s.ln, err = listenFake(t, addr, func(raw net.Conn) {
		c := proto.NewConn(tls.Server(raw, cfg), proto.WithReadTimeout(waitBound))
		defer c.Close()
		if _, _, err := proto.ServerHandshake(c, "resume", time.Minute); err != nil {
			return
		}
		c.Recv() // until the client closes
	})
	if err != nil {
		return nil, err
	}
	s.addr = s.ln.addr()
	return s, nil
}

func (s *resumeServer) close() { s.ln.close() }

// TestAgentTLSResumptionKeepsPin: the agent resumes TLS sessions with a
// broker it connected to before (no full handshake on a redirect or a
// failover to it), and a resumed session never bypasses the pin: a dial
// that pins another fingerprint fails although a ticket for that address
// is cached, and a different server at the same address (which cannot
// resume another's ticket) fails the pin after a full handshake.
func TestAgentTLSResumptionKeepsPin(t *testing.T) {
	// Not parallel: it listens again on the port it has just released,
	// which a parallel test could take meanwhile.
	srv, err := listenResume(t, "")
	if err != nil {
		t.Fatal(err)
	}
	other, err := listenResume(t, "")
	if err != nil {
		t.Fatal(err)
	}
	ks := mustKeystore(t)
	a, err := newAgent(Config{Server: srv.addr, TLS: prototest.PinnedTLS(t, srv.fp), TerminalID: "term-r", Keystore: ks, Timeout: waitBound})
	if err != nil {
		t.Fatal(err)
	}
	ctx := t.Context()
	dial := func(pin []byte) (*link, error) {
		return a.dialOne(ctx, target{addr: srv.addr, tls: prototest.PinnedTLS(t, pin)})
	}
	wantResumed := func(want bool) {
		t.Helper()
		select {
		case got := <-srv.resumed:
			if got != want {
				t.Fatalf("server saw resumed = %v; want %v", got, want)
			}
		case <-time.After(waitBound):
			t.Fatal("no TLS handshake at the server")
		}
	}
	for i, want := range []bool{false, true, true} {
		l, err := dial(srv.fp)
		if err != nil {
			t.Fatalf("dial %d: %v", i, err)
		}
		wantResumed(want)
		if got := l.c.NetConn().(*tls.Conn).ConnectionState().DidResume; got != want {
			t.Errorf("dial %d: client resumed = %v; want %v", i, got, want)
		}
		l.close()
	}

	// A redirect naming this address with another broker's fingerprint:
	// the cached session is offered and accepted by the server, and the
	// pin check on it refuses the connection.
	if _, err := dial(other.fp); !errors.Is(err, proto.ErrPinMismatch) {
		t.Fatalf("dial pinning another fingerprint = %v; want %v", err, proto.ErrPinMismatch)
	}
	wantResumed(true)

	// Another server at the same address cannot resume the ticket: a full
	// handshake, and its certificate fails the pin.
	addr := srv.addr
	srv.close()
	var imp *resumeServer
	for i := 0; imp == nil; i++ {
		// The port was just released by the real server's listener.
		if imp, err = listenResume(t, addr); err != nil && i == 50 {
			t.Fatalf("cannot listen on %s again: %v", addr, err)
		}
		if imp == nil {
			time.Sleep(20 * time.Millisecond)
		}
	}
	if _, err := a.dialOne(ctx, target{addr: addr, tls: prototest.PinnedTLS(t, srv.fp)}); !errors.Is(err, proto.ErrPinMismatch) {
		t.Fatalf("dial of an impostor at a cached address = %v; want %v", err, proto.ErrPinMismatch)
	}
	select {
	case got := <-imp.resumed:
		if got {
			t.Fatal("the impostor resumed a session it never issued")
		}
	case <-time.After(waitBound):
		t.Fatal("no TLS handshake at the impostor")
	}
}

// TestAgentAdminLockNotUndone: after a Detached for a lost lease (reason 6)
// the still-inserted token is presented again, but after an administrator
// locked or detached the session (reason 5) it is not: re-presenting it
// would undo the lock (and, with the token also at another terminal, take
// the session back from there).
func TestAgentAdminLockNotUndone(t *testing.T) {
	t.Parallel()
	a := startBroker(t, "broker-a", time.Minute)
	ta := startAgent(t, a, func(c *Config) { c.Insert = []string{"default"} })
	p := a.accept()
	attach := func() {
		t.Helper()
		p.inserted(ta.key.Token)
		p.send(&proto.Attached{SessionID: "s1", Token: ta.key.Token, Endpoint: "rdp://x:1", ServerID: "broker-a"})
		ta.out.wait("attached")
	}
	attach()
	p.send(&proto.Detached{SessionID: "s1", Reason: proto.DetachLocked, Message: "server lost its registry lease; present the token again shortly"})
	attach() // presented again by itself

	p.send(&proto.Detached{SessionID: "s1", Reason: proto.DetachAdmin, Message: "session locked by an administrator"})
	ta.out.wait("detached")
	p.quiet(1)
}

// TestAgentParkedRemoval: while a redirect's dial runs, the connection it
// came on is kept; a token pulled meanwhile is reported there (its session
// must not stay attached if the terminal comes back to that connection),
// and when the target never answers the redirected token is presented
// there again.
func TestAgentParkedRemoval(t *testing.T) {
	t.Parallel()
	a := startBroker(t, "broker-a", time.Minute)
	// A target that accepts TCP and never answers the TLS handshake.
	hole, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { hole.Close() })
	ta := startAgent(t, a, func(c *Config) {
		c.Insert = []string{"default"}
		c.Timeout = 5 * time.Second // the dial to the hole gives up then; the removal comes well before, even on a loaded machine
	})
	other, err := ta.ks.Generate("other", "")
	if err != nil {
		t.Fatal(err)
	}
	pa := a.accept()
	expect[proto.TokenInserted](pa)
	pa.send(&proto.Attached{SessionID: "s1", Token: ta.key.Token, Endpoint: "rdp://a", ServerID: "broker-a"})
	ta.out.wait("attached")

	ta.command(t, "insert other")
	pa.inserted(other.Token)
	pa.send(&proto.Redirect{Token: other.Token, ServerID: "broker-hole", Addr: hole.Addr().String(), Fingerprint: a.fp, Fence: 9})
	ta.out.wait("redirect")
	ta.command(t, "remove default")
	pa.removed(ta.key.Token) // on the parked connection
	pa.send(&proto.Detached{SessionID: "s1", Reason: proto.DetachTokenRemoved})
	if ev := ta.out.wait("detached"); ev["session"] != "s1" {
		t.Errorf("detached = %v; want s1", ev)
	}
	// The target never answers: the redirected token again, same connection.
	pa.inserted(other.Token)
	if got := a.accepted.Load(); got != 1 {
		t.Errorf("connections to a = %d; want 1", got)
	}
}

// TestAgentInsertWhileDisconnectedReconnects: a token inserted while the
// broker is away (the agent between two reconnect attempts, which back off
// to 30 s) makes the agent try at once and present it: a person at the
// desk whose card goes in right after the broker came back waited out the
// backoff on "Server unavailable — reconnecting…". The fake clock never
// fires the reconnect timer here.
func TestAgentInsertWhileDisconnectedReconnects(t *testing.T) {
	t.Parallel()
	a := startBroker(t, "broker-a", time.Minute)
	clk := clock.NewFake(time.Now())
	ta := startAgent(t, a, func(c *Config) { c.Clock = clk; c.MinBackoff = 30 * time.Second; c.MaxBackoff = 30 * time.Second })
	p := a.accept()
	ta.out.wait("connected")
	p.c.Close()
	ta.out.wait("reconnecting")
	ta.command(t, "insert default")
	p2 := a.accept()
	p2.inserted(ta.key.Token)
}

// TestJitterCeiling: the ±20% jitter never takes a delay past its ceiling
// (a reconnect backed off to max_backoff waited up to 36 s of a 30 s
// maximum), and keeps a spread below it.
func TestJitterCeiling(t *testing.T) {
	t.Parallel()
	const d, ceiling = 30 * time.Second, 30 * time.Second
	lo, hi := time.Duration(1<<62), time.Duration(0)
	for range 2000 {
		j := jitter(d, ceiling)
		lo, hi = min(lo, j), max(hi, j)
	}
	if hi > ceiling || lo < 24*time.Second || lo >= ceiling {
		t.Fatalf("jitter of %v capped at %v spans %v..%v; want within 24s..30s and spread", d, ceiling, lo, hi)
	}
	if j := jitter(time.Second, 0); j < 800*time.Millisecond || j > 1200*time.Millisecond {
		t.Fatalf("jitter(1s, no ceiling) = %v; want within ±20%%", j)
	}
}

// startAnswered starts a broker and an agent on a fake clock, prompted
// for the PIN of its token "default" (startPrompted), and answers "0000".
// It returns the agent, its connection, the clock and the answer the
// broker got.
func startAnswered(t *testing.T) (*testAgent, *peer, *clock.Fake, *proto.AuthAnswer) {
	t.Helper()
	b := startBroker(t, "broker-a", time.Minute)
	clk := clock.NewFake(time.Now())
	ta, p := startPrompted(t, b, func(c *Config) { c.Clock = clk })
	ta.command(t, "answer 0000")
	return ta, p, clk, expect[proto.AuthAnswer](p)
}

// TestAgentWrongPINAsksAgain: a login refused after the person typed an
// answer (a wrong PIN), the card still in, presents the card again after
// wrongPINPause, so the person types the PIN again without pulling it; a
// refusal nobody answered (no PIN typed in time) does not.
func TestAgentWrongPINAsksAgain(t *testing.T) {
	t.Parallel()
	ta, p, clk, ans := startAnswered(t)
	if ans.ID != 1 {
		t.Fatalf("answer = %+v; want id 1", ans)
	}
	p.send(&proto.Error{Code: proto.ErrAuthFailed, Message: "authentication failed", Token: ta.key.Token})
	ta.out.wait("error")
	p.ping(5) // the loop handled the Error (the event comes before its timer)
	clk.Advance(wrongPINPause)
	p.inserted(ta.key.Token) // asked again

	// Nobody answers this time: the refusal says so and nothing follows.
	p.send(&proto.AuthPrompt{ID: 2, Style: proto.PromptEchoOff, Text: "PIN: "})
	ta.out.wait("prompt")
	p.send(&proto.Cancel{ID: 2})
	p.send(&proto.Error{Code: proto.ErrAuthFailed, Message: "authentication failed: no answer in time", Token: ta.key.Token, Detail: proto.DetailNoAnswer})
	ta.out.wait("error")
	p.ping(6)
	clk.Advance(10 * wrongPINPause)
	p.ping(7) // the next message is the Pong: the card was not presented again
}

// TestAgentCancelNotAskedAgain: a login the person cancelled at a prompt
// (Esc) is not presented again, even after a PIN typed at an earlier prompt
// of the same login ("login cancelled at the terminal" is auth_failed, as a
// wrong PIN is), nor with an answer left from a login that ended otherwise
// (the card pulled meanwhile).
func TestAgentCancelNotAskedAgain(t *testing.T) {
	t.Parallel()
	ta, p, clk, _ := startAnswered(t)
	p.send(&proto.AuthPrompt{ID: 2, Style: proto.PromptEchoOff, Text: "New PIN: "})
	ta.out.wait("prompt")
	ta.command(t, "cancel")
	expect[proto.Cancel](p)
	p.send(&proto.Error{Code: proto.ErrAuthFailed, Message: "login cancelled at the terminal", Token: ta.key.Token})
	ta.out.wait("error")
	p.ping(5) // the loop handled the Error
	clk.Advance(10 * wrongPINPause)
	p.ping(6) // the card was not presented again

	// An answer whose login ended without a verdict (the card pulled at
	// the broker's end) does not make the next refusal, with nothing
	// typed, a wrong PIN.
	ta.command(t, "remove default")
	p.removed(ta.key.Token)
	ta.promptPIN(t, p, 3)
	ta.command(t, "answer 1234")
	expect[proto.AuthAnswer](p)
	p.send(&proto.Error{Code: proto.ErrCancelled, Message: "login abandoned: token removed", Token: ta.key.Token})
	ta.out.wait("error")
	ta.command(t, "remove default")
	p.removed(ta.key.Token)
	ta.command(t, "insert default")
	p.inserted(ta.key.Token)
	p.send(&proto.Error{Code: proto.ErrAuthFailed, Message: "authentication failed", Token: ta.key.Token})
	ta.out.wait("error")
	p.ping(7)
	clk.Advance(10 * wrongPINPause)
	p.ping(8)
}

// TestStaleRepresentIgnored: a presentation timer that fired while its
// token was pulled and put back (its send still waiting for the loop) is
// stale: it neither presents the token nor drops the timer scheduled
// since, which would then run untracked and present the token twice.
func TestStaleRepresentIgnored(t *testing.T) {
	t.Parallel()
	clk := clock.NewFake(time.Unix(1000, 0))
	a := &agent{clk: clk, represent: make(chan representation, 1), stopped: make(chan struct{})}
	a.scheduleRepresent("soft.x", time.Second)
	clk.Advance(time.Second) // fires: its presentation waits in the channel
	stale := <-a.represent
	a.insertDone("soft.x")                     // pulled …
	a.scheduleRepresent("soft.x", time.Second) // … put back, refused, retried
	a.representDue(stale)
	if a.retries.timers["soft.x"] == nil {
		t.Fatal("the stale presentation dropped the timer scheduled after it")
	}
	clk.Advance(time.Second)
	if fresh := <-a.represent; fresh.gen == stale.gen {
		t.Fatalf("the new timer carries the stale generation %d", fresh.gen)
	}
}

// TestReconnectNowBounded: an insertion while the broker is away dials at
// once, but at most once per MinBackoff: a flapping reader must not turn
// into a dial per event.
func TestReconnectNowBounded(t *testing.T) {
	t.Parallel()
	clk := clock.NewFake(time.Unix(1000, 0))
	a := &agent{clk: clk, retry: make(chan struct{}, 1), cfg: Config{MinBackoff: time.Second}}
	a.lastDial = clk.Now() // a dial just failed; the next waits for its backoff
	a.retrying = clk.AfterFunc(time.Hour, func() {})
	a.reconnectNow()
	select {
	case <-a.retry:
		t.Fatal("reconnected at once after a dial that just started")
	default:
	}
	clk.Advance(time.Second)
	a.reconnectNow()
	select {
	case <-a.retry:
	default:
		t.Fatal("no early reconnect a MinBackoff after the last dial")
	}
}

// TestStatusInInputOrder: "status" reports the tokens inserted when it was
// read, not after the commands that follow it on stdin. insert and remove
// act on the provider as soon as they are read while status waits for the
// loop, so "status" then "remove" reported the token gone (found running
// the README's by-hand steps with a script on stdin).
func TestStatusInInputOrder(t *testing.T) {
	t.Parallel()
	a := startBroker(t, "broker-a", time.Minute)
	ta, p := startInserted(t, a)
	for i := range 20 {
		ta.command(t, "status")
		ta.command(t, "remove default")
		p.removed(ta.key.Token)
		st := ta.out.wait("status")
		if ins, _ := st["inserted"].([]any); len(ins) != 1 || ins[0] != ta.key.Token {
			t.Fatalf("round %d: status inserted = %v; want [%s] (the remove came after the status)", i, st["inserted"], ta.key.Token)
		}
		ta.command(t, "insert default")
		p.inserted(ta.key.Token)
	}
}

// TestAgentRunLeavesNoGoroutine: Run waits for every goroutine it starts.
// As it returns here, one waits for a phone signing a challenge, one reads
// the connection a Redirect came on (kept while the redirect's dial runs),
// one dials the redirect's target (which never answers the TLS handshake)
// and one reads stdin; the soft tokens and the card readers stream from
// goroutines of their own. The phone, like a card in the middle of an
// APDU, ends the exchange only some time after it is cancelled: once Run
// has returned, or after 3 leftGrace (a Run that waits for it has waited
// then). Before, Run returned while these were still running, the phone's
// until after the check (leftGrace).
func TestAgentRunLeavesNoGoroutine(t *testing.T) {
	t.Parallel()
	a, fc, ta, p := startCardAgent(t, nil)
	signing := make(chan struct{})
	fc.mu.Lock()
	fc.sign = func(ctx context.Context, _ string, _ []byte) ([]byte, error) {
		close(signing)
		<-ctx.Done()
		select { // the exchange in flight ends
		case <-ta.done:
		case <-time.After(3 * leftGrace):
		}
		return nil, ctx.Err()
	}
	fc.mu.Unlock()
	pub, _, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	p.send(&proto.Challenge{ID: 1, Token: nfc.HCETokenID(pub), Nonce: nonce(t), ServerID: "broker-a"})
	testutil.Recv(t, signing, waitBound, "the phone was not asked to sign")

	silent, err := listenFake(t, "", func(c net.Conn) { io.Copy(io.Discard, c) })
	if err != nil {
		t.Fatal(err)
	}
	ta.command(t, "insert default")
	p.inserted(ta.key.Token)
	p.send(&proto.Redirect{Token: ta.key.Token, ServerID: "broker-b", Addr: silent.addr(), Fingerprint: a.fp, Fence: 1})
	testutil.WaitFor(t, waitBound, "the redirect's dial connected to its silent target", func() bool { return silent.accepted() == 1 })

	close(ta.lines) // end of input: quit
	testutil.Recv(t, ta.done, waitBound, "agent did not quit at end of input")
	if ta.err != nil {
		t.Errorf("Run = %v; want nil at end of input", ta.err)
	}
	if len(ta.left) > 0 {
		t.Fatalf("%d goroutines of Run still running after it returned:\n\n%s", len(ta.left), strings.Join(ta.left, "\n\n"))
	}
}

// TestTypedAheadAnswerExpires: an answer typed on stdin while no prompt
// is pending waits for the next prompt a minute at most (answerTypeAhead):
// one typed long before, perhaps for the last person's card, is not sent
// to a prompt that comes minutes later, perhaps for the next person's. A
// scripted answer (-answer) waits for its prompt however long.
func TestTypedAheadAnswerExpires(t *testing.T) {
	t.Parallel()
	clk := clock.NewFake(time.Unix(1000, 0))
	b := startBroker(t, "broker-a", time.Hour) // no ping while the clock is advanced
	ta := startAgent(t, b, func(c *Config) { c.Clock = clk; c.Answers = []string{"scripted"} })
	p := b.accept()
	ta.out.wait("connected")
	ta.command(t, "answer typed-long-ago")
	p.ping(1) // the agent has queued it
	clk.Advance(answerTypeAhead + time.Second)
	ta.promptPIN(t, p, 1)
	if ans := expect[proto.AuthAnswer](p); ans.ID != 1 || ans.Text != "scripted" {
		t.Fatalf("answer = %+v; want the scripted answer", ans)
	}
	p.send(&proto.AuthPrompt{ID: 2, Style: proto.PromptEchoOff, Text: "PIN: "})
	ta.out.wait("prompt")
	ta.command(t, "answer mine")
	if ans := expect[proto.AuthAnswer](p); ans.ID != 2 || ans.Text != "mine" {
		t.Fatalf("answer = %+v; want id 2, the answer typed for it (not one typed long before)", ans)
	}
	// Typed ahead just before its prompt: sent.
	ta.command(t, "answer ahead")
	p.ping(2)
	p.send(&proto.AuthPrompt{ID: 3, Style: proto.PromptEchoOff, Text: "PIN: "})
	if ans := expect[proto.AuthAnswer](p); ans.ID != 3 || ans.Text != "ahead" {
		t.Fatalf("answer = %+v; want id 3, the answer typed ahead", ans)
	}
}

// TestAgentRefusedRetriesSoon: while its broker refuses the connection
// (hotdeskd restarting, or waiting for etcd before it listens after a
// site's power cut) the agent tries again within refusedMaxBackoff, however
// long max_backoff is: it waited up to max_backoff (30 s) after its broker
// was serving again. A broker that does not answer at all (a host down)
// is tried again after the backoff as before. The fake clock never moves by
// itself.
func TestAgentRefusedRetriesSoon(t *testing.T) {
	t.Parallel()
	refused := testutil.FreeAddr(t)                 // nothing listens there
	silent, err := net.Listen("tcp", "127.0.0.1:0") // never accepts: the handshake times out
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { silent.Close() })

	b := startBroker(t, "broker-a", time.Minute)
	start := func(addr string) (*clock.Fake, func() time.Duration) {
		clk := clock.NewFake(time.Now())
		ta := startAgent(t, b, func(c *Config) {
			c.Clock, c.Service, c.Server = clk, true, addr
			c.Timeout, c.MinBackoff, c.MaxBackoff = 200*time.Millisecond, 30*time.Second, 30*time.Second
		})
		return clk, func() time.Duration {
			t.Helper()
			ev := ta.out.wait("reconnecting")
			return time.Duration(ev["in_ms"].(float64)) * time.Millisecond
		}
	}
	bound := refusedMaxBackoff * 12 / 10 // ±20% jitter
	clk, in := start(refused)
	for round := range 3 {
		if d := in(); d > bound {
			t.Fatalf("round %d: refused, reconnecting in %v; want at most %v", round, d, bound)
		}
		clk.Advance(bound)
	}
	_, in = start(silent.Addr().String())
	if d := in(); d < 24*time.Second {
		t.Fatalf("unanswered, reconnecting in %v; want the 30 s backoff (±20%%, at most 30 s)", d)
	}
}

// TestAllRefused: a group's dial error (one per broker tried, joined) is
// "refused" only if every broker refused.
func TestAllRefused(t *testing.T) {
	t.Parallel()
	addr := testutil.FreeAddr(t)
	_, err := net.Dial("tcp", addr) // nothing listens: refused
	refused := fmt.Errorf("proto: dial %s: %w", addr, err)
	timeout := fmt.Errorf("handshake with b:1: %w", context.DeadlineExceeded)
	for _, c := range []struct {
		err  error
		want bool
	}{
		{refused, true},
		{errors.Join(refused, refused), true},
		{errors.Join(refused, timeout), false},
		{errors.Join(), false},
		{timeout, false},
		{errNoCandidates, false},
		{nil, false},
	} {
		if got := allRefused(c.err); got != c.want {
			t.Errorf("allRefused(%v) = %v; want %v", c.err, got, c.want)
		}
	}

	// A real group's dial: two brokers that refuse; then one that
	// refuses and one that never answers.
	silent, err := net.Listen("tcp", "127.0.0.1:0") // never accepts
	if err != nil {
		t.Fatal(err)
	}
	defer silent.Close()
	for _, c := range []struct {
		servers []string
		want    bool
	}{
		{[]string{testutil.FreeAddr(t), testutil.FreeAddr(t)}, true},
		{[]string{testutil.FreeAddr(t), silent.Addr().String()}, false},
	} {
		g, err := newGroup(c.servers, [][]byte{bytes.Repeat([]byte{1}, 32)}, nil, "")
		if err != nil {
			t.Fatal(err)
		}
		a, err := newAgent(Config{Group: g, TerminalID: "t", Keystore: mustKeystore(t), Timeout: 200 * time.Millisecond})
		if err != nil {
			t.Fatal(err)
		}
		_, err = a.dial(t.Context(), target{})
		if got := allRefused(err); err == nil || got != c.want {
			t.Errorf("group %v: dial = %v, allRefused %v; want %v", c.servers, err, got, c.want)
		}
	}
}
