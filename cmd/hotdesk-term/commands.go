package main

import (
	"fmt"
	"strings"

	"github.com/hotdesk/hotdesk/tokens"
)

// op is a stdin command.
type op int

const (
	opNone op = iota // empty or comment line
	opInsert
	opRemove
	opAnswer
	opStatus
	opQuit
	opLogin  // password login without a card: the user name locates the session
	opLogout // end a login: the session is suspended
	opCancel // cancel the prompt waiting for an answer
)

// command is one parsed stdin line.
type command struct {
	op  op
	arg string
	// onScreen: an answer typed on the greeter, to the prompt it shows;
	// with no prompt waiting (it ended meanwhile) it is dropped, not kept
	// for the next prompt (which may be the next person's).
	onScreen bool
	// done, if not nil, is closed by the loop once it has handled the
	// command: readCommands waits for a status so that the insertions and
	// removals of the lines after it (which act on the provider at once)
	// come after what it reports.
	done chan struct{}
}

// maxCommandLen bounds a command line, in bytes.
const maxCommandLen = 4096

// parseCommand parses one line of the run mode's stdin:
//
//	insert NAME | remove NAME | login USER | logout USER | answer TEXT | cancel | status | quit
//
// Keywords are case-insensitive. TEXT is the rest of the line after one
// space, kept verbatim (it may be empty or contain spaces; a trailing "\r"
// is dropped). Blank lines and lines starting with "#" are opNone.
func parseCommand(line string) (command, error) {
	if len(line) > maxCommandLen {
		return command{}, fmt.Errorf("command longer than %d bytes", maxCommandLen)
	}
	line = strings.TrimSuffix(line, "\r")
	trimmed := strings.TrimSpace(line)
	if trimmed == "" || strings.HasPrefix(trimmed, "#") {
		return command{op: opNone}, nil
	}
	word, rest, _ := strings.Cut(strings.TrimLeft(line, " \t"), " ")
	switch kw := strings.ToLower(word); kw {
	case "answer":
		return command{op: opAnswer, arg: rest}, nil
	case "insert", "remove":
		name := strings.TrimSpace(rest)
		if name == "" || strings.ContainsAny(name, " \t") {
			return command{}, fmt.Errorf("usage: %s NAME", kw)
		}
		if kw == "insert" {
			return command{op: opInsert, arg: name}, nil
		}
		return command{op: opRemove, arg: name}, nil
	case "login", "logout":
		user := strings.TrimSpace(rest)
		if _, _, err := tokens.ParseID("user." + user); err != nil {
			return command{}, fmt.Errorf("usage: %s USER (letters, digits, '_', '-' and inner dots)", kw)
		}
		if kw == "login" {
			return command{op: opLogin, arg: user}, nil
		}
		return command{op: opLogout, arg: user}, nil
	case "status", "quit", "cancel":
		if strings.TrimSpace(rest) != "" {
			return command{}, fmt.Errorf("usage: %s", kw)
		}
		switch kw {
		case "status":
			return command{op: opStatus}, nil
		case "cancel":
			return command{op: opCancel}, nil
		}
		return command{op: opQuit}, nil
	}
	return command{}, fmt.Errorf("unknown command %q (want insert NAME, remove NAME, login USER, logout USER, answer TEXT, cancel, status or quit)", clean(truncate(word, 32)))
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "…"
}
