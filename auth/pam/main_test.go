package pam_test

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"

	"github.com/hotdesk/hotdesk/auth"
	"github.com/hotdesk/hotdesk/auth/pam"
	"github.com/hotdesk/hotdesk/auth/pam/pamtest"
	"github.com/hotdesk/hotdesk/internal/testutil"
	"github.com/hotdesk/hotdesk/proto"
)

// TestMain doubles as the PAM helper: the Authenticators of these tests
// re-execute this binary, as hotdeskd does with "hotdeskd pam-helper". It
// runs up to 4 tests at once unless -test.parallel is given: they wait on
// helper processes and pam_unix's fail delay far more than they compute.
func TestMain(m *testing.M) {
	if os.Getenv("HOTDESK_PAM_HELPER") != "1" {
		testutil.RaiseParallel(4)
	}
	pamtest.Main(m)
}

func needMatrix(t *testing.T) {
	t.Helper()
	testutil.NeedMatrix(t)
}

func needRoot(t *testing.T) {
	t.Helper()
	testutil.NeedRoot(t, "needs root for real users and pam_unix")
	testutil.NeedTools(t, "useradd", "userdel", "chpasswd", "chage")
}

// confDir writes PAM service files (name → content) into a fresh directory.
func confDir(t *testing.T, services map[string]string) string {
	t.Helper()
	dir := t.TempDir()
	for name, content := range services {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

// passdb writes a pam_matrix password file.
func passdb(t *testing.T, lines ...string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "passdb")
	if err := os.WriteFile(p, []byte(strings.Join(lines, "\n")+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// matrixService returns a service file authenticating against db.
func matrixService(db string) string {
	// pam_succeed_if asks for the login name (pam_get_user) when PAM_USER
	// is not set; pam_matrix itself does not.
	return "auth requisite pam_succeed_if.so quiet user != root\n" + testutil.MatrixStack(db)
}

// testModule builds testdata/pam_hdtest.c into a shared object.
func testModule(t *testing.T) string {
	t.Helper()
	cc := os.Getenv("CC")
	if cc == "" {
		cc = "gcc"
	}
	testutil.NeedTools(t, cc)
	out := filepath.Join(t.TempDir(), "pam_hdtest.so")
	if b, err := exec.Command(cc, "-shared", "-fPIC", "-Wall", "-o", out, "testdata/pam_hdtest.c", "-lpam").CombinedOutput(); err != nil {
		t.Fatalf("build pam_hdtest: %v\n%s", err, b)
	}
	return out
}

// newAuth returns an Authenticator over dir that re-executes this binary.
func newAuth(t *testing.T, cfg pam.Config) *pam.Authenticator {
	t.Helper()
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	// The marker argument lets a test find its helpers in /proc.
	cfg.HelperCommand = []string{exe, "pam-helper", helperMarker(t)}
	// GORACE: a race-enabled helper would otherwise sleep 1 s at exit.
	cfg.HelperEnv = append(cfg.HelperEnv, "HOTDESK_PAM_HELPER=1", "GORACE=atexit_sleep_ms=0")
	if cfg.Logger == nil {
		cfg.Logger = testutil.Logger(t, "pam", hclog.Debug)
	}
	a, err := pam.New(cfg)
	if err != nil {
		t.Fatalf("pam.New: %v", err)
	}
	return a
}

// helperMarker is the argument that tags t's helper processes: this test
// process's pid too, or a run of the same test beside it (another
// checkout's, CI's) would count its helpers as ours.
func helperMarker(t *testing.T) string { return fmt.Sprintf("hdmark=%d/%s", os.Getpid(), t.Name()) }

// noHelpers fails if a helper process of t (or a process with marker) is alive.
func noHelpers(t *testing.T, markers ...string) {
	t.Helper()
	// SIGKILL is delivered asynchronously: a process killed a moment ago
	// may still be listed, so allow it a bounded time to go.
	deadline := time.Now().Add(10 * time.Second)
	for _, m := range append(markers, helperMarker(t)) {
		pids := processesWith(t, m)
		for len(pids) > 0 && time.Now().Before(deadline) {
			time.Sleep(50 * time.Millisecond)
			pids = processesWith(t, m)
		}
		if len(pids) > 0 {
			t.Errorf("processes matching %q still alive 10 s after the login ended: %v; want none", m, pids)
		}
	}
}

// prompt is one message seen by the scripted conversation.
type prompt struct {
	Style proto.PromptStyle
	Text  string
}

// script is a Conversation answering echo-on prompts with user and echo-off
// prompts with the next of answers; it records every prompt.
type script struct {
	user    string
	answers []string
	// block makes the conversation wait for ctx at the first echo-off prompt
	// (the person walks away, or the card is pulled).
	block bool
	// err makes every answered prompt fail (the terminal disconnected).
	err error
	// by answers an echo-off prompt by its text (substring → answer)
	// instead of answers, when set.
	by map[string]string
	// answered is closed after the last scripted answer was handed out.
	answered chan struct{}

	mu   sync.Mutex
	seen []prompt
	once sync.Once
}

func newScript(user string, answers ...string) *script {
	return &script{user: user, answers: answers, answered: make(chan struct{})}
}

func (s *script) Prompt(ctx context.Context, style proto.PromptStyle, text string) (string, error) {
	s.mu.Lock()
	s.seen = append(s.seen, prompt{style, text})
	s.mu.Unlock()
	switch style {
	case proto.PromptInfo, proto.PromptError:
		return "", nil
	case proto.PromptEchoOn:
		return s.user, nil
	}
	if s.block {
		s.once.Do(func() { close(s.answered) })
		<-ctx.Done()
		return "", ctx.Err()
	}
	if s.err != nil {
		return "", s.err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	for sub, a := range s.by {
		if strings.Contains(text, sub) {
			return a, nil
		}
	}
	if len(s.answers) == 0 {
		return "", fmt.Errorf("script: no answer left for %q", text)
	}
	a := s.answers[0]
	s.answers = s.answers[1:]
	if len(s.answers) == 0 {
		s.once.Do(func() { close(s.answered) })
	}
	return a, nil
}

func (s *script) prompts() []prompt {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.seen)
}

// req is a request from terminal term.
func req(user string) auth.Request {
	return auth.Request{Token: "uid.0a0b0c0d", User: user, TerminalID: "term-1", RemoteAddr: "192.0.2.7:4242"}
}

// processesWith reports the pids whose command line contains marker.
func processesWith(t *testing.T, marker string) []string {
	t.Helper()
	ents, err := os.ReadDir("/proc")
	if err != nil {
		t.Fatal(err)
	}
	var pids []string
	for _, e := range ents {
		b, err := os.ReadFile(filepath.Join("/proc", e.Name(), "cmdline"))
		if err != nil {
			continue
		}
		if strings.Contains(strings.ReplaceAll(string(b), "\x00", " "), marker) {
			pids = append(pids, e.Name())
		}
	}
	return pids
}
