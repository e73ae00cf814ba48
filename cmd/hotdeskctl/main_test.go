package main

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestNormalizeArgs(t *testing.T) {
	for _, tc := range []struct{ in, want string }{
		{"-socket /s sessions -json", "--socket /s sessions --json"},
		{"events -f -n 5", "events -f -n 5"},
		{"token pair -user=alice -ttl 1m", "token pair --user=alice --ttl 1m"},
		{"session kill -- -odd-id", "session kill -- -odd-id"},
		{"token register uid.04a1 --user bob", "token register uid.04a1 --user bob"},
	} {
		got := strings.Join(normalizeArgs(strings.Fields(tc.in)), " ")
		if got != tc.want {
			t.Errorf("normalizeArgs(%q) = %q; want %q", tc.in, got, tc.want)
		}
	}
}

// TestHelpAndUsage: --help and -h of every level succeed; a bad command
// line is a usage error (exit 2) naming what to do; no daemon is a failure
// (exit 1) saying how to point at one.
func TestHelpAndUsage(t *testing.T) {
	for _, args := range [][]string{{"--help"}, {"-h"}, {"sessions", "--help"}, {"session", "kill", "-h"},
		{"token", "pair", "list", "--help"}, {"events", "-h"}, {"version"}, {"--version"}, {"completion", "bash"},
		{"help"}, {"help", "sessions"}, {"help", "session", "kill"}} {
		var out bytes.Buffer
		if err := run(context.Background(), args, &out, &out); err != nil {
			t.Errorf("%v: %v", args, err)
		}
		if out.Len() == 0 {
			t.Errorf("%v printed nothing", args)
		}
	}
	for _, args := range [][]string{{}, {"bogus"}, {"sessions", "--nope"}, {"session"}, {"session", "kill"},
		{"token", "pair"}, {"token", "register", "uid.1"}, {"server", "drain", "a", "b"},
		// help for a command that does not exist is not the root's help
		{"help", "bogus"}, {"help", "session", "bogus"}} {
		var out bytes.Buffer
		err := run(context.Background(), args, &out, &out)
		var ue usageError
		if !errors.As(err, &ue) {
			t.Errorf("%v: %v; want a usage error", args, err)
		}
	}
	sock := filepath.Join(t.TempDir(), "none.sock")
	err := run(context.Background(), []string{"-socket", sock, "sessions"}, &bytes.Buffer{}, &bytes.Buffer{})
	var ue usageError
	if err == nil || errors.As(err, &ue) || !strings.Contains(err.Error(), "is hotdeskd running? try -socket or HOTDESK_ADMIN_SOCKET") {
		t.Errorf("no daemon: %v; want a failure with a hint", err)
	}
}

func TestGenDocs(t *testing.T) {
	dir := t.TempDir()
	for _, kind := range []string{"man", "bash", "zsh"} {
		if err := run(context.Background(), []string{"__gendocs", kind, dir}, &bytes.Buffer{}, &bytes.Buffer{}); err != nil {
			t.Fatalf("__gendocs %s: %v", kind, err)
		}
	}
	for _, f := range []string{"hotdeskctl.8", "hotdeskctl-sessions.8", "hotdeskctl-session-kill.8", "hotdeskctl-events.8", "hotdeskctl", "_hotdeskctl"} {
		b, err := os.ReadFile(filepath.Join(dir, f))
		if err != nil || len(b) == 0 {
			t.Errorf("%s: %v", f, err)
		}
	}
	man, _ := os.ReadFile(filepath.Join(dir, "hotdeskctl.8"))
	if strings.Contains(string(man), "__gendocs") {
		t.Error("the hidden __gendocs command is in the man page")
	}
	if err := run(context.Background(), []string{"__gendocs", "pdf", dir}, &bytes.Buffer{}, &bytes.Buffer{}); err == nil {
		t.Error("__gendocs pdf succeeded")
	}
}
