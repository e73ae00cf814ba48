package main

import (
	"encoding/json"
	"errors"
	"io"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/hotdesk/hotdesk/proto"
	"github.com/hotdesk/hotdesk/tokens"
	"github.com/hotdesk/hotdesk/tokens/soft"
)

func TestParseCommand(t *testing.T) {
	t.Parallel()
	tests := []struct {
		line    string
		want    command
		wantErr bool
	}{
		{"insert default", command{op: opInsert, arg: "default"}, false},
		{"  INSERT   badge-2  ", command{op: opInsert, arg: "badge-2"}, false},
		{"remove default\r", command{op: opRemove, arg: "default"}, false},
		{"answer hunter2", command{op: opAnswer, arg: "hunter2"}, false},
		{"answer  two  spaces ", command{op: opAnswer, arg: " two  spaces "}, false},
		{"answer", command{op: opAnswer, arg: ""}, false},
		{"login alice", command{op: opLogin, arg: "alice"}, false},
		{"logout alice", command{op: opLogout, arg: "alice"}, false},
		{"login", command{}, true},
		{"login al/ice", command{}, true},
		{"answer ", command{op: opAnswer, arg: ""}, false},
		{"status", command{op: opStatus}, false},
		{"quit", command{op: opQuit}, false},
		{"Quit", command{op: opQuit}, false},
		{"", command{op: opNone}, false},
		{"   ", command{op: opNone}, false},
		{"# comment", command{op: opNone}, false},
		{"insert", command{}, true},
		{"insert a b", command{}, true},
		{"remove", command{}, true},
		{"status now", command{}, true},
		{"quit please", command{}, true},
		{"eject default", command{}, true},
		{"\x1b[2Jinsert", command{}, true},
		{"answer " + strings.Repeat("x", maxCommandLen), command{}, true},
	}
	for _, tt := range tests {
		t.Run(tt.line, func(t *testing.T) {
			got, err := parseCommand(tt.line)
			if gotErr := err != nil; gotErr != tt.wantErr {
				t.Fatalf("parseCommand(%q) = %+v, %v; want error %v", tt.line, got, err, tt.wantErr)
			}
			if got != tt.want {
				t.Errorf("parseCommand(%q) = %+v; want %+v", tt.line, got, tt.want)
			}
			if err != nil && strings.ContainsRune(err.Error(), '\x1b') {
				t.Errorf("error %q echoes an escape character", err)
			}
		})
	}
}

func TestEventFormat(t *testing.T) {
	t.Parallel()
	at := time.Date(2031, 5, 6, 7, 8, 9, 123456789, time.UTC)
	tests := []struct {
		name     string
		ev       event
		wantJSON string
		wantText string
	}{
		{"connected", connectedEvent("b1", "10.0.0.1:7400"),
			`{"event":"connected","server":"b1","addr":"10.0.0.1:7400"}`,
			"connected to server b1 at 10.0.0.1:7400"},
		{"challenge", challengeEvent("soft.abc"),
			`{"event":"challenge","token":"soft.abc"}`,
			"challenge for token soft.abc"},
		{"prompt", promptEvent(&proto.AuthPrompt{ID: 1, Style: proto.PromptEchoOff, Text: "PIN: "}),
			`{"event":"prompt","style":"echo_off","text":"PIN: "}`,
			"prompt (echo_off): PIN: "},
		{"prompt with escape", promptEvent(&proto.AuthPrompt{ID: 1, Style: proto.PromptError, Text: "bad\x1b[2J\nx"}),
			`{"event":"prompt","style":"error","text":"bad\u001b[2J\nx"}`,
			"prompt (error): bad\uFFFD[2J\uFFFDx"},
		{"attached new", attachedEvent(&proto.Attached{SessionID: "s1", Token: "soft.abc", User: "alice", Endpoint: "rdp://h:1", ServerID: "b1"}),
			`{"event":"attached","session":"s1","token":"soft.abc","user":"alice","endpoint":"rdp://h:1","server":"b1","resumed":false}`,
			"attached session s1 on server b1 (new), user alice, token soft.abc, endpoint rdp://h:1"},
		{"attached resumed", attachedEvent(&proto.Attached{SessionID: "s1", Token: "soft.abc", Endpoint: "rdp://h:1", ServerID: "b2", Resumed: true}),
			`{"event":"attached","session":"s1","token":"soft.abc","user":"","endpoint":"rdp://h:1","server":"b2","resumed":true}`,
			"attached session s1 on server b2 (resumed), token soft.abc, endpoint rdp://h:1"},
		{"detached takeover", detachedEvent(&proto.Detached{SessionID: "s1", Reason: proto.DetachTakeover, Message: "moved", Terminal: "t2"}),
			`{"event":"detached","session":"s1","reason":"takeover","message":"moved","by":"t2"}`,
			"detached from session s1: takeover (moved) by terminal t2"},
		{"detached locked", detachedEvent(&proto.Detached{SessionID: "s1", Reason: proto.DetachLocked}),
			`{"event":"detached","session":"s1","reason":"locked"}`,
			"detached from session s1: locked"},
		{"redirect", redirectEvent(&proto.Redirect{Token: "soft.abc", ServerID: "b2", Addr: "10.0.0.2:7400", Fence: 77}),
			`{"event":"redirect","server":"b2","addr":"10.0.0.2:7400","fence":77}`,
			"redirected to server b2 at 10.0.0.2:7400 (fence 77)"},
		{"broker error", protoErrorEvent(&proto.Error{Code: proto.ErrUnknownToken, Message: "not enrolled"}),
			`{"event":"error","code":4,"name":"unknown_token","message":"not enrolled"}`,
			"error unknown_token (4): not enrolled"},
		{"broker error with token", protoErrorEvent(&proto.Error{Code: proto.ErrAuthFailed, Message: "no", Token: "soft.abc"}),
			`{"event":"error","code":5,"name":"auth_failed","message":"no","token":"soft.abc"}`,
			"error auth_failed (5): no (token soft.abc)"},
		{"local error", errorEvent(0, errRedirect, "pin mismatch"),
			`{"event":"error","code":0,"name":"redirect_failed","message":"pin mismatch"}`,
			"error redirect_failed: pin mismatch"},
		{"paired", pairedEvent(&proto.Paired{Token: "soft.abc"}),
			`{"event":"paired","token":"soft.abc"}`,
			"paired token soft.abc"},
		{"pair phone", pairPhoneEvent(tokens.Event{Kind: tokens.Inserted, Token: "hce.ab", Reader: "r0"}),
			`{"event":"pair_phone","token":"hce.ab","reader":"r0"}`,
			`pairing phone hce.ab at "r0"`},
		{"not a phone", notPhoneEvent(tokens.Event{Kind: tokens.Inserted, Token: "uid.01", Reader: "r0"}),
			`{"event":"not_phone","token":"uid.01","reader":"r0"}`,
			`card uid.01 at "r0" is not a phone: ignored while a phone pairing waits`},
		{"disconnected", disconnectedEvent(errors.New("EOF")),
			`{"event":"disconnected","error":"EOF"}`,
			"disconnected: EOF"},
		{"status", statusEvent(status{Connected: true, Server: "b1", Addr: "h:1", Hops: 1, Session: "s1", Inserted: []string{"soft.a"}}),
			`{"event":"status","connected":true,"server":"b1","addr":"h:1","hops":1,"session":"s1","inserted":["soft.a"]}`,
			"status: connected to server b1 at h:1 (1 hops), tokens inserted: soft.a, session s1"},
		{"card reading", cardEventOf(tokens.Event{Kind: tokens.Reading, Reader: "Virtual PCD 00 00"}),
			`{"event":"card_reading","reader":"Virtual PCD 00 00"}`,
			`Reading card… (reader "Virtual PCD 00 00")`},
		{"card inserted", cardEventOf(tokens.Event{Kind: tokens.Inserted, Token: "uid.01", Reader: "r0"}),
			`{"event":"card","kind":"inserted","token":"uid.01","reader":"r0"}`,
			`card inserted: uid.01 at "r0"`},
		{"card pulled while read", cardEventOf(tokens.Event{Kind: tokens.Removed, Reader: "r0"}),
			`{"event":"card","kind":"removed","token":"","reader":"r0"}`,
			`card removed at "r0" before it was identified`},
		{"status idle", statusEvent(status{}),
			`{"event":"status","connected":false,"server":"","addr":"","hops":0,"session":"","inserted":[]}`,
			"status: not connected, no token inserted"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			line := string(tt.ev.format(true, at))
			if !strings.HasSuffix(line, "\n") || strings.Count(line, "\n") != 1 {
				t.Fatalf("JSON line %q is not exactly one line", line)
			}
			wantJSON := strings.TrimSuffix(tt.wantJSON, "}") + `,"time":"2031-05-06T07:08:09.123456789Z"}` + "\n"
			if line != wantJSON {
				t.Errorf("JSON = %s; want %s", line, wantJSON)
			}
			var v map[string]any
			if err := json.Unmarshal([]byte(line), &v); err != nil {
				t.Errorf("JSON line does not parse: %v", err)
			}
			if got := string(tt.ev.format(false, at)); got != tt.wantText+"\n" {
				t.Errorf("text = %q; want %q", got, tt.wantText+"\n")
			}
		})
	}
}

func TestParseFlags(t *testing.T) {
	t.Parallel()
	pin := "sha256:" + strings.Repeat("ab", 32)
	tests := []struct {
		name    string
		args    []string
		wantErr bool
	}{
		{"run with pin", []string{"-server", "h:1", "-pin", pin, "run"}, false},
		{"pair with ca", []string{"-server", "h:1", "-ca", "ca.pem", "pair", "ABCD-EFGH-JKMN"}, false},
		{"answers", []string{"-server", "h:1", "-pin", pin, "-answer", "a", "-answer", "b c", "run"}, false},
		{"no command", []string{"-server", "h:1", "-pin", pin}, true},
		{"unknown command", []string{"-server", "h:1", "-pin", pin, "go"}, true},
		{"pair without code", []string{"-server", "h:1", "-pin", pin, "pair"}, true},
		{"run with argument", []string{"-server", "h:1", "-pin", pin, "run", "x"}, true},
		{"no server", []string{"-pin", pin, "run"}, true},
		{"server without port", []string{"-server", "h", "-pin", pin, "run"}, true},
		{"neither pin nor ca", []string{"-server", "h:1", "run"}, true},
		{"both pin and ca", []string{"-server", "h:1", "-pin", pin, "-ca", "x", "run"}, true},
		{"bad timeout", []string{"-server", "h:1", "-pin", pin, "-timeout", "0s", "run"}, true},
		{"unknown flag", []string{"-server", "h:1", "-pin", pin, "-frob", "run"}, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			o, err := parseFlags(tt.args, io.Discard)
			if gotErr := err != nil; gotErr != tt.wantErr {
				t.Fatalf("parseFlags = %+v, %v; want error %v", o, err, tt.wantErr)
			}
			if err != nil && !errors.Is(err, errUsage) {
				t.Errorf("err = %v; want a usage error", err)
			}
		})
	}
	o, err := parseFlags([]string{"-server", "h:1", "-pin", pin, "-answer", "a", "-answer", "b c", "run"}, io.Discard)
	if err != nil || len(o.answers) != 2 || o.answers[1] != "b c" || o.token != "default" || o.timeout != defaultTimeout {
		t.Errorf("parseFlags = %+v, %v; want answers [a, b c], token default, timeout %v", o, err, defaultTimeout)
	}
	if err := run([]string{"-server", "h:1", "-pin", "sha256:abcd", "run"}, strings.NewReader(""), io.Discard, io.Discard); !errors.Is(err, errUsage) {
		t.Errorf("run(short pin) = %v; want a usage error", err)
	}
}

// The command line end to end: pair through run() with a pinned broker,
// then run mode driven by stdin.
func TestRunCommandLine(t *testing.T) {
	t.Parallel()
	a := startBroker(t, "broker-a", time.Minute)
	ksPath := filepath.Join(t.TempDir(), "tokens.json")
	common := []string{"-server", a.addr, "-pin", proto.FormatFingerprint(a.fp), "-keystore", ksPath, "-id", "term-9", "-json", "-log-level", "off"}

	out := newOutput(t)
	errc := make(chan error, 1)
	go func() {
		errc <- run(append(common, "-token", "phone", "-name", "Desk 9", "pair", "abcd-efgh-jkmn"), strings.NewReader(""), out, io.Discard)
	}()
	p := a.accept()
	if p.hello.TerminalID != "term-9" || p.hello.Name != "Desk 9" {
		t.Errorf("hello = %+v; want terminal term-9, name Desk 9", p.hello)
	}
	pair := expect[proto.Pair](p)
	checkPairSig(t, p, pair)
	token := soft.TokenID(pair.PublicKey)
	p.send(&proto.Paired{Token: token, User: "alice"})
	if err := <-errc; err != nil {
		t.Fatalf("run pair = %v", err)
	}
	if ev := out.wait("paired"); ev["token"] != token || ev["user"] != "alice" {
		t.Errorf("paired event = %v; want token %s user alice", ev, token)
	}

	// run: stdin inserts the new key and quits at its end.
	stdinR, stdinW := io.Pipe()
	out = newOutput(t)
	go func() {
		errc <- run(append(common, "-answer", "pw", "run"), stdinR, out, io.Discard)
	}()
	p = a.accept()
	if _, err := io.WriteString(stdinW, "insert phone\n"); err != nil {
		t.Fatal(err)
	}
	p.inserted(token)
	p.send(&proto.AuthPrompt{ID: 1, Style: proto.PromptEchoOff, Text: "Password: "})
	if ans := expect[proto.AuthAnswer](p); ans.Text != "pw" {
		t.Errorf("answer = %q; want the -answer value", ans.Text)
	}
	stdinW.Close()
	select {
	case err := <-errc:
		if err != nil {
			t.Errorf("run = %v; want nil at end of input", err)
		}
	case <-time.After(waitBound):
		t.Fatal("run did not end at end of input")
	}
	if strings.Contains(out.text(), `"pw"`) {
		t.Errorf("the answer was printed:\n%s", out.text())
	}

	// A refused pairing exits with an error.
	go func() {
		errc <- run(append(common, "-token", "second", "pair", "abcd-efgh-jkmn"), strings.NewReader(""), io.Discard, io.Discard)
	}()
	p = a.accept()
	expect[proto.Pair](p)
	p.send(&proto.Error{Code: proto.ErrPairing, Message: "pairing code invalid, expired or used"})
	if err := <-errc; err == nil || errors.Is(err, errUsage) {
		t.Errorf("run pair (refused) = %v; want a failure", err)
	}
}
