package main

import (
	"testing"

	"github.com/hotdesk/hotdesk/cmd/hotdeskd/config"
)

// TestPAMHelpersCoverBothGates: the PAM helper slots hold what the login
// gate and the account gate admit together (max_pending_logins each), so
// that logins left at a prompt never take the slots a card login's account
// check needs: with max_pending_logins above half of pam's default (128),
// they did, and card logins waited for a slot until their timeout.
func TestPAMHelpersCoverBothGates(t *testing.T) {
	for _, n := range []int{1, 64, 100, 500} {
		cfg := config.Default()
		cfg.Limits.MaxPendingLogins = n
		if got := pamHelpers(cfg); got < 2*n {
			t.Errorf("max_pending_logins %d: PAM helpers = %d; want ≥ %d (both gates)", n, got, 2*n)
		}
	}
}
