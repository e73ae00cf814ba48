package main

import (
	"bufio"
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/hotdesk/hotdesk/cmd/internal/adminapi"
	"github.com/hotdesk/hotdesk/internal/testutil"
	"github.com/hotdesk/hotdesk/proto"
	"github.com/hotdesk/hotdesk/tokens/soft"
)

// scrape returns /metrics of the daemon at addr.
func scrape(t *testing.T, addr string) string {
	t.Helper()
	_, body := httpGet(t, "http://"+addr+"/metrics")
	return body
}

// httpGet returns the status and body (its first 4 MiB) of a GET of url,
// failing the test if there is no answer.
func httpGet(t *testing.T, url string) (int, string) {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 4<<20))
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	return resp.StatusCode, string(b)
}

// sample is the value of metric name with exactly the given labels (an
// empty value: the label absent or empty) in body, -1 if there is none.
func sample(body, name string, labels map[string]string) float64 {
	sc := bufio.NewScanner(strings.NewReader(body))
	for sc.Scan() {
		line := sc.Text()
		rest, ok := strings.CutPrefix(line, name)
		if !ok || (rest != "" && rest[0] != '{' && rest[0] != ' ') {
			continue
		}
		got := map[string]string{}
		if rest[0] == '{' {
			end := strings.IndexByte(rest, '}')
			if end < 0 {
				continue
			}
			for _, kv := range strings.Split(rest[1:end], ",") {
				if k, v, ok := strings.Cut(kv, "="); ok {
					if v, err := strconv.Unquote(v); err == nil && v != "" {
						got[k] = v
					}
				}
			}
			rest = rest[end+1:]
		}
		match := len(got) == 0
		want := 0
		for k, v := range labels {
			if v != "" {
				want++
				match = got[k] == v
				if !match {
					break
				}
			}
		}
		if !match || len(got) != want {
			continue
		}
		v, err := strconv.ParseFloat(strings.TrimSpace(rest), 64)
		if err == nil {
			return v
		}
	}
	return -1
}

// loginAttempt inserts token at c, answers a prompt with answer (none if
// ""), and returns the first Attached or Error.
func loginAttempt(ctx context.Context, c *proto.Conn, token, answer string) (any, error) {
	if err := c.Send(&proto.TokenInserted{Token: token, Reader: "lim"}); err != nil {
		return nil, err
	}
	for {
		_ = c.NetConn().SetReadDeadline(time.Now().Add(30 * time.Second))
		m, err := c.Recv()
		if err != nil {
			return nil, err
		}
		switch b := m.Body.(type) {
		case *proto.AuthPrompt:
			if answer == "" {
				return b, nil
			}
			if err := c.Send(&proto.AuthAnswer{ID: b.ID, Text: answer}); err != nil {
				return nil, err
			}
		case *proto.Attached, *proto.Error:
			return b, nil
		case *proto.Ping:
			_ = c.Send(&proto.Pong{Seq: b.Seq})
		}
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
	}
}

// TestLimitMetricsE2E provokes every limit of a real hotdeskd once —
// connection caps on both listeners, the server's session cap, the per-user
// session limit, attach tickets per session, pending logins per user, a
// login lockout, pairing rate limiting — and checks that each shows in
// /metrics under its own label, that series carry no user, token or
// address, and that nothing unprovoked moved. Budget: ~20 s (two real
// desktops).
func TestLimitMetricsE2E(t *testing.T) {
	requireSecureE2E(t)
	t.Parallel() // its own daemon, data dir, ports, kiosk accounts
	bin := buildBinaries(t)
	dir := t.TempDir()
	// alice, bob and dan log in with the card alone: the account stack
	// of "hotdesk" must know them.
	pamDir := testutil.MatrixServices(t, dir,
		"pat:pat-pw:hotdesk\ncarl:carl-pw:hotdesk\nalice:alice-pw:hotdesk\nbob:bob-pw:hotdesk\ndan:dan-pw:hotdesk\n", "", "hotdesk")
	addr, metricsAddr, attachAddr := testutil.FreeAddr(t), testutil.FreeAddr(t), testutil.FreeAddr(t)
	cfg := testutil.DaemonConfig(t, "lim", dir, addr, "") + fmt.Sprintf(`
attach_listen = %q
metrics_listen = %q
session {
  auth         = "card"
  max_sessions = 2
}
auth {
  pam_dir               = %q
  open_session          = false
  max_sessions_per_user = 1
  max_failures          = 1
  lockout               = "10m"
  policy {
    users = ["pat", "carl"]
    auth  = "password"
  }
}
limits {
  handshake_timeout           = "30s"
  max_connections_per_source  = 5
  max_unauthenticated         = 6
  max_pending_logins_per_user = 1
  max_tickets_per_session     = 2
}
pairing {
  max_failures = 1
  lockout      = "1h"
}
`, attachAddr, metricsAddr, pamDir)
	e := newE2E(t, bin, dir, addr, cfg) // its own kiosk accounts, removed after the daemon stops
	pin := e.fingerprint()
	e.start()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()

	const refusals = "hotdesk_broker_limit_refusals_total"
	const authRefusals = "hotdesk_auth_limit_refusals_total"
	before := scrape(t, metricsAddr)
	for _, l := range []string{"max_sessions", "max_sessions_per_user", "max_tickets_per_session", "pairing_rate", "token_events_per_second"} {
		if v := sample(before, refusals, map[string]string{"limit": l}); v != 0 {
			t.Fatalf("%s{limit=%q} = %v before any refusal; want 0 (declared up front)", refusals, l, v)
		}
	}

	// Tokens: alice twice, bob, dan; paired as a terminal would.
	admin := adminapi.NewClient(e.socket)
	defer admin.Close()
	enroller, err := newGoodTerm(ctx, e.addr, pin, "enroll", nil)
	if err != nil {
		t.Fatal(err)
	}
	defer enroller.conn.Close()
	type tok struct {
		id  string
		key ed25519.PrivateKey
	}
	enroll := func(user string) tok {
		_, key, _ := ed25519.GenerateKey(rand.Reader)
		id, err := enroller.pair(ctx, admin, user, key)
		if err != nil {
			t.Fatalf("pair for %s: %v", user, err)
		}
		return tok{id, key}
	}
	alice1, alice2, bob, dan, patCard := enroll("alice"), enroll("alice"), enroll("bob"), enroll("dan"), enroll("pat")

	present := func(term string, tk tok) any {
		t.Helper()
		g, err := newGoodTerm(ctx, e.addr, pin, term, tk.key)
		if err != nil {
			t.Fatal(err)
		}
		defer g.conn.Close()
		if err := g.conn.Send(&proto.TokenInserted{Token: tk.id, Reader: "lim"}); err != nil {
			t.Fatal(err)
		}
		m, err := g.await(ctx)
		if err != nil {
			t.Fatalf("%s: %v", term, err)
		}
		return m
	}
	wantErr := func(what string, m any, code proto.ErrorCode) {
		t.Helper()
		if er, ok := m.(*proto.Error); !ok || er.Code != code {
			t.Fatalf("%s: %#v; want error %v", what, m, code)
		}
	}

	// Pending logins: pat's card login waits at its password prompt; a
	// second login of pat (by name, another token) is refused before PAM.
	gp, err := newGoodTerm(ctx, e.addr, pin, "t-pat1", patCard.key)
	if err != nil {
		t.Fatal(err)
	}
	defer gp.conn.Close()
	if err := gp.conn.Send(&proto.TokenInserted{Token: patCard.id, Reader: "lim"}); err != nil {
		t.Fatal(err)
	}
	for prompted := false; !prompted; {
		select {
		case m, ok := <-gp.msgs:
			if !ok {
				t.Fatal("pat's card login: connection closed")
			}
			switch m.(type) {
			case *proto.AuthPrompt:
				prompted = true
			case *proto.Attached, *proto.Error:
				t.Fatalf("pat's card login: %#v; want a prompt", m)
			}
		case <-ctx.Done():
			t.Fatal("pat's card login: no prompt")
		}
	}
	p2, _, err := helloConn(ctx, "127.0.0.2", e.addr, pin, "t-pat2")
	if err != nil {
		t.Fatal(err)
	}
	defer p2.Close()
	if m, err := loginAttempt(ctx, p2, "user.pat", "pat-pw"); err != nil {
		t.Fatalf("pat's second login: %v", err)
	} else if _, ok := m.(*proto.Error); !ok {
		t.Fatalf("pat's second login while the first waits: %#v; want an error", m)
	}

	// Lockout: one wrong password for carl locks him out.
	c1, _, err := helloConn(ctx, "127.0.0.3", e.addr, pin, "t-carl")
	if err != nil {
		t.Fatal(err)
	}
	defer c1.Close()
	for i, answer := range []string{"wrong", "carl-pw"} {
		m, err := loginAttempt(ctx, c1, "user.carl", answer)
		if err != nil {
			t.Fatalf("carl's login %d: %v", i, err)
		}
		if _, ok := m.(*proto.Error); !ok {
			t.Fatalf("carl's login %d: %#v; want refused", i, m)
		}
	}

	// Sessions: alice's first desktop; her second is over her limit; bob's
	// fills the server; dan's finds no room.
	ga, err := newGoodTerm(ctx, e.addr, pin, "t-alice", alice1.key)
	if err != nil {
		t.Fatal(err)
	}
	defer ga.conn.Close()
	if _, _, err := ga.hotdesk(ctx, alice1.id); err != nil {
		t.Fatalf("alice's first session: %v", err)
	}
	// The same token again at the same terminal: a ticket each time, the
	// oldest revoked beyond max_tickets_per_session.
	for i := range 3 {
		if _, _, err := ga.hotdesk(ctx, alice1.id); err != nil {
			t.Fatalf("alice again (%d): %v", i, err)
		}
	}
	wantErr("alice's second session", present("t-alice2", alice2), proto.ErrSessionLimited)
	if m, ok := present("t-bob", bob).(*proto.Attached); !ok {
		t.Fatalf("bob's session: %#v; want attached", m)
	}
	wantErr("dan's session on a full server", present("t-dan", dan), proto.ErrUnavailable)

	// Pairing: one malformed code locks the source out of pairing.
	pc, pw, err := helloConn(ctx, "127.0.0.9", e.addr, pin, "t-pair")
	if err != nil {
		t.Fatal(err)
	}
	defer pc.Close()
	pub, pkey, _ := ed25519.GenerateKey(rand.Reader)
	for range 2 {
		// Signed: the code is what is wrong (an unsigned Pair is refused
		// before its code is looked at, and not counted).
		if err := pc.Send(&proto.Pair{Code: "not-a-code", Kind: soft.Kind, PublicKey: pub, Signature: pairSig("t-pair", pw, pkey, "not-a-code")}); err != nil {
			t.Fatal(err)
		}
		_ = pc.NetConn().SetReadDeadline(time.Now().Add(30 * time.Second))
		for {
			m, err := pc.Recv()
			if err != nil {
				t.Fatalf("pairing: %v", err)
			}
			if _, ok := m.Body.(*proto.Error); ok {
				break
			}
		}
	}

	// Connections: 5 from one address, the 6th refused; then one from a
	// second address makes 6 unauthenticated and one from a third address
	// is refused; the attach listener has its own caps.
	var held []net.Conn
	defer func() {
		for _, c := range held {
			c.Close()
		}
	}()
	dial := func(src, addr string) {
		c, err := dialFrom(ctx, src, addr, nil)
		if err != nil {
			t.Fatalf("dial %s from %s: %v", addr, src, err)
		}
		held = append(held, c)
	}
	for range 6 {
		dial("127.0.0.20", e.addr)
	}
	dial("127.0.0.21", e.addr)
	dial("127.0.0.22", e.addr)
	for range 6 {
		dial("127.0.0.30", attachAddr)
	}

	// series is one limit counter: its metric name and labels.
	type series struct {
		name   string
		labels map[string]string
	}
	want := []series{
		{refusals, map[string]string{"limit": "max_connections_per_source", "listener": "terminal"}},
		{refusals, map[string]string{"limit": "max_unauthenticated", "listener": "terminal"}},
		{refusals, map[string]string{"limit": "max_connections_per_source", "listener": "attach"}},
		{refusals, map[string]string{"limit": "max_sessions"}},
		{refusals, map[string]string{"limit": "max_sessions_per_user"}},
		{refusals, map[string]string{"limit": "max_tickets_per_session"}},
		{refusals, map[string]string{"limit": "pairing_rate"}},
		{authRefusals, map[string]string{"limit": "max_pending_logins_per_user"}},
		{authRefusals, map[string]string{"limit": "lockout"}},
	}
	var body string
	missing := func() []string {
		var m []string
		for _, w := range want {
			if sample(body, w.name, w.labels) < 1 {
				m = append(m, fmt.Sprint(w.name, w.labels))
			}
		}
		return m
	}
	deadline := time.Now().Add(30 * time.Second)
	for body = scrape(t, metricsAddr); len(missing()) > 0; body = scrape(t, metricsAddr) {
		if time.Now().After(deadline) {
			t.Fatalf("not counted in /metrics after 30s: %v", missing())
		}
		time.Sleep(100 * time.Millisecond)
	}
	for _, w := range want {
		t.Logf("%s%v = %v", w.name, w.labels, sample(body, w.name, w.labels))
	}
	// Nothing unprovoked moved.
	for _, w := range []series{
		{refusals, map[string]string{"limit": "max_connections", "listener": "terminal"}},
		{refusals, map[string]string{"limit": "max_unauthenticated", "listener": "attach"}},
		{refusals, map[string]string{"limit": "max_unauthenticated_per_source", "listener": "terminal"}},
		{authRefusals, map[string]string{"limit": "max_pending_logins"}},
	} {
		if v := sample(body, w.name, w.labels); v != 0 {
			t.Errorf("%s%v = %v; want 0 (not provoked)", w.name, w.labels, v)
		}
	}
	// Bounded labels: no user, token or address in any limit series.
	for _, line := range strings.Split(body, "\n") {
		if !strings.HasPrefix(line, refusals) && !strings.HasPrefix(line, authRefusals) {
			continue
		}
		for _, leak := range []string{"alice", "pat", "carl", "127.0.0", alice1.id, "t-"} {
			if strings.Contains(line, leak) {
				t.Errorf("metric line %q carries %q", line, leak)
			}
		}
	}
}
