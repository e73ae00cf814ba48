package main

import (
	"context"
	"net"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/hotdesk/hotdesk/cmd/internal/splice"
	"github.com/hotdesk/hotdesk/proto"
	"github.com/hotdesk/hotdesk/tokens/soft"
)

// TestAgentInsertDuringRedirect: a token inserted while a redirect's dial
// runs (no connection is up) is not lost. If the dial succeeds it is
// presented on the new connection with the redirected token; if the target
// never answers, on the connection the redirect came on.
func TestAgentInsertDuringRedirect(t *testing.T) {
	t.Parallel()
	t.Run("dial succeeds", func(t *testing.T) {
		t.Parallel()
		a := startBroker(t, "broker-a", time.Minute)
		b := startBroker(t, "broker-b", time.Minute)
		gate, release := gatedProxy(t, b.addr)
		ta, other, _ := insertDuringRedirect(t, a, gate, b.fp, 0)
		release()
		pb := b.accept()
		got := map[string]bool{}
		for range 2 {
			got[expect[proto.TokenInserted](pb).Token] = true
		}
		if !got[ta.key.Token] || !got[other.Token] {
			t.Errorf("presented at b: %v; want %s and %s", got, ta.key.Token, other.Token)
		}
	})
	t.Run("target never answers", func(t *testing.T) {
		t.Parallel()
		a := startBroker(t, "broker-a", time.Minute)
		gate, _ := gatedProxy(t, "127.0.0.1:1")
		ta, other, pa := insertDuringRedirect(t, a, gate, a.fp, 5*time.Second) // the dial gives up then; the insert comes well before, even on a loaded machine
		pa.inserted(other.Token)                                               // inserted during the dial, on the connection the redirect came on
		pa.inserted(ta.key.Token)                                              // then the redirected token again
	})
}

// insertDuringRedirect starts an agent at home with "default" inserted,
// has home redirect it to addr (pinning fp), and inserts "other" while the
// redirect's dial runs. timeout is the agent's dial timeout (0: default).
func insertDuringRedirect(t *testing.T, home *fakeBroker, addr string, fp []byte, timeout time.Duration) (*testAgent, soft.Key, *peer) {
	t.Helper()
	ta := startAgent(t, home, func(c *Config) {
		c.Insert = []string{"default"}
		if timeout > 0 {
			c.Timeout = timeout
		}
	})
	other, err := ta.ks.Generate("other", "")
	if err != nil {
		t.Fatal(err)
	}
	p := home.accept()
	p.inserted(ta.key.Token)
	p.send(&proto.Redirect{Token: ta.key.Token, ServerID: "broker-x", Addr: addr, Fingerprint: fp, Fence: 3})
	ta.out.wait("redirect")
	ta.command(t, "insert other")
	waitInserted(t, ta, other.Token)
	return ta, other, p
}

// waitInserted waits until the agent's status lists tok as inserted.
func waitInserted(t *testing.T, ta *testAgent, tok string) {
	t.Helper()
	for {
		ta.command(t, "status")
		ev := ta.out.wait("status")
		if ins, _ := ev["inserted"].([]any); slices.Contains(ins, any(tok)) {
			return
		}
	}
}

// gatedProxy listens on loopback and holds every connection (accepted,
// nothing read or forwarded) until release is called; then it forwards it
// to target. It returns its address and release; every goroutine it starts
// has ended when the test's cleanup returns.
func gatedProxy(t *testing.T, target string) (addr string, release func()) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	open := make(chan struct{})
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	t.Cleanup(func() {
		cancel()
		ln.Close()
		wg.Wait()
	})
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				defer c.Close()
				select {
				case <-open:
				case <-ctx.Done():
					return
				}
				up, err := net.Dial("tcp", target)
				if err != nil {
					return
				}
				stop := context.AfterFunc(ctx, func() { c.Close(); up.Close() })
				defer stop()
				splice.Conns(c, up)
			}()
		}
	}()
	return ln.Addr().String(), sync.OnceFunc(func() { close(open) })
}
