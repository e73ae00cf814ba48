package auth

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync/atomic"
	"time"

	"github.com/hotdesk/hotdesk/proto"
)

// Kind is how a session is authenticated.
type Kind string

const (
	// KindKiosk: no login; every token gets a session as Policy.KioskUser.
	KindKiosk Kind = "kiosk"
	// KindCard: the card alone, registered tokens only, no prompt.
	KindCard Kind = "card"
	// KindCardPIN: card plus a PIN asked by the PAM service.
	KindCardPIN Kind = "card+pin"
	// KindCardPassword: card plus the user's password.
	KindCardPassword Kind = "card+password"
	// KindPassword: user name and password, no card; the user name locates
	// the session.
	KindPassword Kind = "password"
)

// Default PAM service names per kind.
const (
	DefaultService    = "hotdesk"
	DefaultPINService = "hotdesk-pin"
)

// ErrUnknownKind reports a Policy with a Kind this package does not know.
var ErrUnknownKind = errors.New("auth: unknown policy kind")

// Policy says how sessions of a token or user are authenticated.
type Policy struct {
	Kind Kind
	// Service is the PAM service (stack) used for the PIN or password;
	// "" takes DefaultPINService for KindCardPIN and DefaultService otherwise.
	Service string
	// NoReauth skips authentication when a token resumes or takes over an
	// existing session (hot-desking without a prompt). The default (false)
	// asks again on every hot-desk. It has no effect on KindPassword, whose
	// user name is no token.
	NoReauth bool
	// SelfRegister lets an unknown card enroll itself on first use (the user
	// then proves who they are through the PAM service).
	SelfRegister bool
	// MaxSessions bounds the sessions one user may hold (0 = no limit).
	MaxSessions int
	// KioskUser is the local user of KindKiosk sessions ("" = "kiosk").
	KioskUser string
}

// Validate reports a Policy the broker cannot apply.
func (p Policy) Validate() error {
	switch p.Kind {
	case KindKiosk, KindCard, KindCardPIN, KindCardPassword, KindPassword:
	default:
		return fmt.Errorf("auth: policy: %w: %q", ErrUnknownKind, p.Kind)
	}
	if p.MaxSessions < 0 {
		return fmt.Errorf("auth: policy: max sessions %d is negative", p.MaxSessions)
	}
	return nil
}

// ServiceName returns the PAM service of p ("" for kinds without a prompt).
func (p Policy) ServiceName() string {
	switch p.Kind {
	case KindKiosk, KindCard:
		return ""
	case KindCardPIN:
		if p.Service == "" {
			return DefaultPINService
		}
	default:
		if p.Service == "" {
			return DefaultService
		}
	}
	return p.Service
}

// AccountService returns the PAM service whose account stack
// (pam_acct_mgmt) is consulted when a login of this kind asks no secret:
// a card login, or a hot-desk that does not authenticate again. It is the
// policy's service, DefaultService for KindCard without one; "" for
// KindKiosk, whose desktops are given to whoever presents a token.
func (p Policy) AccountService() string {
	switch p.Kind {
	case KindKiosk:
		return ""
	case KindCard:
		if p.Service == "" {
			return DefaultService
		}
		return p.Service
	}
	return p.ServiceName()
}

// NeedsCard reports whether a session of this kind is located by a token.
func (p Policy) NeedsCard() bool { return p.Kind != KindPassword }

// ReauthRequired reports whether presenting a token for an existing
// session must authenticate again. A password login without a card always
// must: its "token" is a typed user name, which proves nothing, so
// NoReauth does not apply to it.
func (p Policy) ReauthRequired() bool {
	switch p.Kind {
	case KindKiosk, KindCard:
		return false
	case KindPassword:
		return true
	}
	return !p.NoReauth
}

// GroupPolicy applies Policy to members of Group.
type GroupPolicy struct {
	Group  string
	Policy Policy
}

// Policies resolves the Policy of a request: by token, else by user, else by
// the first entry of Groups the user is a member of, else Default. The zero
// value applies the zero Default (which Validate refuses: set Default).
// Policies must not be modified while in use.
//
// User names match case-insensitively (an exact match first): where PAM
// and NSS ignore case (sssd, Active Directory) "ALICE" logs in as alice,
// and must not escape alice's policy for the default. Validate refuses two
// entries of Users that differ only in case. Group names match exactly, as
// NSS returns them.
type Policies struct {
	Default Policy
	Tokens  map[string]Policy
	Users   map[string]Policy
	Groups  []GroupPolicy // in priority order
}

// PolicySource resolves the Policy of a request. *Policies is one, fixed;
// *LivePolicies is one whose Policies a configuration reload replaces.
type PolicySource interface {
	For(token, user string, groups []string) Policy
}

var (
	_ PolicySource = (*Policies)(nil)
	_ PolicySource = (*LivePolicies)(nil)
)

// LivePolicies is a PolicySource whose Policies can be replaced while in
// use (hotdeskd's SIGHUP reload): each request is resolved by the
// Policies set when it is resolved. A login already past its policy's
// choice (waiting at a prompt) finishes under the policy it was given.
type LivePolicies struct {
	cur atomic.Pointer[Policies]
}

// NewLivePolicies returns a LivePolicies resolving by p (validated).
func NewLivePolicies(p *Policies) (*LivePolicies, error) {
	l := &LivePolicies{}
	if err := l.Set(p); err != nil {
		return nil, err
	}
	return l, nil
}

// Set makes p the Policies of every request resolved from now on, if it
// is valid; an invalid p is refused (the previous Policies stay). p must
// not be modified afterwards.
func (l *LivePolicies) Set(p *Policies) error {
	if err := p.Validate(); err != nil {
		return err
	}
	l.cur.Store(p)
	return nil
}

// For implements PolicySource.
func (l *LivePolicies) For(token, user string, groups []string) Policy {
	return l.cur.Load().For(token, user, groups)
}

// For returns the policy for token, user and the user's groups.
func (p *Policies) For(token, user string, groups []string) Policy {
	if token != "" {
		if pol, ok := p.Tokens[token]; ok {
			return pol
		}
	}
	if user != "" {
		if pol, ok := p.Users[user]; ok {
			return pol
		}
		for u, pol := range p.Users {
			if strings.EqualFold(u, user) {
				return pol
			}
		}
	}
	for _, gp := range p.Groups {
		for _, g := range groups {
			if g == gp.Group {
				return gp.Policy
			}
		}
	}
	return p.Default
}

// Validate checks every policy.
func (p *Policies) Validate() error {
	if err := p.Default.Validate(); err != nil {
		return fmt.Errorf("auth: default: %w", err)
	}
	for k, pol := range p.Tokens {
		if err := pol.Validate(); err != nil {
			return fmt.Errorf("auth: token %s: %w", k, err)
		}
	}
	folded := make(map[string]string, len(p.Users))
	for k, pol := range p.Users {
		if err := pol.Validate(); err != nil {
			return fmt.Errorf("auth: user %s: %w", k, err)
		}
		if other, dup := folded[foldCase(k)]; dup {
			return fmt.Errorf("auth: users %s and %s differ only in case (user names match case-insensitively)", min(k, other), max(k, other))
		}
		folded[foldCase(k)] = k
	}
	for _, gp := range p.Groups {
		if err := gp.Policy.Validate(); err != nil {
			return fmt.Errorf("auth: group %s: %w", gp.Group, err)
		}
	}
	return nil
}

// ServiceAuthenticator authenticates against a named PAM service;
// auth/pam's Authenticator implements it.
type ServiceAuthenticator interface {
	AuthenticateService(ctx context.Context, service string, req Request, conv Conversation) (Result, error)
}

// Chooser is an Authenticator that resolves the request's Policy and
// delegates: kiosk → Kiosk, card → the token's registered user without a
// prompt (unknown tokens are denied), the others → Services with the
// policy's PAM service, unless the request resumes an existing session and
// the policy does not require re-authentication.
//
// Whenever it grants a user without asking a secret — a card login, or a
// hot-desk that does not authenticate again — it first consults the
// account stack of the policy's service (Policy.AccountService) through
// Accounts: an account the administrator expired, locked or disabled (or
// that pam_nologin or access.conf refuses) is denied there as it is at a
// password login. Kiosk logins are not checked.
//
// With Sessions set, a card login that starts a new desktop
// (!Request.Existing) gets the PAM session a password login gets
// (pam_mkhomedir, pam_mount, pam_limits, pam_systemd …): Sessions runs
// the account check and opens the session in one transaction, and the
// Result carries it. A card resuming a desktop only has its account
// checked: the desktop holds its session already.
type Chooser struct {
	Policies PolicySource
	// Groups returns the groups of user (nil = no group policies apply).
	Groups func(user string) []string
	// Services runs PAM; required for kinds that prompt.
	Services ServiceAuthenticator
	// Accounts checks accounts on the paths that ask no secret (see
	// above). Nil uses Services if it is an AccountChecker; if neither
	// is, those logins are refused with ErrNoAccountCheck.
	Accounts AccountChecker
	// Sessions, if set, opens the PAM session of a card login that
	// starts a new desktop (see above; hotdeskd sets it with
	// auth.open_session). Nil: such logins have their account checked
	// and get no session.
	Sessions SessionOpener
}

var _ Authenticator = (*Chooser)(nil)

// Authenticate implements Authenticator.
func (c *Chooser) Authenticate(ctx context.Context, req Request, conv Conversation) (Result, error) {
	if err := ctx.Err(); err != nil {
		return Result{}, err
	}
	var groups []string
	if c.Groups != nil && req.User != "" {
		groups = c.Groups(req.User)
	}
	pol := c.Policies.For(req.Token, req.User, groups)
	switch pol.Kind {
	case KindKiosk:
		// kiosk_user "" means the token's registered user (else "kiosk").
		return Kiosk{User: pol.KioskUser}.Authenticate(ctx, Request{User: req.User}, conv)
	case KindCard:
		if req.User == "" {
			return Result{}, fmt.Errorf("auth: card policy: %w: token not registered to a user", ErrDenied)
		}
		if c.Sessions != nil && !req.Existing {
			return c.openWithoutSecret(ctx, pol, req)
		}
		return c.grantWithoutSecret(ctx, pol, req)
	case KindCardPIN, KindCardPassword, KindPassword:
		if req.Existing && req.User != "" && (!pol.ReauthRequired() || req.Reconnect) && !req.Locked {
			return c.grantWithoutSecret(ctx, pol, req)
		}
		if c.Services == nil {
			return Result{}, fmt.Errorf("auth: %s policy: no PAM authenticator configured", pol.Kind)
		}
		if pol.Kind == KindCardPIN {
			conv = pinConversation{conv}
		}
		return c.Services.AuthenticateService(ctx, pol.ServiceName(), req, conv)
	}
	return Result{}, fmt.Errorf("auth: %w: %q", ErrUnknownKind, pol.Kind)
}

// grantWithoutSecret grants req.User after the account check of pol's
// service: the person proved nothing but the token, and only the account
// stack can say the account was expired, locked or disabled since.
func (c *Chooser) grantWithoutSecret(ctx context.Context, pol Policy, req Request) (Result, error) {
	ac := c.Accounts
	if ac == nil {
		ac, _ = c.Services.(AccountChecker)
	}
	if ac == nil {
		return Result{}, fmt.Errorf("auth: %s policy: %w", pol.Kind, ErrNoAccountCheck)
	}
	if err := ac.CheckAccount(ctx, pol.AccountService(), req); err != nil {
		return Result{}, fmt.Errorf("auth: %s policy: account check: %w", pol.Kind, err)
	}
	return Result{User: req.User, NoSecret: true}, nil
}

// openWithoutSecret grants req.User a new desktop with its PAM session
// opened by Sessions after the account check of pol's service, in one
// transaction. The session is req.User's: one a module opened for
// another PAM_USER is closed and the login refused (resumes, which only
// check the account, compare the desktop's user with req.User).
func (c *Chooser) openWithoutSecret(ctx context.Context, pol Policy, req Request) (Result, error) {
	res, err := c.Sessions.OpenSessionWithoutSecret(ctx, pol.AccountService(), req)
	if err != nil {
		return Result{}, fmt.Errorf("auth: %s policy: account check and session: %w", pol.Kind, err)
	}
	if res.User != req.User {
		if res.Session != nil {
			cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 30*time.Second)
			_ = res.Session.Close(cctx)
			cancel()
		}
		return Result{}, fmt.Errorf("auth: %s policy: session opened for %q, not the token's user %q", pol.Kind, res.User, req.User)
	}
	res.NoSecret = true
	return res, nil
}

// pinConversation shows PAM's generic password prompt ("Password: ", what
// pam_userdb and most modules ask for their secret) as "PIN: ": with
// card+pin the secret is the PIN, and the person at the terminal is told
// so. Every other prompt passes unchanged.
type pinConversation struct{ Conversation }

func (c pinConversation) Prompt(ctx context.Context, style proto.PromptStyle, text string) (string, error) {
	if style == proto.PromptEchoOff && strings.TrimSpace(text) == "Password:" {
		text = "PIN: "
	}
	return c.Conversation.Prompt(ctx, style, text)
}
