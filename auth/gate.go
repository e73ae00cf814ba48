package auth

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/hashicorp/go-hclog"

	"github.com/hotdesk/hotdesk/internal/burstlog"
	"github.com/hotdesk/hotdesk/internal/defaults"
	"github.com/hotdesk/hotdesk/internal/netsrc"
)

// ErrBusy is returned (wrapped) by a Gate when a login would exceed one of
// its limits. Nothing was asked of PAM; the client may retry later.
var ErrBusy = errors.New("auth: too many logins in progress")

// GateConfig bounds logins in progress (PAM conversations, prompts
// included). Zero fields take the defaults.
type GateConfig struct {
	Max         int // in all; default 64
	PerSource   int // per source (Request.RemoteAddr's netsrc.Source: an IPv6 /64 is one); default 8
	PerUser     int // per user name; default 2
	PerTerminal int // per terminal id at one source address; default 1
	Logger      hclog.Logger
	LogEvery    time.Duration // at most one "limit reached" line per limit this often; default 10s
	// OnRefused, if set, is called once per refused login with the limit's
	// name ("max_pending_logins", "…_per_source", "…_per_user",
	// "…_per_terminal"; a fixed set), e.g. for metrics. It must not block.
	OnRefused func(limit string)

	now func() time.Time
}

// Gate is a ServiceAuthenticator that admits a login only while the logins
// in progress stay within its limits, so that clients that start logins
// and never answer the prompt (e.g. many connections presenting
// "user.<x>") cannot hold every PAM helper, and one user name or one
// address cannot starve the others. A refused login gets ErrBusy at once.
// It is safe for concurrent use; its memory is bounded by the logins in
// progress.
type Gate struct {
	next ServiceAuthenticator
	cfg  GateConfig
	log  hclog.Logger

	mu         sync.Mutex
	total      int
	bySource   map[string]int
	byUser     map[string]int
	byTerminal map[string]int
	refusals   *burstlog.Logger // "limit reached" lines, one per limit per LogEvery
}

var (
	_ ServiceAuthenticator = (*Gate)(nil)
	_ AccountChecker       = (*Gate)(nil)
	_ SessionOpener        = (*Gate)(nil)
)

// NewGate returns a Gate in front of next.
func NewGate(next ServiceAuthenticator, cfg GateConfig) *Gate {
	defaults.Set(&cfg.Max, 64)
	defaults.Set(&cfg.PerSource, 8)
	defaults.Set(&cfg.PerUser, 2)
	defaults.Set(&cfg.PerTerminal, 1)
	defaults.Set(&cfg.LogEvery, 10*time.Second)
	if cfg.now == nil {
		cfg.now = time.Now
	}
	log := cfg.Logger
	if log == nil {
		log = hclog.NewNullLogger()
	}
	return &Gate{
		next: next, cfg: cfg, log: log,
		bySource: map[string]int{}, byUser: map[string]int{}, byTerminal: map[string]int{},
		refusals: burstlog.New(log, cfg.LogEvery, cfg.now),
	}
}

// ForService is next as an Authenticator that always uses PAM service
// (e.g. a Gate in front of the dashboard's logins).
func ForService(next ServiceAuthenticator, service string) Authenticator {
	return forService{next, service}
}

type forService struct {
	next    ServiceAuthenticator
	service string
}

func (s forService) Authenticate(ctx context.Context, req Request, conv Conversation) (Result, error) {
	return s.next.AuthenticateService(ctx, s.service, req, conv)
}

// AuthenticateService implements ServiceAuthenticator.
func (g *Gate) AuthenticateService(ctx context.Context, service string, req Request, conv Conversation) (Result, error) {
	release, err := g.admit(req)
	if err != nil {
		return Result{}, err
	}
	defer release()
	return g.next.AuthenticateService(ctx, service, req, conv)
}

// CheckAccount implements AccountChecker when the Gate's next does (it
// runs a PAM helper too, so it counts as a login in progress); otherwise
// it fails closed. Give account checks a Gate of their own (hotdeskd
// does): logins left waiting at a prompt, which anyone can start for any
// user name, would otherwise hold up card logins.
func (g *Gate) CheckAccount(ctx context.Context, service string, req Request) error {
	ac, ok := g.next.(AccountChecker)
	if !ok {
		return fmt.Errorf("auth: %w: %T cannot check accounts", ErrNoAccountCheck, g.next)
	}
	release, err := g.admit(req)
	if err != nil {
		return err
	}
	defer release()
	return ac.CheckAccount(ctx, service, req)
}

// OpenSessionWithoutSecret implements SessionOpener when the Gate's next
// does (its helper counts as a login in progress until the session is
// open, not while it is held); otherwise it fails closed. hotdeskd gives
// card logins the account checks' gate.
func (g *Gate) OpenSessionWithoutSecret(ctx context.Context, service string, req Request) (Result, error) {
	so, ok := g.next.(SessionOpener)
	if !ok {
		return Result{}, fmt.Errorf("auth: %w: %T cannot open sessions without a secret", ErrNoAccountCheck, g.next)
	}
	release, err := g.admit(req)
	if err != nil {
		return Result{}, err
	}
	defer release()
	return so.OpenSessionWithoutSecret(ctx, service, req)
}

// admit counts req as a login in progress if every limit allows it; the
// caller calls release when it has returned.
func (g *Gate) admit(req Request) (release func(), err error) {
	// The source every per-source limit uses: an IPv6 /64 is one, or a
	// host holding one would multiply its budget.
	src := netsrc.Source(req.RemoteAddr)
	// The terminal id is chosen by the peer: key it by address too, so a
	// client cannot use up another terminal's slot by naming it (its own
	// address, not its /64: another host of that network could).
	term := netsrc.Host(req.RemoteAddr) + "\x00" + req.TerminalID
	user := req.User
	g.mu.Lock()
	why := ""
	switch {
	case g.total >= g.cfg.Max:
		why = "max_pending_logins"
	case g.bySource[src] >= g.cfg.PerSource:
		why = "max_pending_logins_per_source"
	case user != "" && g.byUser[user] >= g.cfg.PerUser:
		why = "max_pending_logins_per_user"
	case g.byTerminal[term] >= g.cfg.PerTerminal:
		why = "max_pending_logins_per_terminal"
	}
	if why != "" {
		total := g.total
		g.mu.Unlock()
		if f := g.cfg.OnRefused; f != nil {
			f(why)
		}
		g.refusals.Warn(why, "login refused: limit reached", "in_progress", total)
		return nil, fmt.Errorf("%w (%s)", ErrBusy, why)
	}
	g.total++
	g.bySource[src]++
	if user != "" {
		g.byUser[user]++
	}
	g.byTerminal[term]++
	g.mu.Unlock()
	return func() {
		g.mu.Lock()
		g.total--
		dec(g.bySource, src)
		if user != "" {
			dec(g.byUser, user)
		}
		dec(g.byTerminal, term)
		g.mu.Unlock()
	}, nil
}

func dec(m map[string]int, k string) {
	if m[k] <= 1 {
		delete(m, k)
		return
	}
	m[k]--
}

// InProgress returns the number of logins the gate has admitted and that
// have not returned yet.
func (g *Gate) InProgress() int {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.total
}
