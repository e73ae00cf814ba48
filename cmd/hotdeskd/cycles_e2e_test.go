package main

import (
	"fmt"
	"os"
	osuser "os/user"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/hotdesk/hotdesk/internal/testutil"
)

// TestDesktopCycles is the soak of what ships. TestSoak runs many cycles
// on cheap desktops started as the daemon's own user; this one runs fewer
// on the default path, where each new desktop costs the most: a card login
// whose PAM session (open_session) a helper holds for the desktop's life,
// weston started as the user with the session's limits, and at the kill
// the session closed and the user's processes ended. Each cycle creates a
// desktop, hot-desks it to a second terminal and kills it. After the
// cycles the daemon must hold no more descriptors, threads or child
// processes than after the first one, and no process of the user may be
// left: a pipe, a helper or a weston kept per desktop shows here.
func TestDesktopCycles(t *testing.T) {
	t.Parallel() // its own daemon, data dir, ports and terminals
	const cycles, user = 5, "hdcycle"
	testutil.AddAccount(t, user) // a local account: desktops run as it
	e := startE2E(t, "", "card")
	db := filepath.Join(e.dir, "hotdesk.passdb")
	b, err := os.ReadFile(db)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(db, append(b, user+":pw:hotdesk\n"...), 0o600); err != nil {
		t.Fatal(err)
	}
	readHook := e.openSessions("session")
	ks := e.enroll(user)
	pid := e.d.PID()
	u, err := osuser.Lookup(user)
	if err != nil {
		t.Fatal(err)
	}
	uid, _ := strconv.Atoi(u.Uid)
	closes := 0
	cycle := func(i int) {
		t.Helper()
		ev := e.present(fmt.Sprintf("t-dc%da", i), ks)
		if ev["event"] != "attached" || ev["user"] != user {
			t.Fatalf("cycle %d: card login: %v; want attached as %s", i, ev, user)
		}
		sid := fmt.Sprint(ev["session"])
		if ev := e.present(fmt.Sprintf("t-dc%db", i), ks); ev["event"] != "attached" || fmt.Sprint(ev["session"]) != sid {
			t.Fatalf("cycle %d: hot-desk: %v; want attached to %s", i, ev, sid)
		}
		e.d.MustCtl("session", "kill", sid)
		closes++
		waitUntil(t, fmt.Sprintf("cycle %d: the desktop, its PAM session and %s's processes ended", i, user), func() bool {
			return len(e.sessions()) == 0 && strings.Count(readHook(), "close_session "+user) == closes &&
				len(processesOf(uid)) == 0
		}, readHook, func() string { return fmt.Sprint(user, "'s processes: ", processesOf(uid)) })
	}
	cycle(0) // warm-up: the first desktop starts what stays (helpers kept for reuse, caches)
	base, err := readProc(pid)
	if err != nil {
		t.Fatal(err)
	}
	baseKids := childrenOf(pid)
	for i := 1; i <= cycles; i++ {
		cycle(i)
	}
	var now procFigures
	var kids []int
	// Bounds well below one thing a cycle: a leak per desktop is
	// `cycles` more at least.
	waitUntil(t, "the daemon back at its figures after the first desktop", func() bool {
		now, err = readProc(pid)
		kids = childrenOf(pid)
		return err == nil && now.FDs <= base.FDs+2 && now.Threads <= base.Threads+4 && len(kids) <= len(baseKids)
	}, func() string {
		return fmt.Sprintf("after %d more desktops: %d descriptors (%d after the first), %d threads (%d), children %v (%v)",
			cycles, now.FDs, base.FDs, now.Threads, base.Threads, kids, baseKids)
	})
	t.Logf("after %d desktops: %d descriptors (%d after the first), %d threads (%d), %d children (%d)",
		cycles+1, now.FDs, base.FDs, now.Threads, base.Threads, len(kids), len(baseKids))
	// Desktops made, moved and ended as people do: nothing for an
	// administrator to look into.
	if errs := e.d.LogLines("ERROR"); len(errs) > 0 {
		t.Errorf("the cycles logged %d error lines:\n%s", len(errs), strings.Join(errs, "\n"))
	}
}

// processesOf returns the pids of the processes whose real uid is uid.
func processesOf(uid int) []int {
	return testutil.Pids(func(pid int) bool {
		u, err := procStatus(pid, "Uid:")
		return err == nil && len(u) > 0 && u[0] == strconv.Itoa(uid)
	})
}

// childrenOf returns the pids of ppid's child processes.
func childrenOf(ppid int) []int {
	return testutil.Pids(func(pid int) bool {
		p, err := procStatus(pid, "PPid:")
		return err == nil && len(p) > 0 && p[0] == strconv.Itoa(ppid)
	})
}
