// Package dashboard is hotdeskd's web admin dashboard: server-rendered
// pages over HTTPS for the group's servers, sessions, terminals, tokens and
// live events, on top of the same Backend as the admin socket
// (adminapi.Backend), so the dashboard sees and does what hotdeskctl does.
//
// Contract:
//   - Login is by user name and password, checked by the Login function
//     (PAM in hotdeskd), and then by group: members of AdminGroup may act,
//     members of ReadOnlyGroup may only look; anyone else is refused even
//     with the right password. Failed logins are answered after the Login
//     function's own delay and never say which part was wrong.
//   - A login session is a random 256-bit id in a cookie (HttpOnly, Secure,
//     SameSite=Strict, Path=/) mapped to server-side state; it ends after
//     SessionTTL or at logout. At most MaxSessions are kept (the oldest is
//     dropped first). The user's groups are looked up again at every
//     request (and every keepalive of an event stream): a login whose user
//     no longer has the role it was made with (taken out of AdminGroup,
//     the account gone) ends there, so revoking an administrator holds at
//     once, not SessionTTL later. A role gained takes a new login. An
//     event stream ends at its next keepalive once its login ended.
//   - Every state-changing request is a POST carrying the session's CSRF
//     token (a second random value, compared in constant time) and, when the
//     browser sends one, an Origin equal to the page's own; GETs change
//     nothing. Responses carry a strict Content-Security-Policy (no inline
//     script), X-Frame-Options DENY and no-store caching.
//   - Every action is logged (user, remote address, what) at info level.
//     Passwords are never logged or kept; pairing codes are shown once, to
//     the admin who asked, and never logged.
//
// The live events page streams Server-Sent Events from /events/stream
// (bounded per login: at most 4 streams at once).
package dashboard

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/subtle"
	"crypto/tls"
	_ "embed"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"html/template"
	"net"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/hashicorp/go-hclog"
	qrcode "github.com/skip2/go-qrcode"

	"github.com/hotdesk/hotdesk/cmd/internal/adminapi"
	"github.com/hotdesk/hotdesk/cmd/internal/httpserve"
	"github.com/hotdesk/hotdesk/internal/defaults"
	"github.com/hotdesk/hotdesk/internal/event"
	"github.com/hotdesk/hotdesk/internal/version"
)

// Defaults and bounds.
const (
	DefaultSessionTTL   = 8 * time.Hour
	DefaultMaxSessions  = 256
	maxStreamsPerLogin  = 4
	maxFormBytes        = 16 << 10
	cookieName          = "hotdesk_dash"
	loginTimeout        = 30 * time.Second
	maxUserLen          = 256
	maxPasswordLen      = 1024
	backendCallTimeout  = 30 * time.Second
	sseKeepaliveEvery   = 20 * time.Second
	recentEventsOnPage  = 50
	maxEventsStreamLife = 12 * time.Hour
)

// ErrLoginFailed is what Login returns for a wrong user or password.
var ErrLoginFailed = errors.New("dashboard: login failed")

// ErrLoginLocked is what Login returns (wrapped with ErrLoginFailed) when
// logins are locked out after failures or too many are in progress: the
// page says to wait, not that the password was wrong.
var ErrLoginLocked = errors.New("dashboard: too many logins")

// Role is what a logged-in user may do.
type Role int

const (
	RoleNone     Role = iota
	RoleReadOnly      // may look
	RoleAdmin         // may act
)

func (r Role) String() string {
	switch r {
	case RoleAdmin:
		return "admin"
	case RoleReadOnly:
		return "read-only"
	}
	return "none"
}

// Config is what New needs. Backend, Login and Groups are required, and
// AdminGroup must be set.
type Config struct {
	Backend adminapi.Backend
	// Login checks user's password (PAM in hotdeskd); remote is the
	// client's address for rate limits and audit.
	Login func(ctx context.Context, user, password, remote string) error
	// Groups returns the names of user's groups.
	Groups        func(user string) []string
	AdminGroup    string
	ReadOnlyGroup string // "" = no read-only role
	Logger        hclog.Logger
	SessionTTL    time.Duration
	MaxSessions   int
	Now           func() time.Time
	// Starting, if set, is asked at every request: while it returns an
	// error (a daemon's start in progress), every page but the static
	// files is answered 503 with a page saying it (refreshed every 5 s),
	// the login form's POST included: the Backend is not asked, Login is
	// not run. Its text is shown to whoever reaches the listener.
	Starting func() error
}

// Server is the dashboard.
type Server struct {
	cfg     Config
	log     hclog.Logger
	handler http.Handler

	// keepalive is how often an event stream sends a keepalive and looks
	// at its user's groups again (sseKeepaliveEvery; tests shorten it).
	keepalive time.Duration

	mu       sync.Mutex
	sessions map[string]*login // guarded by mu
}

type login struct {
	id      string // the cookie's value, the key in Server.sessions
	user    string
	role    Role
	csrf    string
	created time.Time
	streams int // guarded by Server.mu
	flash   string
	pair    *pairShown // a pairing code to show once
}

type pairShown struct {
	Code, User string
	Expires    time.Time
	QR         template.URL
}

// New returns a dashboard.
func New(cfg Config) (*Server, error) {
	if cfg.Backend == nil || cfg.Login == nil || cfg.Groups == nil || cfg.AdminGroup == "" {
		return nil, errors.New("dashboard: backend, login, groups and admin group are required")
	}
	if cfg.Logger == nil {
		cfg.Logger = hclog.NewNullLogger()
	}
	defaults.Set(&cfg.SessionTTL, DefaultSessionTTL)
	defaults.Set(&cfg.MaxSessions, DefaultMaxSessions)
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	s := &Server{cfg: cfg, log: cfg.Logger, keepalive: sseKeepaliveEvery, sessions: map[string]*login{}}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /login", s.loginPage)
	mux.HandleFunc("POST /login", s.loginPost)
	mux.HandleFunc("POST /logout", s.authed(RoleReadOnly, s.logout))
	mux.HandleFunc("GET /static/events.js", s.static(eventsJS, "text/javascript; charset=utf-8"))
	mux.HandleFunc("GET /static/style.css", s.static(styleCSS, "text/css; charset=utf-8"))
	mux.HandleFunc("GET /{$}", func(w http.ResponseWriter, r *http.Request) { http.Redirect(w, r, "/servers", http.StatusSeeOther) })
	mux.HandleFunc("GET /servers", s.authed(RoleReadOnly, s.serversPage))
	mux.HandleFunc("POST /servers/{id}/{action}", s.authed(RoleAdmin, s.serverAction))
	mux.HandleFunc("GET /sessions", s.authed(RoleReadOnly, s.sessionsPage))
	mux.HandleFunc("POST /sessions/{id}/{action}", s.authed(RoleAdmin, s.sessionAction))
	mux.HandleFunc("GET /terminals", s.authed(RoleReadOnly, s.terminalsPage))
	mux.HandleFunc("GET /tokens", s.authed(RoleReadOnly, s.tokensPage))
	mux.HandleFunc("POST /tokens/pair", s.authed(RoleAdmin, s.pairPost))
	mux.HandleFunc("POST /tokens/register", s.authed(RoleAdmin, s.registerPost))
	mux.HandleFunc("POST /tokens/{id}/{action}", s.authed(RoleAdmin, s.tokenAction))
	mux.HandleFunc("POST /lockouts/{id}/{action}", s.authed(RoleAdmin, s.lockoutAction))
	mux.HandleFunc("GET /events", s.authed(RoleReadOnly, s.eventsPage))
	mux.HandleFunc("GET /events/stream", s.authed(RoleReadOnly, s.eventsStream))
	s.handler = s.headers(s.whileStarting(mux))
	return s, nil
}

// whileStarting answers for next while Config.Starting returns an error.
func (s *Server) whileStarting(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var err error
		if s.cfg.Starting != nil && !strings.HasPrefix(r.URL.Path, "/static/") {
			err = s.cfg.Starting()
		}
		if err == nil {
			next.ServeHTTP(w, r)
			return
		}
		w.Header().Set("Retry-After", "5")
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		w.WriteHeader(http.StatusServiceUnavailable)
		s.render(w, "starting", nil, map[string]any{"Error": err.Error()})
	})
}

// Handler is the dashboard's HTTP handler (for tests and embedding).
func (s *Server) Handler() http.Handler { return s.handler }

// Serve serves HTTPS on ln with tlsCfg until ctx ends, then shuts down
// within a short bound.
func (s *Server) Serve(ctx context.Context, ln net.Listener, tlsCfg *tls.Config) error {
	if tlsCfg == nil {
		// The login form takes passwords: never over plain HTTP.
		return errors.New("dashboard: serve: no TLS configuration")
	}
	srv := &http.Server{
		Handler:           s.handler,
		TLSConfig:         tlsCfg,
		ReadHeaderTimeout: 10 * time.Second,
		ReadTimeout:       30 * time.Second,
		IdleTimeout:       2 * time.Minute,
		MaxHeaderBytes:    32 << 10,
		ErrorLog:          s.log.StandardLogger(&hclog.StandardLoggerOptions{InferLevels: true}),
		BaseContext:       func(net.Listener) context.Context { return ctx },
	}
	if err := httpserve.Serve(ctx, srv, ln, 2*time.Second); err != nil {
		return fmt.Errorf("dashboard: serve: %w", err)
	}
	return nil
}

func (s *Server) headers(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h := w.Header()
		h.Set("Content-Security-Policy", "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'")
		h.Set("X-Frame-Options", "DENY")
		h.Set("X-Content-Type-Options", "nosniff")
		h.Set("Referrer-Policy", "same-origin") // "no-referrer" makes browsers send "Origin: null" on POSTs
		h.Set("Cache-Control", "no-store")
		next.ServeHTTP(w, r)
	})
}

func (s *Server) static(body, ctype string) http.HandlerFunc {
	return func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", ctype)
		_, _ = w.Write([]byte(body))
	}
}

func randomToken() string {
	var b [32]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

// role decides what user may do from their groups.
func (s *Server) role(user string) Role {
	groups := s.cfg.Groups(user)
	switch {
	case slices.Contains(groups, s.cfg.AdminGroup):
		return RoleAdmin
	case s.cfg.ReadOnlyGroup != "" && slices.Contains(groups, s.cfg.ReadOnlyGroup):
		return RoleReadOnly
	}
	return RoleNone
}

// current returns the login of r's cookie, if valid and not expired.
func (s *Server) current(r *http.Request) (string, *login) {
	c, err := r.Cookie(cookieName)
	if err != nil || len(c.Value) != 64 {
		return "", nil
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	l := s.sessions[c.Value]
	if l == nil {
		return "", nil
	}
	if s.cfg.Now().Sub(l.created) > s.cfg.SessionTTL {
		delete(s.sessions, c.Value)
		return "", nil
	}
	return c.Value, l
}

// loggedIn reports whether l is still a login: not logged out, dropped
// for room, or past SessionTTL (then it ends here, as in current).
func (s *Server) loggedIn(l *login) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.sessions[l.id] != l {
		return false
	}
	if s.cfg.Now().Sub(l.created) > s.cfg.SessionTTL {
		delete(s.sessions, l.id)
		return false
	}
	return true
}

// stillAllowed reports whether l's user still has the role l was made
// with; if not, l ends (logged). The groups are looked up anew: an
// administrator taken out of AdminGroup, or whose account is gone, loses
// the dashboard at the next request.
func (s *Server) stillAllowed(l *login, remote string) bool {
	now := s.role(l.user)
	if now >= l.role {
		return true
	}
	s.mu.Lock()
	if s.sessions[l.id] == l {
		delete(s.sessions, l.id)
	}
	s.mu.Unlock()
	s.log.Warn("dashboard login ended: the user's groups no longer give its role", "user", l.user,
		"role", l.role.String(), "now", now.String(), "remote", remote)
	return false
}

// sameOrigin refuses a request whose Origin (when sent) is not this host.
func sameOrigin(r *http.Request) bool {
	o := r.Header.Get("Origin")
	if o == "" {
		return true
	}
	u, err := url.Parse(o)
	return err == nil && u.Host == r.Host
}

type handlerFunc func(w http.ResponseWriter, r *http.Request, l *login)

// authed requires a login with at least role min; POSTs also need the CSRF
// token and a same-origin request.
func (s *Server) authed(min Role, h handlerFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		_, l := s.current(r)
		if l != nil && !s.stillAllowed(l, r.RemoteAddr) {
			l = nil
		}
		if l == nil {
			if r.Method == http.MethodGet && r.URL.Path != "/events/stream" {
				http.Redirect(w, r, "/login?next="+url.QueryEscape(r.URL.RequestURI()), http.StatusSeeOther)
				return
			}
			http.Error(w, "not logged in", http.StatusUnauthorized)
			return
		}
		if r.Method == http.MethodPost {
			r.Body = http.MaxBytesReader(w, r.Body, maxFormBytes)
			if err := r.ParseForm(); err != nil {
				http.Error(w, "bad form", http.StatusBadRequest)
				return
			}
			if !sameOrigin(r) || subtle.ConstantTimeCompare([]byte(r.PostForm.Get("csrf")), []byte(l.csrf)) != 1 {
				s.log.Warn("dashboard request refused: bad csrf token or origin", "user", l.user, "remote", r.RemoteAddr, "path", r.URL.Path)
				http.Error(w, "request refused (stale page or cross-site request): reload the page and try again", http.StatusForbidden)
				return
			}
		}
		if l.role < min {
			s.log.Warn("dashboard action refused: read-only user", "user", l.user, "remote", r.RemoteAddr, "path", r.URL.Path)
			http.Error(w, "your account may only look (read-only group)", http.StatusForbidden)
			return
		}
		h(w, r, l)
	}
}

// setFlash stores a one-time message for the next page of l.
func (s *Server) setFlash(l *login, msg string) {
	s.mu.Lock()
	l.flash = msg
	s.mu.Unlock()
}

func (s *Server) takeFlash(l *login) (string, *pairShown) {
	s.mu.Lock()
	defer s.mu.Unlock()
	f, p := l.flash, l.pair
	l.flash, l.pair = "", nil
	return f, p
}

func (s *Server) loginPage(w http.ResponseWriter, r *http.Request) {
	if _, l := s.current(r); l != nil {
		http.Redirect(w, r, "/servers", http.StatusSeeOther)
		return
	}
	s.render(w, "login", nil, map[string]any{"Next": safeNext(r.URL.Query().Get("next"))})
}

// safeNext keeps a post-login redirect on this site: a path of printable
// ASCII (non-ASCII is escaped) that does not start with "//". A browser
// drops tabs and newlines from the Location it follows, so "/<TAB>/evil"
// would have been "//evil", another site.
func safeNext(n string) string {
	if n == "" || !strings.HasPrefix(n, "/") || strings.HasPrefix(n, "//") || strings.Contains(n, "\\") ||
		strings.ContainsFunc(n, func(r rune) bool { return r <= ' ' || r == 0x7f }) {
		return "/servers"
	}
	return n
}

func (s *Server) loginPost(w http.ResponseWriter, r *http.Request) {
	r.Body = http.MaxBytesReader(w, r.Body, maxFormBytes)
	if err := r.ParseForm(); err != nil || !sameOrigin(r) {
		http.Error(w, "bad request", http.StatusBadRequest)
		return
	}
	user := strings.TrimSpace(r.PostForm.Get("user"))
	pw := r.PostForm.Get("password")
	next := safeNext(r.PostForm.Get("next"))
	failWith := func(reason, msg string) {
		s.log.Info("dashboard login refused", "user", user, "remote", r.RemoteAddr, "reason", reason)
		w.WriteHeader(http.StatusUnauthorized)
		s.render(w, "login", nil, map[string]any{"Next": next, "Error": msg})
	}
	fail := func(reason string) {
		failWith(reason, "Login failed: wrong user or password, or not an administrator.")
	}
	if user == "" || len(user) > maxUserLen || len(pw) > maxPasswordLen || strings.ContainsAny(user, "\x00\n\r/") {
		fail("malformed")
		return
	}
	ctx, cancel := context.WithTimeout(r.Context(), loginTimeout)
	err := s.cfg.Login(ctx, user, pw, r.RemoteAddr)
	cancel()
	if errors.Is(err, ErrLoginLocked) {
		failWith(err.Error(), "Too many failed or pending logins for this user or from this address: try again in a few minutes.")
		return
	}
	if err != nil {
		fail(err.Error())
		return
	}
	role := s.role(user)
	if role == RoleNone {
		fail("not in the admin or read-only group")
		return
	}
	id := randomToken()
	s.mu.Lock()
	if len(s.sessions) >= s.cfg.MaxSessions {
		var oldest string
		var at time.Time
		for k, v := range s.sessions {
			if oldest == "" || v.created.Before(at) {
				oldest, at = k, v.created
			}
		}
		delete(s.sessions, oldest)
	}
	s.sessions[id] = &login{id: id, user: user, role: role, csrf: randomToken(), created: s.cfg.Now()}
	s.mu.Unlock()
	s.log.Info("dashboard login", "user", user, "role", role.String(), "remote", r.RemoteAddr)
	http.SetCookie(w, &http.Cookie{Name: cookieName, Value: id, Path: "/", HttpOnly: true, Secure: true,
		SameSite: http.SameSiteStrictMode, MaxAge: int(s.cfg.SessionTTL.Seconds())})
	http.Redirect(w, r, next, http.StatusSeeOther)
}

func (s *Server) logout(w http.ResponseWriter, r *http.Request, l *login) {
	id, _ := s.current(r)
	s.mu.Lock()
	delete(s.sessions, id)
	s.mu.Unlock()
	s.log.Info("dashboard logout", "user", l.user, "remote", r.RemoteAddr)
	http.SetCookie(w, &http.Cookie{Name: cookieName, Value: "", Path: "/", HttpOnly: true, Secure: true, SameSite: http.SameSiteStrictMode, MaxAge: -1})
	http.Redirect(w, r, "/login", http.StatusSeeOther)
}

func (s *Server) callCtx(r *http.Request) (context.Context, context.CancelFunc) {
	return context.WithTimeout(r.Context(), backendCallTimeout)
}

// fetch gets what a page shows from the backend within
// backendCallTimeout; on an error it has answered with the error page and
// returns false.
func fetch[T any](s *Server, w http.ResponseWriter, r *http.Request, l *login, get func(context.Context) (T, error)) (T, bool) {
	ctx, cancel := s.callCtx(r)
	defer cancel()
	v, err := get(ctx)
	if err != nil {
		s.backendError(w, l, err)
		return v, false
	}
	return v, true
}

// page is what every page template gets.
type page struct {
	Title   string
	User    string
	Role    string
	CanAct  bool
	CSRF    string
	Flash   string
	Version string
	Data    any
}

func (s *Server) render(w http.ResponseWriter, name string, l *login, data any) {
	s.renderWithFlash(w, name, l, "", data)
}

// renderWithFlash writes page name for l (nil: not logged in) with a
// one-time message.
func (s *Server) renderWithFlash(w http.ResponseWriter, name string, l *login, flash string, data any) {
	p := page{Title: name, Version: version.String(), Data: data, Flash: flash}
	if l != nil {
		p.User, p.Role, p.CanAct, p.CSRF = l.user, l.role.String(), l.role >= RoleAdmin, l.csrf
	}
	var buf bytes.Buffer
	if err := templates.ExecuteTemplate(&buf, name, p); err != nil {
		s.log.Error("dashboard template failed", "page", name, "error", err)
		http.Error(w, "internal error", http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	_, _ = buf.WriteTo(w)
}

func (s *Server) backendError(w http.ResponseWriter, l *login, err error) {
	status := http.StatusInternalServerError
	switch {
	case errors.Is(err, adminapi.ErrNotFound):
		status = http.StatusNotFound
	case errors.Is(err, adminapi.ErrInvalid):
		status = http.StatusBadRequest
	case errors.Is(err, adminapi.ErrNotReady):
		status = http.StatusServiceUnavailable
	}
	w.WriteHeader(status)
	s.render(w, "error", l, map[string]any{"Error": err.Error()})
}

func (s *Server) serversPage(w http.ResponseWriter, r *http.Request, l *login) {
	ss, ok := fetch(s, w, r, l, s.cfg.Backend.Servers)
	if !ok {
		return
	}
	ready := s.cfg.Backend.Ready()
	flash, _ := s.takeFlash(l)
	s.renderWithFlash(w, "servers", l, flash, map[string]any{"Servers": ss, "Ready": ready == nil, "NotReady": errString(ready)})
}

func errString(err error) string {
	if err == nil {
		return ""
	}
	return err.Error()
}

func (s *Server) serverAction(w http.ResponseWriter, r *http.Request, l *login) {
	id, action := r.PathValue("id"), r.PathValue("action")
	if action != "drain" && action != "undrain" {
		http.Error(w, "unknown action", http.StatusNotFound)
		return
	}
	ctx, cancel := s.callCtx(r)
	defer cancel()
	if err := s.cfg.Backend.SetDraining(ctx, id, action == "drain"); err != nil {
		s.backendError(w, l, err)
		return
	}
	s.log.Info("dashboard: server "+action, "server_id", id, "user", l.user, "remote", r.RemoteAddr)
	s.setFlash(l, fmt.Sprintf("server %s: %sed", id, action))
	http.Redirect(w, r, "/servers", http.StatusSeeOther)
}

func (s *Server) sessionsPage(w http.ResponseWriter, r *http.Request, l *login) {
	q := r.URL.Query()
	f := adminapi.SessionFilter{User: q.Get("user"), Terminal: q.Get("terminal"), Server: q.Get("server"),
		State: q.Get("state"), Token: q.Get("token")}
	sl, ok := fetch(s, w, r, l, func(ctx context.Context) (adminapi.SessionList, error) { return s.cfg.Backend.Sessions(ctx, f) })
	if !ok {
		return
	}
	ss := sl.Sessions
	type row struct {
		adminapi.SessionInfo
		Idle string
	}
	now := s.cfg.Now()
	rows := make([]row, 0, len(ss))
	for _, si := range ss {
		idle := "-"
		if si.IdleSince != nil {
			idle = now.Sub(*si.IdleSince).Truncate(time.Second).String()
		}
		rows = append(rows, row{si, idle})
	}
	flash, _ := s.takeFlash(l)
	s.renderWithFlash(w, "sessions", l, flash, map[string]any{"Sessions": rows, "Filter": f,
		"Unanswered": sl.Warnings(f != adminapi.SessionFilter{})})
}

func (s *Server) sessionAction(w http.ResponseWriter, r *http.Request, l *login) {
	b := s.cfg.Backend
	s.act(w, r, l, "session", "/sessions", map[string]action{
		"kill":       {b.KillSession, "killed"},
		"disconnect": {b.DisconnectSession, "disconnected"},
		"lock":       {b.LockSession, "locked"},
	})
}

// action is what a dashboard form does to an object, and the word its
// confirmation uses.
type action struct {
	do   func(ctx context.Context, id string) error
	done string
}

// act runs the action named in the form's path on the object named there
// (kind "session" or "token"), logs who did it, and answers with the
// backend's error or a confirmation on the page at back.
func (s *Server) act(w http.ResponseWriter, r *http.Request, l *login, kind, back string, actions map[string]action) {
	id, name := r.PathValue("id"), r.PathValue("action")
	a, ok := actions[name]
	if !ok {
		http.Error(w, "unknown action", http.StatusNotFound)
		return
	}
	ctx, cancel := s.callCtx(r)
	defer cancel()
	if err := a.do(ctx, id); err != nil {
		s.backendError(w, l, err)
		return
	}
	s.log.Info("dashboard: "+kind+" "+name, kind, id, "user", l.user, "remote", r.RemoteAddr)
	s.setFlash(l, fmt.Sprintf("%s %s %s", kind, id, a.done))
	http.Redirect(w, r, back, http.StatusSeeOther)
}

func (s *Server) terminalsPage(w http.ResponseWriter, r *http.Request, l *login) {
	ts, ok := fetch(s, w, r, l, s.cfg.Backend.Terminals)
	if !ok {
		return
	}
	s.renderWithFlash(w, "terminals", l, "", map[string]any{"Terminals": ts})
}

func (s *Server) tokensPage(w http.ResponseWriter, r *http.Request, l *login) {
	// The listings within one call's bound.
	type listings struct {
		tokens   []adminapi.TokenInfo
		pairings []adminapi.PairingInfo
		lockouts []adminapi.LockoutInfo
	}
	v, ok := fetch(s, w, r, l, func(ctx context.Context) (v listings, err error) {
		if v.tokens, err = s.cfg.Backend.Tokens(ctx); err != nil {
			return v, err
		}
		if v.pairings, err = s.cfg.Backend.Pairings(ctx); err != nil {
			return v, err
		}
		v.lockouts, err = s.cfg.Backend.Lockouts(ctx)
		return v, err
	})
	if !ok {
		return
	}
	flash, pair := s.takeFlash(l)
	s.renderWithFlash(w, "tokens", l, flash, map[string]any{"Tokens": v.tokens, "Pairings": v.pairings, "Lockouts": v.lockouts, "Pair": pair})
}

func (s *Server) pairPost(w http.ResponseWriter, r *http.Request, l *login) {
	user := strings.TrimSpace(r.PostForm.Get("user"))
	if user == "" {
		s.setFlash(l, "a user is required to pair a token")
		http.Redirect(w, r, "/tokens", http.StatusSeeOther)
		return
	}
	label := r.PostForm.Get("label")
	// The admin API's checks: the backend takes what they let through.
	if err := errors.Join(adminapi.CheckUser(user), adminapi.CheckLabel(label)); err != nil {
		s.setFlash(l, "pair failed: "+err.Error())
		http.Redirect(w, r, "/tokens", http.StatusSeeOther)
		return
	}
	ctx, cancel := s.callCtx(r)
	defer cancel()
	resp, err := s.cfg.Backend.PairToken(ctx, "dashboard:"+l.user, adminapi.PairRequest{User: user, Label: label})
	if err != nil {
		s.backendError(w, l, err)
		return
	}
	png, err := qrcode.Encode(resp.Code, qrcode.Medium, 256)
	if err != nil {
		s.backendError(w, l, err)
		return
	}
	s.log.Info("dashboard: pairing code created", "for_user", user, "user", l.user, "remote", r.RemoteAddr)
	s.mu.Lock()
	l.pair = &pairShown{Code: resp.Code, User: user, Expires: resp.Expires,
		QR: template.URL("data:image/png;base64," + base64.StdEncoding.EncodeToString(png))}
	s.mu.Unlock()
	http.Redirect(w, r, "/tokens", http.StatusSeeOther)
}

func (s *Server) registerPost(w http.ResponseWriter, r *http.Request, l *login) {
	id, user := strings.TrimSpace(r.PostForm.Get("id")), strings.TrimSpace(r.PostForm.Get("user"))
	label := r.PostForm.Get("label")
	var ti adminapi.TokenInfo
	// The admin API's checks: the backend takes what they let through.
	err := errors.Join(adminapi.CheckID(id), adminapi.CheckUser(user), adminapi.CheckLabel(label))
	if err == nil {
		ctx, cancel := s.callCtx(r)
		ti, err = s.cfg.Backend.RegisterToken(ctx, "dashboard:"+l.user, adminapi.RegisterRequest{ID: id, User: user, Label: label})
		cancel()
	}
	if err != nil {
		s.setFlash(l, "register failed: "+err.Error())
	} else {
		s.log.Info("dashboard: token registered", "token", ti.ID, "for_user", ti.User, "user", l.user, "remote", r.RemoteAddr)
		s.setFlash(l, fmt.Sprintf("token %s registered to %s", ti.ID, ti.User))
	}
	http.Redirect(w, r, "/tokens", http.StatusSeeOther)
}

func (s *Server) tokenAction(w http.ResponseWriter, r *http.Request, l *login) {
	b := s.cfg.Backend
	s.act(w, r, l, "token", "/tokens", map[string]action{
		"disable":        {func(ctx context.Context, id string) error { return b.SetTokenDisabled(ctx, id, true) }, "disabled"},
		"enable":         {func(ctx context.Context, id string) error { return b.SetTokenDisabled(ctx, id, false) }, "enabled"},
		"revoke-pairing": {b.RevokePairing, "revoked"},
	})
}

func (s *Server) lockoutAction(w http.ResponseWriter, r *http.Request, l *login) {
	s.act(w, r, l, "lockout", "/tokens", map[string]action{"clear": {s.cfg.Backend.ClearLockout, "cleared at every server"}})
}

func (s *Server) eventsPage(w http.ResponseWriter, r *http.Request, l *login) {
	evs, ok := fetch(s, w, r, l, func(ctx context.Context) (recent []event.Event, err error) {
		err = s.cfg.Backend.Events(ctx, recentEventsOnPage, false, func(e event.Event) error {
			recent = append(recent, e)
			return nil
		})
		return recent, err
	})
	if !ok {
		return
	}
	slices.Reverse(evs) // newest first, as the live lines are added
	s.renderWithFlash(w, "events", l, "", map[string]any{"Events": evs})
}

// eventsStream is the live stream as Server-Sent Events: one "data:" line
// of JSON per event, a comment line as keepalive.
func (s *Server) eventsStream(w http.ResponseWriter, r *http.Request, l *login) {
	s.mu.Lock()
	if l.streams >= maxStreamsPerLogin {
		s.mu.Unlock()
		http.Error(w, "too many open event streams", http.StatusTooManyRequests)
		return
	}
	l.streams++
	s.mu.Unlock()
	defer func() { s.mu.Lock(); l.streams--; s.mu.Unlock() }()

	w.Header().Set("Content-Type", "text/event-stream")
	w.Header().Set("X-Accel-Buffering", "no")
	w.WriteHeader(http.StatusOK)
	rc := http.NewResponseController(w)
	_ = rc.Flush()
	ctx, cancel := context.WithTimeout(r.Context(), maxEventsStreamLife)
	defer cancel()
	var mu sync.Mutex // the keepalive and the events write to w
	write := func(b []byte) error {
		mu.Lock()
		defer mu.Unlock()
		_ = rc.SetWriteDeadline(time.Now().Add(30 * time.Second))
		if _, err := w.Write(b); err != nil {
			return err
		}
		return rc.Flush()
	}
	// The keepalive ends before the handler returns: w may not be written
	// after that.
	keepaliveDone := make(chan struct{})
	go func() {
		defer close(keepaliveDone)
		t := time.NewTicker(s.keepalive)
		defer t.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-t.C:
				// The stream is the login's: it ends with it (a
				// logout, SessionTTL, the user's groups).
				if !s.loggedIn(l) || !s.stillAllowed(l, r.RemoteAddr) || write([]byte(": keepalive\n\n")) != nil {
					cancel()
					return
				}
			}
		}
	}()
	defer func() {
		cancel()
		<-keepaliveDone
	}()
	_ = s.cfg.Backend.Events(ctx, 0, true, func(e event.Event) error {
		// The time as the page's own rows show it (eventTime): the
		// script shows this, not the browser's locale's format.
		b, err := json.Marshal(struct {
			event.Event
			Shown string `json:"shown"`
		}{e, eventTime(e.Time)})
		if err != nil {
			return nil
		}
		return write([]byte("data: " + string(b) + "\n\n"))
	})
}

//go:embed templates.html
var templatesHTML string

//go:embed events.js
var eventsJS string

//go:embed style.css
var styleCSS string

var templates = template.Must(template.New("").Funcs(template.FuncMap{
	"ts": func(t time.Time) string {
		if t.IsZero() {
			return "-"
		}
		return t.Local().Format(time.DateTime)
	},
	"tsp": func(t *time.Time) string {
		if t == nil {
			return "-"
		}
		return t.Local().Format(time.DateTime)
	},
	"dash": func(s string) string {
		if s == "" {
			return "-"
		}
		return s
	},
	"join": strings.Join,
	"list": func(s ...string) []string { return s },
	// seg escapes s as one path segment: a lockout's key may hold "/"
	// (an IPv6 source's /64) and spaces.
	"seg": url.PathEscape,
	"ms":  eventTime,
}).Parse(templatesHTML))

// eventTime is an event's time on the events page, for the rows the page
// comes with and the live ones alike.
func eventTime(t time.Time) string { return t.Local().Format("15:04:05.000") }
