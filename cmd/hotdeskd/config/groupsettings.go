package config

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"strconv"
)

// GroupSettings are the settings every broker of a group must share, as
// canonical text by name (the configuration's key): where they differ, a
// token is treated differently depending on the terminal it is presented
// at (policies, re-authentication), a group-wide limit is not one (the
// per-user session cap, lockouts: a clearing may expire before another
// broker's longer lockout ends), or failover takes longer than the
// administrator planned (lease_ttl). hotdeskd publishes them in its
// server record; members compare theirs.
//
// Host-specific settings (paths, listeners, PAM service files' contents,
// the compositor) are not among them. The policy blocks are one entry,
// a digest of their canonical form (file order included: the first
// matching block applies).
func (c *Config) GroupSettings() map[string]string {
	a := c.Auth
	return map[string]string{
		"etcd.lease_ttl":             c.Etcd.LeaseTTL.String(),
		"session.auth":               c.Session.Auth,
		"session.kiosk_user":         c.Session.KioskUser,
		"session.suspend_timeout":    c.Session.SuspendTimeout.String(),
		"auth.pam_service":           a.PAMService,
		"auth.pin_service":           a.PINService,
		"auth.reauth_on_hotdesk":     strconv.FormatBool(a.ReauthOnHotdesk),
		"auth.self_register":         strconv.FormatBool(a.SelfRegister),
		"auth.max_sessions_per_user": strconv.Itoa(a.MaxSessionsPerUser),
		"auth.max_failures":          strconv.Itoa(a.MaxFailures),
		"auth.failure_window":        a.FailureWindow.String(),
		"auth.lockout":               a.Lockout.String(),
		"auth.max_lockout":           a.MaxLockout.String(),
		"auth.policy":                policyDigest(a.Rules),
	}
}

// policyDigest names the policy blocks by a digest of their settings, in
// order ("none" without blocks).
func policyDigest(rules []PolicyRule) string {
	if len(rules) == 0 {
		return "none"
	}
	h := sha256.New()
	for _, r := range rules {
		reauth := "default"
		if r.ReauthOnHotdesk != nil {
			reauth = strconv.FormatBool(*r.ReauthOnHotdesk)
		}
		// Quoted lists: no value can run into the next.
		fmt.Fprintf(h, "%q %q %q %q %q %s %d\n", r.Tokens, r.Users, r.Groups, r.Auth, r.Service, reauth, r.MaxSessions)
	}
	return "sha256:" + hex.EncodeToString(h.Sum(nil))[:16]
}
