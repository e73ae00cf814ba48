package main

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/hotdesk/hotdesk/cmd/hotdeskd/config"
	"github.com/hotdesk/hotdesk/cmd/internal/adminapi"
	"github.com/hotdesk/hotdesk/registry"
	"github.com/hotdesk/hotdesk/registry/etcdtest"
)

// A reload of an unchanged file must not report "restart needed", also when
// a policy holds pointer-valued settings (reauth_on_hotdesk is a *bool), and a
// real change must still be reported.
func TestRestartNeededComparesValues(t *testing.T) {
	t.Parallel()
	src, err := os.ReadFile(filepath.Join("config", "testdata", "full.hcl"))
	if err != nil {
		t.Fatal(err)
	}
	load := func(s []byte) *config.Config {
		t.Helper()
		c, err := config.Parse(s, "full.hcl")
		if err != nil {
			t.Fatal(err)
		}
		return c
	}
	a, b := load(src), load(src)
	if got := restartNeeded(a, b); len(got) != 0 {
		t.Fatalf("restartNeeded = %q for two loads of the same file", got)
	}
	b.LogLevel = "trace"
	if got := restartNeeded(a, b); len(got) != 0 {
		t.Fatalf("restartNeeded = %q for a log level change, which applies at once", got)
	}
	c := load(src)
	c.Session.SuspendTimeout++
	c.MetricsListen = "127.0.0.1:1"
	if got := restartNeeded(a, c); !slices.Equal(got, []string{"metrics_listen", "session.suspend_timeout"}) {
		t.Fatalf("restartNeeded = %q; want the two changed settings named", got)
	}
}

// TestReloadAppliesLoginPolicies: a SIGHUP with other login policies
// applies them to the next login, the running desktops kept: a card that
// logged in alone is asked its password at its next hot-desk (a wrong one
// refused, the right one resuming the same desktop), a policy block added
// applies to its user; a shorter suspend timeout applies to the desktop
// suspended already; the server's record in etcd publishes the new group
// settings (members compare theirs with them), and a changed setting a
// reload cannot apply is named as waiting for a restart. Before, a reload
// applied only the log level and named the others as waiting.
func TestReloadAppliesLoginPolicies(t *testing.T) {
	t.Parallel() // its own daemon, data dir, ports and terminals
	eps := etcdtest.Start(t)
	e := startE2EWith(t, "", "card", false, fmt.Sprintf("etcd {\n  endpoints = [%q]\n}", eps[0]))
	kss := e.enrollAll("alice", "carl")
	alice, carl := kss[0], kss[1]
	first := e.present("t-1", alice)
	if first["event"] != "attached" || first["user"] != "alice" {
		t.Fatalf("card login: %v; want attached as alice without a prompt", first)
	}
	settings := func() map[string]string {
		t.Helper()
		resp, err := etcdtest.Client(t, eps).Get(context.Background(), registry.DefaultPrefix+"servers/e2e")
		if err != nil || len(resp.Kvs) != 1 {
			t.Fatalf("server record: %v (%d keys)", err, len(resp.Kvs))
		}
		var rec registry.ServerRecord
		if err := json.Unmarshal(resp.Kvs[0].Value, &rec); err != nil {
			t.Fatal(err)
		}
		return rec.Settings
	}
	if got := settings()["session.auth"]; got != "card" {
		t.Fatalf("published session.auth = %q before the reload; want card", got)
	}

	src, err := os.ReadFile(e.d.Config)
	if err != nil {
		t.Fatal(err)
	}
	next := strings.Replace(string(src), "  auth = \"card\"\n", "  auth = \"card+password\"\n  suspend_timeout = \"2h\"\n  reconnect_grace = \"1m\"\n", 1)
	next = strings.Replace(next, "  open_session = false\n", "  open_session = false\n  policy {\n    users = [\"carl\"]\n    auth  = \"card\"\n  }\n", 1)
	if next == string(src) || strings.Count(next, "policy {") != 1 {
		t.Fatalf("the configuration was not changed as the test expects:\n%s", src)
	}
	if err := os.WriteFile(e.d.Config, []byte(next), 0o600); err != nil {
		t.Fatal(err)
	}
	syscall.Kill(e.d.PID(), syscall.SIGHUP)
	waitUntil(t, "the reload's log lines", func() bool {
		return strings.Contains(e.d.LogTail(1<<20), "configuration reloaded")
	})
	log := e.d.LogTail(1 << 20)
	if !regexp.MustCompile(`applied at once:? .*settings="session.suspend_timeout, session.auth, auth.policy"`).MatchString(log) {
		t.Errorf("no log line naming the settings applied:\n%s", log)
	}
	if !regexp.MustCompile(`take effect only after a restart:? .*settings=session.reconnect_grace\b`).MatchString(log) {
		t.Errorf("no warning naming session.reconnect_grace as waiting for a restart:\n%s", log)
	}
	var listed []adminapi.SessionInfo
	if err := json.Unmarshal(e.d.MustCtl("sessions", "-json"), &listed); err != nil {
		t.Fatal(err)
	}
	if len(listed) != 1 || listed[0].SuspendedAt == nil || listed[0].ExpiresAt == nil ||
		!listed[0].ExpiresAt.Equal(listed[0].SuspendedAt.Add(2*time.Hour)) {
		t.Errorf("alice's desktop after the reload: %+v; want suspended, ending 2 h after its suspension", listed)
	}

	if ev := e.present("t-2", alice, "nope"); ev["event"] != "error" || ev["name"] != "auth_failed" {
		t.Fatalf("hot-desk with a wrong password after the reload: %v; want auth_failed (card+password asks it)", ev)
	}
	again := e.present("t-2", alice, "alice-pw")
	if again["event"] != "attached" || again["session"] != first["session"] {
		t.Fatalf("hot-desk with the password: %v; want attached to %v (the desktop kept)", again, first["session"])
	}
	if ev := e.present("t-3", carl); ev["event"] != "attached" || ev["user"] != "carl" {
		t.Fatalf("carl's card after the reload: %v; want attached as carl without a prompt (the new policy block)", ev)
	}
	waitUntil(t, "the new group settings in the server's record", func() bool {
		s := settings()
		return s["session.auth"] == "card+password" && s["auth.policy"] != "none"
	})
	if got := settings()["session.reconnect_grace"]; got != "30s" {
		t.Errorf("published session.reconnect_grace = %q; want 30s (not applied until a restart)", got)
	}
	if got := settings()["session.suspend_timeout"]; got != "2h0m0s" {
		t.Errorf("published session.suspend_timeout = %q; want 2h0m0s", got)
	}
}
