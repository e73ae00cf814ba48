package main

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/hashicorp/go-hclog"

	"github.com/hotdesk/hotdesk/auth"
	"github.com/hotdesk/hotdesk/auth/pam"
)

// cardAuth is the -auth card authenticator of the brokers: the card policy
// as hotdeskd wires it, every login and hot-desk consulting the account
// stack of a PAM service (pam_nologin, then pam_permit: the cost of the
// helper process and of libpam, not of a directory) in helpers that
// re-execute this program ("hotdesk-bench pam-helper"), behind an
// auth.AccountCache of ttl (negative: no cache, every hot-desk asks PAM),
// with a spare helper started ahead if spare and each helper running up
// to uses checks (as hotdeskd does: 1 starts a process per check).
// The gate and the limiter of hotdeskd are left out: every simulated
// terminal is user "bench" at one address, which their per-user and
// per-source bounds would throttle.
func cardAuth(dir string, ttl time.Duration, spare bool, uses int, log hclog.Logger) (auth.Authenticator, error) {
	pamDir := filepath.Join(dir, "pam.d")
	if err := os.MkdirAll(pamDir, 0o755); err != nil {
		return nil, err
	}
	stack := "account requisite pam_nologin.so\naccount required pam_permit.so\n"
	if err := os.WriteFile(filepath.Join(pamDir, auth.DefaultService), []byte(stack), 0o644); err != nil {
		return nil, err
	}
	pa, err := pam.New(pam.Config{ConfDir: pamDir, NoAudit: true, Logger: log.Named("pam"), SpareHelper: spare, AccountHelperUses: uses})
	if err != nil {
		return nil, fmt.Errorf("bench: -auth card: %w", err)
	}
	var accounts auth.AccountChecker = pa
	if ttl >= 0 {
		accounts = auth.NewAccountCache(pa, auth.AccountCacheConfig{TTL: ttl})
	}
	return &auth.Chooser{Policies: &auth.Policies{Default: auth.Policy{Kind: auth.KindCard}}, Accounts: accounts}, nil
}

// brokerAuth returns the brokers' authenticator for -auth.
func brokerAuth(kind, dir string, ttl time.Duration, spare bool, uses int, log hclog.Logger) (auth.Authenticator, error) {
	switch kind {
	case "kiosk":
		return auth.Kiosk{User: "bench"}, nil
	case "card":
		if ttl == 0 {
			return nil, errors.New("-account-cache: 0 is not a duration to keep answers (negative: no cache)")
		}
		if uses < 1 {
			return nil, errors.New("-account-helper-uses: at least 1 check per helper")
		}
		return cardAuth(dir, ttl, spare, uses, log)
	}
	return nil, fmt.Errorf("-auth %q: want kiosk or card", kind)
}
