package main

import (
	"encoding/json"
	"fmt"
	"os"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/hotdesk/hotdesk/internal/testutil"
	"github.com/hotdesk/hotdesk/proto"
)

// TestLockoutSharedE2E: failed password logins at one broker of a group
// lock the user out at every broker. The lockout b1 starts is published in
// the registry; b2, where lou then types the right password, refuses it
// as locked out instead of giving her a desktop (each broker counting only
// its own failures would give an attacker max_failures guesses per
// broker).
func TestLockoutSharedE2E(t *testing.T) {
	requireSecureE2E(t)
	t.Parallel()
	g, b1, b2, at := louGroup(t, 2)
	// Logins are placed at b1 while b2 drains.
	g.ctl(b1, "server", "drain", "b2")
	for i, want := range []string{"", proto.DetailLockoutStarted} {
		ev := at(b1).present(fmt.Sprintf("t-guess%d", i), "user:lou", "not-her-pw")
		if ev["event"] != "error" || ev["name"] != proto.ErrAuthFailed.String() || fmt.Sprint(ev["detail"]) != want && want != "" {
			t.Fatalf("wrong password %d at b1: %v; want auth_failed (detail %q)", i+1, ev, want)
		}
	}
	g.ctl(b1, "server", "undrain", "b2")
	g.ctl(b1, "server", "drain", "b1")
	testutil.WaitFor(t, 20*time.Second, "b2 to learn of b1's lockout", func() bool {
		log, _ := os.ReadFile(b2.LogPath())
		return strings.Contains(string(log), "login lockout imposed by another server")
	})
	ev := at(b2).present("t-lou", "user:lou", "lou-pw")
	if ev["event"] != "error" || ev["name"] != proto.ErrRateLimited.String() || ev["detail"] != proto.DetailLockedOut {
		t.Fatalf("right password at b2 during b1's lockout: %v; want rate_limited, detail %s", ev, proto.DetailLockedOut)
	}
	if ss := g.sessions(b2, "-user", "lou"); len(ss) != 0 {
		t.Fatalf("lou's sessions %+v; want none", ss)
	}

	// The administrator, at b2, sees the lockout b1 started and ends it
	// for the whole group; lou's right password works at b2 then.
	var ls []struct {
		Key, Server string
		Level       int
	}
	if err := json.Unmarshal([]byte(g.ctl(b2, "lockout", "list", "--json")), &ls); err != nil {
		t.Fatal(err)
	}
	if !slices.ContainsFunc(ls, func(l struct {
		Key, Server string
		Level       int
	}) bool {
		return l.Key == "user:lou" && l.Server == "b1" && l.Level == 1
	}) {
		t.Fatalf("hotdeskctl lockout list at b2: %+v; want user:lou from b1 at level 1", ls)
	}
	if out := g.ctl(b2, "lockout", "clear", "user:lou"); !strings.Contains(out, "cleared") {
		t.Fatalf("lockout clear: %q", out)
	}
	if err := g.ctlErr(b2, "lockout", "clear", "user:lou"); err == nil {
		t.Fatal("clearing a lockout no longer in force succeeded; want an error")
	}
	testutil.WaitFor(t, 20*time.Second, "b2 to hear of the clearing", func() bool {
		log, _ := os.ReadFile(b2.LogPath())
		return strings.Contains(string(log), "login lockout cleared by an administrator")
	})
	if ev := at(b2).present("t-lou2", "user:lou", "lou-pw"); ev["event"] != "attached" || ev["server"] != "b2" {
		t.Fatalf("right password at b2 after the clear: %v; want attached at b2", ev)
	}
}

// TestLockoutGroupFailuresE2E: failures count for the group, not for the broker
// where they happen. With max_failures = 3, wrong passwords alternated
// between b1 and b2 (two at b1, one at b2; after one at each,
// `hotdeskctl lockout failures` shows two) lock lou out at both brokers,
// though neither saw three: the registry's count reached three, and
// the broker whose failure reached it started the lockout. (Counting per
// broker, an attacker would get three guesses at each.)
func TestLockoutGroupFailuresE2E(t *testing.T) {
	requireSecureE2E(t)
	t.Parallel()
	g, b1, b2, at := louGroup(t, 3)
	// place sends the next login to b (the other broker drains).
	drained := ""
	place := func(b, other *groupBroker) {
		if drained != "" {
			g.ctl(b, "server", "undrain", drained)
		}
		g.ctl(b, "server", "drain", other.id)
		drained = other.id
	}
	for i, b := range []*groupBroker{b1, b2, b1} {
		other := b2
		if b == b2 {
			other = b1
		}
		place(b, other)
		ev := at(b).present(fmt.Sprintf("t-guess%d", i), "user:lou", "not-her-pw")
		if ev["event"] != "error" || ev["name"] != proto.ErrAuthFailed.String() {
			t.Fatalf("wrong password %d at %s: %v; want auth_failed", i+1, b.id, ev)
		}
		if i == 1 {
			// One failure at each: the group's count, as an administrator
			// sees it, is two.
			testutil.WaitFor(t, 20*time.Second, "the group's count of lou's failures at 2", func() bool {
				var fs []struct {
					Key   string
					Count int
				}
				return json.Unmarshal([]byte(g.ctl(b1, "lockout", "failures", "--json")), &fs) == nil &&
					slices.ContainsFunc(fs, func(f struct {
						Key   string
						Count int
					}) bool {
						return f.Key == "user:lou" && f.Count == 2
					})
			})
		}
	}
	// The lockout starts at whichever broker first knew of three failures
	// (its own counted with the group's it had heard of, or the count its
	// failure raised to three in the registry); the other imposes it.
	for _, b := range g.brokers {
		testutil.WaitFor(t, 20*time.Second, b.id+" to lock lou out", func() bool {
			log, _ := os.ReadFile(b.LogPath())
			return strings.Contains(string(log), "login lockout started") ||
				strings.Contains(string(log), "login lockout imposed by another server")
		})
	}
	for i, b := range []*groupBroker{b2, b1} {
		other := b1
		if b == b1 {
			other = b2
		}
		place(b, other)
		ev := at(b).present(fmt.Sprintf("t-lou%d", i), "user:lou", "lou-pw")
		if ev["event"] != "error" || ev["name"] != proto.ErrRateLimited.String() || ev["detail"] != proto.DetailLockedOut {
			t.Fatalf("right password at %s after 3 failures in the group: %v; want rate_limited, detail %s", b.id, ev, proto.DetailLockedOut)
		}
	}
	var ls []struct{ Key string }
	if err := json.Unmarshal([]byte(g.ctl(b1, "lockout", "list", "--json")), &ls); err != nil {
		t.Fatal(err)
	}
	if !slices.ContainsFunc(ls, func(l struct{ Key string }) bool { return l.Key == "user:lou" }) {
		t.Fatalf("hotdeskctl lockout list: %+v; want user:lou", ls)
	}
	if ss := g.sessions(b1, "-user", "lou"); len(ss) != 0 {
		t.Fatalf("lou's sessions %+v; want none", ss)
	}
}

// louGroup starts two brokers of one group where lou logs in by password
// (lou-pw) with max_failures and a 10 m lockout; at gives a broker's e2e
// handle.
func louGroup(t *testing.T, maxFailures int) (g *testGroup, b1, b2 *groupBroker, at func(*groupBroker) *e2e) {
	t.Helper()
	pamDir := testutil.MatrixServices(t, t.TempDir(), "lou:lou-pw:hotdesk\n", "", "hotdesk")
	g = startGroup(t, 2, fmt.Sprintf(`auth {
  pam_dir      = %q
  open_session = false
  max_failures = %d
  lockout      = "10m"
  policy {
    users = ["lou"]
    auth  = "password"
  }
}`, pamDir, maxFailures))
	at = func(b *groupBroker) *e2e {
		return &e2e{t: t, d: b.Daemon, bin: g.bin, dir: b.Dir, addr: b.addr, pin: b.Pin, socket: b.Socket}
	}
	return g, g.brokers[0], g.brokers[1], at
}
