package adminapi

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"maps"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/hashicorp/go-hclog"

	"github.com/hotdesk/hotdesk/cmd/internal/httpserve"
	"github.com/hotdesk/hotdesk/internal/burstlog"
	"github.com/hotdesk/hotdesk/internal/event"
	"github.com/hotdesk/hotdesk/internal/trustpath"
)

// ErrInUse is returned by Listen when another process answers on the socket.
var ErrInUse = errors.New("adminapi: socket in use")

// Listen creates the admin socket at path: it creates the directory (0755)
// if missing, removes a stale socket left by a dead daemon (refusing with
// ErrInUse if a live one answers, and refusing to remove anything that is
// not a socket), listens and chmods the socket to mode. Closing the listener
// removes the socket file.
//
// The socket exists with the umask's permissions for a moment before the
// chmod; every request is checked against the peer's credentials anyway.
// The directory must be writable by its owner only, and owned by root or
// this process's user, and so must its ancestors be (or have the sticky
// bit, as /tmp), and every link on the way to it: in a directory others
// may write, or may replace, or behind a link they may point elsewhere, one
// could swap the socket for a link between the listen and the chmod, and
// have the daemon chmod any file it names.
func Listen(path string, mode os.FileMode) (net.Listener, error) {
	dir := filepath.Dir(path)
	if _, err := os.Stat(dir); errors.Is(err, fs.ErrNotExist) {
		if err := os.MkdirAll(dir, 0o755); err != nil {
			return nil, fmt.Errorf("adminapi: listen: %w", err)
		}
		if err := chmodOwnDir(dir, 0o755); err != nil { // whatever the umask
			return nil, fmt.Errorf("adminapi: listen: %w", err)
		}
	}
	if err := checkOwnDir(dir); err != nil {
		return nil, fmt.Errorf("adminapi: listen: %w", err)
	}
	if err := removeStale(path); err != nil {
		return nil, fmt.Errorf("adminapi: listen: %w", err)
	}
	ln, err := net.Listen("unix", path)
	if err != nil {
		return nil, fmt.Errorf("adminapi: listen: %w", err)
	}
	if err := os.Chmod(path, mode); err != nil {
		ln.Close()
		return nil, fmt.Errorf("adminapi: listen: %w", err)
	}
	return ln, nil
}

// chmodOwnDir sets the mode of dir, which Listen just made, through a
// descriptor opened without following a link: where the directory's
// parent is shared (/tmp), someone may have put a link to a directory of
// theirs choosing there before MkdirAll, which took it for the directory.
func chmodOwnDir(dir string, mode os.FileMode) error {
	d, err := os.OpenFile(dir, os.O_RDONLY|syscall.O_DIRECTORY|syscall.O_NOFOLLOW, 0)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Chmod(mode)
}

// checkOwnDir refuses a directory that only root and this process's user
// may not change (trustpath.Check): one others may write to (sticky or
// not), or whose owner is neither; one with an ancestor (on its path as
// given, or once links are resolved) whose owner is neither, or that
// others may write to without the sticky bit: there, they could rename
// the directory away and put a link or a directory of theirs in its
// place; and one reached through a link of another user's.
func checkOwnDir(dir string) error {
	if fi, err := os.Stat(dir); err == nil && fi.Mode()&fs.ModeSticky != 0 {
		// Sticky: made to be shared.
		return fmt.Errorf("%s (mode %v) is a shared directory: put the socket in a directory of its own, such as /run/hotdesk", dir, fi.Mode())
	}
	if err := trustpath.Check(dir); err != nil {
		return fmt.Errorf("%w: put the socket in a directory of its own, such as /run/hotdesk", err)
	}
	return nil
}

func removeStale(path string) error {
	fi, err := os.Lstat(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	if fi.Mode().Type() != fs.ModeSocket {
		return fmt.Errorf("%s exists and is not a socket", path)
	}
	c, err := net.DialTimeout("unix", path, time.Second)
	if err == nil {
		c.Close()
		return fmt.Errorf("%w: %s", ErrInUse, path)
	}
	if err := os.Remove(path); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return err
	}
	return nil
}

// ShareWithGroup lets members of group gid reach the socket at path: the
// socket and its directory get group gid and the directory gets group search
// permission (with the socket's mode, e.g. 0660, this lets them connect).
// The directory must be dedicated to hotdesk, as /run/hotdesk is; a
// world-writable or sticky directory (/tmp) is refused. gid < 0 does nothing.
func ShareWithGroup(path string, gid int) error {
	if gid < 0 {
		return nil
	}
	dir := filepath.Dir(path)
	fi, err := os.Stat(dir)
	if err != nil {
		return fmt.Errorf("adminapi: share with group: %w", err)
	}
	if fi.Mode()&(fs.ModeSticky|0o002) != 0 || dir == "/" {
		return fmt.Errorf("adminapi: share with group: %s is a shared directory; put the socket in a directory of its own", dir)
	}
	if err := os.Lchown(path, -1, gid); err != nil {
		return fmt.Errorf("adminapi: share with group: %w", err)
	}
	if err := os.Chown(dir, -1, gid); err != nil {
		return fmt.Errorf("adminapi: share with group: %w", err)
	}
	if err := os.Chmod(dir, fi.Mode().Perm()|0o010); err != nil {
		return fmt.Errorf("adminapi: share with group: %w", err)
	}
	return nil
}

// Server serves the admin API on a unix socket.
type Server struct {
	backend  Backend
	logger   hclog.Logger
	adminGID int
	selfUID  int
	handler  http.Handler

	// Tunables, set by tests.
	procRoot        string
	maxConns        int
	shutdownTimeout time.Duration

	refusals *burstlog.Logger // refused peers: a line a second, with the count

	// starting, if set, answers for the backend while it returns an
	// error (see Starting).
	starting func() error
}

// Starting has every request but /livez answered 503 with the error
// starting returns, for as long as it returns one: a daemon serves its
// socket from early in its start, before its backend can answer, so that
// a client is told what the start waits for (etcd, say) instead of
// finding no socket. Peers are checked first as always. Call it before
// Serve.
func (s *Server) Starting(starting func() error) { s.starting = starting }

// NewServer returns a Server for b. adminGID is the group whose members may
// use the API besides root and the daemon's uid; -1 for none. logger may be
// nil.
func NewServer(b Backend, logger hclog.Logger, adminGID int) *Server {
	if logger == nil {
		logger = hclog.NewNullLogger()
	}
	s := &Server{
		backend:         b,
		logger:          logger,
		refusals:        burstlog.New(logger, time.Second, nil),
		adminGID:        adminGID,
		selfUID:         os.Geteuid(),
		procRoot:        "/proc",
		maxConns:        32,
		shutdownTimeout: 2 * time.Second,
	}
	mux := http.NewServeMux()
	tokenDisabled := func(disabled bool) func(context.Context, string) error {
		return func(ctx context.Context, id string) error { return b.SetTokenDisabled(ctx, id, disabled) }
	}
	draining := func(draining bool) func(context.Context, string) error {
		return func(ctx context.Context, id string) error { return b.SetDraining(ctx, id, draining) }
	}
	mux.Handle("/v1/sessions", methods{http.MethodGet: s.listSessions})
	mux.Handle("/v1/sessions/{id}", methods{
		http.MethodDelete: s.action(b.KillSession, "session killed by admin", "session_id")})
	mux.Handle("/v1/sessions/{id}/disconnect", methods{
		http.MethodPost: s.action(b.DisconnectSession, "session disconnect by admin", "session_id")})
	mux.Handle("/v1/sessions/{id}/lock", methods{
		http.MethodPost: s.action(b.LockSession, "session lock by admin", "session_id")})
	mux.Handle("/v1/terminals", methods{http.MethodGet: list(s, b.Terminals)})
	mux.Handle("/v1/events", methods{http.MethodGet: s.events})
	mux.Handle("/v1/tokens/pair", methods{http.MethodPost: s.pairToken})
	mux.Handle("/v1/pairings", methods{http.MethodGet: list(s, b.Pairings)})
	mux.Handle("/v1/pairings/{id}", methods{
		http.MethodDelete: s.action(b.RevokePairing, "pairing code revoked by admin", "pairing_id")})
	mux.Handle("/v1/lockouts", methods{http.MethodGet: list(s, b.Lockouts)})
	mux.Handle("/v1/failures", methods{http.MethodGet: list(s, b.Failures)})
	mux.Handle("/v1/lockouts/{id}", methods{
		http.MethodDelete: s.actionOn(CheckLockoutKey, b.ClearLockout, "login lockout cleared by admin", "key")})
	mux.Handle("/v1/tokens", methods{http.MethodGet: list(s, b.Tokens), http.MethodPost: s.registerToken})
	mux.Handle("/v1/tokens/{id}/alias", methods{http.MethodPost: s.aliasToken})
	mux.Handle("/v1/tokens/{id}/disable", methods{
		http.MethodPost: s.action(tokenDisabled(true), "token state changed by admin", "token", "disabled", true)})
	mux.Handle("/v1/tokens/{id}/enable", methods{
		http.MethodPost: s.action(tokenDisabled(false), "token state changed by admin", "token", "disabled", false)})
	mux.Handle("/v1/tokens/{id}", methods{
		http.MethodDelete: s.action(b.DeleteToken, "token deleted by admin", "token")})
	mux.Handle("/v1/servers", methods{http.MethodGet: list(s, b.Servers)})
	mux.Handle("/v1/servers/{id}/drain", methods{
		http.MethodPost: s.action(draining(true), "server drain changed by admin", "server_id", "draining", true)})
	mux.Handle("/v1/servers/{id}/undrain", methods{
		http.MethodPost: s.action(draining(false), "server drain changed by admin", "server_id", "draining", false)})
	mux.Handle("/livez", methods{http.MethodGet: s.livez})
	mux.Handle("/readyz", methods{http.MethodGet: s.readyz})
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		writeError(w, http.StatusNotFound, "no such endpoint: "+r.URL.Path)
	})
	s.handler = s.guard(mux)
	return s
}

// Serve serves HTTP on ln until ctx is cancelled, then shuts down: requests
// in flight get a short bound to finish, after which connections are
// closed. Serve closes ln (removing a socket made by Listen). It returns nil
// after ctx is cancelled, or the listener's error if it fails first.
//
// Credentials are read from connections that are *net.UnixConn; on any
// other listener every request is refused.
func (s *Server) Serve(ctx context.Context, ln net.Listener) error {
	pl := newPeerListener(ln, s.maxConns, s.decide)
	pl.refuse = s.refuse
	pl.busy = s.busy
	srv := &http.Server{
		Handler:           s.handler,
		ReadHeaderTimeout: 5 * time.Second,
		ReadTimeout:       30 * time.Second,
		WriteTimeout:      2 * time.Minute,
		IdleTimeout:       2 * time.Minute,
		MaxHeaderBytes:    16 << 10,
		ErrorLog:          s.logger.StandardLogger(&hclog.StandardLoggerOptions{InferLevels: true}),
		// Requests are not cancelled by ctx: Shutdown lets them finish.
		// Streams, which never finish, end with ctx (serveCtx).
		BaseContext: func(net.Listener) context.Context {
			return context.WithValue(context.WithoutCancel(ctx), serveCtxKey{}, ctx)
		},
		ConnContext: func(ctx context.Context, c net.Conn) context.Context {
			if pc, ok := c.(*peerConn); ok {
				return context.WithValue(ctx, peerKey{}, pc.peer)
			}
			return ctx
		},
	}
	if err := httpserve.Serve(ctx, srv, pl, s.shutdownTimeout); err != nil {
		return fmt.Errorf("adminapi: serve: %w", err)
	}
	return nil
}

type peerKey struct{}

// decide makes the access decision for a connection's peer.
func (s *Server) decide(p *peer) {
	if allowPeer(p.UID, p.GID, nil, s.selfUID, s.adminGID) {
		p.Allowed = true
		return
	}
	if s.adminGID < 0 {
		return
	}
	groups, err := procGroups(s.procRoot, p.PID, p.UID)
	if err != nil {
		p.Err = err
		return
	}
	p.Allowed = allowPeer(p.UID, p.GID, groups, s.selfUID, s.adminGID)
}

// refuse logs a refused peer (at most once a second, with the count) and
// returns the HTTP answer written to it before its connection is closed.
func (s *Server) refuse(p *peer) []byte {
	args := []any{"uid", p.UID, "gid", p.GID, "pid", p.PID}
	if p.Err != nil {
		args = append(args, "error", p.Err)
	}
	s.refusals.Warn("admin_peer", "admin api request refused", args...)
	body, _ := json.Marshal(ErrorResponse{Error: fmt.Sprintf(
		"uid %d may not use the admin API: it is not root, the daemon's user or in the admin group", p.UID)})
	return fmt.Appendf(nil, "HTTP/1.1 403 Forbidden\r\nContent-Type: application/json\r\nContent-Length: %d\r\nConnection: close\r\n\r\n%s", len(body), body)
}

// busy logs that every connection slot is taken (at most once a second,
// with the count) and returns the 503 written to the peer before its
// connection is closed.
func (s *Server) busy(maxConns int) []byte {
	s.refusals.Warn("admin_busy", "admin api connection refused: every connection slot is taken", "max_connections", maxConns)
	body, _ := json.Marshal(ErrorResponse{Error: fmt.Sprintf(
		"the admin API is busy: %d connections are open (each event follower holds one); try again", maxConns)})
	return fmt.Appendf(nil, "HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\nRetry-After: 1\r\nContent-Length: %d\r\nConnection: close\r\n\r\n%s", len(body), body)
}

// guard refuses requests from peers that are not allowed.
func (s *Server) guard(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		p, _ := r.Context().Value(peerKey{}).(*peer)
		if p == nil || !p.Allowed {
			if p == nil {
				p = &peer{PID: -1, UID: -1, GID: -1, Err: errors.New("no peer credentials")}
			}
			args := []any{"uid", p.UID, "gid", p.GID, "pid", p.PID, "method", r.Method, "path", r.URL.Path}
			if p.Err != nil {
				args = append(args, "error", p.Err)
			}
			s.logger.Warn("admin api request refused", args...)
			writeError(w, http.StatusForbidden, fmt.Sprintf(
				"uid %d may not use the admin API: it is not root, the daemon's user or in the admin group", p.UID))
			return
		}
		if s.starting != nil && r.URL.Path != "/livez" {
			if err := s.starting(); err != nil {
				writeError(w, http.StatusServiceUnavailable, err.Error())
				return
			}
		}
		next.ServeHTTP(w, r)
	})
}

// methods routes one path by method and answers 405 otherwise.
type methods map[string]http.HandlerFunc

func (m methods) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if h, ok := m[r.Method]; ok {
		h(w, r)
		return
	}
	w.Header().Set("Allow", strings.Join(slices.Sorted(maps.Keys(m)), ", "))
	writeError(w, http.StatusMethodNotAllowed, "method "+r.Method+" not allowed")
}

// list answers a listing: the records get returns, as a JSON array ([]
// when there are none), or its error.
func list[T any](s *Server, get func(context.Context) ([]T, error)) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		rows, err := get(r.Context())
		if err != nil {
			s.backendError(w, r, err)
			return
		}
		if rows == nil {
			rows = []T{}
		}
		writeJSON(w, http.StatusOK, rows)
	}
}

func (s *Server) listSessions(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	f := SessionFilter{User: q.Get("user"), Terminal: q.Get("terminal"), Server: q.Get("server"),
		State: q.Get("state"), Token: q.Get("token")}
	if f.State != "" && !slices.Contains(SessionStates, f.State) {
		s.badRequest(w, r, fmt.Sprintf("unknown state %q: one of %s", f.State, strings.Join(SessionStates, ", ")))
		return
	}
	sl, err := s.backend.Sessions(r.Context(), f)
	if err != nil {
		s.backendError(w, r, err)
		return
	}
	if len(sl.Unanswered) > 0 {
		w.Header().Set(UnansweredHeader, formatUnanswered(sl.Unanswered))
	}
	if sl.Sessions == nil {
		sl.Sessions = []SessionInfo{}
	}
	writeJSON(w, http.StatusOK, sl.Sessions)
}

// formatUnanswered is the value of UnansweredHeader for ids.
func formatUnanswered(ids []string) string {
	esc := make([]string, len(ids))
	for i, id := range ids {
		esc[i] = url.QueryEscape(id)
	}
	return strings.Join(esc, ",")
}

// action answers a request acting on the object the path's {id} names: do
// acts on it and, once done, msg is logged with the object's id under
// idKey, kv and the peer, and the answer is 204 No Content.
func (s *Server) action(do func(ctx context.Context, id string) error, msg, idKey string, kv ...any) http.HandlerFunc {
	return s.actionOn(CheckID, do, msg, idKey, kv...)
}

// actionOn is action for an object whose {id} check refuses (ErrInvalid).
func (s *Server) actionOn(check func(string) error, do func(ctx context.Context, id string) error, msg, idKey string, kv ...any) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		id := r.PathValue("id")
		p := r.Context().Value(peerKey{}).(*peer)
		if err := check(id); err != nil {
			s.backendError(w, r, err)
			return
		}
		if err := do(r.Context(), id); err != nil {
			s.backendError(w, r, err)
			return
		}
		s.logger.Info(msg, append(append([]any{idKey, id}, kv...), "peer", p.createdBy())...)
		w.WriteHeader(http.StatusNoContent)
	}
}

// maxEventHistory bounds n of GET /v1/events.
const maxEventHistory = 1000

func (s *Server) events(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	n := 0
	if q.Has("n") {
		// More than maxEventHistory is taken as that, however many
		// digits it has; anything but digits (nothing included) is 400.
		switch u, err := strconv.ParseUint(q.Get("n"), 10, 64); {
		case errors.Is(err, strconv.ErrRange):
			n = maxEventHistory
		case err != nil:
			writeError(w, http.StatusBadRequest, "n must be a non-negative number")
			return
		default:
			n = int(min(u, maxEventHistory))
		}
	}
	follow := q.Get("follow") == "1" || q.Get("follow") == "true"
	w.Header().Set("Content-Type", "application/x-ndjson")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(http.StatusOK)
	rc := http.NewResponseController(w)
	_ = rc.Flush()
	enc := json.NewEncoder(w)
	// A followed stream ends when the server stops (a daemon stopping must
	// not wait for its followers), as a whole response: the client sees the
	// stream end, not a broken connection.
	ctx, cancel := context.WithCancel(r.Context())
	defer cancel()
	if sc, ok := r.Context().Value(serveCtxKey{}).(context.Context); ok {
		defer context.AfterFunc(sc, cancel)()
	}
	err := s.backend.Events(ctx, n, follow, func(e event.Event) error {
		// A stream has no write timeout as a whole; each event does.
		_ = rc.SetWriteDeadline(time.Now().Add(30 * time.Second))
		if err := enc.Encode(e); err != nil {
			return err
		}
		return rc.Flush()
	})
	if err != nil && r.Context().Err() == nil && ctx.Err() == nil {
		// The events could not be read (the registry out of reach):
		// the 200 is sent already, so the stream ends without its last
		// chunk. The client sees a broken stream, not an empty history
		// or a stream that ended as a stopping daemon's does.
		s.logger.Warn("event stream failed", "error", err)
		panic(http.ErrAbortHandler)
	}
}

func (s *Server) pairToken(w http.ResponseWriter, r *http.Request) {
	var req PairRequest
	if !decodeBody(w, r, &req) {
		return
	}
	req.User = strings.TrimSpace(req.User)
	switch {
	case req.User == "":
		s.badRequest(w, r, "user is required")
		return
	case req.TTLSeconds < 0:
		s.badRequest(w, r, "ttl_seconds must not be negative")
		return
	}
	if err := errors.Join(CheckUser(req.User), CheckLabel(req.Label)); err != nil {
		s.backendError(w, r, err)
		return
	}
	p := r.Context().Value(peerKey{}).(*peer)
	resp, err := s.backend.PairToken(r.Context(), p.createdBy(), req)
	if err != nil {
		s.backendError(w, r, err)
		return
	}
	// Never log the code.
	s.logger.Info("pairing code created", "user", req.User, "peer", p.createdBy(), "expires", resp.Expires)
	writeJSON(w, http.StatusOK, resp)
}

func (s *Server) registerToken(w http.ResponseWriter, r *http.Request) {
	var req RegisterRequest
	if !decodeBody(w, r, &req) {
		return
	}
	req.User = strings.TrimSpace(req.User)
	if req.ID == "" || req.User == "" {
		s.badRequest(w, r, "id and user are required")
		return
	}
	if err := errors.Join(CheckID(req.ID), CheckUser(req.User), CheckLabel(req.Label)); err != nil {
		s.backendError(w, r, err)
		return
	}
	p := r.Context().Value(peerKey{}).(*peer)
	ti, err := s.backend.RegisterToken(r.Context(), p.createdBy(), req)
	if err != nil {
		s.backendError(w, r, err)
		return
	}
	s.logger.Info("token registered by admin", "token", ti.ID, "user", ti.User, "peer", p.createdBy())
	writeJSON(w, http.StatusOK, ti)
}

func (s *Server) aliasToken(w http.ResponseWriter, r *http.Request) {
	var req AliasRequest
	if !decodeBody(w, r, &req) {
		return
	}
	if req.Of == "" {
		s.badRequest(w, r, "of is required")
		return
	}
	if err := errors.Join(CheckID(r.PathValue("id")), CheckID(req.Of), CheckLabel(req.Label)); err != nil {
		s.backendError(w, r, err)
		return
	}
	p := r.Context().Value(peerKey{}).(*peer)
	ti, err := s.backend.AliasToken(r.Context(), p.createdBy(), r.PathValue("id"), req)
	if err != nil {
		s.backendError(w, r, err)
		return
	}
	s.logger.Info("token aliased by admin", "token", ti.ID, "of", req.Of, "user", ti.User, "peer", p.createdBy())
	writeJSON(w, http.StatusOK, ti)
}

func (s *Server) livez(w http.ResponseWriter, _ *http.Request) {
	writeJSON(w, http.StatusOK, map[string]string{"status": "ok"})
}

func (s *Server) readyz(w http.ResponseWriter, _ *http.Request) {
	if err := s.backend.Ready(); err != nil {
		writeError(w, http.StatusServiceUnavailable, err.Error())
		return
	}
	writeJSON(w, http.StatusOK, map[string]string{"status": "ready"})
}

// badRequest answers 400 with msg: the client's mistake, logged at debug
// level only.
func (s *Server) badRequest(w http.ResponseWriter, r *http.Request, msg string) {
	s.logger.Debug("admin api request refused as invalid", "method", r.Method, "path", r.URL.Path, "error", msg)
	writeError(w, http.StatusBadRequest, msg)
}

// backendError maps a backend error to a status. Only what is not the
// client's mistake is logged as an error.
func (s *Server) backendError(w http.ResponseWriter, r *http.Request, err error) {
	switch {
	case errors.Is(err, ErrNotFound):
		s.logger.Debug("admin api request: not found", "method", r.Method, "path", r.URL.Path, "error", err)
		writeError(w, http.StatusNotFound, err.Error())
	case errors.Is(err, ErrInvalid):
		s.badRequest(w, r, err.Error())
	case errors.Is(err, ErrNotReady):
		writeError(w, http.StatusServiceUnavailable, err.Error())
	default:
		s.logger.Error("admin api request failed", "method", r.Method, "path", r.URL.Path, "error", err)
		writeError(w, http.StatusInternalServerError, err.Error())
	}
}

// decodeBody decodes a bounded JSON body into v with unknown fields
// refused; on failure it has written the error response.
func decodeBody(w http.ResponseWriter, r *http.Request, v any) bool {
	if r.ContentLength > MaxBodyBytes {
		// Refused before a byte of it is read: a client that asked
		// "Expect: 100-continue" (curl does for large bodies) reads the
		// 413 instead of sending the body into a closing connection.
		writeError(w, http.StatusRequestEntityTooLarge, fmt.Sprintf("request body over %d bytes", MaxBodyBytes))
		return false
	}
	r.Body = http.MaxBytesReader(w, r.Body, MaxBodyBytes)
	data, err := io.ReadAll(r.Body)
	if err == nil {
		err = checkKeys(data, v)
	}
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	if err == nil {
		err = dec.Decode(v)
	}
	if err == nil {
		// Exactly one JSON value.
		if _, terr := dec.Token(); !errors.Is(terr, io.EOF) {
			err = errors.New("unexpected data after the JSON object")
			if terr != nil && isTooLarge(terr) {
				err = terr
			}
		}
	}
	if err == nil {
		return true
	}
	if isTooLarge(err) {
		writeError(w, http.StatusRequestEntityTooLarge, fmt.Sprintf("request body over %d bytes", MaxBodyBytes))
		return false
	}
	writeError(w, http.StatusBadRequest, "invalid request body: "+err.Error())
	return false
}

// checkKeys requires data to be a JSON object whose member names are
// among the JSON names of struct v's fields, to the letter and each once:
// Go's decoder matches names in any case and keeps the last of a repeated
// one, so {"user":"bob","USER":"eve"} would register eve where a tool
// reading the same body case-sensitively, or the first of two, saw bob.
// A value that is not an object (null, a list) is refused rather than read
// as an empty request. Anything else (types, values) is the decoder's.
func checkKeys(data []byte, v any) error {
	dec := json.NewDecoder(bytes.NewReader(data))
	if tok, err := dec.Token(); err != nil || tok != json.Delim('{') {
		if err != nil {
			return err
		}
		return fmt.Errorf("want a JSON object, not %v", tok)
	}
	names := jsonNames(reflect.TypeOf(v))
	seen := map[string]bool{}
	for dec.More() {
		tok, err := dec.Token()
		if err != nil {
			return err
		}
		key, _ := tok.(string)
		switch {
		case !names[key]:
			return fmt.Errorf("unknown field %q", key)
		case seen[key]:
			return fmt.Errorf("field %q given twice", key)
		}
		seen[key] = true
		var skip json.RawMessage
		if err := dec.Decode(&skip); err != nil {
			return err
		}
	}
	return nil
}

// jsonNames returns the JSON member names of the fields of t (a struct or
// a pointer to one), as encoding/json names them.
func jsonNames(t reflect.Type) map[string]bool {
	for t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	names := map[string]bool{}
	for f := range t.Fields() {
		if !f.IsExported() {
			continue
		}
		name, _, _ := strings.Cut(f.Tag.Get("json"), ",")
		switch name {
		case "-":
			continue
		case "":
			name = f.Name
		}
		names[name] = true
	}
	return names
}

func isTooLarge(err error) bool {
	var mbe *http.MaxBytesError
	return errors.As(err, &mbe)
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}

func writeError(w http.ResponseWriter, status int, msg string) {
	writeJSON(w, status, ErrorResponse{Error: msg})
}

// serveCtxKey carries Serve's context in every request's: the context that
// ends when the server stops.
type serveCtxKey struct{}
