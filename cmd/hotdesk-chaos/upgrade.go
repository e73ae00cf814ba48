package main

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"syscall"
	"time"
)

// A rolling upgrade (-from): the brokers start from the previous release's
// hotdeskd and broker_upgrade restarts them, one after the other, with this
// release's, on the same config, data directory and etcd, the workload
// running all along, as an administrator upgrades a group. Besides the
// checks of every fault (no session lost, no double attachment, every
// terminal back), each upgrade is followed by a look at what every member
// answers to `hotdeskctl server list`: a mixed-version group must not tell
// the administrator that settings or clocks differ when they do not.

// previousRelease returns the directory holding the previous release's
// hotdeskd the brokers run: from itself, or a copy the brokers' user can
// reach (as unprivileged copies this release's).
func previousRelease(dir, from string, cred *syscall.Credential) (string, error) {
	src := filepath.Join(from, "hotdeskd")
	if _, err := os.Stat(src); err != nil {
		return "", fmt.Errorf("chaos: -from: %w", err)
	}
	if cred == nil {
		return from, nil
	}
	cdir := filepath.Join(dir, "bin-from")
	if err := os.Mkdir(cdir, 0o755); err != nil {
		return "", fmt.Errorf("chaos: %w", err)
	}
	if err := copyExecutable(src, filepath.Join(cdir, "hotdeskd")); err != nil {
		return "", err
	}
	return cdir, nil
}

// brokerUpgrade stops the first broker still running the previous release
// (SIGTERM: its desktops are kept, session.keep_on_stop) and starts this
// release's hotdeskd in its place.
func brokerUpgrade(ctx context.Context, h *harness, _ *Fault) string {
	for _, b := range h.brokers {
		if b.args[0] == b.prev {
			h.restartWith(b, b.next)
			return b.id
		}
	}
	h.logf("broker_upgrade: every broker runs this release already")
	return "none"
}

// brokerDowngrade is the way back: the last broker running this release
// is stopped and the previous release's hotdeskd started in its place.
func brokerDowngrade(ctx context.Context, h *harness, _ *Fault) string {
	for i := len(h.brokers) - 1; i >= 0; i-- {
		if b := h.brokers[i]; b.args[0] == b.next {
			h.restartWith(b, b.prev)
			return b.id
		}
	}
	h.logf("broker_downgrade: every broker runs the previous release already")
	return "none"
}

// restartWith stops b (SIGTERM) and starts hotdeskd binary hd on its
// config.
func (h *harness) restartWith(b *hotdeskd, hd string) {
	b.stop(syscall.SIGTERM, 25*time.Second)
	b.args[0] = hd
	if err := b.start(); err != nil {
		h.logf("%s: start %s: %v", b.id, hd, err)
	}
}

// groupCheck is a finding of the look at the group after a fault.
type groupCheck struct {
	at  time.Duration // the fault's start
	msg string
}

// checkGroupView asks every broker for the group's servers, as
// `hotdeskctl server list` does, and notes a member told to run other
// group-wide settings or a clock out of step (the harness gives them all
// the same settings on one host's clock), or a member missing or told
// without its version.
func (h *harness) checkGroupView(ctx context.Context, f Fault) {
	for _, b := range h.brokers {
		cctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		servers, err := b.admin.Servers(cctx)
		cancel()
		if err != nil {
			h.noteGroup(f, fmt.Sprintf("server list at %s: %v", b.id, err))
			continue
		}
		if len(servers) != len(h.brokers) {
			h.noteGroup(f, fmt.Sprintf("server list at %s shows %d members, not %d", b.id, len(servers), len(h.brokers)))
		}
		for _, s := range servers {
			if len(s.SettingsDiffer) > 0 {
				h.noteGroup(f, fmt.Sprintf("server list at %s: %s told to differ in group-wide settings %v", b.id, s.ID, s.SettingsDiffer))
			}
			if c := s.ClockOutOfStep(); c != "" {
				h.noteGroup(f, fmt.Sprintf("server list at %s: %s told %s", b.id, s.ID, c))
			}
			if s.Version == "" {
				h.noteGroup(f, fmt.Sprintf("server list at %s: %s without a version", b.id, s.ID))
			}
		}
	}
}

func (h *harness) noteGroup(f Fault, msg string) {
	h.logf("%s: %s", f.Name, msg)
	h.mu.Lock()
	h.groupChecks = append(h.groupChecks, groupCheck{at: f.Start, msg: msg})
	h.mu.Unlock()
}

// addGroupViolations adds the group view's findings to the rows of their
// faults.
func (h *harness) addGroupViolations(rows []Row) {
	h.mu.Lock()
	defer h.mu.Unlock()
	for _, g := range h.groupChecks {
		for i := range rows {
			if rows[i].Fault != "baseline" && rows[i].AtS == secs(g.at) {
				rows[i].Violations = append(rows[i].Violations, g.msg)
			}
		}
	}
}
