package auth_test

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/hotdesk/hotdesk/auth"
)

// stallServices blocks every login until released (a client that never
// answers the prompt).
type stallServices struct {
	started chan struct{}
	release chan struct{}
}

func (s *stallServices) AuthenticateService(ctx context.Context, service string, req auth.Request, conv auth.Conversation) (auth.Result, error) {
	s.started <- struct{}{}
	select {
	case <-s.release:
		return auth.Result{User: req.User}, nil
	case <-ctx.Done():
		return auth.Result{}, ctx.Err()
	}
}

// stalledGate is a Gate over stallServices: every login it admits stalls
// until release, or until its context ends.
type stalledGate struct {
	svc     *stallServices
	g       *auth.Gate
	ctx     context.Context // the tests' bound
	wg      sync.WaitGroup  // the logins
	release func()          // ends the stalled logins; idempotent
}

// newStalledGate returns a stalledGate with cfg; its logins are released
// and waited for when the test ends.
func newStalledGate(t *testing.T, cfg auth.GateConfig) *stalledGate {
	svc := &stallServices{started: make(chan struct{}, 100), release: make(chan struct{})}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	sg := &stalledGate{svc: svc, g: auth.NewGate(svc, cfg), ctx: ctx, release: sync.OnceFunc(func() { close(svc.release) })}
	t.Cleanup(func() {
		sg.release()
		sg.wg.Wait()
		cancel()
	})
	return sg
}

// login starts a login of req with ctx and returns nil once the gate has
// admitted it (it stalls then), else the gate's refusal. The login's error
// comes on done when it ends.
func (sg *stalledGate) login(ctx context.Context, req auth.Request) (done <-chan error, err error) {
	ch := make(chan error, 1)
	sg.wg.Add(1)
	go func() {
		defer sg.wg.Done()
		_, err := sg.g.AuthenticateService(ctx, "hotdesk", req, nil)
		ch <- err
	}()
	select {
	case <-sg.svc.started:
		return ch, nil
	case err := <-ch:
		return ch, err
	}
}

// TestGateBoundsStalledLogins: stalled logins use up the slots of their
// source, user and terminal only; others still get in, and a refusal is
// immediate.
func TestGateBoundsStalledLogins(t *testing.T) {
	sg := newStalledGate(t, auth.GateConfig{Max: 6, PerSource: 3, PerUser: 2, PerTerminal: 1})
	g := sg.g
	start := func(req auth.Request) {
		t.Helper()
		if _, err := sg.login(sg.ctx, req); err != nil {
			t.Fatalf("stalled login %+v: err = %v; want admitted", req, err)
		}
	}
	// try reports whether req is admitted, and ends it if it is.
	try := func(req auth.Request) error {
		c, cancel := context.WithCancel(sg.ctx)
		defer cancel()
		done, err := sg.login(c, req)
		if err != nil {
			return err
		}
		cancel()
		<-done
		return nil
	}
	// The attacker at 10.0.0.66: three stalled logins with random names.
	start(auth.Request{User: "x1", TerminalID: "t1", RemoteAddr: "10.0.0.66:1000"})
	start(auth.Request{User: "x2", TerminalID: "t2", RemoteAddr: "10.0.0.66:1001"})
	start(auth.Request{User: "x3", TerminalID: "t3", RemoteAddr: "10.0.0.66:1002"})
	tests := []struct {
		name string
		req  auth.Request
		want error
	}{
		{"same source, fourth", auth.Request{User: "x4", TerminalID: "t4", RemoteAddr: "10.0.0.66:1003"}, auth.ErrBusy},
		{"another source", auth.Request{User: "alice", TerminalID: "good", RemoteAddr: "10.0.0.5:2000"}, nil},
		{"another source naming the attacker's terminal", auth.Request{User: "bob", TerminalID: "t1", RemoteAddr: "10.0.0.6:2000"}, nil},
	}
	for _, tt := range tests {
		if err := try(tt.req); !errors.Is(err, tt.want) || (tt.want == nil && err != nil) {
			t.Errorf("%s: err = %v; want %v", tt.name, err, tt.want)
		}
	}
	// One user name: at most PerUser at once, from anywhere.
	start(auth.Request{User: "carol", TerminalID: "a", RemoteAddr: "10.0.1.1:1"})
	start(auth.Request{User: "carol", TerminalID: "b", RemoteAddr: "10.0.1.2:1"})
	if err := try(auth.Request{User: "carol", TerminalID: "c", RemoteAddr: "10.0.1.3:1"}); !errors.Is(err, auth.ErrBusy) {
		t.Errorf("third login of carol: err = %v; want ErrBusy", err)
	}
	// One terminal at one address: one login at a time.
	start(auth.Request{User: "dave", TerminalID: "kiosk-1", RemoteAddr: "10.0.2.1:1"})
	if err := try(auth.Request{User: "erin", TerminalID: "kiosk-1", RemoteAddr: "10.0.2.1:2"}); !errors.Is(err, auth.ErrBusy) {
		t.Errorf("second login at one terminal: err = %v; want ErrBusy", err)
	}
	// In all: 6 in progress now.
	if got := g.InProgress(); got != 6 {
		t.Fatalf("in progress = %d; want 6", got)
	}
	if err := try(auth.Request{User: "frank", TerminalID: "z", RemoteAddr: "10.0.3.1:1"}); !errors.Is(err, auth.ErrBusy) {
		t.Errorf("login over the total: err = %v; want ErrBusy", err)
	}
	sg.release()
	sg.wg.Wait()
	if got := g.InProgress(); got != 0 {
		t.Fatalf("in progress after release = %d; want 0", got)
	}
	if err := try(auth.Request{User: "x4", TerminalID: "t4", RemoteAddr: "10.0.0.66:1003"}); err != nil {
		t.Fatalf("after release: err = %v; want admitted", err)
	}
}

// TestGateIPv6SourceIsA64: max_pending_logins_per_source counts an IPv6 /64
// as one source, as max_unauthenticated_per_source does: one host holding
// a /64 does not get a budget per address. Another /64 is another source;
// a terminal's own slot stays keyed by its address, not its /64.
func TestGateIPv6SourceIsA64(t *testing.T) {
	sg := newStalledGate(t, auth.GateConfig{Max: 20, PerSource: 3, PerUser: 5, PerTerminal: 1})
	login := func(user, terminal, remote string) error {
		// Admitted, it stalls until the end.
		_, err := sg.login(sg.ctx, auth.Request{User: user, TerminalID: terminal, RemoteAddr: remote})
		return err
	}
	// Three addresses of one /64: its whole budget.
	for i, a := range []string{"[2001:db8:1:2::a]:1", "[2001:db8:1:2::b]:1", "[2001:db8:1:2:ffff::c]:1"} {
		if err := login("x"+string(rune('1'+i)), "t", a); err != nil {
			t.Fatalf("login %d from %s: %v; want admitted", i+1, a, err)
		}
	}
	if err := login("x4", "t", "[2001:db8:1:2:1234::d]:1"); !errors.Is(err, auth.ErrBusy) {
		t.Errorf("a fourth address of the /64: err = %v; want ErrBusy (max_pending_logins_per_source)", err)
	}
	if err := login("alice", "t", "[2001:db8:1:3::a]:1"); err != nil {
		t.Errorf("another /64: err = %v; want admitted", err)
	}
	if err := login("bob", "t", "[2001:db8:1:3::b]:1"); err != nil {
		t.Errorf("terminal t at another address of that /64: err = %v; want admitted (its own slot)", err)
	}
}

// gateOpener is a ServiceAuthenticator and SessionOpener that reports
// how many logins its gate counts in progress while it opens a session.
type gateOpener struct {
	fakeServices
	g        *auth.Gate
	inFlight int
	// nest: open another session through the gate while this one is
	// being opened; its error goes to nested.
	nest   bool
	nested error
}

func (o *gateOpener) OpenSessionWithoutSecret(ctx context.Context, service string, req auth.Request) (auth.Result, error) {
	o.inFlight = o.g.InProgress()
	if o.nest {
		o.nest = false
		_, o.nested = o.g.OpenSessionWithoutSecret(ctx, service, req)
	}
	return auth.Result{User: req.User}, nil
}

// TestGateSessionOpener: a card login's session counts as a login in
// progress while it is opened, refused like a login when a limit is
// reached; a Gate whose next cannot open sessions fails closed.
func TestGateSessionOpener(t *testing.T) {
	o := &gateOpener{}
	o.g = auth.NewGate(o, auth.GateConfig{})
	r := auth.Request{Token: "uid.1", User: "alice", TerminalID: "t1", RemoteAddr: "192.0.2.1:1"}
	if res, err := o.g.OpenSessionWithoutSecret(t.Context(), "hotdesk", r); err != nil || res.User != "alice" || o.inFlight != 1 {
		t.Errorf("user, err, in progress = %q, %v, %d; want alice, nil, 1", res.User, err, o.inFlight)
	}
	if n := o.g.InProgress(); n != 0 {
		t.Errorf("in progress after = %d; want 0", n)
	}
	// A next that opens no session: the gate fails closed.
	g := auth.NewGate(&fakeServices{}, auth.GateConfig{})
	if _, err := g.OpenSessionWithoutSecret(t.Context(), "hotdesk", r); !errors.Is(err, auth.ErrNoAccountCheck) {
		t.Errorf("next without sessions: err = %v; want %v", err, auth.ErrNoAccountCheck)
	}
	// One in progress from terminal t1: a second from there is refused.
	o.nest = true
	if _, err := o.g.OpenSessionWithoutSecret(t.Context(), "hotdesk", r); err != nil || !errors.Is(o.nested, auth.ErrBusy) {
		t.Errorf("err, nested err = %v, %v; want nil, %v", err, o.nested, auth.ErrBusy)
	}
}
