// Package wayray is the compositor backend for compositors that speak
// hotdesk's control protocol (proto/COMPOSITOR.md), such as WayRay's: the
// broker starts the compositor, which listens on a unix control socket in
// the session's state directory; the broker connects, reads Hello, and
// drives the session with suspend (stop rendering, drop the display
// client, keep the applications), resume, status, ping and destroy.
//
// Contract (compositor.Backend): Create returns once Hello arrived.
// Control requests are serialised per session and bounded by CallTimeout.
// A compositor that exits, or whose control connection breaks or sends a
// malformed frame, is killed (its process group) and reported once on
// Exits. A Backend holds an exclusive lock on <StateDir>/.lock from New to
// Close (a second one, in this process or another, fails with ErrLocked:
// two would adopt and kill each other's sessions). Close leaves compositors
// running; Adopt (a new Backend on the same StateDir) reconnects to each recorded, still-running compositor whose
// process start time matches the record.
package wayray

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/hashicorp/go-hclog"

	"github.com/hotdesk/hotdesk/compositor"
	"github.com/hotdesk/hotdesk/compositor/procsup"
	"github.com/hotdesk/hotdesk/internal/atomicfile"
	"github.com/hotdesk/hotdesk/internal/clock"
	"github.com/hotdesk/hotdesk/internal/defaults"
)

// Config configures a Backend.
type Config struct {
	// Command is the compositor's argv. The compositor gets the control
	// socket path in HOTDESK_CONTROL_SOCKET and the session id in
	// HOTDESK_SESSION_ID.
	Command      []string
	StateDir     string
	StartTimeout time.Duration // default 10s: until Hello
	StopGrace    time.Duration // default 5s: destroy, then SIGKILL
	CallTimeout  time.Duration // default 5s: one control request
	// HealthInterval is the time between health pings of each session
	// (default 10s). A failed ping kills the compositor and reports it on
	// Exits.
	HealthInterval time.Duration
	Logger         hclog.Logger
	// Clock drives StartTimeout, StopGrace and HealthInterval (default
	// clock.Real). Socket read/write deadlines and the liveness poll of
	// adopted processes use the wall clock.
	Clock clock.Clock
}

// Backend runs control-protocol compositors.
type Backend struct {
	cfg    Config
	log    hclog.Logger
	clock  clock.Clock
	exits  chan compositor.Exit
	bootID string // the running kernel's; records from another boot name no process of ours
	lock   *procsup.FileLock

	mu       sync.Mutex
	sessions map[string]*session
	closed   bool
	// wg counts supervise goroutines and running health checks; Close
	// waits for them before it closes exits. Add only under mu while
	// !closed.
	wg sync.WaitGroup
}

var _ compositor.Backend = (*Backend)(nil)

type session struct {
	id, user, dir, sock string
	labels              map[string]string
	pid                 int
	startTicks          uint64 // /proc/<pid>/stat field 22: pid and start time name the process
	started             time.Time

	callMu    sync.Mutex // one request at a time
	conn      net.Conn
	nextID    uint32
	endpoint  string
	suspended bool
	stopping  bool
	failErr   error         // why the control channel was declared broken
	health    clock.Timer   // next health ping
	stop      chan struct{} // closed by Close: stop watching an adopted process
	gone      chan struct{} // closed when the process is known gone
}

// waiter is the end of a child process: err is valid once done is closed.
type waiter struct {
	done chan struct{}
	err  error
}

// record is <dir>/session.json, for Adopt.
type record struct {
	SessionID  string            `json:"session_id"`
	User       string            `json:"user"`
	PID        int               `json:"pid"`
	StartTicks uint64            `json:"start_ticks"`
	BootID     string            `json:"boot_id"`
	Socket     string            `json:"socket"`
	Endpoint   string            `json:"endpoint"`
	Started    time.Time         `json:"started"`
	Suspended  bool              `json:"suspended"`
	Labels     map[string]string `json:"labels,omitempty"`
}

var idRe = regexp.MustCompile(`^[A-Za-z0-9-]{1,64}$`)

// readRecord reads and checks dir/session.json, session id's record. An
// endpoint the record names that the session could not announce (see
// validEndpoint) is dropped: the compositor's hello must name one.
func readRecord(dir, id string) (record, error) {
	var r record
	if err := procsup.ReadRecord(filepath.Join(dir, "session.json"), &r); err != nil {
		return record{}, err
	}
	switch {
	case r.SessionID != id:
		return r, errors.New("record names another session")
	case r.PID <= 1:
		return r, fmt.Errorf("record names pid %d", r.PID)
	}
	if r.Endpoint != "" && !(&session{dir: dir}).validEndpoint(r.Endpoint) {
		r.Endpoint = ""
	}
	return r, nil
}

// Errors.
var (
	ErrStartFailed = errors.New("wayray: compositor did not start")
	ErrClosed      = errors.New("wayray: backend closed")
	// ErrLocked: another Backend holds the state directory.
	ErrLocked = errors.New("wayray: state directory in use")
	// ErrRefused reports a request the compositor answered with OK false.
	ErrRefused = errors.New("wayray: compositor refused the request")
)

// New returns a Backend; Command and StateDir are required.
func New(cfg Config) (*Backend, error) {
	if len(cfg.Command) == 0 || cfg.StateDir == "" {
		return nil, errors.New("wayray: new: command and state dir are required")
	}
	defaults.Set(&cfg.StartTimeout, 10*time.Second)
	defaults.Set(&cfg.StopGrace, 5*time.Second)
	defaults.Set(&cfg.CallTimeout, 5*time.Second)
	defaults.Set(&cfg.HealthInterval, 10*time.Second)
	if cfg.Logger == nil {
		cfg.Logger = hclog.NewNullLogger()
	}
	if cfg.Clock == nil {
		cfg.Clock = clock.Real{}
	}
	if err := os.MkdirAll(cfg.StateDir, 0o700); err != nil {
		return nil, fmt.Errorf("wayray: new: %w", err)
	}
	bootID, err := procsup.BootID("/proc")
	if err != nil {
		return nil, fmt.Errorf("wayray: new: %w", err)
	}
	lock, err := procsup.LockFile(filepath.Join(cfg.StateDir, ".lock"))
	if errors.Is(err, procsup.ErrLocked) {
		return nil, fmt.Errorf("wayray: new: %w: %s", ErrLocked, cfg.StateDir)
	}
	if err != nil {
		return nil, fmt.Errorf("wayray: new: %w", err)
	}
	return &Backend{cfg: cfg, log: cfg.Logger, clock: cfg.Clock, bootID: bootID, lock: lock,
		exits: make(chan compositor.Exit, 64), sessions: make(map[string]*session)}, nil
}

// Create starts a compositor and waits for its Hello.
func (b *Backend) Create(ctx context.Context, spec compositor.Spec) (compositor.Info, error) {
	if !idRe.MatchString(spec.SessionID) {
		return compositor.Info{}, fmt.Errorf("wayray: create: invalid session id %q", spec.SessionID)
	}
	b.mu.Lock()
	closed := b.closed
	b.mu.Unlock()
	if closed {
		return compositor.Info{}, ErrClosed
	}
	dir := filepath.Join(b.cfg.StateDir, spec.SessionID)
	if err := os.Mkdir(dir, 0o700); err != nil {
		return compositor.Info{}, fmt.Errorf("wayray: create %s: %w", spec.SessionID, err)
	}
	s := &session{id: spec.SessionID, user: spec.User, dir: dir, sock: filepath.Join(dir, "control.sock"),
		labels: maps.Clone(spec.Labels), started: b.clock.Now(), stop: make(chan struct{}), gone: make(chan struct{})}
	cmd := exec.Command(b.cfg.Command[0], b.cfg.Command[1:]...)
	cmd.Env = append([]string{"PATH=" + os.Getenv("PATH"), "HOME=" + os.Getenv("HOME"), "USER=" + spec.User,
		"HOTDESK_CONTROL_SOCKET=" + s.sock, "HOTDESK_SESSION_ID=" + s.id}, spec.Env...)
	cmd.Env = append(cmd.Env, extraEnv()...)
	cmd.Dir = dir
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	logf, err := os.OpenFile(filepath.Join(dir, "compositor.log"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err == nil {
		cmd.Stdout, cmd.Stderr = logf, logf
		defer logf.Close()
	}
	if err := cmd.Start(); err != nil {
		os.RemoveAll(dir)
		return compositor.Info{}, fmt.Errorf("wayray: create %s: %w", s.id, err)
	}
	s.pid = cmd.Process.Pid
	w := &waiter{done: make(chan struct{})}
	go func() { w.err = cmd.Wait(); close(w.done) }()
	if st, err := procsup.ReadStat("/proc", s.pid); err == nil {
		s.startTicks = st.StartTicks
	}

	if err := b.connect(ctx, s, w.done); err != nil {
		b.killGroup(s)
		<-w.done
		os.RemoveAll(dir)
		return compositor.Info{}, fmt.Errorf("wayray: create %s: %w", s.id, err)
	}
	if err := b.save(s); err != nil {
		b.log.Warn("state record not written", "session_id", s.id, "error", err)
	}
	b.mu.Lock()
	if b.closed || b.sessions[s.id] != nil {
		closed := b.closed
		b.mu.Unlock()
		b.killGroup(s)
		<-w.done
		if closed {
			os.RemoveAll(dir)
			return compositor.Info{}, ErrClosed
		}
		return compositor.Info{}, fmt.Errorf("wayray: create %s: session exists", s.id)
	}
	b.sessions[s.id] = s
	b.wg.Add(1)
	b.mu.Unlock()
	go b.supervise(s, w)
	b.scheduleHealth(s)
	b.log.Info("compositor started", "session_id", s.id, "pid", s.pid, "endpoint", s.endpoint)
	return b.info(s), nil
}

// extraEnv passes the display-related environment a compositor may need.
func extraEnv() []string {
	var out []string
	for _, k := range []string{"XDG_RUNTIME_DIR", "LANG"} {
		if v, ok := os.LookupEnv(k); ok {
			out = append(out, k+"="+v)
		}
	}
	return out
}

// connect dials the control socket until it reads a version-1 Hello, the
// process exits (exited closed; nil for adopted processes), ctx ends or
// StartTimeout passes on the backend's clock.
func (b *Backend) connect(ctx context.Context, s *session, exited <-chan struct{}) error {
	expired := make(chan struct{})
	t := b.clock.AfterFunc(b.cfg.StartTimeout, func() { close(expired) })
	defer t.Stop()
	for {
		c, err := net.DialTimeout("unix", s.sock, 250*time.Millisecond)
		if err == nil {
			return b.hello(ctx, s, c, exited, expired)
		}
		select {
		case <-exited:
			return fmt.Errorf("%w: exited before accepting", ErrStartFailed)
		case <-ctx.Done():
			return fmt.Errorf("%w: %w", ErrStartFailed, ctx.Err())
		case <-expired:
			return fmt.Errorf("%w: no control socket after %s", ErrStartFailed, b.cfg.StartTimeout)
		case <-time.After(20 * time.Millisecond): // dial retry
		}
	}
}

// hello reads the first frame on c; c is closed (ending the read) if the
// process exits, ctx ends or expired closes first.
func (b *Backend) hello(ctx context.Context, s *session, c net.Conn, exited, expired <-chan struct{}) error {
	type result struct {
		f   Frame
		err error
	}
	ch := make(chan result, 1)
	go func() {
		f, err := ReadMsg(c, b.cfg.StartTimeout) // wall-clock backstop
		ch <- result{f, err}
	}()
	var r result
	select {
	case r = <-ch:
	case <-exited:
		c.Close()
		return fmt.Errorf("%w: exited before hello", ErrStartFailed)
	case <-ctx.Done():
		c.Close()
		return fmt.Errorf("%w: %w", ErrStartFailed, ctx.Err())
	case <-expired:
		c.Close()
		return fmt.Errorf("%w: no hello after %s", ErrStartFailed, b.cfg.StartTimeout)
	}
	if r.err != nil {
		c.Close()
		return fmt.Errorf("%w: no hello: %w", ErrStartFailed, r.err)
	}
	var h Hello
	if r.f.Type != MsgHello {
		c.Close()
		return fmt.Errorf("%w: %w: first frame has type %d, want hello", ErrStartFailed, ErrProtocol, r.f.Type)
	}
	if err := DecodeBody(r.f, &h); err != nil {
		c.Close()
		return fmt.Errorf("%w: %w", ErrStartFailed, err)
	}
	if h.Version != ProtocolVersion {
		c.Close()
		return fmt.Errorf("%w: %w: protocol version %d, want %d", ErrStartFailed, ErrProtocol, h.Version, ProtocolVersion)
	}
	if h.Endpoint == "" && s.endpoint == "" {
		c.Close()
		return fmt.Errorf("%w: %w: hello without an endpoint", ErrStartFailed, ErrProtocol)
	}
	if h.Endpoint != "" && !s.validEndpoint(h.Endpoint) {
		c.Close()
		return fmt.Errorf("%w: %w: hello endpoint %q unusable", ErrStartFailed, ErrProtocol, h.Endpoint)
	}
	if h.PID != s.pid {
		b.log.Warn("hello names another pid", "session_id", s.id, "pid", s.pid, "hello_pid", h.PID)
	}
	s.conn = c
	if h.Endpoint != "" {
		s.endpoint = h.Endpoint
	}
	b.log.Debug("compositor hello", "session_id", s.id, "name", h.Name, "capabilities", h.Capabilities)
	return nil
}

// call sends one request and waits for its reply.
func (b *Backend) call(ctx context.Context, s *session, t uint16, body any) (Reply, error) {
	s.callMu.Lock()
	defer s.callMu.Unlock()
	if s.conn == nil {
		return Reply{}, fmt.Errorf("wayray: %s: no control connection", s.id)
	}
	s.nextID++
	id := s.nextID
	timeout := b.cfg.CallTimeout
	if d, ok := ctx.Deadline(); ok && time.Until(d) < timeout {
		timeout = time.Until(d)
	}
	// No time left (the deadline passed, perhaps waiting for callMu): the
	// channel is not touched. A write deadline already past would fail
	// there and be taken for a broken compositor, which is killed.
	if timeout <= 0 {
		return Reply{}, fmt.Errorf("wayray: %s: %w", s.id, context.DeadlineExceeded)
	}
	_ = s.conn.SetWriteDeadline(time.Now().Add(timeout))
	if err := WriteMsg(s.conn, t, id, body); err != nil {
		return Reply{}, b.callFailed(s, err)
	}
	f, err := ReadMsg(s.conn, timeout)
	if err == nil && (f.Type != MsgReply || f.ID != id) {
		err = fmt.Errorf("%w: reply type %d id %d to request %d", ErrProtocol, f.Type, f.ID, id)
	}
	var r Reply
	if err == nil {
		err = DecodeBody(f, &r)
	}
	if err != nil {
		return Reply{}, b.callFailed(s, err)
	}
	if !r.OK {
		return r, fmt.Errorf("wayray: %s: %w (code %d): %q", s.id, ErrRefused, r.Code, r.Error)
	}
	return r, nil
}

// callFailed handles a control request of s whose channel failed: a
// broken control channel is a broken compositor (fail), unless Close broke
// it (it closes s.stop, then the channel): the compositor outlives this
// process, for the next one to adopt, whatever request was under way (a
// health ping, a Destroy racing with Close), or the session is being
// destroyed: a compositor told to end may end before it answers, and
// Destroy sees to the rest.
func (b *Backend) callFailed(s *session, err error) error {
	select {
	case <-s.stop:
		return fmt.Errorf("wayray: %s: %w", s.id, ErrClosed)
	default:
	}
	b.mu.Lock()
	stopping := s.stopping
	b.mu.Unlock()
	if stopping {
		return fmt.Errorf("wayray: %s: %w", s.id, err)
	}
	b.fail(s, err)
	return fmt.Errorf("wayray: %s: %w", s.id, err)
}

// fail kills a compositor whose control channel broke; supervise reports it.
// Only the first failure is logged (a failed health ping is also the
// failed call under it).
func (b *Backend) fail(s *session, err error) {
	b.mu.Lock()
	first := s.failErr == nil
	if first {
		s.failErr = err
	}
	b.mu.Unlock()
	if first {
		b.log.Error("control channel broken; stopping the compositor", "session_id", s.id, "error", err)
	}
	b.killGroup(s)
}

// killGroup SIGKILLs the session's process group, unless its pid no longer
// names the process we started (never signal a stranger's group).
func (b *Backend) killGroup(s *session) {
	if s.startTicks != 0 && errors.Is(procsup.Check("/proc", s.pid, s.startTicks), procsup.ErrPIDReused) {
		return
	}
	if err := procsup.SignalGroup(s.pid, syscall.SIGKILL); err != nil {
		b.log.Warn("cannot kill process group", "session_id", s.id, "pgid", s.pid, "error", err)
	}
}

func (b *Backend) get(id string) (*session, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	s := b.sessions[id]
	if s == nil {
		return nil, fmt.Errorf("wayray: %s: %w", id, compositor.ErrNotFound)
	}
	return s, nil
}

// Suspend asks the compositor to stop rendering and drop its display client.
func (b *Backend) Suspend(ctx context.Context, id string) error {
	s, err := b.get(id)
	if err != nil {
		return err
	}
	if _, err := b.call(ctx, s, MsgSuspend, nil); err != nil {
		return err
	}
	b.mu.Lock()
	s.suspended = true
	b.mu.Unlock()
	b.saveLogged(s)
	return nil
}

// Resume asks the compositor to render for a new client.
func (b *Backend) Resume(ctx context.Context, id string) (compositor.Info, error) {
	s, err := b.get(id)
	if err != nil {
		return compositor.Info{}, err
	}
	r, err := b.call(ctx, s, MsgResume, Resume{})
	if err != nil {
		return compositor.Info{}, err
	}
	if r.Endpoint != "" && !s.validEndpoint(r.Endpoint) {
		err := fmt.Errorf("%w: resume endpoint %q unusable", ErrProtocol, r.Endpoint)
		b.fail(s, err)
		return compositor.Info{}, fmt.Errorf("wayray: %s: %w", s.id, err)
	}
	b.mu.Lock()
	s.suspended = false
	if r.Endpoint != "" {
		s.endpoint = r.Endpoint
	}
	b.mu.Unlock()
	b.saveLogged(s)
	return b.info(s), nil
}

// saveLogged saves s's record after a change the compositor has made: a
// record that cannot be written (a full disk) fails neither Suspend nor
// Resume (nothing reads its flag or endpoint back but an adoption, which
// resumes the session again before use); it is written at the next change.
func (b *Backend) saveLogged(s *session) {
	if err := b.save(s); err != nil {
		b.log.Warn("state record not updated (is the disk full?); the session goes on", "session_id", s.id, "error", err)
	}
}

// Status returns the compositor's own view of the session.
func (b *Backend) Status(ctx context.Context, id string) (Reply, error) {
	s, err := b.get(id)
	if err != nil {
		return Reply{}, err
	}
	return b.call(ctx, s, MsgStatus, nil)
}

// Ping checks the compositor answers.
func (b *Backend) Ping(ctx context.Context, id string) error {
	s, err := b.get(id)
	if err != nil {
		return err
	}
	_, err = b.call(ctx, s, MsgPing, nil)
	return err
}

// Destroy asks the compositor to exit, then kills its process group after
// StopGrace. Unknown ids are not an error.
func (b *Backend) Destroy(ctx context.Context, id string) error {
	b.mu.Lock()
	s := b.sessions[id]
	if s != nil {
		s.stopping = true
	}
	b.mu.Unlock()
	if s == nil {
		return nil
	}
	b.mu.Lock()
	if s.health != nil {
		s.health.Stop()
	}
	b.mu.Unlock()
	_, _ = b.call(ctx, s, MsgDestroy, Destroy{GraceMs: uint32(b.cfg.StopGrace / time.Millisecond)})
	for _, sig := range []syscall.Signal{syscall.SIGTERM, syscall.SIGKILL} {
		expired := make(chan struct{})
		t := b.clock.AfterFunc(b.cfg.StopGrace, func() { close(expired) })
		select {
		case <-s.gone:
			t.Stop()
			return nil
		case <-s.stop:
			t.Stop()
			return fmt.Errorf("wayray: destroy %s: %w", id, ErrClosed)
		case <-ctx.Done():
			sig = syscall.SIGKILL
		case <-expired:
		}
		t.Stop()
		b.log.Warn("compositor still running after destroy; signalling", "session_id", s.id, "pid", s.pid, "signal", sig.String())
		if s.startTicks != 0 && errors.Is(procsup.Check("/proc", s.pid, s.startTicks), procsup.ErrPIDReused) {
			break
		}
		if err := procsup.SignalGroup(s.pid, sig); err != nil {
			b.log.Warn("cannot signal process group", "session_id", s.id, "pgid", s.pid, "error", err)
		}
		if sig == syscall.SIGKILL {
			break
		}
	}
	// SIGKILL cannot be ignored: supervise sees the end promptly. Close, or
	// the caller giving up, ends the wait too; Destroy never hangs.
	select {
	case <-s.gone:
		return nil
	case <-s.stop:
		return fmt.Errorf("wayray: destroy %s: %w", id, ErrClosed)
	case <-ctx.Done():
		return fmt.Errorf("wayray: destroy %s: %w", id, ctx.Err())
	}
}

// scheduleHealth arms the next health ping of s.
func (b *Backend) scheduleHealth(s *session) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.closed || s.stopping || b.sessions[s.id] != s {
		return
	}
	s.health = b.clock.AfterFunc(b.cfg.HealthInterval, func() {
		b.mu.Lock()
		if b.closed {
			b.mu.Unlock()
			return
		}
		b.wg.Add(1)
		b.mu.Unlock()
		defer b.wg.Done()
		b.healthCheck(s)
	})
}

// healthCheck pings s; a compositor that does not answer is killed (and
// then reported on Exits by supervise).
func (b *Backend) healthCheck(s *session) {
	ctx, cancel := context.WithTimeout(context.Background(), b.cfg.CallTimeout)
	defer cancel()
	if _, err := b.call(ctx, s, MsgPing, nil); err != nil {
		b.mu.Lock()
		stopping := s.stopping || b.closed
		b.mu.Unlock()
		if !stopping {
			b.fail(s, fmt.Errorf("health ping: %w", err))
		}
		return
	}
	b.scheduleHealth(s)
}

// supervise waits for the compositor to end (our child: w; adopted: polled
// every 100ms until Close) and reports an unrequested end on Exits.
func (b *Backend) supervise(s *session, w *waiter) {
	defer b.wg.Done()
	var err error
	if w != nil {
		select {
		case <-w.done:
			err = w.err
		case <-s.stop:
			return // Close: the compositor outlives us; the next broker adopts it
		}
	} else {
		for {
			if err = procsup.Check("/proc", s.pid, s.startTicks); err != nil {
				break
			}
			select {
			case <-s.stop:
				return // Close: someone else supervises it now
			case <-time.After(100 * time.Millisecond):
			}
		}
	}
	b.mu.Lock()
	stopping, failErr := s.stopping, s.failErr
	closed := b.closed && b.sessions[s.id] != s
	if b.sessions[s.id] == s {
		delete(b.sessions, s.id)
	}
	if s.health != nil {
		s.health.Stop()
	}
	b.mu.Unlock()
	if s.conn != nil {
		s.conn.Close()
	}
	if closed {
		// After Close the compositor belongs to the next broker process.
		close(s.gone)
		return
	}
	if !errors.Is(err, procsup.ErrPIDReused) {
		// The leader is gone; its applications die with it, and the session
		// ends only when none of them holds what it held.
		if kerr := procsup.SignalGroup(s.pid, syscall.SIGKILL); kerr != nil {
			b.log.Warn("cannot kill process group", "session_id", s.id, "pgid", s.pid, "error", kerr)
		}
		if !procsup.WaitGroupGone("/proc", s.pid, b.cfg.StopGrace, s.stop) {
			b.log.Warn("processes of the session outlived SIGKILL", "session_id", s.id, "pgid", s.pid)
		}
	}
	var tail string
	if !stopping {
		tail = procsup.LogTail(filepath.Join(s.dir, "compositor.log"), logTailSize)
	}
	os.RemoveAll(s.dir)
	close(s.gone)
	if stopping {
		return
	}
	if err == nil {
		err = errors.New("exited")
	}
	if failErr != nil {
		err = fmt.Errorf("%w (after: %v)", failErr, err)
	}
	b.log.Warn("compositor ended", "session_id", s.id, "pid", s.pid, "error", err, "log_tail", tail)
	select {
	case b.exits <- compositor.Exit{SessionID: s.id, PID: s.pid, Err: fmt.Errorf("wayray: %s: %w", s.id, err)}:
	default:
		b.log.Error("exit not reported: channel full", "session_id", s.id)
	}
}

// validEndpoint is ValidEndpoint for s's compositor: a wayland: socket
// must be inside the session's directory too, so that the gateway, which
// dials it as hotdeskd's user, never splices a terminal to another socket
// of the host (the admin socket, another session's).
func (s *session) validEndpoint(ep string) bool {
	if !ValidEndpoint(ep) {
		return false
	}
	path, ok := strings.CutPrefix(ep, "wayland:")
	if !ok {
		return true
	}
	dir, err := filepath.Abs(s.dir)
	return err == nil && strings.HasPrefix(path, dir+string(filepath.Separator))
}

// logTailSize is how much of a crashed compositor's log its exit's log
// line quotes.
const logTailSize = 2 << 10

// save writes the session's record for Adopt, atomically and durably.
func (b *Backend) save(s *session) error {
	if s.startTicks == 0 {
		return fmt.Errorf("wayray: save %s: start time of pid %d unknown", s.id, s.pid)
	}
	b.mu.Lock()
	r := record{SessionID: s.id, User: s.user, PID: s.pid, StartTicks: s.startTicks, BootID: b.bootID, Socket: s.sock,
		Endpoint: s.endpoint, Started: s.started, Suspended: s.suspended, Labels: s.labels}
	b.mu.Unlock()
	data, err := json.Marshal(r)
	if err != nil {
		return err
	}
	return atomicfile.Write(filepath.Join(s.dir, "session.json"), data, 0o600)
}

func (b *Backend) info(s *session) compositor.Info {
	b.mu.Lock()
	defer b.mu.Unlock()
	return compositor.Info{SessionID: s.id, User: s.user, PID: s.pid, Endpoint: s.endpoint,
		Started: s.started, Suspended: s.suspended, Labels: maps.Clone(s.labels)}
}

// List returns every compositor this backend runs.
func (b *Backend) List(context.Context) ([]compositor.Info, error) {
	b.mu.Lock()
	ss := make([]*session, 0, len(b.sessions))
	for _, s := range b.sessions {
		ss = append(ss, s)
	}
	b.mu.Unlock()
	out := make([]compositor.Info, 0, len(ss))
	for _, s := range ss {
		out = append(out, b.info(s))
	}
	return out, nil
}

// Adopt reconnects to compositors a previous broker left running. The
// compositors are connected to at the same time: one that accepts but
// never says hello holds Adopt for StartTimeout, not every other one after
// it as well.
func (b *Backend) Adopt(ctx context.Context) ([]compositor.Info, []compositor.Exit, error) {
	ents, err := os.ReadDir(b.cfg.StateDir)
	if err != nil {
		return nil, nil, fmt.Errorf("wayray: adopt: %w", err)
	}
	type candidate struct {
		s   *session
		err error
	}
	var cands []*candidate
	for _, e := range ents {
		if !e.IsDir() || !idRe.MatchString(e.Name()) {
			continue
		}
		dir := filepath.Join(b.cfg.StateDir, e.Name())
		r, err := readRecord(dir, e.Name())
		switch {
		case err != nil:
		case r.BootID != b.bootID:
			// A record from an earlier boot: its pid names some other process now.
			err = errors.New("record is from another boot")
		default:
			err = procsup.Check("/proc", r.PID, r.StartTicks)
			if errors.Is(err, procsup.ErrProcessGone) {
				// The compositor died while no broker watched it; its
				// applications may still run in its process group. They
				// end with it, as in supervise.
				b.killLeftovers(e.Name(), r.PID)
			}
		}
		s := &session{id: e.Name(), user: r.User, dir: dir, sock: filepath.Join(dir, "control.sock"), labels: r.Labels,
			pid: r.PID, startTicks: r.StartTicks, started: r.Started, suspended: r.Suspended, endpoint: r.Endpoint,
			stop: make(chan struct{}), gone: make(chan struct{})}
		cands = append(cands, &candidate{s: s, err: err})
	}
	var wg sync.WaitGroup
	for _, c := range cands {
		if c.err != nil {
			continue
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			if c.err = b.connect(ctx, c.s, nil); c.err != nil {
				// Alive but not controllable: clean it up.
				b.killGroup(c.s)
			}
		}()
	}
	wg.Wait()
	var adopted []compositor.Info
	var lost []compositor.Exit
	for _, c := range cands {
		s := c.s
		if c.err != nil {
			lost = append(lost, compositor.Exit{SessionID: s.id, PID: s.pid, Err: c.err})
			os.RemoveAll(s.dir)
			continue
		}
		b.mu.Lock()
		if b.closed || b.sessions[s.id] != nil {
			b.mu.Unlock()
			s.conn.Close()
			continue
		}
		b.sessions[s.id] = s
		b.wg.Add(1)
		b.mu.Unlock()
		go b.supervise(s, nil)
		b.scheduleHealth(s)
		b.log.Info("compositor adopted", "session_id", s.id, "pid", s.pid)
		adopted = append(adopted, b.info(s))
	}
	return adopted, lost, nil
}

// killLeftovers SIGKILLs what is left of the process group of a session's
// compositor (leader pid) that is gone, and waits for it to go.
func (b *Backend) killLeftovers(id string, pid int) {
	if !procsup.GroupAlive("/proc", pid) {
		return
	}
	b.log.Warn("processes of a gone compositor still run; killing them", "session_id", id, "pgid", pid)
	if err := procsup.SignalGroup(pid, syscall.SIGKILL); err != nil {
		b.log.Warn("cannot kill process group", "session_id", id, "pgid", pid, "error", err)
		return
	}
	if !procsup.WaitGroupGone("/proc", pid, b.cfg.StopGrace, nil) {
		b.log.Warn("processes of the session outlived SIGKILL", "session_id", id, "pgid", pid)
	}
}

// Exits reports compositors that ended on their own; it is closed by Close.
func (b *Backend) Exits() <-chan compositor.Exit { return b.exits }

// Close stops supervising; compositors keep running. It waits for the
// backend's goroutines, closes Exits and releases the state directory.
func (b *Backend) Close() error {
	b.mu.Lock()
	if b.closed {
		b.mu.Unlock()
		return nil
	}
	b.closed = true
	ss := b.sessions
	b.sessions = map[string]*session{}
	for _, s := range ss {
		if s.health != nil {
			s.health.Stop()
		}
	}
	b.mu.Unlock()
	for _, s := range ss {
		close(s.stop)
		if s.conn != nil {
			s.conn.Close()
		}
	}
	b.wg.Wait()
	close(b.exits)
	if err := b.lock.Unlock(); err != nil {
		return fmt.Errorf("wayray: close: %w", err)
	}
	return nil
}
