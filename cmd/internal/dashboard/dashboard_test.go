package dashboard

import (
	"context"
	"errors"
	"fmt"
	"html"
	"io"
	"net/http"
	"net/http/cookiejar"
	"net/http/httptest"
	"net/url"
	"regexp"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hotdesk/hotdesk/cmd/internal/adminapi"
	"github.com/hotdesk/hotdesk/cmd/internal/adminapi/adminapitest"
)

// newTestServer returns a dashboard over an in-memory backend: the
// dashboard's own rules (login, roles, CSRF) are what these tests check; the
// real backend is exercised by hotdeskd's end-to-end test in Chromium.
func newTestServer(t *testing.T) (*Server, *adminapitest.Backend) {
	t.Helper()
	clockAhead := int64(3210)
	fb := adminapitest.New(adminapitest.State{
		Sessions: []adminapi.SessionInfo{{ID: "s-1", User: "alice", State: "active", ServerID: "b1"}},
		Servers: []adminapi.ServerInfo{{ID: "b1", Version: "v9"}, {ID: "b2", SettingsDiffer: []adminapi.SettingDiff{
			{Key: "auth.max_lockout", Theirs: "1h0m0s", Ours: "15m0s"}, {Key: "session.kiosk_user", Theirs: "<b>k</b>"}}, ClockOffsetMs: &clockAhead}},
	})
	s, err := New(Config{
		Backend: fb,
		Login: func(_ context.Context, user, pw, _ string) error {
			if user == "locked" {
				return fmt.Errorf("%w: %w", ErrLoginFailed, ErrLoginLocked)
			}
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

// client is a browser-like client: a cookie jar of its own, no redirects
// followed automatically beyond what the test wants. (ts.Client() is one
// client per server: setting its jar would make every "browser" the last
// one made.)
func client(t *testing.T, ts *httptest.Server) *http.Client {
	jar, _ := cookiejar.New(nil)
	return &http.Client{Transport: ts.Client().Transport, Jar: jar}
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
	// A lockout says to wait, not that the password was wrong.
	if code, body := post(t, anon, ts.URL+"/login", url.Values{"user": {"locked"}, "password": {"x"}}, ""); code != 401 || !strings.Contains(body, "try again in a few minutes") {
		t.Errorf("locked-out login: %d; want 401 saying to wait", code)
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
	if killed := fb.Killed(); len(killed) != 0 {
		t.Fatalf("killed %v by refused requests", killed)
	}
	if code, body := post(t, admin, ts.URL+"/sessions/s-1/kill", url.Values{"csrf": {m[1]}}, ts.URL); code != 200 || !strings.Contains(body, "session s-1 killed") {
		t.Errorf("kill: %d\n%s", code, body)
	}
	if killed := fb.Killed(); len(killed) != 1 {
		t.Errorf("killed = %v; want [s-1]", killed)
	}
	// Pairing shows the code and a QR image once.
	if _, body := post(t, admin, ts.URL+"/tokens/pair", url.Values{"csrf": {m[1]}, "user": {"bob"}}, ""); !strings.Contains(body, adminapitest.PairCode) || !strings.Contains(body, "data:image/png;base64,") {
		t.Errorf("pair page lacks the code or the QR image")
	}
	if _, body := get(t, admin, ts.URL+"/tokens"); strings.Contains(body, adminapitest.PairCode) {
		t.Error("the pairing code is shown a second time")
	}
	// The admin API's input checks hold here too: the backend never sees
	// a user with a space, a label with a control character, an id with a
	// slash (the form went straight to it).
	for _, f := range []url.Values{
		{"csrf": {m[1]}, "user": {"a b"}},
		{"csrf": {m[1]}, "user": {"bob"}, "label": {"phone\x1b[2J"}},
	} {
		if _, body := post(t, admin, ts.URL+"/tokens/pair", f, ""); !strings.Contains(body, "pair failed: ") || !strings.Contains(body, "invalid ") {
			t.Errorf("pair %v: no refusal in the page:\n%s", f, body)
		}
	}
	if _, body := post(t, admin, ts.URL+"/tokens/register", url.Values{"csrf": {m[1]}, "id": {"a/b"}, "user": {"bob"}}, ""); !strings.Contains(body, "register failed: ") || !strings.Contains(body, "invalid id") {
		t.Errorf("register of a/b: no refusal in the page:\n%s", body)
	}
	if calls := fb.PairCalls(); len(calls) != 1 {
		t.Errorf("pair calls reaching the backend: %+v; want the valid one only", calls)
	}

	// A member's settings that differ, another member's values escaped.
	if _, body := get(t, admin, ts.URL+"/servers"); !strings.Contains(body, "auth.max_lockout = 1h0m0s (here: 15m0s), session.kiosk_user = &lt;b&gt;k&lt;/b&gt; (here: )") {
		t.Errorf("servers page without b2's settings that differ:\n%s", body)
	} else if !strings.Contains(body, "clock 3.2s ahead") {
		t.Errorf("servers page without b2's clock out of step:\n%s", body)
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
	if _, body := get(t, admin, ts.URL+"/servers"); strings.Contains(body, "Log in") {
		t.Error("the admin was logged out by the viewer's logout")
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

// TestSessionsPageUnanswered: the sessions page names the members that did
// not answer the listing and says what their rows mean; it shows no
// warning when every member answered.
// TestStarting: while the daemon starts, every page says so (503, the
// start's words, looked at again every 5 s), the login form's POST too:
// no login is made and the backend is not asked. The static files are
// served. Once started, the dashboard is itself.
func TestStarting(t *testing.T) {
	s, _ := newTestServer(t)
	var starting atomic.Pointer[string]
	phase := "hotdeskd is starting: waiting for etcd to answer"
	s.cfg.Starting = func() error {
		if p := starting.Load(); p != nil {
			return errors.New(*p)
		}
		return nil
	}
	ts := httptest.NewTLSServer(s.Handler())
	defer ts.Close()
	// A login made before (the gate does not depend on one): its pages
	// would show the backend's servers (b1, v9).
	viewer := client(t, ts)
	viewer.Timeout = 10 * time.Second // a live event stream served in the gate's stead ends as a failure
	if code, body := post(t, viewer, ts.URL+"/login", url.Values{"user": {"viewer"}, "password": {"v"}}, ""); code != http.StatusOK || !strings.Contains(body, "v9") {
		t.Fatalf("login: %d\n%s\nwant the servers page", code, body)
	}
	starting.Store(&phase)
	for _, path := range []string{"/login", "/servers", "/sessions", "/events/stream", "/nowhere"} {
		resp, err := viewer.Get(ts.URL + path)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusServiceUnavailable || !strings.Contains(string(body), `<p class="error" id="starting">`+phase) ||
			!strings.Contains(string(body), `http-equiv="refresh" content="5"`) || resp.Header.Get("Retry-After") != "5" ||
			resp.Header.Get("Content-Type") != "text/html; charset=utf-8" || resp.Header.Get("X-Frame-Options") != "DENY" ||
			strings.Contains(string(body), "v9") {
			t.Errorf("GET %s while starting: %d %v\n%s\nwant 503 with the start's words, refreshed, and the usual headers, not the backend's data", path, resp.StatusCode, resp.Header, body)
		}
	}
	admin := client(t, ts)
	if code, body := post(t, admin, ts.URL+"/login", url.Values{"user": {"root"}, "password": {"r"}}, ""); code != http.StatusServiceUnavailable || !strings.Contains(body, phase) {
		t.Errorf("login while starting: %d\n%s\nwant 503 with the start's words", code, body)
	}
	if code, _ := get(t, admin, ts.URL+"/static/style.css"); code != http.StatusOK {
		t.Errorf("style sheet while starting: %d; want 200", code)
	}

	starting.Store(nil)
	if code, body := get(t, admin, ts.URL+"/servers"); code != http.StatusOK || !strings.Contains(body, `id="login-form"`) {
		t.Errorf("once started, /servers without a login: %d\n%s\nwant the login form (the POST made none)", code, body)
	}
	if code, body := post(t, admin, ts.URL+"/login", url.Values{"user": {"root"}, "password": {"r"}}, ""); code != http.StatusOK || !strings.Contains(body, "b1") {
		t.Errorf("login once started: %d\n%s\nwant the servers page", code, body)
	}
}

func TestSessionsPageUnanswered(t *testing.T) {
	s, fb := newTestServer(t)
	ts := httptest.NewTLSServer(s.Handler())
	defer ts.Close()
	viewer := client(t, ts)
	if code, body := post(t, viewer, ts.URL+"/login", url.Values{"user": {"viewer"}, "password": {"v"}}, ""); code != 200 {
		t.Fatalf("login: %d\n%s", code, body)
	}
	if _, body := get(t, viewer, ts.URL+"/sessions"); strings.Contains(body, `id="unanswered"`) {
		t.Errorf("every member answered, yet the page warns:\n%s", body)
	}

	fb.Update(func(st *adminapitest.State) {
		st.Sessions = append(st.Sessions, adminapi.SessionInfo{ID: "s-2", User: "bob", State: "active", ServerID: "b2", Partial: true})
		st.Unanswered = []string{"b2", "b3"}
	})
	_, body := get(t, viewer, ts.URL+"/sessions")
	m := regexp.MustCompile(`(?s)<div id="unanswered">(.*?)</div>`).FindStringSubmatch(body)
	if m == nil {
		t.Fatalf("no warning about the members that did not answer:\n%s", body)
	}
	for _, want := range []string{
		"server b2 did not answer: the session listed for it comes from the group registry, marked partial",
		"server b3 did not answer, and the group registry holds no session of it",
	} {
		if !strings.Contains(m[1], want) {
			t.Errorf("warning %q lacks %q", m[1], want)
		}
	}
	if !strings.Contains(body, `data-session="s-2"`) {
		t.Errorf("the partial row is not listed:\n%s", body)
	}
	// A filter on another server asks neither: no warning.
	if _, body := get(t, viewer, ts.URL+"/sessions?server=b1"); strings.Contains(body, `id="unanswered"`) {
		t.Errorf("sessions of b1 only, yet the page warns about others:\n%s", body)
	}
}

// TestLockoutsOnTokensPage: the Tokens page lists the group's login
// lockouts; an administrator clears one (its key, with ':' and '@', makes
// it through the form's path, and so does an IPv6 source's with its "/"),
// a read-only login sees them without the button and cannot clear.
func TestLockoutsOnTokensPage(t *testing.T) {
	s, fb := newTestServer(t)
	fb.Update(func(st *adminapitest.State) {
		st.Lockouts = []adminapi.LockoutInfo{
			{Key: "user:lou", Server: "b1", Until: time.Now().Add(10 * time.Minute), Level: 1},
			{Key: "terminal:t9@10.0.0.9", Server: "b2", Until: time.Now().Add(time.Minute), Level: 2},
			{Key: "source:2001:db8:1:2::/64", Server: "b2", Until: time.Now().Add(time.Minute), Level: 1},
		}
	})
	ts := httptest.NewTLSServer(s.Handler())
	defer ts.Close()

	viewer := client(t, ts)
	post(t, viewer, ts.URL+"/login", url.Values{"user": {"viewer"}, "password": {"v"}}, "")
	_, body := get(t, viewer, ts.URL+"/tokens")
	if !strings.Contains(body, `data-lockout="user:lou"`) || !strings.Contains(body, `data-lockout="terminal:t9@10.0.0.9"`) || strings.Contains(body, "/clear") {
		t.Fatalf("read-only tokens page: want both lockouts listed, no clear button:\n%s", body)
	}
	vm := csrfRe.FindStringSubmatch(body)
	if code, _ := post(t, viewer, ts.URL+"/lockouts/user:lou/clear", url.Values{"csrf": {vm[1]}}, ""); code != 403 {
		t.Errorf("read-only clear: %d; want 403", code)
	}

	admin := client(t, ts)
	_, body = post(t, admin, ts.URL+"/login", url.Values{"user": {"root"}, "password": {"r"}, "next": {"/tokens"}}, ts.URL)
	m := regexp.MustCompile(`action="(/lockouts/terminal[^"]*/clear)"`).FindStringSubmatch(body)
	if m == nil {
		t.Fatalf("admin tokens page has no clear form for the terminal's lockout:\n%s", body)
	}
	cm := csrfRe.FindStringSubmatch(body)
	code, body := post(t, admin, ts.URL+html.UnescapeString(m[1]), url.Values{"csrf": {cm[1]}}, ts.URL)
	if code != 200 || !strings.Contains(body, "lockout terminal:t9@10.0.0.9 cleared at every server") {
		t.Fatalf("clear: %d\n%s", code, body)
	}
	if strings.Contains(body, `data-lockout="terminal:t9@10.0.0.9"`) || !strings.Contains(body, `data-lockout="user:lou"`) {
		t.Fatalf("after the clear: want user:lou still listed, the terminal's gone:\n%s", body)
	}
	m = regexp.MustCompile(`action="(/lockouts/source[^"]*/clear)"`).FindStringSubmatch(body)
	if m == nil {
		t.Fatalf("admin tokens page has no clear form for the IPv6 source's lockout:\n%s", body)
	}
	cm = csrfRe.FindStringSubmatch(body)
	if code, body := post(t, admin, ts.URL+html.UnescapeString(m[1]), url.Values{"csrf": {cm[1]}}, ts.URL); code != 200 || !strings.Contains(body, "lockout source:2001:db8:1:2::/64 cleared at every server") {
		t.Fatalf("clear of the IPv6 source: %d\n%s", code, body)
	}
}

// TestRevokedAdminLosesLogin: an administrator taken out of the admin
// group loses the dashboard at the next request (their login ends: no
// kill, no pairing code for anyone, and their live event stream closes),
// not SessionTTL later; a read-only user keeps looking while still in the
// read-only group, and is out once their account is gone.
func TestRevokedAdminLosesLogin(t *testing.T) {
	s, fb := newTestServer(t)
	var mu sync.Mutex
	groups := map[string][]string{"root": {"hdadmin"}, "viewer": {"helpdesk"}}
	s.cfg.Groups = func(user string) []string {
		mu.Lock()
		defer mu.Unlock()
		return groups[user]
	}
	setGroups := func(user string, g ...string) {
		mu.Lock()
		groups[user] = g
		mu.Unlock()
	}
	s.keepalive = 10 * time.Millisecond
	ts := httptest.NewTLSServer(s.Handler())
	defer ts.Close()

	admin := client(t, ts)
	_, body := post(t, admin, ts.URL+"/login", url.Values{"user": {"root"}, "password": {"r"}, "next": {"/sessions"}}, ts.URL)
	m := csrfRe.FindStringSubmatch(body)
	if m == nil {
		t.Fatalf("admin login: no csrf token:\n%s", body)
	}
	stream, err := admin.Get(ts.URL + "/events/stream")
	if err != nil {
		t.Fatal(err)
	}
	defer stream.Body.Close()
	if stream.StatusCode != 200 {
		t.Fatalf("event stream: %d", stream.StatusCode)
	}

	setGroups("root", "helpdesk") // demoted to read-only
	if code, _ := post(t, admin, ts.URL+"/sessions/s-1/kill", url.Values{"csrf": {m[1]}}, ts.URL); code != http.StatusUnauthorized {
		t.Errorf("kill after the admin was taken out of the admin group: %d; want 401", code)
	}
	if killed := fb.Killed(); len(killed) != 0 {
		t.Errorf("killed %v after the admin lost the role", killed)
	}
	if _, body := get(t, admin, ts.URL+"/sessions"); !strings.Contains(body, "Log in") {
		t.Errorf("the demoted admin's login still shows the sessions:\n%s", body)
	}
	// The stream ends at its next keepalive.
	done := make(chan error, 1)
	go func() { _, err := io.Copy(io.Discard, stream.Body); done <- err }()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Error("the demoted admin's event stream is still open")
	}

	viewer := client(t, ts)
	post(t, viewer, ts.URL+"/login", url.Values{"user": {"viewer"}, "password": {"v"}}, "")
	if _, body := get(t, viewer, ts.URL+"/sessions"); !strings.Contains(body, "viewer (read-only)") {
		t.Fatalf("read-only login:\n%s", body)
	}
	setGroups("viewer", "helpdesk", "hdadmin") // a role gained takes a new login
	if _, body := get(t, viewer, ts.URL+"/sessions"); !strings.Contains(body, "viewer (read-only)") {
		t.Errorf("a promoted read-only login: want it kept, read-only:\n%s", body)
	}
	setGroups("viewer") // the account is gone
	if _, body := get(t, viewer, ts.URL+"/sessions"); !strings.Contains(body, "Log in") {
		t.Errorf("the login of a user without groups still shows the sessions:\n%s", body)
	}
}

// TestStreamEndsWithLogin: an event stream is the login's: it ends at
// the next keepalive once its login ended, by a logout (a stolen cookie's
// stream must not go on after its owner logged out) or by SessionTTL
// (maxEventsStreamLife is longer), as it does when the user's groups no
// longer give its role.
func TestStreamEndsWithLogin(t *testing.T) {
	s, _ := newTestServer(t)
	var mu sync.Mutex
	now := time.Now()
	s.cfg.Now = func() time.Time { mu.Lock(); defer mu.Unlock(); return now }
	s.keepalive = 10 * time.Millisecond
	ts := httptest.NewTLSServer(s.Handler())
	t.Cleanup(ts.Close) // after the streams' cancels

	login := func() (*http.Client, string) {
		t.Helper()
		c := client(t, ts)
		_, body := post(t, c, ts.URL+"/login", url.Values{"user": {"root"}, "password": {"r"}, "next": {"/sessions"}}, ts.URL)
		m := csrfRe.FindStringSubmatch(body)
		if m == nil {
			t.Fatalf("login: no csrf token:\n%s", body)
		}
		return c, m[1]
	}
	open := func(c *http.Client) <-chan error {
		t.Helper()
		// Ended by the test if the server does not end it: the
		// server's Close waits for its handlers.
		ctx, cancel := context.WithCancel(t.Context())
		t.Cleanup(cancel)
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, ts.URL+"/events/stream", nil)
		if err != nil {
			t.Fatal(err)
		}
		stream, err := c.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		if stream.StatusCode != 200 {
			t.Fatalf("event stream: %d", stream.StatusCode)
		}
		done := make(chan error, 1)
		go func() {
			defer stream.Body.Close()
			_, err := io.Copy(io.Discard, stream.Body)
			done <- err
		}()
		return done
	}
	ended := func(what string, done <-chan error) {
		t.Helper()
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			t.Errorf("the event stream is still open after %s", what)
		}
	}

	c, csrf := login()
	done := open(c)
	post(t, c, ts.URL+"/logout", url.Values{"csrf": {csrf}}, ts.URL)
	if _, body := get(t, c, ts.URL+"/sessions"); !strings.Contains(body, "Log in") {
		t.Fatalf("after the logout: want the login page:\n%s", body)
	}
	ended("the logout", done)

	c, _ = login()
	done = open(c)
	mu.Lock()
	now = now.Add(s.cfg.SessionTTL + time.Second)
	mu.Unlock()
	ended("the login's SessionTTL", done)
}
