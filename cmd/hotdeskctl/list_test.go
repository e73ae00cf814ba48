package main

import (
	"bytes"
	"context"
	"encoding/json"
	"path/filepath"
	"reflect"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/hotdesk/hotdesk/cmd/internal/adminapi"
	"github.com/hotdesk/hotdesk/cmd/internal/adminapi/adminapitest"
	"github.com/hotdesk/hotdesk/internal/event"
)

// serveAdmin serves b on an admin socket of the test's own and returns the
// socket's path.
func serveAdmin(t *testing.T, b adminapi.Backend) string {
	t.Helper()
	return serveAdminAt(t, filepath.Join(t.TempDir(), "admin.sock"), b)
}

// serveAdminAt serves b on an admin socket at sock (mode 0660, as hotdeskd
// makes it).
func serveAdminAt(t *testing.T, sock string, b adminapi.Backend) string {
	t.Helper()
	ln, err := adminapi.Listen(sock, 0o660)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- adminapi.NewServer(b, nil, -1).Serve(ctx, ln) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Serve: %v", err)
		}
	})
	return sock
}

// table splits tabwriter output into rows of cells (columns are at least
// two spaces apart; a cell holds single spaces at most).
func table(out string) [][]string {
	var rows [][]string
	for _, line := range strings.Split(strings.TrimRight(out, "\n"), "\n") {
		rows = append(rows, regexp.MustCompile(`\s{2,}`).Split(strings.TrimSpace(line), -1))
	}
	return rows
}

// TestListings: every listing prints its header and one row a record, with
// "-" for what is unset, or with --json the records as a JSON array ([]
// when there are none).
func TestListings(t *testing.T) {
	at := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	local := at.Local().Format(time.DateTime)
	idle := time.Now().Add(-90 * time.Second)
	b := adminapitest.New(adminapitest.State{
		Sessions: []adminapi.SessionInfo{
			{ID: "s-1", State: "active", User: "alice", Token: "soft.a", Terminal: "t-1", ServerID: "b1", PID: 42, Created: at},
			{ID: "s-2", State: "suspended", User: "bob", ServerID: "b2", LastTerminal: "t-2", Created: at, ExpiresAt: &at,
				IdleSince: &idle, Partial: true, Orphaned: true, OrphanOwner: "b3"},
		},
		Terminals: []adminapi.TerminalInfo{
			{ID: "t-1", Name: "desk 1", ServerID: "b1", Tokens: []string{"soft.a"}, Session: "s-1", User: "alice", Connected: at, LastSeen: idle},
			{ID: "t-2", ServerID: "b2", Tokens: []string{"uid.1", "uid.2"}, Connected: at, LastSeen: idle},
		},
		Tokens: []adminapi.TokenInfo{
			{ID: "uid.1", User: "bob", Registered: at},
			{ID: "soft.a", User: "alice", Label: "laptop", RegisteredBy: "uid:0", Registered: at, Disabled: true},
		},
		Pairings: []adminapi.PairingInfo{{ID: "ABC", User: "carl", CreatedBy: "uid:0", Expires: at}},
		Servers: []adminapi.ServerInfo{
			{ID: "b1", Addr: "10.0.0.1:7400", Sessions: 1, Weight: 1, Self: true, Version: "v1", Started: at},
			{ID: "b2", Addr: "10.0.0.2:7400", Sessions: 3, Capacity: 10, Weight: 2, Draining: true, Started: at,
				SettingsDiffer: []adminapi.SettingDiff{{Key: "auth.max_lockout", Theirs: "1h0m0s", Ours: "15m0s"}, {Key: "session.kiosk_user", Theirs: "k\x1b[2J", Ours: ""}},
				ClockOffsetMs:  new(int64(-42_300))},
			{ID: "b3", Addr: "10.0.0.3:7400", Weight: 1, Started: at, ClockOffsetMs: new(int64(900))},
		},
	})
	sock := serveAdmin(t, b)
	for _, tc := range []struct {
		args []string
		want [][]string
	}{
		{[]string{"sessions"}, [][]string{
			{"SESSION", "STATE", "USER", "TOKEN", "TERMINAL", "SERVER", "IDLE", "PID", "CREATED", "EXPIRES", "ORPHANED"},
			{"s-1", "active", "alice", "soft.a", "t-1", "b1", "-", "42", local, "-", "-"},
			{"s-2", "suspended (partial)", "bob", "-", "(t-2)", "b2", "1m", "-", local, local, "owner b3"},
		}},
		{[]string{"sessions", "--user", "bob"}, [][]string{
			{"SESSION", "STATE", "USER", "TOKEN", "TERMINAL", "SERVER", "IDLE", "PID", "CREATED", "EXPIRES", "ORPHANED"},
			{"s-2", "suspended (partial)", "bob", "-", "(t-2)", "b2", "1m", "-", local, local, "owner b3"},
		}},
		{[]string{"terminals"}, [][]string{
			{"TERMINAL", "NAME", "ADDRESS", "SERVER", "TOKENS", "SESSION", "USER", "CONNECTED", "LAST SEEN"},
			{"t-1", `"desk 1"`, "-", "b1", "soft.a", "s-1", "alice", local, "1m ago"},
			{"t-2", "-", "-", "b2", "uid.1,uid.2", "-", "-", local, "1m ago"},
		}},
		{[]string{"readers"}, [][]string{
			{"TERMINAL", "SERVER", "TOKEN", "SESSION"},
			{"t-1", "b1", "soft.a", "s-1"},
			{"t-2", "b2", "uid.1", "-"},
			{"t-2", "b2", "uid.2", "-"},
		}},
		{[]string{"token", "list"}, [][]string{
			{"TOKEN", "USER", "LABEL", "STATE", "REGISTERED BY", "REGISTERED"},
			{"uid.1", "bob", "-", "enabled", "-", local},
			{"soft.a", "alice", "laptop", "disabled", "uid:0", local},
		}},
		{[]string{"token", "pair", "list"}, [][]string{
			{"CODE", "USER", "LABEL", "CREATED BY", "EXPIRES"},
			{"ABC-…", "carl", "-", "uid:0", local},
		}},
		{[]string{"server", "list"}, [][]string{
			{"SERVER", "ADDRESS", "SESSIONS", "CAPACITY", "WEIGHT", "STATE", "VERSION", "STARTED", "SETTINGS"},
			{"b1 *", "10.0.0.1:7400", "1", "-", "1", "active", "v1", local, "-"},
			{"b2", "10.0.0.2:7400", "3", "10", "2", "draining (3 remaining)", "-", local,
				`clock 42.3s behind; differ: auth.max_lockout = 1h0m0s (here: 15m0s), session.kiosk_user = "k\x1b[2J" (here: "")`},
			{"b3", "10.0.0.3:7400", "0", "-", "1", "active", "-", local, "-"}, // its clock within a second
		}},
	} {
		var out, errOut bytes.Buffer
		if err := run(context.Background(), append([]string{"-socket", sock}, tc.args...), &out, &errOut); err != nil {
			t.Errorf("%v: %v (%s)", tc.args, err, errOut.String())
			continue
		}
		if got := table(out.String()); !reflect.DeepEqual(got, tc.want) {
			t.Errorf("%v printed\n%s\ngot = %q; want %q", tc.args, out.String(), got, tc.want)
		}
	}

	// --json: the records as they came, an empty listing as [].
	var out bytes.Buffer
	if err := run(context.Background(), []string{"-socket", sock, "token", "list", "--json"}, &out, &out); err != nil {
		t.Fatal(err)
	}
	if got := out.String(); !strings.Contains(got, `"id": "soft.a"`) || !strings.HasPrefix(got, "[") {
		t.Errorf("token list --json = %s; want a JSON array of the tokens", got)
	}
	for _, args := range [][]string{{"sessions", "--user", "nobody", "--json"}, {"readers", "--json"}} {
		empty := serveAdmin(t, adminapitest.New(adminapitest.State{}))
		out.Reset()
		if err := run(context.Background(), append([]string{"-socket", empty}, args...), &out, &out); err != nil {
			t.Fatal(err)
		}
		if got := strings.TrimSpace(out.String()); got != "[]" {
			t.Errorf("%v on an empty group = %q; want []", args, got)
		}
	}
}

// TestSessionsUnanswered: members that did not answer the listing are
// named on stderr, one warning each saying what their rows mean, after
// the table and also with --json (stdout stays the JSON array); the exit
// status stays 0. No warning when every member answered.
func TestSessionsUnanswered(t *testing.T) {
	at := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	sessions := []adminapi.SessionInfo{
		{ID: "s-1", State: "active", User: "alice", ServerID: "b1", Created: at},
		{ID: "s-2", State: "active", User: "bob", ServerID: "b2", Created: at, Partial: true},
	}
	b := adminapitest.New(adminapitest.State{Sessions: sessions, Unanswered: []string{"b2", "b3"}})
	sock := serveAdmin(t, b)
	wantWarnings := []string{
		"warning: server b2 did not answer: the session listed for it comes from the group registry, marked partial",
		"warning: server b3 did not answer, and the group registry holds no session of it",
	}
	checkWarnings := func(args []string, errOut string) {
		t.Helper()
		lines := strings.Split(strings.TrimRight(errOut, "\n"), "\n")
		if len(lines) != len(wantWarnings) {
			t.Fatalf("%v: stderr\n%s\nwant %d warning lines", args, errOut, len(wantWarnings))
		}
		for i, w := range wantWarnings {
			if !strings.HasPrefix(lines[i], w) {
				t.Errorf("%v: stderr line %d = %q; want it to start %q", args, i, lines[i], w)
			}
		}
	}

	var out, errOut bytes.Buffer
	if err := run(context.Background(), []string{"-socket", sock, "sessions"}, &out, &errOut); err != nil {
		t.Fatalf("sessions with unanswered members: %v; want success (exit 0)", err)
	}
	if rows := table(out.String()); len(rows) != 3 || rows[2][0] != "s-2" || rows[2][1] != "active (partial)" {
		t.Errorf("sessions printed\n%s\nwant the header, s-1 and s-2 (partial)", out.String())
	}
	checkWarnings([]string{"sessions"}, errOut.String())

	out.Reset()
	errOut.Reset()
	if err := run(context.Background(), []string{"-socket", sock, "sessions", "--json"}, &out, &errOut); err != nil {
		t.Fatalf("sessions --json with unanswered members: %v; want success (exit 0)", err)
	}
	var got []adminapi.SessionInfo
	if err := json.Unmarshal(out.Bytes(), &got); err != nil || !reflect.DeepEqual(got, sessions) {
		t.Errorf("sessions --json stdout:\n%s\n(%v); want exactly the JSON array of the sessions", out.String(), err)
	}
	checkWarnings([]string{"sessions", "--json"}, errOut.String())

	// Only the member a filter asks about is named, and it says "matches".
	out.Reset()
	errOut.Reset()
	if err := run(context.Background(), []string{"-socket", sock, "sessions", "--server", "b3"}, &out, &errOut); err != nil {
		t.Fatal(err)
	}
	if got := errOut.String(); strings.Contains(got, "b2") || !strings.Contains(got, "server b3 did not answer, and the group registry holds no session of it that matches") {
		t.Errorf("sessions --server b3: stderr %q; want one warning about b3", got)
	}

	b.Update(func(s *adminapitest.State) { s.Unanswered = nil })
	out.Reset()
	errOut.Reset()
	if err := run(context.Background(), []string{"-socket", sock, "sessions"}, &out, &errOut); err != nil || errOut.Len() != 0 {
		t.Errorf("sessions when every member answered: %v, stderr %q; want success and nothing on stderr", err, errOut.String())
	}

	// The help says what the warning means and that the status stays 0.
	out.Reset()
	if err := run(context.Background(), []string{"sessions", "--help"}, &out, &out); err != nil {
		t.Fatal(err)
	}
	if help := strings.Join(strings.Fields(out.String()), " "); !strings.Contains(help, "named in a warning on stderr") || !strings.Contains(help, "The exit status is still 0") {
		t.Errorf("sessions --help does not explain the warning and the exit status:\n%s", out.String())
	}
}

// TestPeerValuesPrintedSafely: terminal ids, names and tokens, labels and
// event fields are the peer's text. Each is printed as it is when plain,
// else quoted (strconv.Quote): an escape sequence or a control character
// never reaches the admin's screen raw, and a value with a space, a tab,
// a newline or a quote never passes for another field, column or line.
func TestPeerValuesPrintedSafely(t *testing.T) {
	at := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	const (
		esc   = "\x1b]52;c;aGVsbG8=\x07\x1b[2J"
		badID = "t-1\x1b[31m"
		name  = "desk\tFAKE  row"
		tok   = "uid.1\nFAKE line"
		label = `alice's "phone"` + esc
		user  = "bob\u202egnp.exe"
	)
	b := adminapitest.New(adminapitest.State{
		Terminals: []adminapi.TerminalInfo{{ID: badID, Name: name, Addr: "10.0.0.9:1", ServerID: "b1",
			Tokens: []string{tok, "uid.2"}, Connected: at, LastSeen: at}},
		Tokens: []adminapi.TokenInfo{{ID: "soft.a", User: user, Label: label, Registered: at}},
		Events: []event.Event{{Kind: event.TokenRefused, Time: at, Server: "b1", Terminal: badID, Token: tok, Reason: "x=1 y" + esc}},
	})
	sock := serveAdmin(t, b)
	for _, tc := range []struct {
		args []string
		want []string // in the output, in order
	}{
		{[]string{"terminals"}, []string{strconv.Quote(badID), strconv.Quote(name), "10.0.0.9:1", "b1", strconv.Quote(tok) + ",uid.2"}},
		{[]string{"readers"}, []string{strconv.Quote(badID), "b1", strconv.Quote(tok), strconv.Quote(badID), "b1", "uid.2"}},
		{[]string{"token", "list"}, []string{"soft.a", strconv.Quote(user), strconv.Quote(label)}},
		{[]string{"events", "-n", "5"}, []string{"token_refused", "server=b1", "terminal=" + strconv.Quote(badID),
			"token=" + strconv.Quote(tok), "reason=" + strconv.Quote("x=1 y"+esc)}},
	} {
		var out, errOut bytes.Buffer
		if err := run(context.Background(), append([]string{"-socket", sock}, tc.args...), &out, &errOut); err != nil {
			t.Errorf("%v: %v (%s)", tc.args, err, errOut.String())
			continue
		}
		got := out.String()
		if strings.ContainsAny(got, "\x1b\x07\t\u202e") {
			t.Errorf("%v printed a control or format character raw: %q", tc.args, got)
		}
		wantLines := 2 // header and one row
		switch tc.args[0] {
		case "readers":
			wantLines = 3
		case "events":
			wantLines = 1
		}
		if n := strings.Count(got, "\n"); n != wantLines {
			t.Errorf("%v printed %d lines; want %d:\n%s", tc.args, n, wantLines, got)
		}
		rest := got
		for _, w := range tc.want {
			i := strings.Index(rest, w)
			if i < 0 {
				t.Errorf("%v printed %q; want %q in it (after the fields before it)", tc.args, got, w)
				break
			}
			rest = rest[i+len(w):]
		}
	}
}
