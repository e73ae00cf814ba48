package config

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"slices"
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
// the compositor) are not among them. A value's text never changes form
// from one version to the next (members of two versions would differ
// on it): a setting rendered otherwise gets a new key (say
// "auth.policy.v2"). The policy blocks are one entry,
// a digest of their canonical form (file order included: the first
// matching block applies).
func (c *Config) GroupSettings() map[string]string {
	a := c.Auth
	return map[string]string{
		"etcd.lease_ttl":             c.Etcd.LeaseTTL.String(),
		"session.auth":               c.Session.Auth,
		"session.kiosk_user":         c.Session.KioskUser,
		"session.suspend_timeout":    c.Session.SuspendTimeout.String(),
		"session.reconnect_grace":    c.Session.ReconnectGrace.String(),
		"auth.pam_service":           a.PAMService,
		"auth.pin_service":           a.PINService,
		"auth.open_session":          strconv.FormatBool(a.OpenSession),
		"auth.reauth_on_hotdesk":     strconv.FormatBool(a.ReauthOnHotdesk),
		"auth.self_register":         strconv.FormatBool(a.SelfRegister),
		"auth.max_sessions_per_user": strconv.Itoa(a.MaxSessionsPerUser),
		"auth.max_failures":          strconv.Itoa(a.MaxFailures),
		"auth.failure_window":        a.FailureWindow.String(),
		"auth.lockout":               a.Lockout.String(),
		"auth.max_lockout":           a.MaxLockout.String(),
		"auth.policy":                policyDigest(a.Rules, a.ReauthOnHotdesk),
	}
}

// policyDigest names the policy blocks by a digest of what they decide, in
// order ("none" without blocks): a block's lists sorted (their order
// decides nothing) and its reauth_on_hotdesk as it applies (reauth, the
// auth block's, when the block sets none).
func policyDigest(rules []PolicyRule, reauth bool) string {
	if len(rules) == 0 {
		return "none"
	}
	h := sha256.New()
	for _, r := range rules {
		re := reauth
		if r.ReauthOnHotdesk != nil {
			re = *r.ReauthOnHotdesk
		}
		// Quoted lists: no value can run into the next.
		fmt.Fprintf(h, "%q %q %q %q %q %v %d\n", slices.Sorted(slices.Values(r.Tokens)), slices.Sorted(slices.Values(r.Users)),
			slices.Sorted(slices.Values(r.Groups)), r.Auth, r.Service, re, r.MaxSessions)
	}
	return "sha256:" + hex.EncodeToString(h.Sum(nil))[:16]
}
