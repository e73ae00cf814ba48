package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/hashicorp/go-hclog"
	"github.com/hotdesk/hotdesk/cmd/internal/adminapi"
	"github.com/hotdesk/hotdesk/internal/event"
	"github.com/hotdesk/hotdesk/registry"
)

func TestCurrentTerminals(t *testing.T) {
	t.Parallel()
	now := time.UnixMilli(1_000_000)
	ms := func(d time.Duration) int64 { return now.Add(d).UnixMilli() }
	recs := []registry.TerminalRecord{
		// t-2 left b1 (its record not yet deleted) and is now on b2.
		{ID: "t-2", ServerID: "b1", ConnectedUnixMs: ms(-20 * time.Second), SeenUnixMs: ms(-time.Second)},
		{ID: "t-1", ServerID: "b1", ConnectedUnixMs: ms(-time.Minute), SeenUnixMs: ms(-2 * time.Second)},
		{ID: "t-2", ServerID: "b2", ConnectedUnixMs: ms(-5 * time.Second), SeenUnixMs: ms(-3 * time.Second)},
		// Stale: not refreshed within the window.
		{ID: "t-3", ServerID: "b3", ConnectedUnixMs: ms(-time.Hour), SeenUnixMs: ms(-time.Minute)},
		{ID: "t-1", ServerID: "b3", ConnectedUnixMs: ms(time.Second), SeenUnixMs: ms(-time.Minute)},
	}
	got := currentTerminals(recs, now.Add(-30*time.Second))
	want := []struct{ id, server string }{{"t-2", "b2"}, {"t-1", "b1"}}
	if len(got) != len(want) {
		t.Fatalf("got %d records %+v; want %v", len(got), got, want)
	}
	for i, w := range want {
		if got[i].ID != w.id || got[i].ServerID != w.server {
			t.Errorf("record %d = %s on %s; want %s on %s", i, got[i].ID, got[i].ServerID, w.id, w.server)
		}
	}
	if len(recs) != 5 || recs[2].ServerID != "b2" {
		t.Error("the input was modified")
	}
}

// TestGroupEventLeftOnce: a server's record vanishing within a minute of
// its own server_left makes no second event; one vanishing a minute or
// more after it (a later run that died) does.
func TestGroupEventLeftOnce(t *testing.T) {
	t.Parallel()
	start := time.Unix(1_000_000, 0)
	for _, tc := range []struct {
		after time.Duration
		want  bool
	}{
		{0, false},
		{time.Minute - time.Millisecond, false},
		{time.Minute, true},
	} {
		left := map[string]time.Time{}
		said, _ := json.Marshal(event.Event{Kind: event.ServerLeft, Server: "b1", Reason: "stopped"})
		if e, ok := groupEvent(registry.GroupChange{Event: said}, left, start); !ok || e.Kind != event.ServerLeft {
			t.Fatalf("b1's own server_left: %+v, %v; want it passed on", e, ok)
		}
		e, ok := groupEvent(registry.GroupChange{ServerID: "b1", Left: true, At: start.Add(tc.after)}, left, start.Add(tc.after))
		if ok != tc.want || ok && (e.Kind != event.ServerLeft || e.Server != "b1") {
			t.Errorf("b1's record vanished %v after its server_left: %+v, %v; want an event %v", tc.after, e, ok, tc.want)
		}
	}
}

// TestGroupEventRejoinedThenDied: a member that stopped cleanly (its own
// server_left), came back and then died within the minute is told dead:
// its return forgets its earlier stop, whether the follower saw its record
// come back or its server_joined first.
func TestGroupEventRejoinedThenDied(t *testing.T) {
	t.Parallel()
	start := time.Unix(1_000_000, 0)
	said, _ := json.Marshal(event.Event{Kind: event.ServerLeft, Server: "b1", Reason: "stopped"})
	joined, _ := json.Marshal(event.Event{Kind: event.ServerJoined, Server: "b1"})
	for name, back := range map[string]registry.GroupChange{
		"record":        {ServerID: "b1", Joined: true, At: start.Add(time.Second)},
		"server_joined": {Event: joined},
	} {
		left := map[string]time.Time{}
		groupEvent(registry.GroupChange{Event: said}, left, start)
		if _, ok := groupEvent(registry.GroupChange{ServerID: "b1", Left: true, At: start}, left, start); ok {
			t.Fatalf("%s: the clean stop's vanishing record made an event", name)
		}
		groupEvent(back, left, start.Add(time.Second))
		e, ok := groupEvent(registry.GroupChange{ServerID: "b1", Left: true, At: start.Add(2 * time.Second)}, left, start.Add(2*time.Second))
		if !ok || e.Kind != event.ServerLeft || e.Server != "b1" || !strings.Contains(e.Reason, "lease expired") {
			t.Errorf("%s: b1 back, then its record vanished: %+v, %v; want server_left, lease expired", name, e, ok)
		}
	}
}

// TestSettingsWatch: a member whose group-wide settings differ is warned
// about once (again when the differences change), said to agree when they
// do again, and counted; a member that publishes no settings (an older
// version), or a setting only one side has, is no difference.
func TestSettingsWatch(t *testing.T) {
	t.Parallel()
	var logs strings.Builder
	w := newSettingsWatch(hclog.New(&hclog.LoggerOptions{Output: &logs}), "b1", map[string]string{"auth.lockout": "30s", "etcd.lease_ttl": "5s"})
	rec := func(id string, settings map[string]string) registry.ServerRecord {
		return registry.ServerRecord{ID: id, Settings: settings}
	}
	steps := []struct {
		servers []registry.ServerRecord
		differ  int
		warns   int // warnings so far
		agrees  int // "same settings again" lines so far
	}{
		{[]registry.ServerRecord{rec("b1", nil), rec("b2", map[string]string{"auth.lockout": "30s", "etcd.lease_ttl": "5s", "new.key": "x"}), rec("old", nil)}, 0, 0, 0},
		{[]registry.ServerRecord{rec("b2", map[string]string{"auth.lockout": "1m0s", "etcd.lease_ttl": "5s"})}, 1, 1, 0},
		{[]registry.ServerRecord{rec("b2", map[string]string{"auth.lockout": "1m0s", "etcd.lease_ttl": "5s"})}, 1, 1, 0},
		{[]registry.ServerRecord{rec("b2", map[string]string{"auth.lockout": "1m0s", "etcd.lease_ttl": "1s"})}, 1, 2, 0},
		{[]registry.ServerRecord{rec("b2", map[string]string{"auth.lockout": "30s", "etcd.lease_ttl": "5s"})}, 0, 2, 1},
		{[]registry.ServerRecord{rec("b2", map[string]string{"auth.lockout": "1m0s"}), rec("b3", map[string]string{"etcd.lease_ttl": "2s"})}, 2, 4, 1},
		{[]registry.ServerRecord{}, 0, 4, 1}, // they left: no "agree" line
	}
	for i, st := range steps {
		w.check(st.servers)
		warns, agrees := strings.Count(logs.String(), "other group-wide settings"), strings.Count(logs.String(), "same group-wide settings again")
		if w.differing() != st.differ || warns != st.warns || agrees != st.agrees {
			t.Fatalf("step %d: differing %d, %d warnings, %d agree lines; want %d, %d, %d\n%s", i, w.differing(), warns, agrees, st.differ, st.warns, st.agrees, logs.String())
		}
	}
	if !strings.Contains(logs.String(), `differences="auth.lockout = 1m0s (here: 30s), etcd.lease_ttl = 1s (here: 5s)"`) {
		t.Errorf("the warnings do not name both values:\n%s", logs.String())
	}
	long := differingSettings(map[string]string{"k": "a"}, map[string]string{"k": strings.Repeat("x", 10000)})
	if len(long) != 1 || len(long[0].Theirs) > maxSettingLen+len("…") {
		t.Errorf("a long value of another member: %d bytes shown; want at most %d", len(long[0].Theirs), maxSettingLen)
	}
}

// TestSettingsWatchBounded: server records by the hundred, each with
// other settings at every check (written by someone with etcd access),
// make at most maxSettingsLines member lines and one summary per check;
// the members not logged are logged in later checks, all counted.
func TestSettingsWatchBounded(t *testing.T) {
	t.Parallel()
	var logs strings.Builder
	w := newSettingsWatch(hclog.New(&hclog.LoggerOptions{Output: &logs}), "b1", map[string]string{"auth.lockout": "30s"})
	forged := func(value string) []registry.ServerRecord {
		recs := make([]registry.ServerRecord, 300)
		for i := range recs {
			recs[i] = registry.ServerRecord{ID: fmt.Sprintf("f%03d", i), Settings: map[string]string{"auth.lockout": value}}
		}
		return recs
	}
	for i, value := range []string{"1m0s", "2m0s", "3m0s"} {
		logs.Reset()
		w.check(forged(value))
		out := logs.String()
		if got := strings.Count(out, "\n"); got != maxSettingsLines+1 {
			t.Errorf("check %d: %d lines; want %d member lines and a summary:\n%s", i, got, maxSettingsLines+1, out)
		}
		if !strings.Contains(out, fmt.Sprintf("not_logged=%d members_differing=300", 300-maxSettingsLines)) {
			t.Errorf("check %d: no summary of the %d members not logged:\n%s", i, 300-maxSettingsLines, out)
		}
		if w.differing() != 300 {
			t.Errorf("check %d: differing = %d; want 300", i, w.differing())
		}
	}
	// A handful of brokers: every change logged, no summary.
	logs.Reset()
	w.check([]registry.ServerRecord{{ID: "b2", Settings: map[string]string{"auth.lockout": "1m0s"}}})
	if out := logs.String(); strings.Count(out, "other group-wide settings") != 1 || strings.Contains(out, "not_logged") {
		t.Errorf("one member differing after the forged ones left:\n%s", out)
	}
}

// TestSettingsWatchReload: after a reload changed this member's settings
// (setOurs), the members are compared with the new ones, and this
// member's own record is reported stale until it shows them (the settings
// watch then publishes them again: a reload's publication that failed, or
// a lease re-established with the earlier record meanwhile).
func TestSettingsWatchReload(t *testing.T) {
	t.Parallel()
	var logs strings.Builder
	before := map[string]string{"session.auth": "card"}
	after := map[string]string{"session.auth": "card+password"}
	w := newSettingsWatch(hclog.New(&hclog.LoggerOptions{Output: &logs}), "b1", before)
	if stale := w.check([]registry.ServerRecord{{ID: "b1", Settings: before}, {ID: "b2", Settings: before}}); stale || w.differing() != 0 {
		t.Fatalf("before the reload: stale %v, differing %d; want false, 0", stale, w.differing())
	}
	w.setOurs(after)
	if stale := w.check([]registry.ServerRecord{{ID: "b1", Settings: before}, {ID: "b2", Settings: before}}); !stale || w.differing() != 1 {
		t.Fatalf("after the reload, the record not yet published: stale %v, differing %d; want true, 1 (b2 not reloaded yet)", stale, w.differing())
	}
	if stale := w.check([]registry.ServerRecord{{ID: "b1", Settings: after}, {ID: "b2", Settings: after}}); stale || w.differing() != 0 {
		t.Fatalf("both published: stale %v, differing %d; want false, 0", stale, w.differing())
	}
	if out := logs.String(); !strings.Contains(out, "same group-wide settings again") {
		t.Errorf("b2's reload not logged as agreeing again:\n%s", out)
	}
}

// TestSettingsWatchHostileValue: another member's values reach this
// member's log, its listing and the dashboard as printable text: a
// value with a line break and terminal escapes (ESC, BEL) forges no log
// line and sends no escape to whoever reads the log in a terminal.
func TestSettingsWatchHostileValue(t *testing.T) {
	t.Parallel()
	var logs strings.Builder
	w := newSettingsWatch(hclog.New(&hclog.LoggerOptions{Output: &logs}), "b1", map[string]string{"auth.lockout": "30s"})
	evil := "1m\n[WARN]  hotdeskd: forged line\x1b]0;owned\x07\x1b[2J"
	w.check([]registry.ServerRecord{{ID: "b2", Settings: map[string]string{"auth.lockout": evil}}})
	if w.differing() != 1 {
		t.Fatalf("differing = %d; want 1", w.differing())
	}
	out := logs.String()
	if strings.ContainsAny(out, "\x1b\x07") || strings.Count(out, "\n") != 1 {
		t.Errorf("another member's value reached the log raw:\n%q", out)
	}
	for _, d := range differingSettings(w.ours, map[string]string{"auth.lockout": evil + strings.Repeat("é", 200)}) {
		if !utf8.ValidString(d.Theirs) || strings.ContainsAny(d.Theirs, "\n\x1b\x07") {
			t.Errorf("listed value %q: want printable, valid UTF-8", d.Theirs)
		}
	}
}

// TestRegisterLabelChecked: the daemon's own RegisterToken bounds a label
// (the dashboard's form reaches it without the admin API's checks): a
// 60 KB label would have gone into the token's record, every listing and
// page.
func TestRegisterLabelChecked(t *testing.T) {
	t.Parallel()
	a := &adminBackend{d: &daemon{}}
	for _, label := range []string{strings.Repeat("l", 60000), "desk\x1b[2J"} {
		_, err := a.RegisterToken(t.Context(), "dashboard:root", adminapi.RegisterRequest{ID: "uid.04a1b2c3", User: "root", Label: label})
		if !errors.Is(err, adminapi.ErrInvalid) || !strings.Contains(err.Error(), "invalid label") {
			t.Errorf("RegisterToken with label of %d bytes: %v; want ErrInvalid, invalid label", len(label), err)
		}
	}
}
