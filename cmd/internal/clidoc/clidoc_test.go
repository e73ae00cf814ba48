package clidoc

import (
	"flag"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

func testPage() *Page {
	fs := flag.NewFlagSet("demo-cmd", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	fs.String("config", "/etc/demo.conf", "configuration `FILE`")
	fs.Bool("json", false, "print JSON")
	fs.Int("n", 3, "how many")
	fs.String("secret", "", "HIDDEN not documented")
	return &Page{
		Name: "demo-cmd", Section: 8, Short: "a demo command",
		Synopsis:    []string{"[flags] token pair", "[flags] server list"},
		Description: "First paragraph with a -dash and a \\backslash.\n.starts with a dot\n\n  literal example\n  second line",
		Flags:       fs,
		Commands: []Command{
			{Name: "token pair", Args: "-user USER", Help: "make a pairing code"},
			{Name: "token list", Help: "list tokens"},
			{Name: "server list", Help: "list servers"},
		},
		Sections: []Section{{Title: "Exit status", Body: "0 or 1."}},
		SeeAlso:  []string{"other(1)", "more(5)"},
	}
}

func TestUsageAndManShareTheFlags(t *testing.T) {
	p := testPage()
	var help, man strings.Builder
	p.Usage(&help)
	if err := p.Man(&man, "1.2.3"); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"-config FILE", "-json", "-n int", `(default "/etc/demo.conf")`, "(default 3)", "token pair -user USER"} {
		if !strings.Contains(help.String(), want) {
			t.Errorf("help lacks %q:\n%s", want, help.String())
		}
	}
	if strings.Contains(help.String(), "secret") || strings.Contains(man.String(), "secret") {
		t.Errorf("a HIDDEN flag is documented")
	}
	m := man.String()
	for _, want := range []string{`.TH "DEMO\-CMD" 8`, `"hotdesk 1.2.3"`, `.BI "\-config " FILE`, `.B \-json`, `\&.starts with a dot`, `\ebackslash`, ".SH EXIT STATUS", ".BR more (5)", ".nf\nliteral example\nsecond line\n.fi"} {
		if !strings.Contains(m, want) {
			t.Errorf("man page lacks %q:\n%s", want, m)
		}
	}
	if _, err := exec.LookPath("man"); err == nil {
		f := filepath.Join(t.TempDir(), "demo-cmd.8")
		os.WriteFile(f, []byte(m), 0o644)
		out, err := exec.Command("man", "--warnings", "-l", f).CombinedOutput()
		if err != nil || strings.Contains(string(out), "warning") {
			t.Errorf("man -l: %v\n%s", err, out)
		}
	}
}

// TestBashCompletion runs the generated script in bash and asks it for
// completions as bash's completion machinery would.
func TestBashCompletion(t *testing.T) {
	bash, err := exec.LookPath("bash")
	if err != nil {
		t.Fatal("bash is required")
	}
	var b strings.Builder
	testPage().Bash(&b)
	cases := []struct {
		words []string
		want  string
	}{
		{[]string{"demo-cmd", ""}, "token server"},
		{[]string{"demo-cmd", "-json", "to"}, "token"},
		{[]string{"demo-cmd", "-config", "x.conf", "token", ""}, "pair list"},
		{[]string{"demo-cmd", "server", "l"}, "list"},
		{[]string{"demo-cmd", "-j"}, "-json"},
		{[]string{"demo-cmd", "-n", ""}, ""},
	}
	for _, c := range cases {
		script := b.String() + "\nCOMP_WORDS=(" + quoteAll(c.words) + ")\nCOMP_CWORD=" + itoa(len(c.words)-1) +
			"\n_demo_cmd\necho \"${COMPREPLY[*]}\"\n"
		out, err := exec.Command(bash, "--norc", "-c", script).CombinedOutput()
		if err != nil {
			t.Fatalf("bash: %v\n%s", err, out)
		}
		if got := strings.TrimSpace(string(out)); got != c.want {
			t.Errorf("complete %q = %q; want %q", c.words, got, c.want)
		}
	}
}

func quoteAll(ws []string) string {
	var q []string
	for _, w := range ws {
		q = append(q, "'"+w+"'")
	}
	return strings.Join(q, " ")
}

func itoa(n int) string { return strings.TrimSpace(strings.Repeat(" ", 0) + string(rune('0'+n))) }

func TestZshCompletionSyntax(t *testing.T) {
	var b strings.Builder
	testPage().Zsh(&b)
	s := b.String()
	for _, want := range []string{"#compdef demo-cmd", "'-config[configuration FILE]:FILE:_files'", `"token") compadd -- pair list ;;`} {
		if !strings.Contains(s, want) {
			t.Errorf("zsh script lacks %q:\n%s", want, s)
		}
	}
	zsh, err := exec.LookPath("zsh")
	if err != nil && os.Getenv("CI") == "true" {
		t.Fatal("zsh is required under CI (make deps installs it)")
	}
	if err == nil {
		f := filepath.Join(t.TempDir(), "_demo")
		os.WriteFile(f, []byte(s), 0o644)
		if out, err := exec.Command(zsh, "-n", f).CombinedOutput(); err != nil {
			t.Errorf("zsh -n: %v\n%s", err, out)
		}
	}
}

func TestMainDispatch(t *testing.T) {
	p := testPage()
	if ok, err := Main([]string{"-json"}, "v", p); ok || err != nil {
		t.Fatalf("Main(-json) = %v, %v; want not handled", ok, err)
	}
	if ok, err := Main([]string{GenDocsArg, "man"}, "v", p); !ok || err == nil {
		t.Fatalf("Main(__gendocs man) = %v, %v; want a usage error", ok, err)
	}
	if ok, err := Main([]string{GenDocsArg, "pdf", t.TempDir()}, "v", p); !ok || err == nil {
		t.Fatalf("Main(__gendocs pdf) = %v, %v; want an error", ok, err)
	}
	dir := t.TempDir()
	for _, kind := range []string{"man", "bash", "zsh"} {
		if ok, err := Main([]string{GenDocsArg, kind, dir}, "v", p); !ok || err != nil {
			t.Fatalf("Main(__gendocs %s) = %v, %v", kind, ok, err)
		}
	}
	for _, f := range []string{"demo-cmd.8", "demo-cmd", "_demo-cmd"} {
		if _, err := os.Stat(filepath.Join(dir, f)); err != nil {
			t.Errorf("missing %s: %v", f, err)
		}
	}
}

func TestConfigPage(t *testing.T) {
	sample := `# demo.hcl: a demo.
#
# Second paragraph.

# The data directory.
data_dir = "/var/lib/demo"

# Optional name.
# name = "x"

etcd {
  # Endpoints, e.g.:
  #   one
  #   two
  endpoints = []

  embedded {
    client_url = "http://127.0.0.1:1"
  }
}

# Readers at this host.
# seat "console" {
#   readers = []
# }
`
	p := ConfigPage("demo.hcl", 5, "demo config", sample, nil, nil)
	if !strings.Contains(p.Description, "Second paragraph.") {
		t.Errorf("description = %q", p.Description)
	}
	var titles []string
	for _, s := range p.Sections {
		titles = append(titles, s.Title)
	}
	if got, want := strings.Join(titles, "|"), "SETTINGS|etcd { }|seat"; got != want {
		t.Fatalf("sections = %q; want %q", got, want)
	}
	etcd := p.Sections[1].Body
	for _, want := range []string{"Endpoints, e.g.:\n\n    one\n    two\n\n    endpoints = []", "    embedded {", "client_url"} {
		if !strings.Contains(etcd, want) {
			t.Errorf("etcd section lacks %q:\n%s", want, etcd)
		}
	}
	if strings.Contains(etcd, "etcd {") {
		t.Errorf("the block header is repeated in its section:\n%s", etcd)
	}
	if !strings.Contains(p.Sections[0].Body, `  # name = "x"`) {
		t.Errorf("a commented-out setting is not an example:\n%s", p.Sections[0].Body)
	}
}
