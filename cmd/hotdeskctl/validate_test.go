package main

import (
	"bytes"
	"context"
	"errors"
	"io"
	"os"
	"strings"
	"testing"

	"github.com/hotdesk/hotdesk/cmd/internal/adminapi"
	"github.com/hotdesk/hotdesk/cmd/internal/adminapi/adminapitest"
	"github.com/hotdesk/hotdesk/internal/testutil"
)

// TestMain removes the binaries the tests build.
func TestMain(m *testing.M) { os.Exit(testutil.RunWithBuilds(m)) }

// TestBadInputIsAUsageError: what the CLI can tell is wrong by itself is a
// usage error (exit 2) naming what is allowed, and reaches no daemon.
func TestBadInputIsAUsageError(t *testing.T) {
	b := adminapitest.New(adminapitest.State{})
	sock := serveAdmin(t, b)
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"sessions", "--state", "bogus"}, `unknown --state "bogus": one of creating, active, suspended, orphaned`},
		{[]string{"token", "delete", ""}, "not an empty argument"},
		{[]string{"session", "kill", " "}, "not an empty argument"},
		{[]string{"token", "pair", "--user", "alice", "--ttl", "500ms"}, "a whole number of seconds"},
		{[]string{"token", "pair", "--user", "alice", "--ttl", "-1m"}, "a whole number of seconds"},
		{[]string{"completion", "tcsh"}, `unknown shell "tcsh": one of bash, fish, powershell, zsh`},
		{[]string{"completion"}, "which shell?"},
	} {
		var out bytes.Buffer
		err := run(context.Background(), append([]string{"-socket", sock}, tc.args...), &out, &out)
		var ue usageError
		if !errors.As(err, &ue) || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%q: %v; want a usage error containing %q", tc.args, err, tc.want)
		}
	}
	if calls := b.PairCalls(); len(calls) != 0 {
		t.Errorf("the daemon was asked for %d pairing codes; want none", len(calls))
	}
	var out bytes.Buffer
	if err := run(context.Background(), []string{"completion", "zsh"}, &out, &out); err != nil || out.Len() == 0 {
		t.Errorf("completion zsh: %v, %d bytes; want the script", err, out.Len())
	}
}

// TestDaemonRefusesBadInput: what only the daemon can refuse comes back as
// its message with status 400 (ErrInvalid, exit 1), not as a 500.
func TestDaemonRefusesBadInput(t *testing.T) {
	b := adminapitest.New(adminapitest.State{Tokens: []adminapi.TokenInfo{{ID: "uid.04a1b2c3", User: "alice"}}})
	sock := serveAdmin(t, b)
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"token", "delete", "a/b"}, `invalid id "a/b"`},
		{[]string{"token", "disable", "a\x1bb"}, `invalid id "a\x1bb"`},
		{[]string{"token", "pair", "--user", "ev\x1b"}, `invalid user "ev\x1b"`},
		{[]string{"token", "register", "uid.04a1b2c4", "--user", "a:b"}, `invalid user "a:b"`},
	} {
		err := run(context.Background(), append([]string{"-socket", sock}, tc.args...), io.Discard, io.Discard)
		var se *adminapi.StatusError
		if !errors.As(err, &se) || se.Status != 400 || !errors.Is(err, adminapi.ErrInvalid) || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%q: %v; want status 400 with %q", tc.args, err, tc.want)
		}
		if strings.ContainsRune(err.Error(), 0x1b) {
			t.Errorf("%q: the message carries a raw escape character: %q", tc.args, err)
		}
	}
}
