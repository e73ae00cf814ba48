package main

import (
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/hotdesk/hotdesk/internal/testutil"
)

// TestNoPCSCBuild checks the split that keeps libpcsclite out of a
// software-token terminal: built with -tags nopcsc the agent does not
// depend on tokens/pcsc or the cgo PC/SC binding, does not link
// libpcsclite, and with -pcsc replaces itself by hotdesk-term-pcsc with
// the same arguments.
func TestNoPCSCBuild(t *testing.T) {
	t.Parallel()
	// After the end-to-end tests' build, which they all wait for: two
	// builds at once would each take the CPU from the other.
	buildBinaries(t)
	out, err := exec.Command("go", "list", "-deps", "-tags", "nopcsc", ".").CombinedOutput()
	if err != nil {
		t.Fatalf("go list: %v\n%s", err, out)
	}
	for _, dep := range strings.Fields(string(out)) {
		if strings.HasSuffix(dep, "tokens/pcsc") || strings.Contains(dep, "ebfe/scard") {
			t.Errorf("the nopcsc build depends on %s", dep)
		}
	}
	dir := t.TempDir()
	bin := filepath.Join(dir, "hotdesk-term")
	if out, err := exec.Command("go", "build", "-tags", "nopcsc", "-o", bin, ".").CombinedOutput(); err != nil {
		t.Fatalf("go build -tags nopcsc: %v\n%s", err, out)
	}
	if out, err := exec.Command("ldd", bin).CombinedOutput(); err == nil && strings.Contains(string(out), "libpcsclite") {
		t.Errorf("the nopcsc build links libpcsclite:\n%s", out)
	}
	args := []string{"-server", "127.0.0.1:1", "-pin", "sha256:00", "-pcsc", "run"}
	if out, err := exec.Command(bin, args...).CombinedOutput(); err == nil || !strings.Contains(string(out), "hotdesk-term-pcsc is not installed") {
		t.Fatalf("-pcsc without the helper: %v %s; want an error naming the helper", err, out)
	}
	// The helper found in ../libexec/hotdesk relative to the binary.
	libexec := filepath.Join(dir, "usr", "libexec", "hotdesk")
	if err := os.MkdirAll(libexec, 0o755); err != nil {
		t.Fatal(err)
	}
	usrBin := filepath.Join(dir, "usr", "bin")
	os.MkdirAll(usrBin, 0o755)
	if err := os.Rename(bin, filepath.Join(usrBin, "hotdesk-term")); err != nil {
		t.Fatal(err)
	}
	script := "#!/bin/sh\necho \"helper pid=$$ args=$*\"\n"
	if err := os.WriteFile(filepath.Join(libexec, "hotdesk-term-pcsc"), []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	cmd, out, err := testutil.OutputRetryingBusy(func() *exec.Cmd {
		return exec.Command(filepath.Join(usrBin, "hotdesk-term"), args...)
	})
	if err != nil {
		t.Fatalf("-pcsc with the helper: %v\n%s", err, out)
	}
	if want := "args=" + strings.Join(args, " "); !strings.Contains(string(out), want) {
		t.Fatalf("helper said %q; want %q", out, want)
	}
	if want := "pid=" + strconv.Itoa(cmd.Process.Pid); !strings.Contains(string(out), want) {
		t.Errorf("helper said %q; want the agent's own pid (%s: exec, not a child)", out, want)
	}
}

// TestCommandLine: --help and --version exit 0, stray words are usage
// errors (exit 2), and the man page documents every flag.
func TestCommandLine(t *testing.T) {
	t.Parallel()
	bin := filepath.Join(buildBinaries(t), "hotdesk-term") // the end-to-end tests' build
	ks := filepath.Join(t.TempDir(), "keys")
	badConf := filepath.Join(t.TempDir(), "term.hcl")
	if err := os.WriteFile(badConf, []byte("servers = [\"h:1\"]\nkeepalive = \"5 sec\"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		args []string
		code int
		want string
	}{
		{[]string{"--help"}, 0, "usage: hotdesk-term [flags] pair CODE"},
		{[]string{"--version"}, 0, "hotdesk-term "},
		{[]string{"version"}, 2, "unknown command"},
		{[]string{"-server", "h:1", "-pin", "sha256:00", "run", "extra"}, 2, "run takes no arguments"},
		{[]string{"--version", "x"}, 2, "takes no arguments"},
		{[]string{"__gendocs", "man"}, 1, "usage: __gendocs"},
		// A key named on the command line that the keystore lacks: refused
		// before anything starts.
		{[]string{"-server", "h:1", "-pin", "sha256:" + strings.Repeat("00", 32), "-keystore", ks, "-insert", "nosuchkey", "run"}, 2, `-insert "nosuchkey"`},
		// A bad config file is not a usage error, and names file:line:column.
		{[]string{"-config", badConf, "run"}, 1, badConf + ":2:1: keepalive"},
	} {
		out, code := testutil.Exec(t, bin, c.args...)
		if code != c.code || !strings.Contains(out, c.want) {
			t.Errorf("hotdesk-term %q: exit %d, %q; want exit %d and %q", c.args, code, out, c.code, c.want)
		}
	}
	dir := t.TempDir()
	if out, err := exec.Command(bin, "__gendocs", "man", dir).CombinedOutput(); err != nil {
		t.Fatalf("__gendocs: %v\n%s", err, out)
	}
	man, err := os.ReadFile(filepath.Join(dir, "hotdesk-term.1"))
	if err != nil {
		t.Fatal(err)
	}
	fs, _ := newFlagSet(&options{}, &stringList{}, &stringList{}, &stringList{}, nil)
	for _, name := range []string{"server", "pin", "pcsc", "remove-grace", "version"} {
		if fs.Lookup(name) == nil {
			t.Fatalf("no flag %s", name)
		}
		if !strings.Contains(string(man), `\-`+strings.ReplaceAll(name, "-", `\-`)) {
			t.Errorf("hotdesk-term.1 does not document -%s", name)
		}
	}
}
