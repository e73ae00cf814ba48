package main

import (
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/hotdesk/hotdesk/internal/testutil"

	"github.com/hotdesk/hotdesk/cmd/hotdeskd/config"
)

// TestCommandLine runs the real binary, stamped as the Makefile stamps it:
// --version prints the stamp, --help exits 0, a stray word ("hotdeskd
// version") is a usage error with exit status 2 and starts nothing.
func TestCommandLine(t *testing.T) {
	t.Parallel()
	bin := filepath.Join(buildBinaries(t), "hotdeskd")
	const stamp = testutil.Stamp
	for _, c := range []struct {
		args []string
		code int
		want string
	}{
		{[]string{"--version"}, 0, "hotdeskd " + stamp + "\n"},
		{[]string{"-version"}, 0, "hotdeskd " + stamp + "\n"},
		{[]string{"--help"}, 0, "usage: hotdeskd"},
		{[]string{"version"}, 2, `unexpected argument "version"`},
		{[]string{"-config", "/nonexistent.hcl", "run"}, 2, "usage: hotdeskd"},
		{[]string{"-no-such-flag"}, 2, "flag provided but not defined"},
		{[]string{"-check", "-fingerprint"}, 2, "exclude each other"},
		{[]string{"-check", "-version"}, 2, "exclude each other"},
		{[]string{"__gendocs", "pdf", t.TempDir()}, 1, "unknown kind"},
	} {
		out, code := testutil.Exec(t, bin, c.args...)
		if code != c.code || !strings.Contains(out, c.want) {
			t.Errorf("hotdeskd %q: exit %d, %q; want exit %d and %q", c.args, code, out, c.code, c.want)
		}
	}

	dir := t.TempDir()
	for _, kind := range []string{"man", "bash", "zsh"} {
		if out, err := exec.Command(bin, "__gendocs", kind, dir).CombinedOutput(); err != nil {
			t.Fatalf("__gendocs %s: %v\n%s", kind, err, out)
		}
	}
	for _, f := range []string{"hotdeskd.8", "hotdesk.hcl.5", "hotdeskd", "_hotdeskd"} {
		if _, err := os.Stat(filepath.Join(dir, f)); err != nil {
			t.Errorf("__gendocs did not write %s: %v", f, err)
		}
	}
	man, _ := os.ReadFile(filepath.Join(dir, "hotdeskd.8"))
	if !strings.Contains(string(man), `"hotdesk `+strings.ReplaceAll(stamp, "-", `\-`)+`"`) {
		t.Errorf("hotdeskd.8 does not carry the version %s:\n%.300s", stamp, man)
	}
}

// TestConfigPageCoversEverySetting: hotdesk.hcl(5) is rendered from
// configs/hotdesk.hcl; every key the config package accepts must appear in
// it, so a new setting cannot ship undocumented.
func TestConfigPageCoversEverySetting(t *testing.T) {
	t.Parallel()
	files, err := filepath.Glob(filepath.Join("config", "*.go"))
	if err != nil {
		t.Fatal(err)
	}
	var src []byte
	for _, f := range files {
		if strings.HasSuffix(f, "_test.go") {
			continue
		}
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		src = append(src, b...)
	}
	var b strings.Builder
	if err := configPage().Man(&b, "test"); err != nil {
		t.Fatal(err)
	}
	page := strings.ReplaceAll(b.String(), `\-`, "-")
	keys := regexp.MustCompile(`hcl:"([a-z_]+),`).FindAllStringSubmatch(string(src), -1)
	if len(keys) < 20 {
		t.Fatalf("found only %d hcl keys in the config package; the pattern is stale", len(keys))
	}
	for _, k := range keys {
		if !regexp.MustCompile(`\b` + k[1] + `\b`).MatchString(page) {
			t.Errorf("hotdesk.hcl(5) does not mention the setting %q", k[1])
		}
	}
}

// TestSampleConfigsLoad: the shipped samples are valid configurations.
func TestSampleConfigsLoad(t *testing.T) {
	t.Parallel()
	for _, f := range []string{"../../configs/hotdesk.hcl", "../../configs/group/hotdesk.hcl"} {
		cfg, err := config.Load(f)
		if err != nil {
			t.Errorf("%s: %v", f, err)
			continue
		}
		if strings.Contains(f, "group") {
			if cfg.UsesEmbeddedEtcd() || cfg.Etcd.CAFile == "" || cfg.Etcd.CertFile == "" || cfg.Etcd.KeyFile == "" {
				t.Errorf("%s: want a real etcd cluster with mTLS, got %+v", f, cfg.Etcd)
			}
		}
	}
}
