package main

import (
	"strings"
	"testing"

	"github.com/hotdesk/hotdesk/tokens"
)

// FuzzParseCommand: a stdin line of the run mode is a command whose
// argument is of its kind, or an error; an error quotes at most a bounded
// part of the line.
func FuzzParseCommand(f *testing.F) {
	for _, s := range []string{"insert laptop", "REMOVE  laptop ", "login john.doe", "logout ..", "answer  secret with spaces\r",
		"status", "status now", "cancel", "quit", "# comment", "", "  \t", "frobnicate " + strings.Repeat("x", 100), "insert a b"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, line string) {
		c, err := parseCommand(line)
		if err != nil {
			if len(err.Error()) > 256 {
				t.Fatalf("error of %d bytes: %q", len(err.Error()), err)
			}
			return
		}
		if len(line) > maxCommandLen {
			t.Fatalf("line of %d bytes accepted", len(line))
		}
		switch c.op {
		case opInsert, opRemove:
			if c.arg == "" || strings.ContainsAny(c.arg, " \t") {
				t.Fatalf("%q: name %q", line, c.arg)
			}
		case opLogin, opLogout:
			if _, _, err := tokens.ParseID("user." + c.arg); err != nil {
				t.Fatalf("%q: user %q: %v", line, c.arg, err)
			}
		case opAnswer:
			if !strings.Contains(line, c.arg) {
				t.Fatalf("%q: answer %q", line, c.arg)
			}
		case opNone, opStatus, opQuit, opCancel:
			if c.arg != "" {
				t.Fatalf("%q: argument %q", line, c.arg)
			}
		default:
			t.Fatalf("%q: op %d", line, c.op)
		}
	})
}
