package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/hotdesk/hotdesk/internal/testutil"
)

// TestAdminBadInput drives a real hotdeskd with hotdeskctl as an
// administrator would and gets every mistake back as one: a clear message,
// exit status 1 (2 for what the CLI tells itself), never an internal error
// in the daemon's log. Budget: one daemon on the embedded etcd, ~10 s.
func TestAdminBadInput(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	// A PAM directory without the card+pin service: the start warns.
	pamDir := filepath.Join(dir, "pam.d")
	if err := os.Mkdir(pamDir, 0o755); err != nil {
		t.Fatal(err)
	}
	d := testutil.NewDaemon(t, buildBinaries(t), dir, testutil.AdminSocket(dir),
		testutil.DaemonConfig(t, "adm-input", dir, testutil.FreeAddr(t), "")+
			fmt.Sprintf("pairing {\n  code_ttl = \"10m\"\n}\nauth {\n  pam_dir = %q\n}\n", pamDir))
	d.Start()
	if log, want := d.LogTail(1<<20), `[WARN]  hotdeskd: configuration: PAM service "hotdesk-pin" (auth.pin_service`; !strings.Contains(log, want) {
		t.Errorf("start log lacks %q:\n%s", want, log)
	}
	for _, tc := range []struct {
		args []string
		code int
		want string
	}{
		{[]string{"token", "pair", "--user", "root", "--ttl", "1000h"}, 1, "ttl 1000h0m0s is over the longest a pairing code may live, 10m0s (pairing.code_ttl)"},
		{[]string{"token", "delete", "a/b"}, 1, `invalid id "a/b"`},
		{[]string{"token", "delete", "uid.nothere"}, 1, "not found"},
		{[]string{"token", "pair", "--user", "ev\x1b"}, 1, `invalid user "ev\x1b"`},
		{[]string{"token", "register", "uid.04a1b2c3", "--user", "nosuchuser-hd7"}, 1, `user "nosuchuser-hd7" is not known on this host`},
		{[]string{"token", "register", "uid.04a1b2c3", "--user", "root", "--label", strings.Repeat("l", 60000)}, 1, "invalid label"},
		{[]string{"token", "delete", ""}, 2, "not an empty argument"},
		{[]string{"sessions", "--state", "bogus"}, 2, "one of creating, active, suspended, orphaned"},
	} {
		_, err := d.Ctl(tc.args...)
		var ee *exec.ExitError
		if !errors.As(err, &ee) || ee.ExitCode() != tc.code || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("hotdeskctl %q: %v; want exit status %d and %q", tc.args, err, tc.code, tc.want)
		}
	}
	// A software token for a user this host does not know is paired (its
	// desktops run as pooled kiosk accounts), with a warning: token
	// register refuses such a user (above).
	cmd := exec.Command(filepath.Join(d.Bin, "hotdeskctl"), "-socket", d.Socket, "token", "pair", "--user", "nosuchuser-hd7")
	var stderr strings.Builder
	cmd.Stderr = &stderr
	if out, err := cmd.Output(); err != nil || !strings.Contains(string(out), "pairing code:") ||
		!strings.Contains(stderr.String(), `warning: user "nosuchuser-hd7" is not known on this host`) {
		t.Errorf("token pair --user nosuchuser-hd7: %v, %q, stderr %q; want a code and a warning", err, out, stderr.String())
	}
	// A ttl within the bound is taken as given.
	if out := string(d.MustCtl("token", "pair", "--user", "root", "--ttl", "2m")); !strings.Contains(out, "pairing code:") {
		t.Errorf("token pair --ttl 2m: %q", out)
	}
	// drain without an id names this server.
	if out := string(d.MustCtl("server", "drain")); out != "server adm-input: drained\n" {
		t.Errorf("server drain = %q; want \"server adm-input: drained\"", out)
	}
	d.MustCtl("server", "undrain")
	if log := d.LogTail(1 << 20); strings.Contains(log, "[ERROR]") {
		t.Errorf("bad input logged as an error of the daemon:\n%s", log)
	}
}

// TestAdminNoOpChangesNoEvent: an event says something changed. Disabling
// a disabled token, enabling an enabled one, draining a drained server or
// undraining one that is not drained answers success (the calls are
// idempotent) but emits no event: before, every repeat emitted
// token_disabled, server_draining, ... again, so a script or a hook
// auditing the changes saw changes that never happened. A deleted token's
// event names its user, as the others do.
func TestAdminNoOpChangesNoEvent(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	d := testutil.NewDaemon(t, buildBinaries(t), dir, testutil.AdminSocket(dir),
		testutil.DaemonConfig(t, "adm-noop", dir, testutil.FreeAddr(t), ""))
	d.Start()
	d.MustCtl("token", "register", "uid.0a0b0c0d", "--user", "root")
	for _, args := range [][]string{
		{"token", "disable", "uid.0a0b0c0d"}, {"token", "disable", "uid.0a0b0c0d"},
		{"token", "enable", "uid.0a0b0c0d"}, {"token", "enable", "uid.0a0b0c0d"},
		{"server", "undrain"}, // not drained
		{"server", "drain"}, {"server", "drain"},
		{"server", "undrain"}, {"server", "undrain"},
		{"token", "delete", "uid.0a0b0c0d"},
	} {
		d.MustCtl(args...)
	}
	// The stored history is written asynchronously: wait for the last one.
	var events []map[string]any
	testutil.WaitFor(t, 20*time.Second, "token_deleted in the stored events", func() bool {
		events = nil
		for _, line := range strings.Split(strings.TrimSpace(string(d.MustCtl("events", "-n", "100", "--json"))), "\n") {
			var ev map[string]any
			if json.Unmarshal([]byte(line), &ev) == nil {
				events = append(events, ev)
			}
		}
		return slices.ContainsFunc(events, func(ev map[string]any) bool { return ev["kind"] == "token_deleted" })
	})
	count := map[string]int{}
	for _, ev := range events {
		count[ev["kind"].(string)]++
		if ev["kind"] == "token_deleted" && ev["user"] != "root" {
			t.Errorf("token_deleted %v; want user root", ev)
		}
	}
	for _, kind := range []string{"token_disabled", "token_enabled", "server_draining", "server_undrained", "token_deleted"} {
		if count[kind] != 1 {
			t.Errorf("%d %s events; want 1 (a repeated call changes nothing): %v", count[kind], kind, count)
		}
	}
}
