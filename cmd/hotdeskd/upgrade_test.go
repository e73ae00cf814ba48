package main

import (
	"encoding/json"
	"maps"
	"os"
	"slices"
	"strings"
	"testing"

	"github.com/hashicorp/go-hclog"

	"github.com/hotdesk/hotdesk/cmd/hotdeskd/config"
	"github.com/hotdesk/hotdesk/registry"
)

// settingsSincePrevious are the group settings this release publishes that
// the previous one (f477c10) did not: a member of that release publishes
// no value for them and is not compared on them. A group setting added
// later goes here too (until the fixture moves to the next release).
var settingsSincePrevious = []string{"session.reconnect_grace"}

// TestPreviousReleaseSettings: during a rolling upgrade, a member of the
// previous release and an upgraded one running the same configuration
// agree on every group setting (no "settings differ" for the whole
// upgrade): each setting the previous release published is published by
// this one under the same key with the same text, and the settings this
// one adds (settingsSincePrevious) are no difference to a member that
// does not know them. Where both know a setting and differ, the warning
// stays. testdata/f477c10 holds the server record a real f477c10 hotdeskd
// wrote for the configuration beside it.
func TestPreviousReleaseSettings(t *testing.T) {
	t.Parallel()
	src, err := os.ReadFile("testdata/f477c10/settings.hcl")
	if err != nil {
		t.Fatal(err)
	}
	cfg, err := config.Parse(src, "settings.hcl")
	if err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile("testdata/f477c10/server-record.json")
	if err != nil {
		t.Fatal(err)
	}
	var old registry.ServerRecord
	if err := json.Unmarshal(b, &old); err != nil || old.Version != "f477c10" || len(old.Settings) == 0 {
		t.Fatalf("server-record.json: %+v, %v", old, err)
	}
	ours := cfg.GroupSettings()
	for _, k := range slices.Sorted(maps.Keys(old.Settings)) {
		switch v, ok := ours[k]; {
		case !ok:
			t.Errorf("the previous release's setting %s is no longer published: a member of it is not compared on it", k)
		case v != old.Settings[k]:
			t.Errorf("setting %s of the same configuration reads %q here, %q in the previous release: every member of a group being upgraded would be told to differ (give it a new key)", k, v, old.Settings[k])
		}
	}
	var added []string
	for k := range ours {
		if _, ok := old.Settings[k]; !ok {
			added = append(added, k)
		}
	}
	if slices.Sort(added); !slices.Equal(added, settingsSincePrevious) {
		t.Errorf("settings not published by the previous release: %v; want %v (settingsSincePrevious)", added, settingsSincePrevious)
	}
	if d := differingSettings(ours, old.Settings); len(d) != 0 {
		t.Errorf("an upgraded member sees the previous release's member differ: %v", d)
	}
	if d := differingSettings(old.Settings, ours); len(d) != 0 {
		t.Errorf("a member of the previous release sees an upgraded one differ: %v", d)
	}

	// The group in the middle of its upgrade: an old member, two upgraded
	// ones on the same configuration. No warning; then an upgraded member
	// with another reconnect_grace is warned about, the old one still not.
	var logs strings.Builder
	w := newSettingsWatch(hclog.New(&hclog.LoggerOptions{Output: &logs}), "b2", ours)
	other := maps.Clone(ours)
	w.check([]registry.ServerRecord{old, {ID: "b2", Settings: ours}, {ID: "b3", Settings: other}})
	if w.differing() != 0 || logs.Len() != 0 {
		t.Fatalf("mixed-version group on one configuration: %d members differ; log:\n%s", w.differing(), logs.String())
	}
	other["session.reconnect_grace"] = "0s"
	w.check([]registry.ServerRecord{old, {ID: "b2", Settings: ours}, {ID: "b3", Settings: other}})
	if w.differing() != 1 || !strings.Contains(logs.String(), `member=b3 differences="session.reconnect_grace = 0s (here: 30s)"`) {
		t.Errorf("an upgraded member with another reconnect_grace: %d members differ; log:\n%s", w.differing(), logs.String())
	}
}
