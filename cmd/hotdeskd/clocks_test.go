package main

import (
	"fmt"
	"math"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"

	"github.com/hotdesk/hotdesk/cmd/internal/adminapi"
	"github.com/hotdesk/hotdesk/internal/clock"
	"github.com/hotdesk/hotdesk/registry"
)

// TestClockWatch: a member's clock offset is the greatest of its last
// readings' (a late reading makes it look behind, never ahead); one out of
// step is warned about once, and said to be back in step once; this
// member's own readings are not compared, and a member not heard from for
// clockReadings intervals is forgotten.
func TestClockWatch(t *testing.T) {
	t.Parallel()
	if clockAllowance != registry.ClearSkew {
		t.Fatalf("clock allowance %v; want the registry's ClearSkew, %v", clockAllowance, registry.ClearSkew)
	}
	var logs strings.Builder
	clk := clock.NewFake(time.Unix(1_000_000, 0))
	w := newClockWatch(hclog.New(&hclog.LoggerOptions{Output: &logs}), "b1", clk)
	w.listed([]registry.ServerRecord{{ID: "b1"}, {ID: "b2"}, {ID: "b3"}})
	read := func(id string, ahead time.Duration) {
		t.Helper()
		clk.Advance(clockInterval)
		at := clk.Now()
		w.observe(registry.ClockReading{ServerID: id, UnixMs: at.Add(ahead).UnixMilli(), Received: at})
	}
	read("b1", time.Hour) // ours: not compared
	read("b2", 100*time.Millisecond)
	read("b2", -3*time.Second) // came late
	if off := w.offsets(); len(off) != 1 || off["b2"] != 100*time.Millisecond {
		t.Fatalf("offsets %v; want b2's 100ms, the greatest of its readings", off)
	}
	if logs.Len() != 0 || len(w.outOfStep()) != 0 {
		t.Fatalf("in step, yet: %v\n%s", w.outOfStep(), logs.String())
	}
	for range clockReadings {
		read("b2", 3*time.Second)
	}
	if got := w.outOfStep(); len(got) != 1 || got[0] != "b2" {
		t.Fatalf("out of step: %v; want b2", got)
	}
	if n := strings.Count(logs.String(), "not in step"); n != 1 || !strings.Contains(logs.String(), "offset=\"3s ahead\"") {
		t.Errorf("%d warnings; want one, saying 3s ahead:\n%s", n, logs.String())
	}
	// Behind: its readings' greatest is still 3 s behind.
	for range clockReadings {
		read("b2", -3*time.Second)
	}
	if off := w.offsets()["b2"]; off != -3*time.Second || strings.Count(logs.String(), "not in step") != 1 {
		t.Errorf("b2 %v behind; want 3s, still one warning:\n%s", off, logs.String())
	}
	for range clockReadings {
		read("b2", 0)
	}
	if n := strings.Count(logs.String(), "in step with this server's again"); n != 1 || len(w.outOfStep()) != 0 {
		t.Errorf("back in step: %d lines saying so, out of step %v; want one and none:\n%s", n, w.outOfStep(), logs.String())
	}
	// b2 leaves: forgotten once b3's readings show it silent for long.
	for range clockReadings + 1 {
		read("b3", 0)
	}
	if off := w.offsets(); len(off) != 1 || off["b3"] != 0 {
		t.Errorf("offsets %v; want b3's only (b2 silent)", off)
	}
	// The last member leaves: nothing is read after it, yet it is gone.
	clk.Advance(clockReadings*clockInterval + time.Second)
	if off := w.offsets(); len(off) != 0 || len(w.outOfStep()) != 0 {
		t.Errorf("offsets %v a minute after the last reading; want none", off)
	}
	// Described as the listing and the log say it.
	for d, want := range map[time.Duration]string{3200 * time.Millisecond: "3.2s ahead", -time.Minute: "1m0s behind", 40 * time.Millisecond: "in step",
		// A reading of the earliest or latest time (anyone who may
		// write to etcd can put one); the earliest was "-2562047h… behind".
		math.MinInt64: "2562047h47m16.854775807s behind", math.MaxInt64: "2562047h47m16.854775807s ahead"} {
		if got := adminapi.DescribeOffset(d); got != want {
			t.Errorf("DescribeOffset(%v) = %q; want %q", d, got, want)
		}
	}
	ms := int64(1500)
	if got := (adminapi.ServerInfo{ClockOffsetMs: &ms}).ClockOutOfStep(); got != "1.5s ahead" {
		t.Errorf("ClockOutOfStep(1500 ms) = %q; want 1.5s ahead", got)
	}
	ms = -900
	if got := (adminapi.ServerInfo{ClockOffsetMs: &ms}).ClockOutOfStep(); got != "" {
		t.Errorf("ClockOutOfStep(-900 ms) = %q; want none (within a second)", got)
	}
}

// TestClockWatchMembersOnly: only the clocks of the group's members (its
// server records, listed every settingsCheckInterval) are compared.
// Anyone who may write to etcd can put clocks/<id> readings under ids of
// their choosing: new ids each minute, each an hour off, made a warning
// line per id at every broker (1024 a minute, for ever), and 1024 of them
// kept fresh filled the table, so that a member (re)joining was never
// compared.
func TestClockWatchMembersOnly(t *testing.T) {
	t.Parallel()
	var logs strings.Builder
	clk := clock.NewFake(time.Unix(1_000_000, 0))
	w := newClockWatch(hclog.New(&hclog.LoggerOptions{Output: &logs}), "b1", clk)
	read := func(id string, ahead time.Duration) {
		at := clk.Now()
		w.observe(registry.ClockReading{ServerID: id, UnixMs: at.Add(ahead).UnixMilli(), Received: at})
	}
	w.listed([]registry.ServerRecord{{ID: "b1"}, {ID: "b2"}})
	for round := range 3 {
		for i := range 1100 {
			read(fmt.Sprintf("fake-%d-%d", round, i), time.Hour)
		}
		read("b2", 0)
		clk.Advance(clockInterval)
	}
	if n := strings.Count(logs.String(), "not in step"); n != 0 {
		t.Errorf("%d warnings about readings of no member; want none:\n%.2000s", n, logs.String())
	}
	if off := w.offsets(); len(off) != 1 || off["b2"] != 0 {
		t.Errorf("offsets of %d members; want b2's only", len(off))
	}
	// b3 joins (listed): its clock is compared.
	w.listed([]registry.ServerRecord{{ID: "b1"}, {ID: "b2"}, {ID: "b3"}})
	read("b3", 5*time.Second)
	if got := w.outOfStep(); len(got) != 1 || got[0] != "b3" {
		t.Errorf("out of step %.200v (%d); want b3", got, len(got))
	}
	// b3 leaves (no longer listed): forgotten at once.
	w.listed([]registry.ServerRecord{{ID: "b1"}, {ID: "b2"}})
	if off := w.offsets(); len(off) != 1 {
		t.Errorf("offsets of %d members after b3 left; want b2's only", len(off))
	}
}
