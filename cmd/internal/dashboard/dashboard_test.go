package dashboard

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/cookiejar"
	"net/http/httptest"
	"net/url"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hotdesk/hotdesk/cmd/internal/adminapi"
	"github.com/hotdesk/hotdesk/internal/event"
)

// fakeBackend is an in-memory adminapi.Backend: the dashboard's own rules
// (login, roles, CSRF) are what these tests check; the real backend is
// exercised by hotdeskd's end-to-end test in Chromium.
type fakeBackend struct {
	mu       sync.Mutex
	sessions []adminapi.SessionInfo
	killed   []string
}

var _ adminapi.Backend = (*fakeBackend)(nil)

func (b *fakeBackend) Sessions(_ context.Context, f adminapi.SessionFilter) ([]adminapi.SessionInfo, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	var out []adminapi.SessionInfo
	for _, s := range b.sessions {
		if f.Match(s) {
			out = append(out, s)
		}
	}
	return out, nil
}
func (b *fakeBackend) KillSession(_ context.Context, id string) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	for i, s := range b.sessions {
		if s.ID == id {
			b.sessions = append(b.sessions[:i], b.sessions[i+1:]...)
			b.killed = append(b.killed, id)
			return nil
		}
	}
	return fmt.Errorf("%w: %s", adminapi.ErrNotFound, id)
}
func (b *fakeBackend) DisconnectSession(context.Context, string) error { return nil }
func (b *fakeBackend) LockSession(context.Context, string) error       { return nil }
func (b *fakeBackend) Terminals(context.Context) ([]adminapi.TerminalInfo, error) {
	return []adminapi.TerminalInfo{{ID: "t-1", ServerID: "b1"}}, nil
}
func (b *fakeBackend) Events(ctx context.Context, n int, follow bool, emit func(event.Event) error) error {
	if err := emit(event.Event{Kind: event.SessionAttached, Server: "b1", Time: time.Now()}); err != nil || !follow {
		return err
	}
	<-ctx.Done()
	return nil
}
func (b *fakeBackend) Pairings(context.Context) ([]adminapi.PairingInfo, error) { return nil, nil }
func (b *fakeBackend) RevokePairing(context.Context, string) error              { return nil }
func (b *fakeBackend) PairToken(_ context.Context, _ string, req adminapi.PairRequest) (adminapi.PairResponse, error) {
	return adminapi.PairResponse{Code: "ABCD-EFGH-JKMN", Expires: time.Now().Add(time.Minute)}, nil
}
func (b *fakeBackend) Ready() error { return nil }
func (b *fakeBackend) Tokens(context.Context) ([]adminapi.TokenInfo, error) {
	return nil, nil
}
func (b *fakeBackend) RegisterToken(context.Context, string, adminapi.RegisterRequest) (adminapi.TokenInfo, error) {
	return adminapi.TokenInfo{}, errors.New("no")
}
func (b *fakeBackend) AliasToken(context.Context, string, string, adminapi.AliasRequest) (adminapi.TokenInfo, error) {
	return adminapi.TokenInfo{}, errors.New("no")
}
func (b *fakeBackend) SetTokenDisabled(context.Context, string, bool) error { return nil }
func (b *fakeBackend) DeleteToken(context.Context, string) error            { return nil }
func (b *fakeBackend) Servers(context.Context) ([]adminapi.ServerInfo, error) {
	return []adminapi.ServerInfo{{ID: "b1", Version: "v9"}}, nil
}
func (b *fakeBackend) SetDraining(context.Context, string, bool) error { return nil }

func newTestServer(t *testing.T) (*Server, *fakeBackend) {
	t.Helper()
	fb := &fakeBackend{sessions: []adminapi.SessionInfo{{ID: "s-1", User: "alice", State: "active", ServerID: "b1"}}}
	s, err := New(Config{
		Backend: fb,
		Login: func(_ context.Context, user, pw, _ string) error {
			if map[string]string{"root": "r", "viewer": "v", "stranger": "s"}[user] != pw || pw == "" {
				return ErrLoginFailed
			}
			return nil
		},
		Groups: func(user string) []string {
			return map[string][]string{"root": {"wheel", "hdadmin"}, "viewer": {"helpdesk"}, "stranger": {"users"}}[user]
		},
		AdminGroup: "hdadmin", ReadOnlyGroup: "helpdesk",
	})
	if err != nil {
		t.Fatal(err)
	}
	return s, fb
}

// client is a browser-like client: a cookie jar, no redirects followed
// automatically beyond what the test wants.
func client(t *testing.T, ts *httptest.Server) *http.Client {
	jar, _ := cookiejar.New(nil)
	c := ts.Client()
	c.Jar = jar
	return c
}

func get(t *testing.T, c *http.Client, u string) (int, string) {
	t.Helper()
	req, err := http.NewRequest(http.MethodGet, u, nil)
	if err != nil {
		t.Fatal(err)
	}
	return do(t, c, req)
}

func post(t *testing.T, c *http.Client, u string, form url.Values, origin string) (int, string) {
	t.Helper()
	req, err := http.NewRequest(http.MethodPost, u, strings.NewReader(form.Encode()))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	if origin != "" {
		req.Header.Set("Origin", origin)
	}
	return do(t, c, req)
}

// do sends req and returns the answer's status and body.
func do(t *testing.T, c *http.Client, req *http.Request) (int, string) {
	t.Helper()
	resp, err := c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp.StatusCode, string(b)
}

var csrfRe = regexp.MustCompile(`name="csrf" value="([0-9a-f]{64})"`)

func TestLoginRolesAndCSRF(t *testing.T) {
	s, fb := newTestServer(t)
	ts := httptest.NewTLSServer(s.Handler())
	defer ts.Close()

	anon := client(t, ts)
	if code, body := get(t, anon, ts.URL+"/sessions"); code != 200 || !strings.Contains(body, "Log in") {
		t.Fatalf("anonymous /sessions: %d; want the login page", code)
	}
	for _, tc := range []struct{ user, pw string }{{"root", "wrong"}, {"stranger", "s"}, {"", ""}, {"ro\not", "r"}} {
		if code, body := post(t, anon, ts.URL+"/login", url.Values{"user": {tc.user}, "password": {tc.pw}}, ""); code != 401 || !strings.Contains(body, "Login failed") {
			t.Errorf("login %q/%q: %d; want 401 with a message", tc.user, tc.pw, code)
		}
	}
	// Cross-site login form refused.
	if code, _ := post(t, anon, ts.URL+"/login", url.Values{"user": {"root"}, "password": {"r"}}, "https://evil.example"); code != 400 {
		t.Errorf("cross-origin login: %d; want 400", code)
	}

	admin := client(t, ts)
	code, body := post(t, admin, ts.URL+"/login", url.Values{"user": {"root"}, "password": {"r"}, "next": {"/sessions"}}, ts.URL)
	if code != 200 || !strings.Contains(body, "s-1") || !strings.Contains(body, "root (admin)") {
		t.Fatalf("admin login: %d\n%s", code, body)
	}
	m := csrfRe.FindStringSubmatch(body)
	if m == nil {
		t.Fatal("no csrf token on the page")
	}
	// Without the token, or from another origin: refused, nothing killed.
	if code, _ := post(t, admin, ts.URL+"/sessions/s-1/kill", url.Values{}, ""); code != 403 {
		t.Errorf("kill without csrf: %d; want 403", code)
	}
	if code, _ := post(t, admin, ts.URL+"/sessions/s-1/kill", url.Values{"csrf": {m[1]}}, "https://evil.example"); code != 403 {
		t.Errorf("kill from another origin: %d; want 403", code)
	}
	if len(fb.killed) != 0 {
		t.Fatalf("killed %v by refused requests", fb.killed)
	}
	if code, body := post(t, admin, ts.URL+"/sessions/s-1/kill", url.Values{"csrf": {m[1]}}, ts.URL); code != 200 || !strings.Contains(body, "session s-1 killed") {
		t.Errorf("kill: %d\n%s", code, body)
	}
	if len(fb.killed) != 1 {
		t.Errorf("killed = %v; want [s-1]", fb.killed)
	}
	// Pairing shows the code and a QR image once.
	if _, body := post(t, admin, ts.URL+"/tokens/pair", url.Values{"csrf": {m[1]}, "user": {"bob"}}, ""); !strings.Contains(body, "ABCD-EFGH-JKMN") || !strings.Contains(body, "data:image/png;base64,") {
		t.Errorf("pair page lacks the code or the QR image")
	}
	if _, body := get(t, admin, ts.URL+"/tokens"); strings.Contains(body, "ABCD-EFGH-JKMN") {
		t.Error("the pairing code is shown a second time")
	}

	viewer := client(t, ts)
	_, body = post(t, viewer, ts.URL+"/login", url.Values{"user": {"viewer"}, "password": {"v"}}, "")
	if !strings.Contains(body, "viewer (read-only)") || strings.Contains(body, "/kill") {
		t.Fatalf("read-only page:\n%s", body)
	}
	vm := csrfRe.FindStringSubmatch(body)
	if code, _ := post(t, viewer, ts.URL+"/servers/b1/drain", url.Values{"csrf": {vm[1]}}, ""); code != 403 {
		t.Errorf("read-only drain: %d; want 403", code)
	}
	// Logout ends the session.
	post(t, viewer, ts.URL+"/logout", url.Values{"csrf": {vm[1]}}, "")
	if _, body := get(t, viewer, ts.URL+"/servers"); !strings.Contains(body, "Log in") {
		t.Error("still logged in after logout")
	}
	// Headers.
	resp, err := admin.Get(ts.URL + "/servers")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if csp := resp.Header.Get("Content-Security-Policy"); !strings.Contains(csp, "script-src 'self'") || resp.Header.Get("X-Frame-Options") != "DENY" {
		t.Errorf("security headers: %v", resp.Header)
	}
}

func TestSafeNext(t *testing.T) {
	for in, want := range map[string]string{"": "/servers", "/sessions?user=a": "/sessions?user=a", "//evil": "/servers",
		"https://evil": "/servers", "/\\evil": "/servers"} {
		if got := safeNext(in); got != want {
			t.Errorf("safeNext(%q) = %q; want %q", in, got, want)
		}
	}
}
