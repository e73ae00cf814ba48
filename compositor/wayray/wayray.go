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
// Exits. Close leaves compositors running; Adopt (a new Backend on the same
// StateDir) reconnects to each recorded, still-running compositor whose
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
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/hashicorp/go-hclog"

	"github.com/hotdesk/hotdesk/compositor"
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
	Logger       hclog.Logger
}

// Backend runs control-protocol compositors.
type Backend struct {
	cfg   Config
	log   hclog.Logger
	exits chan compositor.Exit

	mu       sync.Mutex
	sessions map[string]*session
	closed   bool
}

var _ compositor.Backend = (*Backend)(nil)

type session struct {
	id, user, dir, sock string
	labels              map[string]string
	pid                 int
	started             time.Time

	callMu    sync.Mutex // one request at a time
	conn      net.Conn
	nextID    uint32
	endpoint  string
	suspended bool
	stopping  bool
	gone      chan struct{} // closed when the process is known gone
}

// record is <dir>/session.json, for Adopt.
type record struct {
	SessionID  string            `json:"session_id"`
	User       string            `json:"user"`
	PID        int               `json:"pid"`
	StartTicks uint64            `json:"start_ticks"`
	Socket     string            `json:"socket"`
	Endpoint   string            `json:"endpoint"`
	Started    time.Time         `json:"started"`
	Suspended  bool              `json:"suspended"`
	Labels     map[string]string `json:"labels,omitempty"`
}

var idRe = regexp.MustCompile(`^[A-Za-z0-9-]{1,64}$`)

// Errors.
var (
	ErrStartFailed = errors.New("wayray: compositor did not start")
	ErrClosed      = errors.New("wayray: backend closed")
)

// New returns a Backend; Command and StateDir are required.
func New(cfg Config) (*Backend, error) {
	if len(cfg.Command) == 0 || cfg.StateDir == "" {
		return nil, errors.New("wayray: new: command and state dir are required")
	}
	if cfg.StartTimeout <= 0 {
		cfg.StartTimeout = 10 * time.Second
	}
	if cfg.StopGrace <= 0 {
		cfg.StopGrace = 5 * time.Second
	}
	if cfg.CallTimeout <= 0 {
		cfg.CallTimeout = 5 * time.Second
	}
	if cfg.Logger == nil {
		cfg.Logger = hclog.NewNullLogger()
	}
	if err := os.MkdirAll(cfg.StateDir, 0o700); err != nil {
		return nil, fmt.Errorf("wayray: new: %w", err)
	}
	return &Backend{cfg: cfg, log: cfg.Logger, exits: make(chan compositor.Exit, 64), sessions: make(map[string]*session)}, nil
}

// Create starts a compositor and waits for its Hello.
func (b *Backend) Create(ctx context.Context, spec compositor.Spec) (compositor.Info, error) {
	if !idRe.MatchString(spec.SessionID) {
		return compositor.Info{}, fmt.Errorf("wayray: create: invalid session id %q", spec.SessionID)
	}
	dir := filepath.Join(b.cfg.StateDir, spec.SessionID)
	if err := os.Mkdir(dir, 0o700); err != nil {
		return compositor.Info{}, fmt.Errorf("wayray: create %s: %w", spec.SessionID, err)
	}
	s := &session{id: spec.SessionID, user: spec.User, dir: dir, sock: filepath.Join(dir, "control.sock"),
		labels: maps.Clone(spec.Labels), started: time.Now(), gone: make(chan struct{})}
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
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()

	if err := b.connect(ctx, s, exited); err != nil {
		_ = syscall.Kill(-s.pid, syscall.SIGKILL)
		<-s.waitGone(exited)
		os.RemoveAll(dir)
		return compositor.Info{}, fmt.Errorf("wayray: create %s: %w", s.id, err)
	}
	if err := b.save(s); err != nil {
		b.log.Warn("state record not written", "session_id", s.id, "error", err)
	}
	b.mu.Lock()
	if b.closed {
		b.mu.Unlock()
		_ = syscall.Kill(-s.pid, syscall.SIGKILL)
		return compositor.Info{}, ErrClosed
	}
	b.sessions[s.id] = s
	b.mu.Unlock()
	go b.supervise(s, exited)
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

// waitGone turns the exit channel into a closed channel once the process ended.
func (s *session) waitGone(exited <-chan error) <-chan struct{} {
	done := make(chan struct{})
	go func() {
		if exited != nil {
			<-exited
		}
		close(done)
	}()
	return done
}

// connect dials the control socket until Hello arrives, the process exits
// or StartTimeout passes.
func (b *Backend) connect(ctx context.Context, s *session, exited <-chan error) error {
	deadline := time.Now().Add(b.cfg.StartTimeout)
	for {
		c, err := net.DialTimeout("unix", s.sock, 250*time.Millisecond)
		if err == nil {
			f, err := ReadMsg(c, time.Until(deadline))
			if err != nil {
				c.Close()
				return fmt.Errorf("%w: no hello: %w", ErrStartFailed, err)
			}
			var h Hello
			if f.Type != msgHello || DecodeBody(f, &h) != nil || h.Version != ProtocolVersion {
				c.Close()
				return fmt.Errorf("%w: %w: first frame is not a version %d hello", ErrStartFailed, ErrProtocol, ProtocolVersion)
			}
			s.conn, s.endpoint = c, h.Endpoint
			return nil
		}
		select {
		case err := <-exited:
			return fmt.Errorf("%w: exited: %v", ErrStartFailed, err)
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(20 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%w: no control socket after %s", ErrStartFailed, b.cfg.StartTimeout)
		}
	}
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
	_ = s.conn.SetWriteDeadline(time.Now().Add(timeout))
	if err := WriteMsg(s.conn, t, id, body); err != nil {
		b.fail(s, err)
		return Reply{}, fmt.Errorf("wayray: %s: %w", s.id, err)
	}
	f, err := ReadMsg(s.conn, timeout)
	if err == nil && (f.Type != msgReply || f.ID != id) {
		err = fmt.Errorf("%w: reply type %d id %d to request %d", ErrProtocol, f.Type, f.ID, id)
	}
	var r Reply
	if err == nil {
		err = DecodeBody(f, &r)
	}
	if err != nil {
		b.fail(s, err) // a broken control channel is a broken compositor
		return Reply{}, fmt.Errorf("wayray: %s: %w", s.id, err)
	}
	if !r.OK {
		return r, fmt.Errorf("wayray: %s: compositor refused: %s", s.id, r.Error)
	}
	return r, nil
}

// fail kills a compositor whose control channel broke; supervise reports it.
func (b *Backend) fail(s *session, err error) {
	b.log.Error("control channel broken; stopping the compositor", "session_id", s.id, "error", err)
	_ = syscall.Kill(-s.pid, syscall.SIGKILL)
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
	if _, err := b.call(ctx, s, msgSuspend, nil); err != nil {
		return err
	}
	b.mu.Lock()
	s.suspended = true
	b.mu.Unlock()
	return b.save(s)
}

// Resume asks the compositor to render for a new client.
func (b *Backend) Resume(ctx context.Context, id string) (compositor.Info, error) {
	s, err := b.get(id)
	if err != nil {
		return compositor.Info{}, err
	}
	r, err := b.call(ctx, s, msgResume, Resume{})
	if err != nil {
		return compositor.Info{}, err
	}
	b.mu.Lock()
	s.suspended = false
	if r.Endpoint != "" {
		s.endpoint = r.Endpoint
	}
	b.mu.Unlock()
	_ = b.save(s)
	return b.info(s), nil
}

// Status returns the compositor's own view of the session.
func (b *Backend) Status(ctx context.Context, id string) (Reply, error) {
	s, err := b.get(id)
	if err != nil {
		return Reply{}, err
	}
	return b.call(ctx, s, msgStatus, nil)
}

// Ping checks the compositor answers.
func (b *Backend) Ping(ctx context.Context, id string) error {
	s, err := b.get(id)
	if err != nil {
		return err
	}
	_, err = b.call(ctx, s, msgPing, nil)
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
	_, _ = b.call(ctx, s, msgDestroy, Destroy{GraceMs: uint32(b.cfg.StopGrace / time.Millisecond)})
	select {
	case <-s.gone:
	case <-time.After(b.cfg.StopGrace):
		_ = syscall.Kill(-s.pid, syscall.SIGKILL)
		<-s.gone
	}
	return nil
}

// supervise waits for the compositor to end (our child: exited; adopted:
// polled) and reports an unrequested end on Exits.
func (b *Backend) supervise(s *session, exited <-chan error) {
	var err error
	if exited != nil {
		err = <-exited
	} else {
		for processAlive(s.pid) {
			time.Sleep(200 * time.Millisecond)
		}
		err = errors.New("process gone")
	}
	_ = syscall.Kill(-s.pid, syscall.SIGKILL) // its applications die with it
	if s.conn != nil {
		s.conn.Close()
	}
	close(s.gone)
	b.mu.Lock()
	stopping, closed := s.stopping, b.closed
	if b.sessions[s.id] == s {
		delete(b.sessions, s.id)
	}
	b.mu.Unlock()
	os.RemoveAll(s.dir)
	if !stopping && !closed {
		if err == nil {
			err = errors.New("exited")
		}
		b.log.Warn("compositor ended", "session_id", s.id, "pid", s.pid, "error", err)
		select {
		case b.exits <- compositor.Exit{SessionID: s.id, PID: s.pid, Err: err}:
		default:
		}
	}
}

func processAlive(pid int) bool {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return false
	}
	i := strings.LastIndexByte(string(b), ')')
	return i < 0 || i+2 >= len(b) || b[i+2] != 'Z'
}

// startTicks is field 22 of /proc/<pid>/stat (the process start time).
func startTicks(pid int) (uint64, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, err
	}
	i := strings.LastIndexByte(string(b), ')')
	f := strings.Fields(string(b[i+1:]))
	if len(f) < 20 {
		return 0, fmt.Errorf("wayray: short stat for pid %d", pid)
	}
	return strconv.ParseUint(f[19], 10, 64)
}

func (b *Backend) save(s *session) error {
	ticks, err := startTicks(s.pid)
	if err != nil {
		return err
	}
	b.mu.Lock()
	r := record{SessionID: s.id, User: s.user, PID: s.pid, StartTicks: ticks, Socket: s.sock,
		Endpoint: s.endpoint, Started: s.started, Suspended: s.suspended, Labels: s.labels}
	b.mu.Unlock()
	data, err := json.Marshal(r)
	if err != nil {
		return err
	}
	tmp := filepath.Join(s.dir, "session.json.tmp")
	if err := os.WriteFile(tmp, data, 0o600); err != nil {
		return err
	}
	return os.Rename(tmp, filepath.Join(s.dir, "session.json"))
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

// Adopt reconnects to compositors a previous broker left running.
func (b *Backend) Adopt(ctx context.Context) ([]compositor.Info, []compositor.Exit, error) {
	ents, err := os.ReadDir(b.cfg.StateDir)
	if err != nil {
		return nil, nil, fmt.Errorf("wayray: adopt: %w", err)
	}
	var adopted []compositor.Info
	var lost []compositor.Exit
	for _, e := range ents {
		if !e.IsDir() || !idRe.MatchString(e.Name()) {
			continue
		}
		dir := filepath.Join(b.cfg.StateDir, e.Name())
		var r record
		data, err := os.ReadFile(filepath.Join(dir, "session.json"))
		if err == nil {
			err = json.Unmarshal(data, &r)
		}
		if err == nil && r.SessionID != e.Name() {
			err = errors.New("record names another session")
		}
		if err == nil {
			if t, terr := startTicks(r.PID); terr != nil || t != r.StartTicks || !processAlive(r.PID) {
				err = errors.New("process gone or pid reused")
			}
		}
		s := &session{id: e.Name(), user: r.User, dir: dir, sock: filepath.Join(dir, "control.sock"), labels: r.Labels,
			pid: r.PID, started: r.Started, suspended: r.Suspended, endpoint: r.Endpoint, gone: make(chan struct{})}
		if err == nil {
			err = b.connect(ctx, s, nil)
		}
		if err != nil {
			lost = append(lost, compositor.Exit{SessionID: e.Name(), PID: r.PID, Err: err})
			os.RemoveAll(dir)
			continue
		}
		b.mu.Lock()
		b.sessions[s.id] = s
		b.mu.Unlock()
		go b.supervise(s, nil)
		adopted = append(adopted, b.info(s))
	}
	return adopted, lost, nil
}

// Exits reports compositors that ended on their own.
func (b *Backend) Exits() <-chan compositor.Exit { return b.exits }

// Close stops supervising; compositors keep running.
func (b *Backend) Close() error {
	b.mu.Lock()
	b.closed = true
	ss := b.sessions
	b.sessions = map[string]*session{}
	b.mu.Unlock()
	for _, s := range ss {
		if s.conn != nil {
			s.conn.Close()
		}
	}
	return nil
}
