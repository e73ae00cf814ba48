package testutil

import (
	"bufio"
	"crypto/rand"
	"fmt"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// UniqueName returns base followed by n random lower-case letters: a name
// (an account, a prefix) of one test's own, which no other test running
// beside it uses.
func UniqueName(t testing.TB, base string, n int) string {
	t.Helper()
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	for i := range b {
		b[i] = 'a' + b[i]%26
	}
	return base + string(b)
}

// KioskAccountPrefix returns a kiosk account prefix of its own for one test
// (a daemon's compositor.kiosk_account_prefix): "hdt" and 5 random
// lower-case letters, so the pooled accounts the test's daemon creates
// (<prefix>1, <prefix>2, …) are told apart from every other test's and a
// site's. Call it before starting the daemon: its t.Cleanup then runs after
// the daemon's stop (cleanups run last-registered first) and removes those
// accounts with RemoveAccounts.
func KioskAccountPrefix(t testing.TB) string {
	t.Helper()
	prefix := UniqueName(t, "hdt", 5)
	t.Cleanup(func() {
		var names []string
		for _, name := range LocalAccounts() {
			if n, ok := strings.CutPrefix(name, prefix); ok {
				if _, err := strconv.Atoi(n); err == nil {
					names = append(names, name)
				}
			}
		}
		RemoveAccounts(t, names...)
	})
	return prefix
}

// RemoveAccountAfter removes local account name at the end of the test if it
// does not exist now (the test is about to create it): a test removes only
// the accounts it created. Call it before creating the account.
func RemoveAccountAfter(t testing.TB, name string) {
	t.Helper()
	for _, n := range LocalAccounts() {
		if n == name {
			return // not ours
		}
	}
	t.Cleanup(func() { RemoveAccounts(t, name) })
}

// LocalAccounts lists the account names in /etc/passwd.
func LocalAccounts() []string {
	f, err := os.Open("/etc/passwd")
	if err != nil {
		return nil
	}
	defer f.Close()
	var out []string
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if name, _, ok := strings.Cut(sc.Text(), ":"); ok && name != "" {
			out = append(out, name)
		}
	}
	return out
}

// RemoveAccounts deletes the named local accounts (and their groups, as
// userdel does for a user's own group): first every process still running
// as one is killed (a desktop left by a test that failed half-way), then
// userdel, retried while another process holds the passwd lock. The
// weston account pool's lock file of the account is removed too. Failures
// are test errors.
func RemoveAccounts(t testing.TB, names ...string) {
	t.Helper()
	for _, name := range names {
		if name == "" || name == "root" {
			continue
		}
		if out, err := exec.Command("id", "-u", name).Output(); err == nil {
			if uid, err := strconv.Atoi(strings.TrimSpace(string(out))); err == nil && uid != 0 && uid != os.Geteuid() {
				killUID(uid)
			}
		} else {
			continue // already gone
		}
		var err error
		var out []byte
		for attempt := 1; attempt <= 10; attempt++ {
			if out, err = exec.Command("userdel", name).CombinedOutput(); err == nil {
				break
			}
			if exec.Command("id", "-u", name).Run() != nil {
				err = nil // removed meanwhile
				break
			}
			time.Sleep(time.Duration(attempt) * 50 * time.Millisecond)
		}
		if err != nil {
			t.Errorf("testutil: userdel %s: %v: %s", name, err, out)
			continue
		}
		_ = os.Remove(filepath.Join("/run/lock", "hotdesk-"+name+".lock"))
	}
}

// killUID sends SIGKILL to every process whose real uid is uid, a few rounds.
func killUID(uid int) {
	for range 5 {
		hit := 0
		for _, pid := range Pids(func(pid int) bool {
			var st syscall.Stat_t
			return syscall.Stat(filepath.Join("/proc", strconv.Itoa(pid)), &st) == nil && int(st.Uid) == uid
		}) {
			if syscall.Kill(pid, syscall.SIGKILL) == nil {
				hit++
			}
		}
		if hit == 0 {
			return
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// Pids returns the pids of the running processes match says yes to.
func Pids(match func(pid int) bool) []int {
	var pids []int
	entries, _ := os.ReadDir("/proc")
	for _, e := range entries {
		if pid, err := strconv.Atoi(e.Name()); err == nil && match(pid) {
			pids = append(pids, pid)
		}
	}
	return pids
}

// WithOwnKioskAccounts returns the hotdeskd configuration cfg with a kiosk
// account prefix of the test's own (KioskAccountPrefix): set in its
// compositor block, replacing one already there, or in a new block. The
// accounts the daemon creates are removed after the test.
func WithOwnKioskAccounts(t testing.TB, cfg string) string {
	t.Helper()
	line := fmt.Sprintf("kiosk_account_prefix = %q", KioskAccountPrefix(t))
	if re := regexp.MustCompile(`kiosk_account_prefix\s*=\s*"[^"]*"`); re.MatchString(cfg) {
		return re.ReplaceAllLiteralString(cfg, line)
	}
	if re := regexp.MustCompile(`(?m)^compositor\s*\{[ \t]*$`); re.MatchString(cfg) {
		loc := re.FindStringIndex(cfg)
		return cfg[:loc[1]] + "\n  " + line + cfg[loc[1]:]
	}
	return cfg + "\ncompositor {\n  " + line + "\n}\n"
}

// AddAccount creates local account name (its own group, no home, no login
// shell) unless it exists, and removes it when the test ends if it created
// it. useradd is retried while another process (another test's daemon
// adding kiosk accounts) holds the passwd lock.
func AddAccount(t testing.TB, name string) {
	t.Helper()
	if _, err := user.Lookup(name); err == nil {
		return
	}
	RemoveAccountAfter(t, name)
	var out []byte
	var err error
	for attempt := 1; attempt <= 10; attempt++ {
		out, err = exec.Command("useradd", "--user-group", "--no-create-home", "--shell", "/usr/sbin/nologin", name).CombinedOutput()
		if _, lerr := user.Lookup(name); lerr == nil {
			return
		}
		time.Sleep(time.Duration(attempt) * 100 * time.Millisecond)
	}
	t.Fatalf("useradd %s: %v: %s", name, err, out)
}
