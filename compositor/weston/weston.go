// Package weston implements compositor.Backend with one real weston process
// per session.
//
// Layout. Every session gets <StateDir>/<id>/ (0700, root-owned) holding
// session.json (the record Adopt uses), weston.log (weston's stdout and
// stderr; rotated to weston.log.1 when it grows past Config.LogMaxBytes),
// weston.ini (unless Config.ExtraArgs name a configuration) and
// run/ (0700), the session's private XDG_RUNTIME_DIR. Weston listens on
// run/wayland-hd; Info.Endpoint is "wayland:" + that absolute path. The
// backend holds an exclusive flock on <StateDir>/.lock from New to Close, so
// two backends never manage one state directory at the same time.
//
// Processes. Weston runs in its own process group (its helper clients,
// e.g. weston-desktop-shell, and the session's applications share it) with
// a clean environment: HOME, USER, LOGNAME, PATH, XDG_RUNTIME_DIR, LANG and
// Spec.Env; nothing of the broker's environment leaks in. Weston 10 runs as
// root without any special flag; with Config.RunAsUser it runs as
// Spec.User instead. Create returns once the socket accepts a connection.
//
// Supervision. A compositor started by this Backend is waited for by one
// goroutine; an adopted one (not our child) is checked every
// Config.PollInterval of the injected clock: it is alive while
// /proc/<pid>/stat exists, is not a zombie and has the recorded start time.
// An exit not requested through Destroy is logged with the tail of
// weston.log, the rest of its process group is killed, its state directory
// (log included: the tail is in the broker's log) is removed, the session
// is forgotten and then reported once on Exits.
//
// RDP. With Config.Backend "rdp" weston also serves the desktop over RDP
// on 127.0.0.1:<port> (Info.Endpoint "rdp://127.0.0.1:<port>"), with a
// key pair of its own. Weston 10 authenticates no RDP client, so the port
// is added to Config.RDPGuard (nftables: only the daemon's uid may open a
// connection to it) before weston starts, and removed once nothing of the
// session is left; no RDP session starts unguarded.
//
// Suspend and Resume only record the Suspended flag (in memory and in
// session.json): the headless backend has no display stream to cut, and
// the compositor is never stopped, so applications keep running. A record
// that cannot be written (a full disk) is logged and written again at the
// next change; it fails neither.
//
// Destroy sends SIGTERM to the process group, SIGKILL after
// Config.StopGrace, waits for the exit and removes the state directory.
// Close stops supervising and leaves every compositor running; a later
// Backend on the same StateDir takes them over with Adopt.
package weston

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"net"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/hashicorp/go-hclog"

	"github.com/hotdesk/hotdesk/compositor"
	"github.com/hotdesk/hotdesk/compositor/procsup"
	"github.com/hotdesk/hotdesk/internal/clock"
	"github.com/hotdesk/hotdesk/internal/defaults"
	"github.com/hotdesk/hotdesk/internal/rlimit"
)

var _ compositor.Backend = (*Backend)(nil)

// Errors. Suspend, Resume and Destroy of an unknown session use
// compositor.ErrNotFound (Destroy returns nil instead).
var (
	// ErrInvalidSessionID: a session id is not [A-Za-z0-9-]{1,64}.
	ErrInvalidSessionID = errors.New("weston: invalid session id")
	// ErrInvalidSpec: a Spec's user or environment is unusable.
	ErrInvalidSpec = errors.New("weston: invalid spec")
	// ErrExists: the session id is already running or its state directory
	// exists (left by a previous broker: run Adopt first).
	ErrExists = errors.New("weston: session exists")
	// ErrTooManySessions: Config.MaxSessions compositors are running.
	// It wraps compositor.ErrFull.
	ErrTooManySessions = fmt.Errorf("weston: too many sessions: %w", compositor.ErrFull)
	// ErrClosed: the Backend has been closed.
	ErrClosed = errors.New("weston: backend closed")
	// ErrLocked: another Backend holds the state directory.
	ErrLocked = errors.New("weston: state directory in use")
	// ErrStartFailed: weston exited or did not become ready in time.
	ErrStartFailed = errors.New("weston: start failed")
	// ErrUnsupportedBackend: Config.Backend names a backend not implemented.
	ErrUnsupportedBackend = errors.New("weston: unsupported backend")
	// ErrProcessGone: the recorded process no longer runs.
	ErrProcessGone = procsup.ErrProcessGone
	// ErrPIDReused: the recorded pid now belongs to another process.
	ErrPIDReused = procsup.ErrPIDReused
	// ErrRebooted: the record is from an earlier boot.
	ErrRebooted = errors.New("weston: boot id changed")
	// ErrBadRecord: session.json is missing, unreadable or inconsistent.
	ErrBadRecord = errors.New("weston: bad session record")
	// ErrExitedCleanly is the Exit.Err of a compositor that exited with
	// status 0 on its own.
	ErrExitedCleanly = errors.New("weston: exit status 0")
	// ErrRDPUnguarded: the RDP backend's port guard is unavailable or
	// failed, so the session is not started (it would be open to every
	// local user).
	ErrRDPUnguarded = errors.New("weston: rdp port cannot be guarded")
)

const (
	socketName = "wayland-hd"
	logName    = "weston.log"
	iniName    = "weston.ini"
	lockName   = ".lock"
	// maxSocketPath is the longest unix socket path (sun_path minus NUL).
	maxSocketPath = 107
	// Bounds on Spec.Env.
	maxEnvEntries = 128
	maxEnvEntry   = 4096
	exitsBuffer   = 64
	// groupGoneTimeout bounds the wait for a killed session's process
	// group to be gone (SIGKILL cannot be ignored; this is only a guard).
	groupGoneTimeout = 5 * time.Second
	// guardCallTimeout bounds one RDPGuard call made outside a caller's
	// context (exit handling, adoption, checks).
	guardCallTimeout = 10 * time.Second
	// guardCheckEvery is how often (on the injected clock, at a tick)
	// the RDP guard is checked while a guarded session runs.
	guardCheckEvery = 10 * time.Second
)

var (
	sessionIDRe = regexp.MustCompile(`^[A-Za-z0-9-]{1,64}$`)
	userRe      = regexp.MustCompile(`^[A-Za-z0-9_.@][A-Za-z0-9_.@-]{0,255}\$?$`)
	envKeyRe    = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]*$`)
)

// Config configures a Backend. StateDir is required.
type Config struct {
	// Binary is the weston executable, looked up in PATH; default "weston".
	Binary string
	// Backend is the weston backend: "headless" (default) or "rdp" (each
	// session serves its desktop over RDP on a loopback port, guarded by
	// RDPGuard).
	Backend string
	// RDPGuard (Backend "rdp") keeps every session's RDP port reachable by
	// the daemon's uid only: weston 10 authenticates no RDP client, so
	// anyone who connects gets the desktop. A port is added before weston
	// starts and removed once nothing of the session is left; adopted
	// sessions' ports are added again. nil: New sets up a
	// portguard.Guard for the daemon's uid on the table of StateDir,
	// portguard.TableName(StateDir) (one owner at a time: the state
	// directory's lock), and Close deletes that table when no session is
	// left; while the guard cannot be set up (no nft, not root), Create of
	// every session fails with ErrRDPUnguarded naming the cause, and the
	// next Create tries again.
	RDPGuard PortGuard
	// InsecureUnguardedRDP serves RDP without RDPGuard: every local user
	// can connect to every desktop. Single-user hosts only.
	InsecureUnguardedRDP bool
	// StateDir holds one directory per session (created 0700 if missing).
	// Keep it short: <StateDir>/<id>/run/wayland-hd must fit in a unix
	// socket path (107 bytes).
	StateDir string
	// ExtraArgs are appended to weston's command line. Unless they contain
	// -c/--config (the administrator's own weston.ini, used as it is),
	// weston gets the session's weston.ini (see sessionIni): weston's
	// defaults without the on-screen keyboard.
	ExtraArgs []string
	// StartTimeout bounds Create's wait for the socket; default 10s.
	StartTimeout time.Duration
	// StopGrace is how long Destroy waits after SIGTERM before SIGKILL;
	// default 5s.
	StopGrace time.Duration
	// PollInterval is how often adopted compositors are checked and logs
	// are rotated; default 2s.
	PollInterval time.Duration
	// LogMaxBytes bounds weston.log (and weston.log.1); default 4 MiB.
	LogMaxBytes int64
	// MaxSessions bounds how many compositors Create runs at once (adopted
	// ones count but are never refused); 0 means unlimited.
	MaxSessions int
	// RunAsUser runs weston as Spec.User when it is a local account with a
	// uid of at least MinUID that is not the daemon's; any other session
	// (a kiosk session, a user PAM knows but NSS does not, a system
	// account, root) runs as a pooled kiosk account (<KioskAccountPrefix>N,
	// created on demand with useradd, a fresh home in the session's state
	// directory). StateDir is then made 0711 and its parents searchable, a
	// session directory becomes root:<account's group> 0710 and its run/
	// and home/ are owned by the account.
	RunAsUser bool
	// KioskAccountPrefix and MaxKioskAccounts name and bound the pool;
	// defaults DefaultAccountPrefix and DefaultMaxAccounts. MinUID default
	// DefaultMinUID.
	KioskAccountPrefix string
	MaxKioskAccounts   int
	MinUID             int
	// MaxUserTasks, if positive, is the RLIMIT_NPROC of a desktop run as
	// its user (RunAsUser): the tasks (processes and threads) of that uid
	// it may have in all, its programs' included. All desktops are in
	// hotdeskd's service, whose task limit they share: without it, one
	// user's fork bomb takes every task the unit may have, and hotdeskd
	// can start no PAM helper or desktop and the others' desktops no
	// program. Set by prlimit(1) (util-linux), which weston is started
	// through: already the user, it lowers its own limit, then execs
	// weston (the same process), before anything of the user's runs.
	MaxUserTasks int
	// AllowRoot lets a desktop run as the daemon's own user when that is
	// root (RunAsUser false). Never in production: tests with a fake
	// compositor only. Without it Create refuses with ErrRootDesktop.
	AllowRoot bool
	// Logger is the backend's logger; default a null logger.
	Logger hclog.Logger
	// Clock drives StartTimeout, StopGrace and PollInterval; default
	// clock.Real{}.
	Clock clock.Clock

	// procRoot is /proc; tests may point it elsewhere.
	procRoot string
	// tmpRoots are the shared temporary directories cleared of a pooled
	// account's entries when its session ends; default defaultTmpRoots.
	tmpRoots []string
}

// Backend runs weston compositors. It is safe for concurrent use.
type Backend struct {
	cfg    Config
	binary string // resolved path
	// prlimit is prlimit(1)'s resolved path when desktops run as their
	// users (and it was found: without a task limit it may be missing);
	// "" otherwise.
	prlimit string
	// ownLimits are the daemon's resource limits when desktops run as
	// their users, by resource: a desktop's hard limits stay within
	// these (it is started unprivileged).
	ownLimits map[string]rlimit.Limit
	log       hclog.Logger
	clock     clock.Clock
	bootID    string
	lock      *procsup.FileLock

	accounts *accountPool // RunAsUser: pooled kiosk accounts

	// guardMu guards guard and ownGuard (Backend "rdp").
	guardMu  sync.Mutex
	guard    PortGuard // nil: not set up (yet), or InsecureUnguardedRDP
	ownGuard bool      // guard is the default one, on StateDir's table
	// guardChecked is when onTick last checked guard (onTick only).
	guardChecked time.Time

	exits chan compositor.Exit
	done  chan struct{} // closed by Close
	// wg counts background work (ticks, exit handling) that may send on
	// exits; Close waits for it before closing exits.
	wg sync.WaitGroup

	mu       sync.Mutex
	closed   bool
	sessions map[string]*session
	tick     clock.Timer
}

// session is one compositor. Fields without a comment are set before the
// session is shared and never change.
type session struct {
	id, user         string
	account          string // the local account weston runs as ("" = the daemon's)
	pooled           bool   // account comes from the kiosk pool
	dir, runDir, log string
	sock             string
	started          time.Time
	adopted          bool
	labels           map[string]string
	rdpPort          int  // RDP backend: its loopback port
	guarded          bool // rdpPort was added to the RDP guard
	lostGone         bool // Adopt: a lost session of which nothing is left
	logger           hclog.Logger

	pid        int    // set by Create once started
	startTicks uint64 // set by Create once started

	// Guarded by Backend.mu.
	ready     bool          // Create (or Adopt) completed
	stopping  bool          // Destroy (or a failing Create) is stopping it
	suspended bool          // last Suspend/Resume
	stale     bool          // session.json's Suspended flag could not be written (fileMu)
	readyCh   chan struct{} // closed when Create or Adopt is finished with it

	fileMu sync.Mutex // serializes session.json writes

	once    sync.Once
	exitErr error         // set before exited is closed
	exited  chan struct{} // closed once the process is known gone
	done    chan struct{} // closed after exit handling (dir removed)
}

func newSession(b *Backend, id, user string) *session {
	dir := filepath.Join(b.cfg.StateDir, id)
	run := filepath.Join(dir, "run")
	return &session{
		id:      id,
		user:    user,
		dir:     dir,
		runDir:  run,
		log:     filepath.Join(dir, logName),
		sock:    filepath.Join(run, socketName),
		logger:  b.log.With("session_id", id),
		readyCh: make(chan struct{}),
		exited:  make(chan struct{}),
		done:    make(chan struct{}),
	}
}

func (s *session) endpoint() string {
	if s.rdpPort > 0 {
		return fmt.Sprintf("rdp://127.0.0.1:%d", s.rdpPort)
	}
	return "wayland:" + s.sock
}

// info must be called with Backend.mu held.
func (s *session) info() compositor.Info {
	return compositor.Info{
		SessionID: s.id,
		User:      s.user,
		PID:       s.pid,
		Endpoint:  s.endpoint(),
		Started:   s.started,
		Suspended: s.suspended,
		Labels:    maps.Clone(s.labels),
	}
}

// maxLabelBytes bounds Spec.Labels (keys and values together).
const maxLabelBytes = 4096

func labelsSize(l map[string]string) int {
	n := 0
	for k, v := range l {
		n += len(k) + len(v)
	}
	return n
}

// ValidateSessionID reports whether id is usable: [A-Za-z0-9-]{1,64}.
func ValidateSessionID(id string) error {
	if !sessionIDRe.MatchString(id) {
		return fmt.Errorf("%w: %q", ErrInvalidSessionID, id)
	}
	return nil
}

// New checks cfg, creates StateDir and locks it. The Backend supervises
// nothing until Create or Adopt; call Close to release it.
func New(cfg Config) (*Backend, error) {
	if cfg.StateDir == "" {
		return nil, errors.New("weston: new: state dir required")
	}
	dir, err := filepath.Abs(cfg.StateDir)
	if err != nil {
		return nil, fmt.Errorf("weston: new: state dir: %w", err)
	}
	cfg.StateDir = dir
	switch cfg.Backend {
	case "", "headless":
		cfg.Backend = "headless"
	case "rdp":
	default:
		return nil, fmt.Errorf("weston: new: %w: %q", ErrUnsupportedBackend, cfg.Backend)
	}
	if cfg.Binary == "" {
		cfg.Binary = "weston"
	}
	defaults.Set(&cfg.StartTimeout, 10*time.Second)
	defaults.Set(&cfg.StopGrace, 5*time.Second)
	defaults.Set(&cfg.PollInterval, 2*time.Second)
	defaults.Set(&cfg.LogMaxBytes, 4<<20)
	if cfg.MaxSessions < 0 {
		return nil, fmt.Errorf("weston: new: negative max sessions %d", cfg.MaxSessions)
	}
	if cfg.Logger == nil {
		cfg.Logger = hclog.NewNullLogger()
	}
	if cfg.Clock == nil {
		cfg.Clock = clock.Real{}
	}
	if cfg.procRoot == "" {
		cfg.procRoot = "/proc"
	}
	if cfg.tmpRoots == nil {
		cfg.tmpRoots = defaultTmpRoots
	}
	cfg.ExtraArgs = slices.Clone(cfg.ExtraArgs)
	bin, err := exec.LookPath(cfg.Binary)
	if err != nil {
		return nil, fmt.Errorf("weston: new: %w", err)
	}
	var prlimit string
	var own map[string]rlimit.Limit
	if cfg.RunAsUser {
		if prlimit, err = exec.LookPath("prlimit"); err != nil {
			if cfg.MaxUserTasks > 0 {
				return nil, fmt.Errorf("weston: new: a task limit for desktops (max_user_tasks) needs prlimit (util-linux): %w", err)
			}
			// As before the PAM session's limits were applied: a
			// desktop starts without them rather than not at all.
			prlimit = ""
			cfg.Logger.Warn("prlimit (util-linux) not found: desktops start without the resource limits of their PAM session (pam_limits)", "error", err)
		}
		cur, err := rlimit.Current()
		if err != nil {
			return nil, fmt.Errorf("weston: new: %w", err)
		}
		own = make(map[string]rlimit.Limit, len(cur))
		for _, l := range cur {
			own[l.Resource] = l
		}
	}
	if len(filepath.Join(cfg.StateDir, "x", "run", socketName)) > maxSocketPath {
		return nil, fmt.Errorf("weston: new: state dir %q too long for a unix socket path", cfg.StateDir)
	}
	bootID, err := procsup.BootID(cfg.procRoot)
	if err != nil {
		return nil, fmt.Errorf("weston: new: boot id: %w", err)
	}
	if err := os.MkdirAll(cfg.StateDir, 0o700); err != nil {
		return nil, fmt.Errorf("weston: new: %w", err)
	}
	if cfg.RunAsUser {
		// Users must traverse StateDir to reach their own session dir.
		if err := os.Chmod(cfg.StateDir, 0o711); err != nil {
			return nil, fmt.Errorf("weston: new: %w", err)
		}
		if err := ensureTraversable(filepath.Dir(cfg.StateDir), cfg.Logger); err != nil {
			return nil, fmt.Errorf("weston: new: state dir unreachable for desktop users: %w", err)
		}
	}
	if cfg.KioskAccountPrefix == "" {
		cfg.KioskAccountPrefix = DefaultAccountPrefix
	}
	defaults.Set(&cfg.MaxKioskAccounts, DefaultMaxAccounts)
	defaults.Set(&cfg.MinUID, DefaultMinUID)
	lock, err := procsup.LockFile(filepath.Join(cfg.StateDir, lockName))
	if errors.Is(err, procsup.ErrLocked) {
		return nil, fmt.Errorf("weston: new: %w: %s", ErrLocked, cfg.StateDir)
	}
	if err != nil {
		return nil, fmt.Errorf("weston: new: %w", err)
	}
	b := &Backend{
		cfg:       cfg,
		binary:    bin,
		prlimit:   prlimit,
		ownLimits: own,
		log:       cfg.Logger,
		clock:     cfg.Clock,
		bootID:    bootID,
		lock:      lock,
		exits:     make(chan compositor.Exit, exitsBuffer),
		done:      make(chan struct{}),
		sessions:  make(map[string]*session),
		accounts:  newAccountPool(cfg.KioskAccountPrefix, cfg.MaxKioskAccounts, cfg.Logger.Named("accounts")),
	}
	if cfg.Backend == "rdp" && !cfg.InsecureUnguardedRDP {
		b.guard = cfg.RDPGuard
		if b.guard == nil {
			if _, err := b.rdpGuard(context.Background()); err != nil {
				b.log.Error("rdp desktops will be refused until their ports can be guarded", "error", err)
			}
		}
	}
	if cfg.Backend == "rdp" && cfg.InsecureUnguardedRDP {
		b.log.Warn("rdp ports are not guarded: every local user can connect to every desktop")
	}
	b.mu.Lock()
	b.tick = b.clock.AfterFunc(cfg.PollInterval, b.onTick)
	b.mu.Unlock()
	return b, nil
}

// Exits reports compositors that ended on their own, once each. It is
// closed by Close. The buffer is bounded: a reader that falls behind holds
// up exit handling (never Create, Destroy or List).
func (b *Backend) Exits() <-chan compositor.Exit { return b.exits }

// Create starts weston for spec and returns once its socket accepts a
// connection. On failure (including ctx cancellation and StartTimeout,
// whose error wraps ErrStartFailed and carries the tail of weston.log)
// nothing is left behind.
func (b *Backend) Create(ctx context.Context, spec compositor.Spec) (compositor.Info, error) {
	if err := ValidateSessionID(spec.SessionID); err != nil {
		return compositor.Info{}, fmt.Errorf("weston: create: %w", err)
	}
	if !userRe.MatchString(spec.User) {
		return compositor.Info{}, fmt.Errorf("weston: create %s: %w: user %q", spec.SessionID, ErrInvalidSpec, spec.User)
	}
	if err := checkEnv(spec.Env); err != nil {
		return compositor.Info{}, fmt.Errorf("weston: create %s: %w", spec.SessionID, err)
	}
	if err := ctx.Err(); err != nil {
		return compositor.Info{}, fmt.Errorf("weston: create %s: %w", spec.SessionID, err)
	}
	if n := labelsSize(spec.Labels); n > maxLabelBytes {
		return compositor.Info{}, fmt.Errorf("weston: create %s: %w: labels of %d bytes", spec.SessionID, ErrInvalidSpec, n)
	}
	s := newSession(b, spec.SessionID, spec.User)
	s.labels = maps.Clone(spec.Labels)
	if len(s.sock) > maxSocketPath {
		return compositor.Info{}, fmt.Errorf("weston: create %s: %w: socket path %q too long", spec.SessionID, ErrInvalidSpec, s.sock)
	}
	var cred *syscall.Credential
	home := s.dir
	uid, gid := -1, -1
	if b.cfg.RunAsUser {
		u, pooled, err := b.accountFor(spec.User, spec.SessionID)
		if err != nil {
			return compositor.Info{}, fmt.Errorf("weston: create %s: %w", spec.SessionID, err)
		}
		s.account, s.pooled = u.Username, pooled
		home = u.HomeDir
		if pooled {
			home = filepath.Join(s.dir, "home") // fresh for every session
		}
		if cred, uid, gid, err = credential(u); err != nil {
			b.releaseAccount(s)
			return compositor.Info{}, fmt.Errorf("weston: create %s: %w: %w", spec.SessionID, ErrInvalidSpec, err)
		}
		if cred.Uid == 0 || int(cred.Uid) == os.Geteuid() {
			b.releaseAccount(s)
			return compositor.Info{}, fmt.Errorf("weston: create %s: %w", spec.SessionID, ErrRootDesktop)
		}
	} else {
		if os.Geteuid() == 0 && !b.cfg.AllowRoot {
			return compositor.Info{}, fmt.Errorf("weston: create %s: %w (set run_as_user)", spec.SessionID, ErrRootDesktop)
		}
		if u, err := user.Lookup(spec.User); err == nil {
			home = u.HomeDir
		}
	}

	b.mu.Lock()
	switch {
	case b.closed:
		b.mu.Unlock()
		b.releaseAccount(s)
		return compositor.Info{}, fmt.Errorf("weston: create %s: %w", spec.SessionID, ErrClosed)
	case b.sessions[s.id] != nil:
		b.mu.Unlock()
		b.releaseAccount(s)
		return compositor.Info{}, fmt.Errorf("weston: create %s: %w", spec.SessionID, ErrExists)
	case b.cfg.MaxSessions > 0 && len(b.sessions) >= b.cfg.MaxSessions:
		b.mu.Unlock()
		b.releaseAccount(s)
		return compositor.Info{}, fmt.Errorf("weston: create %s: %w (max %d)", spec.SessionID, ErrTooManySessions, b.cfg.MaxSessions)
	}
	b.sessions[s.id] = s // reservation: not ready, invisible to List
	b.mu.Unlock()
	defer close(s.readyCh)
	if s.account != "" {
		s.logger.Info("desktop account", "account", s.account, "pooled", s.pooled, "uid", uid)
	}

	info, err := b.start(ctx, s, spec.Env, spec.Limits, home, cred, uid, gid)
	if err != nil {
		return compositor.Info{}, fmt.Errorf("weston: create %s: %w", spec.SessionID, err)
	}
	s.logger.Info("compositor started", "pid", info.PID, "endpoint", info.Endpoint)
	return info, nil
}

// desktopLimits are the resource limits a desktop run as its user starts
// with: the session's (spec.Limits: pam_limits) within the daemon's own
// hard limits (the desktop is started unprivileged: it can lower its
// hard limits, not raise them), and a task limit of MaxUserTasks at most.
// Resources neither sets keep the daemon's. clamped lists the session's
// limits kept lower than it asked (as prlimit options), for the log.
func (b *Backend) desktopLimits(session []rlimit.Limit) (out []rlimit.Limit, clamped []string) {
	nproc := false
	for _, l := range session {
		ceiling, ok := b.ownLimits[l.Resource]
		if !ok {
			continue
		}
		if w := rlimit.Within(l, ceiling); w != l {
			clamped = append(clamped, rlimit.Arg(l))
			l = w
		}
		if l.Resource == "nproc" && b.cfg.MaxUserTasks > 0 {
			n := uint64(b.cfg.MaxUserTasks)
			l.Soft, l.Hard, nproc = min(l.Soft, n), min(l.Hard, n), true
		}
		out = append(out, l)
	}
	if !nproc && b.cfg.MaxUserTasks > 0 {
		n := uint64(b.cfg.MaxUserTasks)
		out = append(out, rlimit.Within(rlimit.Limit{Resource: "nproc", Soft: n, Hard: n}, b.ownLimits["nproc"]))
	}
	return out, clamped
}

// start runs weston for the reserved session s and waits until it is ready;
// on error it undoes everything, reservation included.
func (b *Backend) start(ctx context.Context, s *session, extraEnv []string, limits []rlimit.Limit, home string, cred *syscall.Credential, uid, gid int) (compositor.Info, error) {
	unreserve := func() {
		b.mu.Lock()
		if b.sessions[s.id] == s {
			delete(b.sessions, s.id)
		}
		b.mu.Unlock()
		b.releaseAccount(s)
	}
	if err := os.Mkdir(s.dir, 0o700); err != nil {
		unreserve()
		if errors.Is(err, os.ErrExist) {
			return compositor.Info{}, fmt.Errorf("%w: state dir %s exists (adopt it first)", ErrExists, s.dir)
		}
		return compositor.Info{}, err
	}
	// gone: nothing of the session runs (or ever ran).
	gone := true
	cleanDir := func() {
		if err := os.RemoveAll(s.dir); err != nil {
			s.logger.Warn("cannot remove state dir", "dir", s.dir, "error", err)
		}
		b.unguardPort(s, gone)
		unreserve()
	}
	logf, err := b.prepareDir(s, uid, gid)
	if err != nil {
		cleanDir()
		return compositor.Info{}, err
	}

	args, err := b.westonArgs(ctx, s, uid, gid)
	if err != nil {
		logf.Close()
		cleanDir()
		return compositor.Info{}, err
	}
	cmd := b.westonCmd(s, args, limits, uid)
	cmd.Env = buildEnv(home, s.user, s.runDir, extraEnv)
	cmd.Dir = s.runDir
	cmd.Stdout = logf
	cmd.Stderr = logf
	// A session of its own (and so a process group of its own, whose id
	// is the pid), without a controlling terminal: in hotdeskd's session
	// the desktop's user could open the daemon's terminal (a root shell's
	// when hotdeskd was started from one) and type into it with TIOCSTI,
	// and move processes into other desktops' process groups.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true, Credential: cred}
	s.started = b.clock.Now()
	err = cmd.Start()
	logf.Close() // the child has its own copy
	if err != nil {
		cleanDir()
		return compositor.Info{}, err
	}
	s.pid = cmd.Process.Pid
	go func() {
		err := cmd.Wait()
		if err == nil {
			err = ErrExitedCleanly
		}
		s.markExited(b, err)
	}()

	// From here on a failure kills the process group and waits for it.
	fail := func(err error) (compositor.Info, error) {
		b.mu.Lock()
		s.stopping = true
		b.mu.Unlock()
		if kerr := procsup.SignalGroup(s.pid, syscall.SIGKILL); kerr != nil {
			s.logger.Warn("cannot kill compositor", "pid", s.pid, "error", kerr)
		}
		_ = cmd.Process.Kill() // the leader, even if the group is gone
		<-s.exited             // SIGKILL: Wait returns promptly
		_ = procsup.SignalGroup(s.pid, syscall.SIGKILL)
		if s.guarded {
			// Its helpers may hold the RDP listener until they are gone.
			gone = b.waitGroupGone(s)
		}
		if tail := logTail(s.log); tail != "" {
			err = fmt.Errorf("%w; weston.log tail:\n%s", err, tail)
		}
		cleanDir()
		return compositor.Info{}, err
	}

	st, err := procsup.ReadStat(b.cfg.procRoot, s.pid)
	if err != nil {
		return fail(fmt.Errorf("read stat of pid %d: %w", s.pid, err))
	}
	s.startTicks = st.StartTicks
	s.fileMu.Lock()
	err = writeRecord(s.dir, b.recordOf(s, false))
	s.fileMu.Unlock()
	if err != nil {
		return fail(fmt.Errorf("write session record: %w", err))
	}
	if err := b.waitReady(ctx, s); err != nil {
		return fail(err)
	}

	// Becoming ready and exiting are decided under b.mu: onExit leaves a
	// session that is not ready to us, so check exited here.
	b.mu.Lock()
	var ferr error
	select {
	case <-s.exited:
		ferr = fmt.Errorf("%w: weston exited: %w", ErrStartFailed, s.exitErr)
	default:
		if b.closed {
			ferr = ErrClosed
		}
	}
	if ferr != nil {
		b.mu.Unlock()
		return fail(ferr)
	}
	s.ready = true
	info := s.info()
	b.mu.Unlock()
	return info, nil
}

// westonArgs returns weston's arguments for session s: its backend, the
// RDP listener's (the port guarded before weston listens, never after)
// and its weston.ini unless the configuration's extra arguments name one.
func (b *Backend) westonArgs(ctx context.Context, s *session, uid, gid int) ([]string, error) {
	args := []string{
		"--backend=" + b.cfg.Backend + "-backend.so",
		"--socket=" + socketName,
		"--idle-time=0",
	}
	if b.cfg.Backend == "rdp" {
		rdpArgs, port, err := prepareRDP(s, uid, gid)
		if err != nil {
			return nil, err
		}
		b.mu.Lock() // Adopt reads the ports of the sessions in b.sessions
		s.rdpPort = port
		b.mu.Unlock()
		if err := b.guardPort(ctx, s); err != nil {
			return nil, err
		}
		args = append(args, rdpArgs...)
	}
	if !hasConfigFlag(b.cfg.ExtraArgs) {
		ini, err := writeIni(s, uid, gid)
		if err != nil {
			return nil, err
		}
		args = append(args, "--config="+ini)
	}
	return append(args, b.cfg.ExtraArgs...), nil
}

// westonCmd returns the command that runs weston with args for session s:
// under prlimit with the PAM session's resource limits (clamped to
// hotdeskd's own) and the configured task limit when the desktop runs as
// a user (uid >= 0) and prlimit was found at start.
func (b *Backend) westonCmd(s *session, args []string, limits []rlimit.Limit, uid int) *exec.Cmd {
	var lim []rlimit.Limit
	if b.prlimit != "" && uid >= 0 {
		var clamped []string
		lim, clamped = b.desktopLimits(limits)
		if len(clamped) > 0 {
			s.logger.Warn("the PAM session asks limits above hotdeskd's own hard limits; the desktop has hotdeskd's (raise the service's, e.g. LimitNOFILE=)",
				"asked", strings.Join(clamped, " "))
		}
	}
	if b.prlimit == "" && uid >= 0 && len(limits) > 0 {
		s.logger.Warn("the PAM session's resource limits are not applied: prlimit (util-linux) not found at start", "limits", len(limits))
	}
	if len(lim) == 0 {
		return exec.Command(b.binary, args...)
	}
	pargs := make([]string, 0, len(lim)+2+len(args))
	for _, l := range lim {
		pargs = append(pargs, rlimit.Arg(l))
	}
	if len(limits) > 0 {
		// The session's (limits.conf): what a desktop may do depends on
		// them; an administrator looks for them here.
		s.logger.Info("desktop resource limits from its PAM session", "limits", strings.Join(pargs, " "))
	} else {
		s.logger.Debug("desktop resource limits", "limits", strings.Join(pargs, " "))
	}
	return exec.Command(b.prlimit, append(append(pargs, "--", b.binary), args...)...)
}

// prepareDir finishes the session directory and opens weston.log.
func (b *Backend) prepareDir(s *session, uid, gid int) (*os.File, error) {
	// Mkdir's mode is subject to the umask; set it explicitly.
	if err := os.Chmod(s.dir, 0o700); err != nil {
		return nil, err
	}
	if err := os.Mkdir(s.runDir, 0o700); err != nil {
		return nil, err
	}
	if err := os.Chmod(s.runDir, 0o700); err != nil {
		return nil, err
	}
	if uid >= 0 {
		// The user may traverse its session dir but not write it, so it
		// cannot forge session.json; run/ is its own.
		if err := os.Chown(s.dir, 0, gid); err != nil {
			return nil, err
		}
		if err := os.Chmod(s.dir, 0o710); err != nil {
			return nil, err
		}
		if err := os.Chown(s.runDir, uid, gid); err != nil {
			return nil, err
		}
		if s.pooled {
			home := filepath.Join(s.dir, "home")
			if err := os.Mkdir(home, 0o700); err != nil {
				return nil, err
			}
			if err := os.Chown(home, uid, gid); err != nil {
				return nil, err
			}
		}
	}
	f, err := os.OpenFile(s.log, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o600)
	if err != nil || uid < 0 {
		return f, err
	}
	// weston.log is the desktop's: whatever it writes there counts against
	// its user's quota, and a root-owned file would let it fill the disk
	// into the blocks reserved for root (etcd's data) between two
	// rotations. The user cannot replace it (the directory is root's).
	if err := f.Chown(uid, gid); err != nil {
		f.Close()
		return nil, err
	}
	return f, nil
}

// waitReady polls the socket with short, growing sleeps until it accepts a
// connection, weston exits, StartTimeout passes on the injected clock or
// ctx ends.
func (b *Backend) waitReady(ctx context.Context, s *session) error {
	expired := make(chan struct{})
	t := b.clock.AfterFunc(b.cfg.StartTimeout, func() { close(expired) })
	defer t.Stop()
	backoff := 2 * time.Millisecond
	sleep := time.NewTimer(0)
	defer sleep.Stop()
	<-sleep.C
	for {
		c, err := net.DialTimeout("unix", s.sock, 250*time.Millisecond)
		if err == nil {
			c.Close()
			if s.rdpPort == 0 {
				return nil
			}
			// The RDP backend is ready when its listener accepts too.
			if c, err = net.DialTimeout("tcp", fmt.Sprintf("127.0.0.1:%d", s.rdpPort), 250*time.Millisecond); err == nil {
				c.Close()
				return nil
			}
		}
		sleep.Reset(backoff)
		select {
		case <-sleep.C:
		case <-s.exited:
			return fmt.Errorf("%w: weston exited: %w", ErrStartFailed, s.exitErr)
		case <-expired:
			return fmt.Errorf("%w: socket not ready after %s", ErrStartFailed, b.cfg.StartTimeout)
		case <-ctx.Done():
			return ctx.Err()
		}
		backoff = min(2*backoff, 50*time.Millisecond)
	}
}

func (b *Backend) recordOf(s *session, suspended bool) record {
	return record{
		Version:    recordVersion,
		SessionID:  s.id,
		User:       s.user,
		Account:    s.account,
		PID:        s.pid,
		StartTicks: s.startTicks,
		BootID:     b.bootID,
		Endpoint:   s.endpoint(),
		Started:    s.started,
		Suspended:  suspended,
		Labels:     s.labels,
	}
}

// Suspend records the session as suspended; the compositor keeps running.
func (b *Backend) Suspend(ctx context.Context, sessionID string) error {
	if _, err := b.setSuspended(sessionID, true); err != nil {
		return fmt.Errorf("weston: suspend %s: %w", sessionID, err)
	}
	return nil
}

// Resume records the session as not suspended and returns its Info.
func (b *Backend) Resume(ctx context.Context, sessionID string) (compositor.Info, error) {
	info, err := b.setSuspended(sessionID, false)
	if err != nil {
		return compositor.Info{}, fmt.Errorf("weston: resume %s: %w", sessionID, err)
	}
	return info, nil
}

func (b *Backend) setSuspended(id string, v bool) (compositor.Info, error) {
	b.mu.Lock()
	s, err := b.liveLocked(id)
	b.mu.Unlock()
	if err != nil {
		return compositor.Info{}, err
	}
	s.fileMu.Lock()
	defer s.fileMu.Unlock()
	b.mu.Lock()
	if _, err := b.liveLocked(id); err != nil {
		b.mu.Unlock()
		return compositor.Info{}, err
	}
	old := s.suspended
	s.suspended = v
	rec := b.recordOf(s, v)
	b.mu.Unlock()
	if old != v || s.stale {
		// The flag is all that changes in the record, and nothing reads it
		// back but a listing: the broker's state is what counts, and a
		// restart adopts every desktop as suspended. A record that cannot
		// be written (a full disk) must not keep a person from their
		// desktop: it is written again at the next change.
		if err := writeRecord(s.dir, rec); err != nil {
			if !s.stale {
				b.log.Warn("session record not updated (is the disk full?); the session goes on",
					"session_id", id, "suspended", v, "error", err)
			}
			s.stale = true
		} else {
			s.stale = false
		}
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	return s.info(), nil
}

// liveLocked returns the ready, not stopping session id; b.mu must be held.
func (b *Backend) liveLocked(id string) (*session, error) {
	if b.closed {
		return nil, ErrClosed
	}
	s := b.sessions[id]
	if s == nil || !s.ready || s.stopping {
		return nil, compositor.ErrNotFound
	}
	return s, nil
}

// Destroy stops the session's compositor: SIGTERM to its process group,
// SIGKILL after StopGrace, then waits for it to exit and removes its state
// directory. An unknown session is not an error. If ctx ends first, the
// group is sent SIGKILL and the cleanup finishes in the background.
func (b *Backend) Destroy(ctx context.Context, sessionID string) error {
	var s *session
	for {
		b.mu.Lock()
		if b.closed {
			b.mu.Unlock()
			return fmt.Errorf("weston: destroy %s: %w", sessionID, ErrClosed)
		}
		s = b.sessions[sessionID]
		if s == nil {
			b.mu.Unlock()
			return nil
		}
		if s.ready {
			s.stopping = true
			b.mu.Unlock()
			break
		}
		b.mu.Unlock()
		// Create or Adopt is still working on it: wait for the outcome.
		select {
		case <-s.readyCh:
		case <-ctx.Done():
			return fmt.Errorf("weston: destroy %s: %w", sessionID, ctx.Err())
		}
	}

	if err := b.signal(s, syscall.SIGTERM); err != nil {
		s.logger.Warn("cannot signal compositor", "pid", s.pid, "signal", "SIGTERM", "error", err)
	}
	gone, err := b.waitExited(ctx, s, b.cfg.StopGrace)
	if err == nil && !gone {
		s.logger.Warn("compositor ignored SIGTERM, killing", "pid", s.pid, "grace", b.cfg.StopGrace)
		if err := b.signal(s, syscall.SIGKILL); err != nil {
			s.logger.Warn("cannot signal compositor", "pid", s.pid, "signal", "SIGKILL", "error", err)
		}
		_, err = b.waitExited(ctx, s, 0)
	}
	if err == nil {
		select {
		case <-s.done:
			s.logger.Info("compositor destroyed", "pid", s.pid)
			return nil
		case <-b.done:
			err = ErrClosed
		case <-ctx.Done():
			err = ctx.Err()
		}
	}
	if !errors.Is(err, ErrClosed) {
		_ = b.signal(s, syscall.SIGKILL)
	}
	return fmt.Errorf("weston: destroy %s: %w", sessionID, err)
}

// onTick checks adopted compositors and rotates logs, then reschedules.
func (b *Backend) onTick() {
	b.mu.Lock()
	if b.closed {
		b.mu.Unlock()
		return
	}
	b.wg.Add(1)
	var live []*session
	for _, s := range b.sessions {
		if s.ready && !s.stopping {
			live = append(live, s)
		}
	}
	b.mu.Unlock()
	defer b.wg.Done()

	for _, s := range live {
		if s.adopted {
			err := procsup.Check(b.cfg.procRoot, s.pid, s.startTicks)
			if errors.Is(err, ErrProcessGone) || errors.Is(err, ErrPIDReused) {
				s.markExited(b, err)
				continue
			}
			if err != nil {
				s.logger.Warn("cannot check compositor", "pid", s.pid, "error", err)
			}
		}
		if rotated, err := rotateLog(s.log, b.cfg.LogMaxBytes); err != nil {
			s.logger.Warn("cannot rotate log", "path", s.log, "error", err)
		} else if rotated {
			s.logger.Debug("log rotated", "path", s.log)
		}
	}

	b.checkGuard(live)

	b.mu.Lock()
	if !b.closed {
		b.tick = b.clock.AfterFunc(b.cfg.PollInterval, b.onTick)
	}
	b.mu.Unlock()
}

// List returns every running compositor, sorted by session id.
func (b *Backend) List(ctx context.Context) ([]compositor.Info, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.closed {
		return nil, fmt.Errorf("weston: list: %w", ErrClosed)
	}
	out := make([]compositor.Info, 0, len(b.sessions))
	for _, s := range b.sessions {
		if s.ready && !s.stopping {
			out = append(out, s.info())
		}
	}
	slices.SortFunc(out, func(x, y compositor.Info) int { return strings.Compare(x.SessionID, y.SessionID) })
	return out, nil
}

// Close stops supervising: no more Exits are sent and Exits is closed, but
// every compositor keeps running and can be adopted by a new Backend on the
// same StateDir (the RDP guard's table stays while they run). The state
// directory lock is released. Close is
// idempotent. Compositors started by this Backend are still its process's
// children: one goroutine each keeps waiting to reap them, and does nothing
// else, until they exit.
func (b *Backend) Close() error {
	b.mu.Lock()
	if b.closed {
		b.mu.Unlock()
		return nil
	}
	b.closed = true
	if b.tick != nil {
		b.tick.Stop()
	}
	idle := len(b.sessions) == 0 // nothing runs, nothing is starting
	b.mu.Unlock()
	close(b.done)
	b.wg.Wait()
	close(b.exits)
	if idle {
		b.retireGuard()
	}
	if err := b.lock.Unlock(); err != nil {
		return fmt.Errorf("weston: close: %w", err)
	}
	return nil
}
