package weston

import (
	"bufio"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/hotdesk/hotdesk/compositor/procsup"
)

// ErrRootDesktop is returned by Create when the desktop would run as uid 0
// (or as the daemon's own uid): a desktop runs every program its user
// starts, so it never gets the daemon's privileges.
var ErrRootDesktop = errors.New("weston: refusing to run a desktop as root or as the daemon's user")

// ErrNoAccount is returned by Create when every pooled account is in use.
var ErrNoAccount = errors.New("weston: no free kiosk account")

// Defaults of the kiosk account pool.
const (
	DefaultAccountPrefix = "hdkiosk"
	DefaultMaxAccounts   = 256
	// DefaultMinUID is the smallest uid a session's own user may have to
	// run its desktop: system accounts (and nobody) get a pooled account.
	DefaultMinUID = 1000
	nobodyUID     = 65534
)

// accountPool hands out unprivileged local accounts, <prefix>1 … <prefix>N,
// to desktops whose user has no usable local account (kiosk sessions, users
// known to PAM but not to NSS, system accounts). Accounts are created on
// first use with useradd (system account, own group, no login shell, no
// home: every session gets a fresh home in its state directory); one
// account serves one session at a time, and when the session ends every
// process left running as it is killed before it is handed out again.
type accountPool struct {
	prefix string
	max    int
	log    hclog.Logger

	// lockDir holds the flock files (one account, one session, across
	// processes); lockErr, if set, says why there is none.
	lockDir string
	lockErr error

	mu    sync.Mutex
	inUse map[string]*procsup.FileLock // account → its held lock
}

// AccountLockDir is where the daemons of a host lock the pooled accounts
// they hand out: a directory of root's that no other user can write to
// (in world-writable /run/lock any user could take every account's lock
// and so refuse every pooled desktop).
const AccountLockDir = "/run/hotdesk-accounts"

func newAccountPool(prefix string, max int, log hclog.Logger) *accountPool {
	tools() // found now, at start, as hotdeskd -check found them
	dir := AccountLockDir
	if os.Geteuid() != 0 {
		// Only root creates accounts; this serves tests and unprivileged
		// runs, which find none to hand out.
		dir = filepath.Join(os.TempDir(), "hotdesk-accounts-"+strconv.Itoa(os.Geteuid()))
	}
	return newAccountPoolIn(dir, prefix, max, log)
}

// accountLockPattern matches the names of the account lock files.
const accountLockPattern = "hotdesk-*.lock"

// newAccountPoolIn is newAccountPool with its locks in dir. It removes the
// lock files nobody holds: those a daemon that died (or a test's) left.
func newAccountPoolIn(dir, prefix string, max int, log hclog.Logger) *accountPool {
	p := &accountPool{prefix: prefix, max: max, log: log, lockDir: dir, inUse: make(map[string]*procsup.FileLock)}
	if p.lockErr = privateDir(dir); p.lockErr != nil {
		return p
	}
	n, err := procsup.RemoveStaleLocks(dir, accountLockPattern)
	if n > 0 {
		log.Debug("removed stale kiosk account locks", "dir", dir, "locks", n)
	}
	if err != nil {
		log.Warn("cannot remove stale kiosk account locks", "dir", dir, "error", err)
	}
	return p
}

// privateDir makes sure dir exists and only this process's user may write
// to it: a directory (not a link) it owns, without group or other write.
func privateDir(dir string) error {
	if err := os.Mkdir(dir, 0o700); err != nil && !errors.Is(err, fs.ErrExist) {
		return fmt.Errorf("account lock directory: %w", err)
	}
	fi, err := os.Lstat(dir)
	if err != nil {
		return fmt.Errorf("account lock directory: %w", err)
	}
	st, ok := fi.Sys().(*syscall.Stat_t)
	switch {
	case !fi.IsDir():
		return fmt.Errorf("account lock directory %s is not a directory", dir)
	case !ok || int(st.Uid) != os.Geteuid():
		return fmt.Errorf("account lock directory %s is not owned by uid %d", dir, os.Geteuid())
	case fi.Mode().Perm()&0o022 != 0:
		return fmt.Errorf("account lock directory %s is writable by others (mode %v)", dir, fi.Mode().Perm())
	}
	return nil
}

// lock takes the cross-process lock of account (two daemons on one host
// never share an account); nil if another process holds it.
func (p *accountPool) lock(account string) *procsup.FileLock {
	l, err := procsup.LockFile(filepath.Join(p.lockDir, strings.Replace(accountLockPattern, "*", account, 1)))
	if err != nil {
		if !errors.Is(err, procsup.ErrLocked) {
			p.log.Warn("cannot lock kiosk account", "account", account, "error", err)
		}
		return nil
	}
	return l
}

// owns reports whether name is one of the pool's accounts.
func (p *accountPool) owns(name string) bool {
	n, ok := strings.CutPrefix(name, p.prefix)
	if !ok {
		return false
	}
	i, err := strconv.Atoi(n)
	return err == nil && i >= 1 && i <= p.max && strconv.Itoa(i) == n
}

// acquire returns a free account for session id, creating it if needed.
func (p *accountPool) acquire(id string) (*user.User, error) {
	if p.lockErr != nil {
		return nil, fmt.Errorf("%w: %w", ErrNoAccount, p.lockErr)
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	for i := 1; i <= p.max; i++ {
		name := p.prefix + strconv.Itoa(i)
		if _, busy := p.inUse[name]; busy {
			continue
		}
		lf := p.lock(name)
		if lf == nil {
			continue // another daemon's session
		}
		u, err := p.ensure(name)
		if err != nil {
			p.unlock(name, lf)
			return nil, err
		}
		p.inUse[name] = lf
		return u, nil
	}
	return nil, fmt.Errorf("%w (%d in use)", ErrNoAccount, p.max)
}

// ensure looks account name up, creating it if it does not exist.
func (p *accountPool) ensure(name string) (*user.User, error) {
	{
		u, err := user.Lookup(name)
		var unknown user.UnknownUserError
		if errors.As(err, &unknown) {
			// useradd fails while another process holds /etc/passwd's
			// lock, or when another daemon created the account meanwhile.
			var cerr error
			var out []byte
			for attempt := 1; attempt <= 5; attempt++ {
				useradd, terr := tool("useradd")
				if terr != nil {
					return nil, terr
				}
				out, cerr = exec.Command(useradd, "--system", "--user-group", "--no-create-home",
					"--home-dir", "/nonexistent", "--shell", "/usr/sbin/nologin",
					"--comment", "hotdesk kiosk desktop", name).CombinedOutput()
				if u, err = user.Lookup(name); err == nil {
					break
				}
				time.Sleep(time.Duration(attempt) * 100 * time.Millisecond)
			}
			if err != nil {
				return nil, fmt.Errorf("useradd %s: %v: %s", name, cerr, strings.TrimSpace(string(out)))
			}
			if cerr == nil {
				p.log.Info("kiosk account created", "account", name)
			}
		}
		if err != nil {
			return nil, fmt.Errorf("kiosk account %s: %w", name, err)
		}
		if uid, _ := strconv.Atoi(u.Uid); uid == 0 || uid == os.Geteuid() {
			return nil, fmt.Errorf("%w: account %s has uid %d", ErrRootDesktop, name, uid)
		}
		return u, nil
	}
}

// markUsed records that an adopted session runs as account.
func (p *accountPool) markUsed(account, id string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if _, ok := p.inUse[account]; ok {
		return
	}
	lf := p.lock(account)
	if lf == nil {
		p.log.Warn("adopted session's kiosk account is locked by another process", "account", account, "session_id", id)
	}
	p.inUse[account] = lf
}

// release kills whatever still runs as account, removes its cron table,
// its at jobs, what it left in the shared temporary directories
// (tmpRoots) and its System V IPC objects, and frees it.
func (p *accountPool) release(account, procRoot string, tmpRoots []string) {
	if u, err := user.Lookup(account); err == nil {
		if uid, err := strconv.Atoi(u.Uid); err == nil && uid != 0 && uid != os.Geteuid() {
			gid, _ := strconv.Atoi(u.Gid)
			if err := killAllAs(uid, gid); err != nil {
				p.log.Warn("cannot kill the processes of a kiosk account at once", "account", account, "error", err)
			}
			// Before the last kill: a job cron started meanwhile dies.
			if removed, err := removeCrontab(account); err != nil {
				p.log.Warn("cannot remove the cron table of a kiosk account", "account", account, "error", err)
			} else if removed {
				p.log.Info("removed the cron table a kiosk session left", "account", account)
			}
			if n, err := removeAtJobs(account, uid, gid); err != nil {
				p.log.Warn("cannot remove the at jobs of a kiosk account", "account", account, "error", err)
			} else if n > 0 {
				p.log.Info("removed at jobs a kiosk session left", "account", account, "jobs", n)
			}
			if n := killUID(procRoot, uid); n > 0 {
				p.log.Info("killed processes left by a kiosk session", "account", account, "processes", n)
			}
			// After the kill: nothing of the account runs to add more.
			n, err := removeOwned(tmpRoots, uid)
			if n > 0 {
				p.log.Info("removed files left by a kiosk session", "account", account, "entries", n)
			}
			if err != nil {
				p.log.Warn("cannot remove files left by a kiosk session", "account", account, "error", err)
			}
			n, err = removeIPC(filepath.Join(procRoot, "sysvipc"), uid)
			if n > 0 {
				p.log.Info("removed System V IPC objects left by a kiosk session", "account", account, "objects", n)
			}
			if err != nil {
				p.log.Warn("cannot remove System V IPC objects left by a kiosk session", "account", account, "error", err)
			}
		}
	}
	p.mu.Lock()
	if lf := p.inUse[account]; lf != nil {
		p.unlock(account, lf)
	}
	delete(p.inUse, account)
	p.mu.Unlock()
}

// unlock frees account's lock and removes its file (every session would
// otherwise leave one behind: with per-test prefixes, thousands). The file
// goes while the lock is held, which LockFile tells apart from a free lock.
func (p *accountPool) unlock(account string, lf *procsup.FileLock) {
	if err := lf.Remove(); err != nil {
		p.log.Warn("cannot remove a kiosk account's lock", "account", account, "error", err)
	}
}

// defaultTmpRoots are the shared temporary directories a pooled account's
// leftovers are removed from when its session ends: the next session of
// the account is someone else's.
var defaultTmpRoots = []string{"/tmp", "/var/tmp", "/dev/shm"}

// removeOwned removes every entry directly in one of roots that uid owns
// (with what it contains), and returns how many it removed. A root that is
// not a directory of root's with the sticky bit, as those are, is skipped:
// there another user could swap an entry between the check and the
// removal. The entries' owner is dead and may not act meanwhile (its
// processes are killed, its account locked); os.RemoveAll follows no
// symbolic link, neither the entry nor one below it.
func removeOwned(roots []string, uid int) (int, error) {
	n := 0
	var errs []error
	for _, root := range roots {
		fi, err := os.Lstat(root)
		if errors.Is(err, fs.ErrNotExist) {
			continue
		}
		if err != nil {
			errs = append(errs, err)
			continue
		}
		st, ok := fi.Sys().(*syscall.Stat_t)
		if !fi.IsDir() || !ok || st.Uid != 0 || fi.Mode()&fs.ModeSticky == 0 {
			errs = append(errs, fmt.Errorf("%s: not a sticky directory of root's (mode %v): skipped", root, fi.Mode()))
			continue
		}
		entries, err := os.ReadDir(root)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		for _, e := range entries {
			path := filepath.Join(root, e.Name())
			fi, err := os.Lstat(path)
			if err != nil {
				continue // gone meanwhile
			}
			if st, ok := fi.Sys().(*syscall.Stat_t); !ok || int(st.Uid) != uid {
				continue
			}
			if err := os.RemoveAll(path); err != nil {
				errs = append(errs, err)
				continue
			}
			n++
		}
	}
	return n, errors.Join(errs...)
}

// removeCrontab removes account's cron table, if it has one, and reports
// whether it did. cron runs a table whether or not a session of its
// account runs: a job a session left would run during the account's next
// session, someone else's, as that session's user (its home, its
// desktop's socket). Without crontab (no cron installed) there is none.
func removeCrontab(account string) (bool, error) {
	crontab, err := tool("crontab")
	if err != nil {
		return false, nil
	}
	// -r of an account without a table fails with no more than a message.
	if exec.Command(crontab, "-u", account, "-l").Run() != nil {
		return false, nil
	}
	if out, err := exec.Command(crontab, "-u", account, "-r").CombinedOutput(); err != nil {
		return false, fmt.Errorf("crontab -u %s -r: %w: %s", account, err, strings.TrimSpace(string(out)))
	}
	return true, nil
}

// removeAtJobs removes the jobs account (uid, gid) queued with at(1) or
// batch(1), and returns how many: as a cron table's, they run as the
// account when due, during its next session, someone else's. atq and
// atrm run as the account, which lists and removes its own jobs (at is
// setuid daemon on Debian: not run as root). Without atq (at not
// installed) there are none. A job atd already started is killed as the
// account's other processes are.
func removeAtJobs(account string, uid, gid int) (int, error) {
	atq, err := tool("atq")
	if err != nil {
		return 0, nil
	}
	asAccount := func(cmd *exec.Cmd) *exec.Cmd {
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid), Groups: []uint32{}}}
		cmd.Env = []string{"PATH=/usr/bin:/bin", "LOGNAME=" + account, "USER=" + account}
		cmd.Dir = "/"
		return cmd
	}
	// "ID<tab>date queue user", one line a job.
	out, err := asAccount(exec.Command(atq)).Output()
	if err != nil {
		return 0, fmt.Errorf("atq as %s: %w", account, err)
	}
	var ids []string
	for _, l := range strings.Split(string(out), "\n") {
		if f := strings.Fields(l); len(f) > 1 {
			ids = append(ids, f[0])
		}
	}
	if len(ids) == 0 {
		return 0, nil
	}
	atrm, err := tool("atrm")
	if err != nil {
		return 0, err
	}
	if out, err := asAccount(exec.Command(atrm, ids...)).CombinedOutput(); err != nil {
		return 0, fmt.Errorf("atrm %s as %s: %w: %s", strings.Join(ids, " "), account, err, strings.TrimSpace(string(out)))
	}
	return len(ids), nil
}

// removeIPC removes the System V shared memory segments, message queues
// and semaphore sets that uid owns or created, as listed in sysvipcRoot
// (/proc/sysvipc: this IPC namespace, the desktops'), with ipcrm; as
// logind's RemoveIPC does when a user's last session ends. They outlive
// their processes: a segment may hold a window's pixels. It returns how
// many it removed.
func removeIPC(sysvipcRoot string, uid int) (int, error) {
	var args []string
	var errs []error
	for _, k := range []struct{ file, idCol, flag string }{
		{"shm", "shmid", "--shmem-id"}, {"msg", "msqid", "--queue-id"}, {"sem", "semid", "--semaphore-id"},
	} {
		b, err := os.ReadFile(filepath.Join(sysvipcRoot, k.file))
		if errors.Is(err, fs.ErrNotExist) {
			continue
		}
		if err != nil {
			errs = append(errs, err)
			continue
		}
		lines := strings.Split(string(b), "\n")
		head := strings.Fields(lines[0])
		idCol, uidCol, cuidCol := slices.Index(head, k.idCol), slices.Index(head, "uid"), slices.Index(head, "cuid")
		if idCol < 0 || uidCol < 0 || cuidCol < 0 {
			errs = append(errs, fmt.Errorf("%s/%s: unexpected header %q", sysvipcRoot, k.file, lines[0]))
			continue
		}
		for _, l := range lines[1:] {
			f := strings.Fields(l)
			if len(f) <= max(idCol, uidCol, cuidCol) {
				continue
			}
			if f[uidCol] == strconv.Itoa(uid) || f[cuidCol] == strconv.Itoa(uid) {
				args = append(args, k.flag, f[idCol])
			}
		}
	}
	if len(args) == 0 {
		return 0, errors.Join(errs...)
	}
	ipcrm, err := tool("ipcrm")
	if err != nil {
		return 0, errors.Join(append(errs, err)...)
	}
	if out, err := exec.Command(ipcrm, args...).CombinedOutput(); err != nil {
		errs = append(errs, fmt.Errorf("ipcrm: %w: %s", err, strings.TrimSpace(string(out))))
	}
	return len(args) / 2, errors.Join(errs...)
}

// accountTools are the system tools the pool runs (as root, or as a
// pooled account).
var accountTools = []string{"useradd", "crontab", "atq", "atrm", "ipcrm"}

// tools returns where accountTools are, as PATH found them the first time
// it was called (newAccountPool calls it: at start, when hotdeskd -check
// looked at them too). A tool put later in a directory of PATH ahead of
// the one found, by whoever may write there, is never run: as root, or as
// every pooled account.
var tools = sync.OnceValue(func() map[string]string {
	m := map[string]string{}
	for _, name := range accountTools {
		if p, err := exec.LookPath(name); err == nil {
			m[name] = p
		}
	}
	return m
})

// tool returns where tool name is (see tools), or an error wrapping
// exec.ErrNotFound if PATH had none at start.
func tool(name string) (string, error) {
	if p, ok := tools()[name]; ok {
		return p, nil
	}
	return "", fmt.Errorf("%s: %w in PATH at start", name, exec.ErrNotFound)
}

// killAllAs kills every process of uid at once: a shell running as uid
// (and gid, no supplementary groups) calls kill(-1, SIGKILL), which reaches
// every process uid may signal (real or saved uid uid) but itself, and
// which the kernel delivers while no process can fork. A scan of /proc
// (killUID) cannot do that: a process that keeps forking and exiting is at
// another pid by the time it is signalled, and so it outlived its session
// into the account's next one.
func killAllAs(uid, gid int) error {
	cmd := exec.Command("/bin/sh", "-c", "kill -9 -1")
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid), Groups: []uint32{}}}
	cmd.Dir = "/"
	cmd.Env = []string{"PATH=/usr/bin:/bin"}
	if out, err := cmd.CombinedOutput(); err != nil {
		var exit *exec.ExitError
		if errors.As(err, &exit) && len(out) == 0 {
			return nil // nothing was left to signal (kill's ESRCH)
		}
		return fmt.Errorf("kill -1 as uid %d: %w: %s", uid, err, strings.TrimSpace(string(out)))
	}
	return nil
}

// killUID sends SIGKILL to every process whose real or effective uid is uid,
// a few rounds (after killAllAs, for what it may not reach: a process whose
// effective uid only is uid), and returns how many it hit.
func killUID(procRoot string, uid int) int {
	n := 0
	for round := 0; round < 3; round++ {
		hit := 0
		entries, _ := os.ReadDir(procRoot)
		for _, e := range entries {
			pid, err := strconv.Atoi(e.Name())
			if err != nil {
				continue
			}
			if r, eff, ok := procUIDs(procRoot, pid); ok && (r == uid || eff == uid) {
				if syscall.Kill(pid, syscall.SIGKILL) == nil {
					hit++
				}
			}
		}
		n += hit
		if hit == 0 {
			break
		}
	}
	return n
}

// procUIDs reads the real and effective uid of pid from /proc/PID/status.
func procUIDs(procRoot string, pid int) (real, eff int, ok bool) {
	f, err := os.Open(filepath.Join(procRoot, strconv.Itoa(pid), "status"))
	if err != nil {
		return 0, 0, false
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		rest, found := strings.CutPrefix(sc.Text(), "Uid:")
		if !found {
			continue
		}
		fs := strings.Fields(rest)
		if len(fs) < 2 {
			return 0, 0, false
		}
		r, err1 := strconv.Atoi(fs[0])
		e, err2 := strconv.Atoi(fs[1])
		return r, e, err1 == nil && err2 == nil
	}
	return 0, 0, false
}

// ensureTraversable makes every directory from dir up to the root
// searchable by others (o+x, never o+r or o+w), so that a desktop running
// as its user can reach its own session directory below a data directory
// created 0700. A directory owned by someone else that others cannot
// search is an error.
func ensureTraversable(dir string, log hclog.Logger) error {
	for d := dir; ; d = filepath.Dir(d) {
		fi, err := os.Stat(d)
		if err != nil {
			return err
		}
		if fi.Mode().Perm()&0o001 == 0 {
			st, _ := fi.Sys().(*syscall.Stat_t)
			if st == nil || int(st.Uid) != os.Geteuid() {
				return fmt.Errorf("%s is not searchable by other users (mode %v) and not ours to change", d, fi.Mode().Perm())
			}
			mode := fi.Mode().Perm() | 0o011
			if err := os.Chmod(d, mode); err != nil {
				return err
			}
			log.Info("made a parent of the state directory searchable for desktop users", "dir", d, "mode", fmt.Sprintf("%#o", mode))
		}
		if d == filepath.Dir(d) {
			return nil
		}
	}
}

// accountFor returns the local account a desktop of user runs as: user's
// own when it is a regular account (uid ≥ MinUID, not nobody, not the
// daemon's), else a pooled kiosk account (pooled true).
func (b *Backend) accountFor(usr, sessionID string) (*user.User, bool, error) {
	if !b.accounts.owns(usr) {
		if u, err := user.Lookup(usr); err == nil {
			uid, err := strconv.Atoi(u.Uid)
			if err == nil && uid >= b.cfg.MinUID && uid != nobodyUID && uid != os.Geteuid() {
				return u, false, nil
			}
		}
	}
	u, err := b.accounts.acquire(sessionID)
	if err != nil {
		return nil, false, err
	}
	return u, true, nil
}

// releaseAccount frees s's pooled account (killing what it left running,
// removing what it left in the shared temporary directories and its IPC
// objects).
func (b *Backend) releaseAccount(s *session) {
	if s.pooled && s.account != "" {
		b.accounts.release(s.account, b.cfg.procRoot, b.cfg.tmpRoots)
		s.pooled = false
	}
}

// credential is the uid/gid/groups weston runs with under RunAsUser.
func credential(u *user.User) (*syscall.Credential, int, int, error) {
	uid, err := strconv.ParseUint(u.Uid, 10, 32)
	if err != nil {
		return nil, 0, 0, fmt.Errorf("uid %q: %w", u.Uid, err)
	}
	gid, err := strconv.ParseUint(u.Gid, 10, 32)
	if err != nil {
		return nil, 0, 0, fmt.Errorf("gid %q: %w", u.Gid, err)
	}
	var groups []uint32
	if ids, err := u.GroupIds(); err == nil {
		for _, g := range ids {
			if n, err := strconv.ParseUint(g, 10, 32); err == nil {
				groups = append(groups, uint32(n))
			}
		}
	}
	return &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid), Groups: groups}, int(uid), int(gid), nil
}
