package main

import (
	"bytes"
	"context"
	"errors"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

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

// TestMessagesSayWhatHappened: a tap that times out says no card came, a
// drain of this server names it.
func TestMessagesSayWhatHappened(t *testing.T) {
	b := adminapitest.New(adminapitest.State{Servers: []adminapi.ServerInfo{
		{ID: "b7", Self: true}, {ID: "b8"}}})
	sock := serveAdmin(t, b)
	err := run(context.Background(), []string{"-socket", sock, "--timeout", "2s", "readers", "--tap"}, io.Discard, io.Discard)
	if err == nil || !strings.Contains(err.Error(), "no card or token was presented within 2s") || strings.Contains(err.Error(), "did not answer") {
		t.Errorf("tap with no card: %v; want \"no card or token was presented within 2s\"", err)
	}
	var out bytes.Buffer
	if err := run(context.Background(), []string{"-socket", sock, "server", "drain"}, &out, &out); err != nil || out.String() != "server b7: drained\n" {
		t.Errorf("server drain: %v, %q; want \"server b7: drained\"", err, out.String())
	}
	out.Reset()
	if err := run(context.Background(), []string{"-socket", sock, "server", "undrain", "b8"}, &out, &out); err != nil || out.String() != "server b8: undrained\n" {
		t.Errorf("server undrain b8: %v, %q", err, out.String())
	}
}

// TestSocketFromEnvironment: $HOTDESK_ADMIN_SOCKET is used when -socket is
// not given, and never becomes the documented default.
func TestSocketFromEnvironment(t *testing.T) {
	sock := serveAdmin(t, adminapitest.New(adminapitest.State{}))
	t.Setenv(socketEnv, sock)
	if err := run(context.Background(), []string{"ready"}, io.Discard, io.Discard); err != nil {
		t.Fatalf("ready with $%s: %v", socketEnv, err)
	}
	dir := t.TempDir()
	if err := run(context.Background(), []string{"__gendocs", "man", dir}, io.Discard, io.Discard); err != nil {
		t.Fatal(err)
	}
	pages, _ := filepath.Glob(filepath.Join(dir, "*.8"))
	if len(pages) < 10 {
		t.Fatalf("%d man pages; want every command's", len(pages))
	}
	for _, p := range pages {
		b, _ := os.ReadFile(p)
		if strings.Contains(string(b), sock) {
			t.Errorf("%s shows the build environment's socket %s", filepath.Base(p), sock)
		}
		if strings.Contains(string(b), "socket") && !strings.Contains(string(b), defaultSocket) {
			t.Errorf("%s does not show the default socket %s", filepath.Base(p), defaultSocket)
		}
	}
	var help bytes.Buffer
	if err := run(context.Background(), []string{"sessions", "--help"}, &help, &help); err != nil || strings.Contains(help.String(), sock) {
		t.Errorf("--help: %v; shows %s: %v", err, sock, strings.Contains(help.String(), sock))
	}
}

// TestPermissionDenied runs the real hotdeskctl as a user who may not open
// the admin socket: it says so and names the group the socket is shared
// with, instead of asking whether hotdeskd runs.
func TestPermissionDenied(t *testing.T) {
	testutil.NeedRoot(t, "needs root to run hotdeskctl as another user")
	// hotdeskctl of the end-to-end tests' build (one link per run, shared
	// through the link cache), not a link of its own.
	bin := testutil.BuildHotdesk(t)
	// A directory everyone may enter, holding the binary and the socket.
	dir, err := os.MkdirTemp("", "hdctl-perm-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	exe, err := os.ReadFile(filepath.Join(bin, "hotdeskctl"))
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "hotdeskctl"), exe, 0o755); err != nil {
		t.Fatal(err)
	}
	run := filepath.Join(dir, "run")
	if err := os.Mkdir(run, 0o755); err != nil {
		t.Fatal(err)
	}
	sock := serveAdminAt(t, filepath.Join(run, "admin.sock"), adminapitest.New(adminapitest.State{}))
	// As hotdeskd shares it with admin_group = "bin" (gid 2).
	if err := adminapi.ShareWithGroup(sock, 2); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(filepath.Join(dir, "hotdeskctl"), "-socket", sock, "sessions")
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: 65534, Gid: 65534}}
	cmd.Dir = dir
	done := make(chan struct{})
	var out []byte
	go func() { out, err = cmd.CombinedOutput(); close(done) }()
	select {
	case <-done:
	case <-time.After(time.Minute):
		t.Fatal("hotdeskctl did not exit")
	}
	var ee *exec.ExitError
	if !errors.As(err, &ee) || ee.ExitCode() != 1 {
		t.Fatalf("hotdeskctl as nobody: %v; want exit status 1\n%s", err, out)
	}
	for _, want := range []string{"permission denied", "you need to be root or in hotdeskd's admin group (bin)"} {
		if !strings.Contains(string(out), want) {
			t.Errorf("output %q; want it to contain %q", out, want)
		}
	}
	if strings.Contains(string(out), "is hotdeskd running") {
		t.Errorf("output %q asks whether hotdeskd runs; it does", out)
	}
}
