package adminapi_test

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"

	"github.com/hotdesk/hotdesk/cmd/internal/adminapi"
	"github.com/hotdesk/hotdesk/cmd/internal/adminapi/adminapitest"
	"github.com/hotdesk/hotdesk/internal/event"
	"github.com/hotdesk/hotdesk/internal/testutil"
)

type testServer struct {
	path   string
	srv    *adminapi.Server
	logs   *testutil.LockedBuffer
	cancel context.CancelFunc
	done   chan error
}

// startServer serves b on a fresh socket made by Listen in t.TempDir().
func startServer(t *testing.T, b adminapi.Backend, adminGID int, tune ...func(*adminapi.Server)) *testServer {
	t.Helper()
	path := filepath.Join(t.TempDir(), "run", "admin.sock")
	ln, err := adminapi.Listen(path, 0o660)
	if err != nil {
		t.Fatalf("Listen: %v", err)
	}
	return serveOn(t, ln, path, b, adminGID, tune...)
}

func serveOn(t *testing.T, ln net.Listener, path string, b adminapi.Backend, adminGID int, tune ...func(*adminapi.Server)) *testServer {
	t.Helper()
	logs := &testutil.LockedBuffer{}
	logger := hclog.New(&hclog.LoggerOptions{Name: "adminapi", Output: logs, Level: hclog.Debug})
	ts := &testServer{path: path, srv: adminapi.NewServer(b, logger, adminGID), logs: logs, done: make(chan error, 1)}
	for _, f := range tune {
		f(ts.srv)
	}
	ctx, cancel := context.WithCancel(context.Background())
	ts.cancel = cancel
	go func() { ts.done <- ts.srv.Serve(ctx, ln) }()
	t.Cleanup(func() { ts.stop(t) })
	return ts
}

// stop cancels Serve and checks it returned nil (idempotent).
func (ts *testServer) stop(t *testing.T) {
	t.Helper()
	ts.cancel()
	select {
	case err, ok := <-ts.done:
		if ok && err != nil {
			t.Errorf("Serve() = %v; want nil after cancel", err)
		}
		if ok {
			close(ts.done)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Serve did not return after cancel")
	}
}

func mustTime(s string) time.Time {
	tm, err := time.Parse(time.RFC3339, s)
	if err != nil {
		panic(err)
	}
	return tm
}

func ptr[T any](v T) *T { return &v }

func TestClientRoundTrip(t *testing.T) {
	sessions := []adminapi.SessionInfo{
		{ID: "s1", Token: "pcsc:04a1b2", User: "alice", State: "active", Terminal: "term-1", ServerID: "srv-a",
			Endpoint: "rdp://127.0.0.1:3390", PID: 4242, Created: mustTime("2026-01-02T03:04:05Z"), Updated: mustTime("2026-01-02T03:05:00Z")},
		{ID: "s2", Token: "soft:bob", User: "bob", State: "suspended", ServerID: "srv-b",
			Created: mustTime("2026-01-02T03:04:05Z"), Updated: mustTime("2026-01-02T04:00:00Z"),
			SuspendedAt: ptr(mustTime("2026-01-02T04:00:00Z")), ExpiresAt: ptr(mustTime("2026-01-03T04:00:00Z"))},
	}
	b := adminapitest.New(adminapitest.State{Sessions: sessions})
	ts := startServer(t, b, -1)
	c := adminapi.NewClient(ts.path)
	t.Cleanup(c.Close)
	ctx := context.Background()

	if err := c.Live(ctx); err != nil {
		t.Errorf("Live() = %v; want nil", err)
	}
	if err := c.Ready(ctx); err != nil {
		t.Errorf("Ready() = %v; want nil", err)
	}

	got, err := c.Sessions(ctx)
	if err != nil {
		t.Fatalf("Sessions() error = %v", err)
	}
	if want := sessions; !reflect.DeepEqual(got, want) {
		t.Errorf("Sessions() got = %+v; want %+v", got, want)
	}

	if err := c.KillSession(ctx, "s1"); err != nil {
		t.Errorf("KillSession(s1) = %v; want nil", err)
	}
	got, err = c.Sessions(ctx)
	if err != nil || len(got) != 1 || got[0].ID != "s2" {
		t.Errorf("Sessions() after kill got = %+v, %v; want [s2], nil", got, err)
	}

	err = c.KillSession(ctx, "nope")
	if !errors.Is(err, adminapi.ErrNotFound) {
		t.Errorf("KillSession(nope) = %v; want ErrNotFound", err)
	}
	var se *adminapi.StatusError
	if !errors.As(err, &se) || se.Status != http.StatusNotFound {
		t.Errorf("KillSession(nope) error = %#v; want a 404 StatusError", err)
	}
	// Ids are path-escaped: a slash is part of the id, not the route (and
	// no id has one: 400).
	if err := c.KillSession(ctx, "a/b"); !errors.Is(err, adminapi.ErrInvalid) {
		t.Errorf("KillSession(a/b) = %v; want ErrInvalid", err)
	}
	if err := c.KillSession(ctx, ""); !errors.Is(err, adminapi.ErrInvalid) {
		t.Errorf("KillSession(\"\") = %v; want ErrInvalid", err)
	}

	pr, err := c.PairToken(ctx, adminapi.PairRequest{User: " carol ", Label: "phone", TTLSeconds: 60})
	if err != nil {
		t.Fatalf("PairToken() error = %v", err)
	}
	if want := (adminapi.PairResponse{Code: adminapitest.PairCode, Expires: adminapitest.PairExpires}); !pr.Expires.Equal(want.Expires) || pr.Code != want.Code {
		t.Errorf("PairToken() got = %+v; want %+v", pr, want)
	}
	wantCall := adminapitest.PairCall{CreatedBy: fmt.Sprintf("uid:%d", os.Geteuid()), Req: adminapi.PairRequest{User: "carol", Label: "phone", TTLSeconds: 60}}
	if calls := b.PairCalls(); len(calls) != 1 || calls[0] != wantCall {
		t.Errorf("backend pair calls got = %+v; want [%+v]", calls, wantCall)
	}
	if strings.Contains(ts.logs.String(), adminapitest.PairCode) {
		t.Errorf("the pairing code was logged: %s", ts.logs.String())
	}

	b.Update(func(s *adminapitest.State) { s.NotReady = errors.New("registry lease lost") })
	err = c.Ready(ctx)
	if !errors.Is(err, adminapi.ErrNotReady) || !strings.Contains(err.Error(), "registry lease lost") {
		t.Errorf("Ready() = %v; want ErrNotReady with the reason", err)
	}
	if err := c.Live(ctx); err != nil {
		t.Errorf("Live() while not ready = %v; want nil", err)
	}

	// An empty list is [], not null.
	b.Update(func(s *adminapitest.State) { s.Sessions = nil })
	got, err = c.Sessions(ctx)
	if err != nil || got == nil || len(got) != 0 {
		t.Errorf("Sessions() empty got = %#v, %v; want [], nil", got, err)
	}
}

// TestUnansweredMembers: a listing whose members did not all answer names
// them in the Hotdesk-Unanswered header; the body is the same JSON array
// as before (an old client reads it unchanged); the header is absent when
// every member answered, and a filter on one server reports only that
// server.
func TestUnansweredMembers(t *testing.T) {
	sessions := []adminapi.SessionInfo{
		{ID: "s1", User: "alice", State: "active", ServerID: "b2", Created: mustTime("2026-01-02T03:04:05Z")},
		{ID: "s2", User: "bob", State: "suspended", ServerID: "b3", Partial: true, Created: mustTime("2026-01-02T03:04:05Z")},
	}
	// "odd,id" is no valid server id: its comma must not split it.
	b := adminapitest.New(adminapitest.State{Sessions: sessions, Unanswered: []string{"b1", "b3", "odd,id"}})
	ts := startServer(t, b, -1)
	c := adminapi.NewClient(ts.path)
	t.Cleanup(c.Close)
	ctx := context.Background()

	sl, err := c.ListSessions(ctx, adminapi.SessionFilter{})
	if err != nil {
		t.Fatalf("ListSessions() error = %v", err)
	}
	if want := []string{"b1", "b3", "odd,id"}; !reflect.DeepEqual(sl.Unanswered, want) || !reflect.DeepEqual(sl.Sessions, sessions) {
		t.Errorf("ListSessions() = %+v; want the sessions and unanswered %q", sl, want)
	}
	if got, err := c.SessionsFiltered(ctx, adminapi.SessionFilter{}); err != nil || !reflect.DeepEqual(got, sessions) {
		t.Errorf("SessionsFiltered() = %+v, %v; want the sessions", got, err)
	}
	sl, err = c.ListSessions(ctx, adminapi.SessionFilter{Server: "b3"})
	if err != nil || !reflect.DeepEqual(sl.Unanswered, []string{"b3"}) || len(sl.Sessions) != 1 || sl.Sessions[0].ID != "s2" {
		t.Errorf("ListSessions(server b3) = %+v, %v; want s2 and unanswered [b3]", sl, err)
	}

	// On the wire: the header, and the body an old client expects.
	hc := rawClient(t, ts.path)
	resp, err := hc.Get("http://hotdesk/v1/sessions")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if got := resp.Header.Get(adminapi.UnansweredHeader); got != "b1,b3,odd%2Cid" {
		t.Errorf("%s: %q; want %q", adminapi.UnansweredHeader, got, "b1,b3,odd%2Cid")
	}
	var rows []adminapi.SessionInfo
	if err := json.Unmarshal(body, &rows); err != nil || !reflect.DeepEqual(rows, sessions) {
		t.Errorf("body %s: %v; want the JSON array of the sessions", body, err)
	}

	b.Update(func(s *adminapitest.State) { s.Unanswered = nil })
	resp, err = hc.Get("http://hotdesk/v1/sessions")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if v, ok := resp.Header[adminapi.UnansweredHeader]; ok {
		t.Errorf("every member answered, yet %s: %q", adminapi.UnansweredHeader, v)
	}
	if sl, err := c.ListSessions(ctx, adminapi.SessionFilter{}); err != nil || sl.Unanswered != nil {
		t.Errorf("ListSessions() when all answered = %+v, %v; want no unanswered", sl, err)
	}
}

// TestSessionListWarnings: one warning per unanswered member, saying
// whether its rows come from the registry or it has none at all.
func TestSessionListWarnings(t *testing.T) {
	sl := adminapi.SessionList{
		Sessions: []adminapi.SessionInfo{
			{ID: "s1", ServerID: "b1"}, {ID: "s2", ServerID: "b2", Partial: true},
			{ID: "s3", ServerID: "b4", Partial: true}, {ID: "s4", ServerID: "b4", Partial: true},
		},
		Unanswered: []string{"b2", "b3", "b4"},
	}
	got := sl.Warnings(false)
	if len(got) != 3 {
		t.Fatalf("Warnings() = %q; want 3 lines", got)
	}
	for i, want := range []string{
		"server b2 did not answer: the session listed for it comes from the group registry, marked partial",
		"server b3 did not answer, and the group registry holds no session of it (if its lease expired",
		"server b4 did not answer: the 2 sessions listed for it come from the group registry, marked partial",
	} {
		if !strings.HasPrefix(got[i], want) {
			t.Errorf("warning %d = %q; want it to start %q", i, got[i], want)
		}
	}
	if got := sl.Warnings(true); !strings.Contains(got[1], "holds no session of it that matches") {
		t.Errorf("filtered warning = %q; want it to say no session matches", got[1])
	}
	if got := (adminapi.SessionList{Sessions: sl.Sessions}).Warnings(false); got != nil {
		t.Errorf("Warnings() when all answered = %q; want none", got)
	}
}

func TestPairValidation(t *testing.T) {
	b := adminapitest.New(adminapitest.State{})
	ts := startServer(t, b, -1)
	c := adminapi.NewClient(ts.path)
	t.Cleanup(c.Close)
	tests := []struct {
		name string
		req  adminapi.PairRequest
	}{
		{"no user", adminapi.PairRequest{Label: "x"}},
		{"blank user", adminapi.PairRequest{User: "  "}},
		{"negative ttl", adminapi.PairRequest{User: "a", TTLSeconds: -1}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := c.PairToken(context.Background(), tt.req)
			if !errors.Is(err, adminapi.ErrInvalid) {
				t.Errorf("PairToken(%+v) = %v; want ErrInvalid", tt.req, err)
			}
		})
	}
	if calls := b.PairCalls(); len(calls) != 0 {
		t.Errorf("backend called %d times; want 0", len(calls))
	}
}

func TestBackendErrors(t *testing.T) {
	tests := []struct {
		name       string
		err        error
		wantStatus int
		wantIs     error
	}{
		{"internal", errors.New("etcd unavailable"), http.StatusInternalServerError, nil},
		{"invalid", fmt.Errorf("backend: %w: unknown user", adminapi.ErrInvalid), http.StatusBadRequest, adminapi.ErrInvalid},
		{"not ready", fmt.Errorf("backend: %w", adminapi.ErrNotReady), http.StatusServiceUnavailable, adminapi.ErrNotReady},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b := adminapitest.New(adminapitest.State{SessionsErr: tt.err, PairErr: tt.err})
			ts := startServer(t, b, -1)
			c := adminapi.NewClient(ts.path)
			t.Cleanup(c.Close)
			_, err1 := c.Sessions(context.Background())
			_, err2 := c.PairToken(context.Background(), adminapi.PairRequest{User: "a"})
			for _, err := range []error{err1, err2} {
				var se *adminapi.StatusError
				if !errors.As(err, &se) || se.Status != tt.wantStatus {
					t.Errorf("got = %v; want status %d", err, tt.wantStatus)
					continue
				}
				if !strings.Contains(se.Message, tt.err.Error()) {
					t.Errorf("message got = %q; want it to contain %q", se.Message, tt.err.Error())
				}
				if tt.wantIs != nil && !errors.Is(err, tt.wantIs) {
					t.Errorf("errors.Is(%v, %v) = false; want true", err, tt.wantIs)
				}
			}
		})
	}
}

// rawClient sends arbitrary requests over the socket.
func rawClient(t *testing.T, path string) *http.Client {
	t.Helper()
	tr := &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
		var d net.Dialer
		return d.DialContext(ctx, "unix", path)
	}}
	t.Cleanup(tr.CloseIdleConnections)
	return &http.Client{Transport: tr}
}

func TestRequestLimits(t *testing.T) {
	b := adminapitest.New(adminapitest.State{})
	ts := startServer(t, b, -1)
	hc := rawClient(t, ts.path)

	// A valid body of exactly MaxBodyBytes (white space inside the
	// object: a label is bounded far below).
	prefix, suffix := `{"user":"a",`, `"label":"x"}`
	exact := prefix + strings.Repeat(" ", adminapi.MaxBodyBytes-len(prefix)-len(suffix)) + suffix
	over := prefix + strings.Repeat(" ", adminapi.MaxBodyBytes) + suffix

	tests := []struct {
		name       string
		method     string
		path       string
		body       string
		wantStatus int
		wantIn     string
	}{
		{"body at the limit", "POST", "/v1/tokens/pair", exact, 200, `"code":"` + adminapitest.PairCode + `"`},
		{"oversized body", "POST", "/v1/tokens/pair", over, 413, "request body over 65536 bytes"},
		{"oversized body after a valid object", "POST", "/v1/tokens/pair", `{"user":"a"}` + strings.Repeat(" ", adminapi.MaxBodyBytes), 413, "over"},
		{"unknown field", "POST", "/v1/tokens/pair", `{"user":"a","admin":true}`, 400, `unknown field \"admin\"`},
		{"trailing data", "POST", "/v1/tokens/pair", `{"user":"a"}{"user":"b"}`, 400, "unexpected data"},
		// Names to the letter, each once: a tool reading the body
		// case-sensitively, or the first of two, sees what the daemon does.
		{"name in another case", "POST", "/v1/tokens/pair", `{"USER":"a"}`, 400, `unknown field \"USER\"`},
		{"name twice", "POST", "/v1/tokens/pair", `{"user":"a","user":"b"}`, 400, `field \"user\" given twice`},
		{"name twice in two cases", "POST", "/v1/tokens", `{"id":"uid.04a1b2c9","user":"bob","User":"eve"}`, 400, `unknown field \"User\"`},
		{"null body", "POST", "/v1/tokens/pair", `null`, 400, "want a JSON object"},
		{"list body", "POST", "/v1/tokens/pair", `[{"user":"a"}]`, 400, "want a JSON object"},
		{"not json", "POST", "/v1/tokens/pair", `user=a`, 400, "invalid request body"},
		{"empty body", "POST", "/v1/tokens/pair", ``, 400, "invalid request body"},
		{"wrong type", "POST", "/v1/tokens/pair", `{"user":"a","ttl_seconds":"10"}`, 400, "invalid request body"},
		{"wrong method", "GET", "/v1/tokens/pair", ``, 405, "method GET not allowed"},
		{"wrong method on sessions", "POST", "/v1/sessions", `{}`, 405, "not allowed"},
		{"unknown path", "GET", "/v2/everything", ``, 404, "no such endpoint"},
		{"livez", "GET", "/livez", ``, 200, `"status":"ok"`},
		{"readyz", "GET", "/readyz", ``, 200, `"status":"ready"`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			req, err := http.NewRequest(tt.method, "http://hotdesk"+tt.path, strings.NewReader(tt.body))
			if err != nil {
				t.Fatal(err)
			}
			resp, err := hc.Do(req)
			if err != nil {
				t.Fatalf("Do: %v", err)
			}
			defer resp.Body.Close()
			data, _ := io.ReadAll(resp.Body)
			if resp.StatusCode != tt.wantStatus {
				t.Errorf("status got = %d; want %d (body %s)", resp.StatusCode, tt.wantStatus, data)
			}
			if ct := resp.Header.Get("Content-Type"); ct != "application/json" {
				t.Errorf("Content-Type got = %q; want application/json", ct)
			}
			if !json.Valid(data) {
				t.Errorf("body %q is not JSON", data)
			}
			if !strings.Contains(string(data), tt.wantIn) {
				t.Errorf("body got = %s; want it to contain %s", data, tt.wantIn)
			}
			if tt.wantStatus == 405 && resp.Header.Get("Allow") == "" {
				t.Errorf("405 without an Allow header")
			}
		})
	}
	if calls := b.PairCalls(); len(calls) != 1 {
		t.Errorf("backend pair calls got = %d; want 1 (only the valid body)", len(calls))
	}
}

// TestOversizedBodyRefusedFirst: a request whose Content-Length is over
// the limit is answered 413 before its body is read, so a client that
// waits for "100 Continue" reads the refusal and never sends the body
// (before, the daemon asked for it, read 64 KiB and closed the connection
// on a client still writing: EPIPE instead of an answer).
func TestOversizedBodyRefusedFirst(t *testing.T) {
	ts := startServer(t, adminapitest.New(adminapitest.State{}), -1)
	c, err := net.Dial("unix", ts.path)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	fmt.Fprintf(c, "POST /v1/tokens/pair HTTP/1.1\r\nHost: h\r\nContent-Type: application/json\r\nContent-Length: %d\r\nExpect: 100-continue\r\n\r\n", 10*adminapi.MaxBodyBytes)
	_ = c.SetReadDeadline(time.Now().Add(time.Minute))
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		t.Fatalf("no answer before the body: %v", err)
	}
	body, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusRequestEntityTooLarge || !strings.Contains(string(body), "request body over 65536 bytes") {
		t.Errorf("answer %s %s; want 413 first, not 100 Continue", resp.Status, body)
	}
}

func TestListen(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "a", "b")
	path := filepath.Join(dir, "admin.sock")

	// A stale socket: a listener that closed without unlinking.
	if err := os.MkdirAll(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	stale, err := net.Listen("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	stale.(*net.UnixListener).SetUnlinkOnClose(false)
	stale.Close()
	if _, err := os.Lstat(path); err != nil {
		t.Fatalf("stale socket missing: %v", err)
	}

	ln, err := adminapi.Listen(path, 0o660)
	if err != nil {
		t.Fatalf("Listen over a stale socket: %v", err)
	}
	fi, err := os.Lstat(path)
	if err != nil {
		t.Fatal(err)
	}
	if got := fi.Mode().Perm(); got != 0o660 {
		t.Errorf("socket mode got = %v; want %v", got, os.FileMode(0o660))
	}

	// A live socket is not taken over.
	if _, err := adminapi.Listen(path, 0o660); !errors.Is(err, adminapi.ErrInUse) {
		t.Errorf("Listen on a live socket got = %v; want ErrInUse", err)
	}
	ln.Close()
	if _, err := os.Lstat(path); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("socket after Close: Lstat got = %v; want not exist", err)
	}

	// Something that is not a socket is never removed.
	file := filepath.Join(dir, "file")
	if err := os.WriteFile(file, []byte("keep"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := adminapi.Listen(file, 0o660); err == nil {
		t.Errorf("Listen over a regular file got = nil error; want an error")
	}
	if data, err := os.ReadFile(file); err != nil || string(data) != "keep" {
		t.Errorf("regular file got = %q, %v; want it untouched", data, err)
	}

	// Missing directories are created 0755.
	path2 := filepath.Join(t.TempDir(), "new", "admin.sock")
	ln2, err := adminapi.Listen(path2, 0o600)
	if err != nil {
		t.Fatalf("Listen: %v", err)
	}
	defer ln2.Close()
	if fi, err := os.Stat(filepath.Dir(path2)); err != nil || fi.Mode().Perm() != 0o755 {
		t.Errorf("created dir got = %v, %v; want mode 0755", fi.Mode(), err)
	}
}

// TestListenRefusesSharedDirs: the socket is never made in a directory
// others may write to (where the socket could be swapped for a link to a
// file the daemon would then chmod), nor in one of another user's; an
// existing link there is left alone.
func TestListenRefusesSharedDirs(t *testing.T) {
	target := filepath.Join(t.TempDir(), "victim")
	if err := os.WriteFile(target, []byte("x"), 0o600); err != nil {
		t.Fatal(err)
	}
	modes := []os.FileMode{0o777, 0o775, 0o757, 0o755 | os.ModeSticky, 0o777 | os.ModeSticky}
	for _, mode := range modes {
		dir := filepath.Join(t.TempDir(), "d")
		if err := os.Mkdir(dir, 0o700); err != nil {
			t.Fatal(err)
		}
		if err := os.Chmod(dir, mode); err != nil {
			t.Fatal(err)
		}
		if ln, err := adminapi.Listen(filepath.Join(dir, "admin.sock"), 0o666); err == nil {
			ln.Close()
			t.Errorf("Listen in a directory of mode %v: no error; want it refused", mode)
		}
	}
	if os.Geteuid() == 0 {
		dir := testutil.NobodysDir(t, filepath.Join(t.TempDir(), "d"), 0o755)
		if ln, err := adminapi.Listen(filepath.Join(dir, "admin.sock"), 0o666); err == nil {
			ln.Close()
			t.Error("Listen in a directory of another user's: no error; want it refused")
		}
	}
	if fi, err := os.Stat(target); err != nil || fi.Mode().Perm() != 0o600 {
		t.Errorf("victim file: %v, %v; want mode 0600 untouched", fi.Mode(), err)
	}
}

// TestListenRefusesSharedAncestors: a directory of the daemon's own is no
// safer than its parent: in a parent others may write to (without the
// sticky bit), or one of another user's, the directory can be renamed
// away and a link or a directory of theirs put in its place between the
// check and the chmod. Under a sticky directory of root's (/tmp) it may
// be.
func TestListenRefusesSharedAncestors(t *testing.T) {
	parent := filepath.Join(t.TempDir(), "shared")
	dir := filepath.Join(parent, "run")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	for _, mode := range []os.FileMode{0o777, 0o775, 0o757} {
		if err := os.Chmod(parent, mode); err != nil {
			t.Fatal(err)
		}
		if ln, err := adminapi.Listen(filepath.Join(dir, "admin.sock"), 0o660); err == nil {
			ln.Close()
			t.Errorf("Listen under a parent of mode %v: no error; want it refused", mode)
		}
	}
	if os.Geteuid() == 0 {
		if err := os.Chmod(parent, 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.Chown(parent, 65534, 65534); err != nil {
			t.Fatal(err)
		}
		if ln, err := adminapi.Listen(filepath.Join(dir, "admin.sock"), 0o660); err == nil {
			ln.Close()
			t.Error("Listen under a parent of another user's: no error; want it refused")
		}
		if err := os.Chown(parent, 0, 0); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.Chmod(parent, 0o777|os.ModeSticky); err != nil {
		t.Fatal(err)
	}
	ln, err := adminapi.Listen(filepath.Join(dir, "admin.sock"), 0o660)
	if err != nil {
		t.Fatalf("Listen under a sticky parent of this user's: %v; want it accepted", err)
	}
	ln.Close()
}

// TestListenRefusesOthersLinks: a link on the way to the socket's
// directory is followed at every use of the path, and whoever owns it may
// point it elsewhere at any time, even in a sticky directory (/tmp): one
// of another user's (the directory itself, one above it, or one a link
// of this user's leads through) is refused, or they could let the checks
// see a directory of root's and then swap the link to a directory of
// theirs before the listen and the chmod, and have the daemon chmod any
// file they name.
func TestListenRefusesOthersLinks(t *testing.T) {
	testutil.NeedRoot(t, "a link of another user's needs root")
	base := t.TempDir()
	shared := filepath.Join(base, "tmp") // as /tmp: root's, sticky, everyone's
	real := filepath.Join(base, "real")  // as /etc: root's, 0755
	for _, d := range []string{shared, filepath.Join(real, "run")} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.Chmod(shared, 0o777|os.ModeSticky); err != nil {
		t.Fatal(err)
	}
	link := func(name, to string, uid int) string {
		t.Helper()
		p := filepath.Join(shared, name)
		if err := os.Symlink(to, p); err != nil {
			t.Fatal(err)
		}
		if err := os.Lchown(p, uid, uid); err != nil {
			t.Fatal(err)
		}
		return p
	}
	for what, path := range map[string]string{
		"the directory":                    filepath.Join(link("dir", filepath.Join(real, "run"), 65534), "admin.sock"),
		"a directory above it":             filepath.Join(link("above", real, 65534), "run", "admin.sock"),
		"a link a link of root's leads to": filepath.Join(link("mine", link("theirs", real, 65534), 0), "run", "admin.sock"),
	} {
		if ln, err := adminapi.Listen(path, 0o660); err == nil {
			ln.Close()
			t.Errorf("Listen with %s a link of another user's in a sticky directory: no error; want it refused", what)
		}
	}
	// Links of root's there are fine: only root may replace them.
	ln, err := adminapi.Listen(filepath.Join(link("ours", filepath.Join(real, "run"), 0), "admin.sock"), 0o660)
	if err != nil {
		t.Fatalf("Listen through a link of root's: %v; want it accepted", err)
	}
	ln.Close()
}

func TestShareWithGroup(t *testing.T) {
	testutil.NeedRoot(t, "chgrp to another group needs root")
	const gid = 65534
	dir := filepath.Join(t.TempDir(), "run")
	if err := os.Mkdir(dir, 0o750); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, "admin.sock")
	ln, err := adminapi.Listen(path, 0o660)
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	if err := adminapi.ShareWithGroup(path, -1); err != nil {
		t.Errorf("ShareWithGroup(-1) = %v; want nil", err)
	}
	if err := adminapi.ShareWithGroup(path, gid); err != nil {
		t.Fatalf("ShareWithGroup: %v", err)
	}
	for _, p := range []string{path, dir} {
		fi, err := os.Lstat(p)
		if err != nil {
			t.Fatal(err)
		}
		if got := fi.Sys().(*syscall.Stat_t).Gid; got != gid {
			t.Errorf("%s group got = %d; want %d", p, got, gid)
		}
	}
	if fi, _ := os.Stat(dir); fi.Mode().Perm() != 0o750 {
		t.Errorf("dir mode got = %v; want 0750", fi.Mode().Perm())
	}

	shared := testutil.StickyDir(t, filepath.Join(t.TempDir(), "tmp"))
	// Listen refuses such a directory (TestListenRefusesSharedDirs):
	// a socket made there otherwise is refused too.
	ln2, err := net.Listen("unix", filepath.Join(shared, "admin.sock"))
	if err != nil {
		t.Fatal(err)
	}
	defer ln2.Close()
	if err := adminapi.ShareWithGroup(filepath.Join(shared, "admin.sock"), gid); err == nil {
		t.Errorf("ShareWithGroup in a sticky world-writable dir got = nil; want an error")
	}
}

// Shutdown lets a request in flight finish, and Serve returns nil.
func TestServeGracefulShutdown(t *testing.T) {
	entered, release := make(chan struct{}, 1), make(chan struct{})
	b := adminapitest.New(adminapitest.State{SessionsEntered: entered, SessionsRelease: release})
	ts := startServer(t, b, -1)
	c := adminapi.NewClient(ts.path)
	t.Cleanup(c.Close)

	type result struct {
		ss  []adminapi.SessionInfo
		err error
	}
	res := make(chan result, 1)
	go func() {
		ss, err := c.Sessions(context.Background())
		res <- result{ss, err}
	}()
	<-entered // the request is in the backend
	ts.cancel()
	close(release)
	r := <-res
	if r.err != nil {
		t.Errorf("request in flight during shutdown got = %v; want nil", r.err)
	}
	ts.stop(t)
	if _, err := os.Lstat(ts.path); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("socket after Serve returned: Lstat got = %v; want not exist", err)
	}
	if err := c.Live(context.Background()); !adminapi.IsUnavailable(err) {
		t.Errorf("Live() after shutdown got = %v; want unavailable", err)
	}
}

// A request stuck in the backend does not hold up shutdown beyond its bound.
func TestServeShutdownBound(t *testing.T) {
	entered := make(chan struct{}, 1)
	b := adminapitest.New(adminapitest.State{SessionsEntered: entered, SessionsRelease: make(chan struct{})})
	ts := startServer(t, b, -1, func(s *adminapi.Server) { s.SetShutdownTimeoutForTest(50 * time.Millisecond) })
	c := adminapi.NewClient(ts.path)
	t.Cleanup(c.Close)
	res := make(chan error, 1)
	go func() {
		_, err := c.Sessions(context.Background())
		res <- err
	}()
	<-entered
	ts.stop(t) // fails the test if Serve does not return
	if err := <-res; err == nil {
		t.Errorf("stuck request got = nil error; want a transport error after forced close")
	}
}

func TestClientUnavailable(t *testing.T) {
	c := adminapi.NewClient(filepath.Join(t.TempDir(), "none.sock"))
	err := c.Live(context.Background())
	if err == nil || !adminapi.IsUnavailable(err) {
		t.Errorf("Live() on a missing socket got = %v; want unavailable", err)
	}
	if adminapi.IsUnavailable(&adminapi.StatusError{Status: 500}) {
		t.Errorf("IsUnavailable(StatusError) = true; want false")
	}
}

func TestServersAndDrain(t *testing.T) {
	b := adminapitest.New(adminapitest.State{Servers: []adminapi.ServerInfo{{ID: "b1", Self: true, Weight: 1}, {ID: "b2", Weight: 1}}})
	ts := startServer(t, b, -1)
	c := adminapi.NewClient(ts.path)
	defer c.Close()
	ctx := context.Background()
	if err := c.SetDraining(ctx, "b2", true); err != nil {
		t.Fatal(err)
	}
	if err := c.SetDraining(ctx, "", true); err != nil { // self
		t.Fatal(err)
	}
	if err := c.SetDraining(ctx, "nope", true); !errors.Is(err, adminapi.ErrNotFound) {
		t.Fatalf("drain unknown = %v; want ErrNotFound", err)
	}
	got, err := c.Servers(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 2 || !got[0].Draining || !got[1].Draining {
		t.Fatalf("servers = %+v; want both draining", got)
	}
	if err := c.SetDraining(ctx, "b2", false); err != nil {
		t.Fatal(err)
	}
	if got, _ = c.Servers(ctx); got[1].Draining {
		t.Fatalf("b2 still draining after undrain: %+v", got[1])
	}
}

func TestTokenRoutes(t *testing.T) {
	b := adminapitest.New(adminapitest.State{})
	ts := startServer(t, b, -1)
	c := adminapi.NewClient(ts.path)
	defer c.Close()
	ctx := context.Background()
	ti, err := c.RegisterToken(ctx, adminapi.RegisterRequest{ID: "uid.04a1b2c3", User: "alice", Label: "badge"})
	if err != nil || ti.User != "alice" || !strings.HasPrefix(ti.RegisteredBy, "uid:") {
		t.Fatalf("register = %+v, %v; want alice registered by a uid", ti, err)
	}
	if _, err := c.RegisterToken(ctx, adminapi.RegisterRequest{ID: "uid.x"}); !errors.Is(err, adminapi.ErrInvalid) {
		t.Fatalf("register without user = %v; want ErrInvalid", err)
	}
	al, err := c.AliasToken(ctx, "piv.0102", adminapi.AliasRequest{Of: "uid.04a1b2c3"})
	if err != nil || al.User != "alice" {
		t.Fatalf("alias = %+v, %v; want alice", al, err)
	}
	if _, err := c.AliasToken(ctx, "piv.0103", adminapi.AliasRequest{Of: "uid.none"}); !errors.Is(err, adminapi.ErrNotFound) {
		t.Fatalf("alias of unknown = %v; want ErrNotFound", err)
	}
	if err := c.SetTokenDisabled(ctx, "piv.0102", true); err != nil {
		t.Fatal(err)
	}
	if err := c.DeleteToken(ctx, "uid.04a1b2c3"); err != nil {
		t.Fatal(err)
	}
	got, err := c.Tokens(ctx)
	if err != nil || len(got) != 1 || got[0].ID != "piv.0102" || !got[0].Disabled {
		t.Fatalf("tokens = %+v, %v; want piv.0102 disabled", got, err)
	}
	if err := c.DeleteToken(ctx, "uid.04a1b2c3"); !errors.Is(err, adminapi.ErrNotFound) {
		t.Fatalf("second delete = %v; want ErrNotFound", err)
	}
}

// TestLockoutRoutes: the lockouts in force are listed as the backend has
// them, keys with ':' and '@' (an IPv6 terminal key) survive the path, a
// clear removes one, and clearing one not in force is ErrNotFound.
func TestLockoutRoutes(t *testing.T) {
	until := time.Date(2031, 1, 2, 3, 4, 5, 0, time.UTC)
	b := adminapitest.New(adminapitest.State{Lockouts: []adminapi.LockoutInfo{
		{Key: "user:alice", Server: "b1", Until: until, Level: 2},
		{Key: "terminal:t1@2001:db8::1", Server: "b2", Until: until, Level: 1},
		// Keys with what an id may not hold: an IPv6 source's "/", a
		// terminal id's space and letters (PROTOCOL.md §5).
		{Key: "source:2001:db8:1:2::/64", Server: "b1", Until: until, Level: 1},
		{Key: "terminal:desk 5 ✓@10.0.0.7", Server: "b1", Until: until, Level: 1},
	}})
	ts := startServer(t, b, -1)
	c := adminapi.NewClient(ts.path)
	defer c.Close()
	ctx := context.Background()
	for _, key := range []string{"source:2001:db8:1:2::/64", "terminal:desk 5 ✓@10.0.0.7"} {
		if err := c.ClearLockout(ctx, key); err != nil {
			t.Errorf("clear %q: %v", key, err)
		}
	}
	if err := c.ClearLockout(ctx, "terminal:\x1b[2J"); !errors.Is(err, adminapi.ErrInvalid) {
		t.Errorf("clear of a key with an escape = %v; want ErrInvalid", err)
	}
	got, err := c.Lockouts(ctx)
	if err != nil || len(got) != 2 || got[0].Key != "user:alice" || !got[0].Until.Equal(until) || got[0].Level != 2 || got[0].Server != "b1" {
		t.Fatalf("lockouts = %+v, %v; want user:alice (b1, level 2, until %v) and a terminal", got, err, until)
	}
	if err := c.ClearLockout(ctx, "terminal:t1@2001:db8::1"); err != nil {
		t.Fatal(err)
	}
	if err := c.ClearLockout(ctx, "terminal:t1@2001:db8::1"); !errors.Is(err, adminapi.ErrNotFound) {
		t.Fatalf("second clear = %v; want ErrNotFound", err)
	}
	if got, _ = c.Lockouts(ctx); len(got) != 1 || got[0].Key != "user:alice" {
		t.Fatalf("lockouts after the clear = %+v; want user:alice only", got)
	}
	if !strings.Contains(ts.logs.String(), "login lockout cleared by admin") {
		t.Errorf("the clear was not logged: %s", ts.logs.String())
	}
}

// TestFailureRoutes: the group's failure counts are listed as the
// backend has them, with the window's start.
func TestFailureRoutes(t *testing.T) {
	since := time.Date(2031, 1, 2, 3, 4, 5, 0, time.UTC)
	b := adminapitest.New(adminapitest.State{Failures: []adminapi.FailureInfo{
		{Key: "user:alice", Count: 3, Since: since, Server: "b2"},
	}})
	ts := startServer(t, b, -1)
	c := adminapi.NewClient(ts.path)
	defer c.Close()
	got, err := c.Failures(context.Background())
	if err != nil || len(got) != 1 || got[0].Key != "user:alice" || got[0].Count != 3 || !got[0].Since.Equal(since) || got[0].Server != "b2" {
		t.Fatalf("failures = %+v, %v; want user:alice at 3 since %v, last at b2", got, err, since)
	}
}

// TestCheckIDAndUser: ids and user names share their length bound and the
// printable-ASCII rule but not their forbidden characters.
func TestCheckIDAndUser(t *testing.T) {
	t.Parallel()
	for _, tt := range []struct {
		in             string
		wantID, wantOK bool // valid as an id, as a user name
		wantMsg        string
	}{
		{"uid.04a1b2c3", true, true, ""},
		{"alice@example.com", true, true, ""},
		{"a:b", true, false, `"a:b": character ':'`},
		{`DOMAIN\user`, false, true, `"DOMAIN\\user": character '\\'`},
		{"a/b", false, false, `"a/b": character '/'`},
		{"a b", false, false, `"a b": character ' '`},
		{"ev\x1b", false, false, `"ev\x1b": character '\x1b'`},
		{"é", false, false, "character 'Ã'"}, // a byte of its UTF-8
		{"", false, false, "1 to 256 characters"},
		{strings.Repeat("x", adminapi.MaxIDLen), true, true, ""},
		{strings.Repeat("x", adminapi.MaxIDLen+1), false, false, "1 to 256 characters"},
	} {
		for _, c := range []struct {
			what  string
			check func(string) error
			ok    bool
		}{{"id", adminapi.CheckID, tt.wantID}, {"user", adminapi.CheckUser, tt.wantOK}} {
			err := c.check(tt.in)
			if (err == nil) != c.ok {
				t.Errorf("Check %s(%q) = %v; want valid %v", c.what, tt.in, err, c.ok)
				continue
			}
			if err != nil && (!errors.Is(err, adminapi.ErrInvalid) || !strings.Contains(err.Error(), "invalid "+c.what+" ") || !strings.Contains(err.Error(), tt.wantMsg)) {
				t.Errorf("Check %s(%q) = %v; want ErrInvalid, \"invalid %s\" and %q", c.what, tt.in, err, c.what, tt.wantMsg)
			}
		}
	}
}

// TestInvalidInputIs400: ids, users and states the API cannot take are the
// client's mistake: 400 with the message, logged below error level, and the
// backend is not asked.
func TestInvalidInputIs400(t *testing.T) {
	b := adminapitest.New(adminapitest.State{
		Tokens: []adminapi.TokenInfo{{ID: "uid.04a1b2c3", User: "alice"}},
	})
	ts := startServer(t, b, -1)
	c := adminapi.NewClient(ts.path)
	t.Cleanup(c.Close)
	ctx := context.Background()
	for _, tc := range []struct {
		name string
		call func() error
		want string
	}{
		{"delete a/b", func() error { return c.DeleteToken(ctx, "a/b") }, `invalid id "a/b"`},
		{"kill an escape", func() error { return c.KillSession(ctx, "s-\x1b[2J") }, `invalid id "s-\x1b[2J"`},
		{"long id", func() error { return c.SetTokenDisabled(ctx, strings.Repeat("x", adminapi.MaxIDLen+1), true) }, "invalid id"},
		{"pair escape user", func() error { _, err := c.PairToken(ctx, adminapi.PairRequest{User: "ev\x1b"}); return err }, `invalid user "ev\x1b"`},
		// A label is what listings, the dashboard and every token record
		// carry: bounded as a terminal's is, printable.
		{"register long label", func() error {
			_, err := c.RegisterToken(ctx, adminapi.RegisterRequest{ID: "uid.04a1b2c4", User: "alice", Label: strings.Repeat("l", 60000)})
			return err
		}, "invalid label"},
		{"pair escape label", func() error {
			_, err := c.PairToken(ctx, adminapi.PairRequest{User: "alice", Label: "phone\x1b[2J"})
			return err
		}, "invalid label"},
		{"alias long label", func() error {
			_, err := c.AliasToken(ctx, "uid.04a1b2c4", adminapi.AliasRequest{Of: "uid.04a1b2c3", Label: strings.Repeat("l", adminapi.MaxLabelLen+1)})
			return err
		}, "invalid label"},
		{"register colon user", func() error {
			_, err := c.RegisterToken(ctx, adminapi.RegisterRequest{ID: "uid.04a1b2c4", User: "a:b"})
			return err
		}, `invalid user "a:b"`},
		{"alias of a/b", func() error {
			_, err := c.AliasToken(ctx, "uid.04a1b2c4", adminapi.AliasRequest{Of: "a/b"})
			return err
		}, `invalid id "a/b"`},
		{"state", func() error {
			_, err := c.SessionsFiltered(ctx, adminapi.SessionFilter{State: "bogus"})
			return err
		}, `unknown state "bogus": one of creating, active, suspended, orphaned`},
	} {
		err := tc.call()
		var se *adminapi.StatusError
		if !errors.As(err, &se) || se.Status != http.StatusBadRequest || !errors.Is(err, adminapi.ErrInvalid) || !strings.Contains(se.Message, tc.want) {
			t.Errorf("%s: %v; want 400 with %q", tc.name, err, tc.want)
		}
	}
	if calls := b.PairCalls(); len(calls) != 0 {
		t.Errorf("backend asked for %d pairing codes; want none", len(calls))
	}
	if logs := ts.logs.String(); strings.Contains(logs, "[ERROR]") || strings.Contains(logs, "[WARN]") {
		t.Errorf("invalid input logged as a problem of the daemon:\n%s", logs)
	}
	if logs := ts.logs.String(); !strings.Contains(logs, "[DEBUG]") || !strings.Contains(logs, "invalid") {
		t.Errorf("invalid input not logged at debug level:\n%s", logs)
	}
}

// TestFollowEndsWithServer: a followed event stream ends as soon as the
// server stops (the daemon's stop does not wait for its followers' grace),
// and the client tells that from its own end of the stream.
func TestFollowEndsWithServer(t *testing.T) {
	t.Parallel()
	b := adminapitest.New(adminapitest.State{})
	ts := startServer(t, b, -1, func(s *adminapi.Server) { s.SetShutdownTimeoutForTest(time.Minute) })
	c := adminapi.NewClient(ts.path)
	ended := make(chan error, 1)
	go func() { ended <- c.Events(context.Background(), 0, true, func(event.Event) error { return nil }) }()
	testutil.WaitFor(t, 10*time.Second, "the stream open", func() bool { return b.Following() > 0 })
	ts.cancel() // the cleanup waits for Serve to return
	select {
	case err := <-ended:
		if !errors.Is(err, adminapi.ErrStreamEnded) {
			t.Fatalf("Events after the server stopped = %v; want ErrStreamEnded", err)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("the stream outlived the server's stop (it waited for the shutdown grace)")
	}
}

// TestStatusErrorSaysPrefixOnce: a server error that is one of this
// package's errors is not prefixed twice ("adminapi: kill session:
// adminapi: not found…" was what hotdeskctl printed).
func TestStatusErrorSaysPrefixOnce(t *testing.T) {
	e := &adminapi.StatusError{Op: "kill session", Status: 404, Message: "adminapi: not found: session s-1"}
	if got, want := e.Error(), "adminapi: kill session: not found: session s-1 (404 Not Found)"; got != want {
		t.Fatalf("Error() = %q; want %q", got, want)
	}
	if !errors.Is(e, adminapi.ErrNotFound) {
		t.Fatal("the error no longer matches ErrNotFound")
	}
}

// TestBusySocketAnswers503: when every connection slot is taken (event
// followers hold theirs for as long as they follow, idle keep-alive
// clients for 2 minutes), a new client gets 503 at once with the reason
// instead of a connection that is accepted by the kernel and never
// answered: before, hotdeskctl and every script hung until a follower
// went away.
func TestBusySocketAnswers503(t *testing.T) {
	t.Parallel()
	b := adminapitest.New(adminapitest.State{})
	ts := startServer(t, b, -1, func(s *adminapi.Server) { s.SetMaxConnsForTest(2) })
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	for range 2 {
		c := adminapi.NewClient(ts.path)
		go func() { _ = c.Events(ctx, 0, true, func(event.Event) error { return nil }) }()
	}
	testutil.WaitFor(t, 10*time.Second, "two streams open", func() bool { return b.Following() == 2 })

	c := adminapi.NewClient(ts.path)
	defer c.Close()
	lctx, lcancel := context.WithTimeout(ctx, 20*time.Second) // bound: before, it never answered
	defer lcancel()
	err := c.Live(lctx)
	var se *adminapi.StatusError
	if !errors.As(err, &se) || se.Status != http.StatusServiceUnavailable || !strings.Contains(se.Message, "busy") {
		t.Fatalf("Live with every slot taken = %v; want 503 saying the API is busy", err)
	}
	cancel() // the followers go: their slots are free again
	c2 := adminapi.NewClient(ts.path)
	defer c2.Close()
	testutil.WaitFor(t, 10*time.Second, "a slot free again", func() bool { return c2.Live(context.Background()) == nil })
}

// TestEventsFailed: a history the daemon cannot read (the registry out of
// reach) is no empty history: the stream breaks (its 200 is sent already),
// and the client reports an error, not nil nor ErrStreamEnded. And n: one
// of any size is taken as the bound, an empty one is 400.
func TestEventsFailed(t *testing.T) {
	t.Parallel()
	b := adminapitest.New(adminapitest.State{Events: []event.Event{{Kind: "attached", Session: "s-1"}},
		EventsErr: errors.New("registry: context deadline exceeded")})
	ts := startServer(t, b, -1)
	c := adminapi.NewClient(ts.path)
	defer c.Close()
	var got []event.Event
	err := c.Events(context.Background(), 5, false, func(e event.Event) error { got = append(got, e); return nil })
	if err == nil || errors.Is(err, adminapi.ErrStreamEnded) || len(got) != 1 {
		t.Fatalf("Events with the history unreadable after one event = %v, %d events; want a broken stream after 1", err, len(got))
	}
	raw := rawClient(t, ts.path)
	b.Update(func(st *adminapitest.State) { st.EventsErr = nil })
	for q, want := range map[string]int{"n=99999999999999999999": 200, "n=": 400, "n=-1": 400, "n=5000": 200} {
		resp, err := raw.Get("http://hotdesk/v1/events?" + q)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != want {
			t.Errorf("GET /v1/events?%s: %d; want %d", q, resp.StatusCode, want)
		}
	}
}

// TestStarting: while the daemon's start runs, every request but /livez is
// answered 503 with what the start is doing, and the backend is not asked
// (it cannot answer yet); once the start is done, requests reach it.
func TestStarting(t *testing.T) {
	b := adminapitest.New(adminapitest.State{})
	var started atomic.Bool
	ts := startServer(t, b, -1, func(s *adminapi.Server) {
		s.Starting(func() error {
			if started.Load() {
				return nil
			}
			return errors.New("hotdeskd is starting: waiting for etcd to answer")
		})
	})
	c := adminapi.NewClient(ts.path)
	defer c.Close()
	ctx := context.Background()
	if err := c.Live(ctx); err != nil {
		t.Errorf("Live while starting = %v; want nil", err)
	}
	for name, call := range map[string]func() error{
		"ready":    func() error { return c.Ready(ctx) },
		"sessions": func() error { _, err := c.Sessions(ctx); return err },
		"pair":     func() error { _, err := c.PairToken(ctx, adminapi.PairRequest{User: "a"}); return err },
	} {
		err := call()
		if !errors.Is(err, adminapi.ErrNotReady) || !strings.Contains(err.Error(), "hotdeskd is starting: waiting for etcd to answer") {
			t.Errorf("%s while starting = %v; want not ready, saying what the start waits for", name, err)
		}
	}
	if calls := b.PairCalls(); len(calls) != 0 {
		t.Errorf("the backend was asked to pair %d times while starting", len(calls))
	}
	started.Store(true)
	if err := c.Ready(ctx); err != nil {
		t.Errorf("Ready once started = %v; want nil", err)
	}
	if _, err := c.PairToken(ctx, adminapi.PairRequest{User: "a"}); err != nil {
		t.Errorf("PairToken once started = %v", err)
	}
}
