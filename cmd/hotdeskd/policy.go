package main

import (
	"os/user"

	"github.com/hotdesk/hotdesk/auth"
	"github.com/hotdesk/hotdesk/cmd/hotdeskd/config"
)

// buildPolicies turns the session.auth default and the auth.policy blocks
// into auth.Policies (validated where they are put to use:
// auth.LivePolicies.Set).
func buildPolicies(cfg *config.Config) *auth.Policies {
	a := cfg.Auth
	mk := func(kind, service string, reauth *bool, maxSessions int) auth.Policy {
		p := auth.Policy{
			Kind:         auth.Kind(kind),
			Service:      service,
			NoReauth:     !a.ReauthOnHotdesk,
			SelfRegister: a.SelfRegister,
			MaxSessions:  a.MaxSessionsPerUser,
			KioskUser:    cfg.Session.KioskUser,
		}
		if p.Service == "" {
			p.Service = a.PAMService
			if p.Kind == auth.KindCardPIN {
				p.Service = a.PINService
			}
		}
		if reauth != nil {
			p.NoReauth = !*reauth
		}
		if maxSessions > 0 {
			p.MaxSessions = maxSessions
		}
		return p
	}
	ps := &auth.Policies{
		Default: mk(cfg.Session.Auth, "", nil, 0),
		Tokens:  map[string]auth.Policy{},
		Users:   map[string]auth.Policy{},
	}
	for _, r := range a.Rules {
		p := mk(r.Auth, r.Service, r.ReauthOnHotdesk, r.MaxSessions)
		for _, t := range r.Tokens {
			if _, dup := ps.Tokens[t]; !dup { // the first block naming it wins
				ps.Tokens[t] = p
			}
		}
		for _, u := range r.Users {
			if _, dup := ps.Users[u]; !dup {
				ps.Users[u] = p
			}
		}
		for _, g := range r.Groups {
			ps.Groups = append(ps.Groups, auth.GroupPolicy{Group: g, Policy: p})
		}
	}
	return ps
}

// userGroups returns the names of the local groups of name (nil if the
// user is unknown).
func userGroups(name string) []string {
	u, err := user.Lookup(name)
	if err != nil {
		return nil
	}
	ids, err := u.GroupIds()
	if err != nil {
		return nil
	}
	out := make([]string, 0, len(ids))
	for _, id := range ids {
		if g, err := user.LookupGroupId(id); err == nil {
			out = append(out, g.Name)
		}
	}
	return out
}
