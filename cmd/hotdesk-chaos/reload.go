package main

import (
	"context"
	"fmt"
	"os"
	"strings"
	"syscall"
	"time"
)

// policyReload (the fault policy_reload) is the administrator changing the
// group's login policies as a site does: every broker's file edited, then
// `systemctl reload hotdeskd` (SIGHUP) on each running broker, one after
// the other, a second apart, the workload running all along. Each reload
// sets, or takes out again, a policy block for a user no token belongs to
// and (-auth card) auth.max_sessions_per_user, and moves the suspend
// timeout between 1 h and 59 min: the logins' outcomes stay the same (a
// user has one token, its orphans at most a few sessions more; under
// -auth kiosk every session is the kiosk user's, so no limit; no desktop
// of a run is suspended for 59 min), their paths do not (the per-user
// limit counted in the claims or not, every suspended desktop's timer
// set again), and the group-wide settings change. A broker not running reads the file when it
// starts. After the quiet period every member's server list must show no
// member with other group-wide settings (checkGroupView): each reload
// published its new settings in its server's record.
func policyReload(ctx context.Context, h *harness, _ *Fault) string {
	h.reloads++
	on := h.reloads%2 == 1
	text := reloadPolicy
	if h.opts.auth == "card" {
		text = reloadLimit + text
	}
	for _, b := range h.brokers {
		if err := setReloadPolicy(b.cfgFile, text, on); err != nil {
			h.logf("policy_reload: %v", err)
		}
	}
	var reloaded []string
	for _, b := range h.brokers {
		if b.running() {
			b.signal(syscall.SIGHUP)
			reloaded = append(reloaded, b.id)
		}
		h.sleep(ctx, time.Second)
	}
	return strings.Join(reloaded, "+") + either(on, " (limit and block set)", " (limit and block taken out)")
}

// reloadLimit and reloadPolicy are what policy_reload puts in the auth
// block and takes out; reloadTimeout is the suspend timeout it sets in
// place of the brokers' suspendTimeout, and back.
const (
	reloadLimit    = "  max_sessions_per_user = 8\n"
	reloadPolicy   = "  policy {\n    users = [\"chaos-reload\"]\n    auth  = \"card\"\n  }\n"
	suspendTimeout = "suspend_timeout = \"1h\"" // the brokers' (newBroker)
	reloadTimeout  = "suspend_timeout = \"59m\""
)

// setReloadPolicy puts text in file's auth block (on) or takes it out.
func setReloadPolicy(file, text string, on bool) error {
	b, err := os.ReadFile(file)
	if err != nil {
		return err
	}
	s := strings.Replace(string(b), text, "", 1)
	s = strings.Replace(s, reloadTimeout, suspendTimeout, 1)
	if on {
		s = strings.Replace(s, "\nauth {\n", "\nauth {\n"+text, 1)
		s = strings.Replace(s, suspendTimeout, reloadTimeout, 1)
		if !strings.Contains(s, text) || !strings.Contains(s, reloadTimeout) {
			return fmt.Errorf("chaos: %s has no auth block or no suspend timeout of 1h", file)
		}
	}
	return os.WriteFile(file, []byte(s), 0o600)
}
