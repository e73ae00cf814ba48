package main

import (
	"bytes"
	"io"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestExampleConfig parses configs/hotdesk-term.hcl, the documented
// example, and checks that every key reached the options.
func TestExampleConfig(t *testing.T) {
	t.Parallel()
	o, err := parseFlags([]string{"-config", "../../configs/hotdesk-term.hcl", "agent"}, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	checks := []struct {
		key       string
		got, want any
	}{
		{"servers", strings.Join(o.servers, ","), "broker1.example.com:4500,broker2.example.com:4500"},
		{"pins", len(o.pins), 1},
		{"name", o.name, "Room 3, desk 12"},
		{"keystore", o.keystore, "/var/lib/hotdesk-term/tokens.json"},
		{"state_dir", o.stateDir, "/var/lib/hotdesk-term"},
		{"display", strings.HasPrefix(o.display, "xfreerdp /f"), true},
		{"greeter", o.greeter, true},
		{"json", o.json, false},
		{"log_level", o.logLevel, "info"},
		{"timeout", o.timeout, 10 * time.Second},
		{"keepalive", o.keepalive, 500 * time.Millisecond},
		{"min_backoff", o.minBackoff, 500 * time.Millisecond},
		{"max_backoff", o.maxBackoff, 30 * time.Second},
		{"pcsc", o.pcsc, true},
		{"pcsc.remove_grace", o.removeGrace, time.Second},
	}
	for _, c := range checks {
		if c.got != c.want {
			t.Errorf("%s = %v; want %v", c.key, c.got, c.want)
		}
	}
}

func TestConfigFlagsWin(t *testing.T) {
	t.Parallel()
	o, err := parseFlags([]string{"-config", "../../configs/hotdesk-term.hcl", "-server", "h:1", "-name", "other", "-keepalive", "2s", "run"}, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if strings.Join(o.servers, ",") != "h:1" || o.name != "other" || o.keepalive != 2*time.Second {
		t.Errorf("servers %v, name %q, keepalive %v; want the flags' h:1, other, 2s", o.servers, o.name, o.keepalive)
	}
}

func TestConfigErrors(t *testing.T) {
	t.Parallel()
	for _, tt := range []struct{ name, src, want string }{
		{"unknown key", "servers = [\"a:1\"]\nbogus = 1\n", "t.hcl:2:1: Unsupported argument"},
		{"bad duration", "servers = [\"a:1\"]\nkeepalive = \"5 sec\"\n", "t.hcl:2:1: keepalive = \"5 sec\""},
		{"negative duration", "timeout = \"-1s\"\n", "t.hcl:1:1: timeout"},
		{"wrong type", "servers = \"a:1\"\n", "t.hcl:1:"},
		{"syntax", "servers = [\n", "t.hcl:"},
		{"unknown block", "pcsc {\n  frob = 1\n}\n", "t.hcl:2:3"},
		{"bad grace", "pcsc {\n  remove_grace = \"x\"\n}\n", "t.hcl:2:3: pcsc.remove_grace"},
		{"bad server", "servers = [\"nohostport\"]\n", "t.hcl:1:1: servers entry \"nohostport\""},
		{"bad pin", "\npins = [\"zz\"]\n", "t.hcl:2:1: pins entry \"zz\""},
		{"bad log level", "log_level = \"loud\"\n", "t.hcl:1:1: log_level = \"loud\""},
	} {
		_, err := parseConfig([]byte(tt.src), "t.hcl")
		if err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("%s: parseConfig = %v; want an error containing %q", tt.name, err, tt.want)
		}
	}
	if _, err := loadConfigFile(filepath.Join(t.TempDir(), "absent.hcl")); err == nil {
		t.Error("loadConfigFile(absent) = nil; want an error")
	}
}

// TestConfigFromPipe: a config that is no regular file (a pipe, a device:
// no size to check beforehand) is read only up to the limit.
func TestConfigFromPipe(t *testing.T) {
	t.Parallel()
	path := filepath.Join(t.TempDir(), "pipe.hcl")
	if err := syscall.Mkfifo(path, 0o600); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() {
		w, err := os.OpenFile(path, os.O_WRONLY, 0)
		if err != nil {
			done <- err
			return
		}
		// Comments only: parsed, they would be a valid, empty config.
		_, err = w.Write(bytes.Repeat([]byte("#"), maxConfigSize+2))
		w.Close()
		done <- err
	}()
	_, err := loadConfigFile(path)
	if err == nil || !strings.Contains(err.Error(), "larger than") {
		t.Errorf("loadConfigFile(a pipe of %d bytes) = %v; want an error naming the limit", maxConfigSize+2, err)
	}
	<-done // the write fails once the reader has gone (EPIPE), or completes
}
