package main

import (
	"context"
	"maps"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"
	"unicode/utf8"

	"github.com/hashicorp/go-hclog"

	"github.com/hotdesk/hotdesk/cmd/internal/adminapi"
	"github.com/hotdesk/hotdesk/internal/clock"
	"github.com/hotdesk/hotdesk/internal/printable"
	"github.com/hotdesk/hotdesk/registry"
)

// Group settings: every member publishes, in its server record, the
// settings all members must share (config.GroupSettings: lease_ttl, the
// login policies, lockout limits…). Each member compares the others' with
// its own: it warns in its log when a member's differ (again when the
// differences change, and says when they agree again), exports how many
// members differ (hotdesk_group_settings_differ), and GET /v1/servers
// (hotdeskctl server list) lists the differences. A member that publishes no
// settings (an older version) is not compared.

// settingsCheckInterval is how often the group's records are compared
// (a read of a few keys: a member that joins with other settings is
// noticed within it).
const settingsCheckInterval = 15 * time.Second

// maxSettingLen bounds a value of another member's shown in a log line or
// a listing.
const maxSettingLen = 256

// differingSettings lists, by key, the settings theirs has with another
// value than ours. A key only one of them has is not a difference: a
// member of another version may publish more, or fewer.
func differingSettings(ours, theirs map[string]string) []adminapi.SettingDiff {
	var out []adminapi.SettingDiff
	for _, k := range slices.Sorted(maps.Keys(ours)) {
		if v, ok := theirs[k]; ok && v != ours[k] {
			out = append(out, adminapi.SettingDiff{Key: k, Theirs: shownSetting(v), Ours: ours[k]})
		}
	}
	return out
}

// shownSetting is another member's value v as this member shows it (its
// log, GET /v1/servers, the dashboard): printable (quoted, Go syntax,
// when it is not: a line break would start another log line) and at most
// maxSettingLen bytes, cut between characters.
func shownSetting(v string) string {
	if !printable.String(v) {
		v = strconv.Quote(v)
	}
	if len(v) <= maxSettingLen {
		return v
	}
	n := maxSettingLen
	for n > 0 && !utf8.RuneStart(v[n]) {
		n--
	}
	return v[:n] + "…"
}

// maxSettingsLines bounds the lines one check of the group's settings
// logs about members: a group has a handful of brokers, and server records
// by the thousand (forged by an etcd writer, each new every 15 s) must not
// become a warning each.
const maxSettingsLines = 8

// settingsWatch compares the group's settings with this member's.
type settingsWatch struct {
	log  hclog.Logger
	self string

	mu     sync.Mutex
	ours   map[string]string // this member's settings in effect (a reload changes them)
	said   map[string]string // member → its differences last logged
	differ int               // members whose settings differ, at the last check
}

func newSettingsWatch(log hclog.Logger, self string, ours map[string]string) *settingsWatch {
	return &settingsWatch{log: log, self: self, ours: ours, said: map[string]string{}}
}

// ourSettings returns this member's settings in effect (not to be
// modified).
func (w *settingsWatch) ourSettings() map[string]string {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.ours
}

// setOurs makes ours this member's settings in effect (a reload changed
// some): the next check compares the members' with them.
func (w *settingsWatch) setOurs(ours map[string]string) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.ours = ours
}

// check compares the members' records with this member's settings and
// logs what changed since the last check. It reports whether this
// member's own record, among servers, shows other settings than those in
// effect (a reload's publication failed, or a lease re-established
// meanwhile published the earlier ones).
func (w *settingsWatch) check(servers []registry.ServerRecord) (stale bool) {
	w.mu.Lock()
	defer w.mu.Unlock()
	seen := make(map[string]bool, len(servers))
	n, lines, unsaid := 0, 0, 0
	for _, s := range servers {
		if s.ID == w.self {
			stale = !maps.Equal(s.Settings, w.ours)
			continue
		}
		seen[s.ID] = true
		diffs := differingSettings(w.ours, s.Settings)
		text := formatDiffs(diffs)
		if len(diffs) > 0 {
			n++
		}
		prev := w.said[s.ID]
		if text == prev {
			continue
		}
		if lines == maxSettingsLines {
			// More changes than a log should carry (records written by
			// someone with etcd access, not brokers): counted in one
			// line, each logged at a later check that has room.
			unsaid++
			continue
		}
		lines++
		if text != "" {
			w.log.Warn("a member of the group runs with other group-wide settings; give every broker the same values (hotdeskctl server list shows them)",
				"member", s.ID, "differences", text)
			w.said[s.ID] = text
		} else {
			w.log.Info("a member of the group runs with the same group-wide settings again", "member", s.ID)
			delete(w.said, s.ID)
		}
	}
	if unsaid > 0 {
		w.log.Warn("more members changed their group-wide settings than one check logs; hotdeskctl server list shows them all",
			"not_logged", unsaid, "members_differing", n)
	}
	for id := range w.said {
		if !seen[id] {
			delete(w.said, id) // left the group
		}
	}
	w.differ = n
	return stale
}

// differing reports how many members differed at the last check.
func (w *settingsWatch) differing() int {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.differ
}

// run checks the group's records at once and every settingsCheckInterval
// until ctx ends. A listing that fails is tried at the next interval.
// Where this member's record shows other settings than those in effect,
// publish writes them there again.
func (w *settingsWatch) run(ctx context.Context, clk clock.Clock, list func(context.Context) ([]registry.ServerRecord, error),
	publish func(context.Context) error) {
	for {
		lctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		servers, err := list(lctx)
		if err == nil && w.check(servers) {
			if err := publish(lctx); err != nil && ctx.Err() == nil {
				w.log.Warn("this server's group settings not published again; tried at the next check", "error", err)
			}
		} else if err != nil && ctx.Err() == nil {
			w.log.Debug("group settings not compared: the registry did not answer", "error", err)
		}
		cancel()
		if !clock.Sleep(ctx, clk, settingsCheckInterval) {
			return
		}
	}
}

// formatDiffs joins diffs for a log line.
func formatDiffs(diffs []adminapi.SettingDiff) string {
	s := make([]string, len(diffs))
	for i, d := range diffs {
		s[i] = d.String()
	}
	return strings.Join(s, ", ")
}
