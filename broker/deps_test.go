package broker

import (
	"os"
	"os/exec"
	"regexp"
	"strings"
	"testing"
)

// TestNoCgoDeps keeps cgo at the edges (tokens/pcsc, auth/pam): the
// packages below must not link PC/SC, PAM or any other non-standard package
// with cgo files, so the core builds and runs anywhere pure Go does. Some
// also must not depend on packages above them in the layering.
func TestNoCgoDeps(t *testing.T) {
	t.Parallel()
	const mod = "github.com/hotdesk/hotdesk/"
	pkgs := map[string][]string{ // package → substrings its dependencies must not contain
		"proto":             {mod + "auth", mod + "registry", "go.etcd.io"},
		"registry":          nil,
		"broker":            nil,
		"auth":              {mod + "auth/pam"},
		"tokens":            nil,
		"tokens/soft":       nil,
		"registry/pairing":  nil,
		"tokens/nfc":        nil,
		"tokens/pcsc/vcard": nil,
		"compositor/weston": nil,
		"compositor/wayray": nil,
	}
	// One go list for all of them: every package of their closure, once,
	// with its own transitive Deps.
	args := []string{"list", "-deps", "-f", "{{.ImportPath}} {{.Standard}} {{len .CgoFiles}} {{join .Deps \",\"}}"}
	for pkg := range pkgs {
		args = append(args, mod+pkg)
	}
	out, err := exec.Command("go", args...).CombinedOutput()
	if err != nil {
		t.Fatalf("go list: %v\n%s", err, out)
	}
	type listed struct {
		cgo  bool // not standard, with cgo files
		deps []string
	}
	all := map[string]listed{}
	for _, line := range strings.Split(strings.TrimSpace(string(out)), "\n") {
		f := strings.Fields(line)
		if len(f) == 3 {
			f = append(f, "") // no dependencies
		}
		if len(f) != 4 {
			t.Fatalf("go list line %q", line)
		}
		var deps []string
		if f[3] != "" {
			deps = strings.Split(f[3], ",")
		}
		all[f[0]] = listed{cgo: f[1] != "true" && f[2] != "0", deps: deps}
	}
	for pkg, banned := range pkgs {
		p, ok := all[mod+pkg]
		if !ok {
			t.Fatalf("go list did not list %s", pkg)
		}
		for _, dep := range append([]string{mod + pkg}, p.deps...) {
			d, ok := all[dep]
			if !ok {
				t.Fatalf("go list did not list %s, a dependency of %s", dep, pkg)
			}
			if d.cgo {
				t.Errorf("%s depends on cgo package %s", pkg, dep)
			}
			for _, b := range append(banned, "ebfe/scard", "msteinert/pam") {
				if strings.Contains(dep, b) {
					t.Errorf("%s depends on %s", pkg, dep)
				}
			}
		}
	}
}

// TestLayering keeps the layers pointing one way: nothing outside broker/
// and the commands depends on the broker (storage, wire and backends are
// below it), and token providers are stateless event sources that never
// reach the registry or etcd.
func TestLayering(t *testing.T) {
	t.Parallel()
	const mod = "github.com/hotdesk/hotdesk/"
	out, err := exec.Command("go", "list", "-deps", "-test=false", "-f", "{{.ImportPath}}: {{join .Deps \" \"}}", mod+"...").CombinedOutput()
	if err != nil {
		t.Fatalf("go list: %v\n%s", err, out)
	}
	checked := 0
	for _, line := range strings.Split(strings.TrimSpace(string(out)), "\n") {
		pkg, deps, ok := strings.Cut(line, ": ")
		if !ok || !strings.HasPrefix(pkg, mod) {
			continue
		}
		rel := strings.TrimPrefix(pkg, mod)
		checked++
		for _, dep := range strings.Fields(deps) {
			if !strings.HasPrefix(rel, "broker") && !strings.HasPrefix(rel, "cmd/") &&
				(dep == mod+"broker" || strings.HasPrefix(dep, mod+"broker/")) {
				t.Errorf("%s imports %s: only the broker and the commands may", rel, dep)
			}
			if strings.HasPrefix(rel, "tokens") &&
				(dep == mod+"registry" || strings.HasPrefix(dep, mod+"registry/") || strings.HasPrefix(dep, "go.etcd.io/")) {
				t.Errorf("%s imports %s: token providers must not reach the registry or etcd", rel, dep)
			}
		}
	}
	if checked < 10 {
		t.Fatalf("checked only %d packages; go list output:\n%s", checked, out)
	}
}

// TestLayeringAsREADME holds the README's Code layout table to the code:
// a package of a folder the table lists imports, of this module, only its
// own folder and what the "may import" column names (`x`: that package,
// `x/`: anything under it; "everything above": the rows above); of
// internal/, the outside packages the column names besides the standard
// library; internal/ is every layer's.
func TestLayeringAsREADME(t *testing.T) {
	t.Parallel()
	const mod = "github.com/hotdesk/hotdesk/"
	b, err := os.ReadFile("../README.md")
	if err != nil {
		t.Fatal(err)
	}
	_, table, ok := strings.Cut(string(b), "| folder | role | may import |")
	if !ok {
		t.Fatal("README.md: no Code layout table")
	}
	table, _, _ = strings.Cut(table, "\n\n")
	type layer struct {
		folder string
		may    []string
	}
	var layers []layer
	tick := regexp.MustCompile("`([^`]+)`")
	for _, row := range strings.Split(table, "\n") {
		cells := strings.Split(row, "|")
		if len(cells) < 5 || !strings.HasPrefix(strings.TrimSpace(cells[1]), "`") {
			continue
		}
		folder := strings.TrimSuffix(tick.FindStringSubmatch(cells[1])[1], "/")
		l := layer{folder: folder}
		may := parenthesized.ReplaceAllString(cells[3], "")
		if strings.Contains(may, "everything") {
			for _, above := range layers {
				l.may = append(l.may, above.folder+"/")
			}
			if strings.TrimSpace(may) == "everything" {
				l.may = append(l.may, "")
			}
		}
		for _, m := range tick.FindAllStringSubmatch(may, -1) {
			l.may = append(l.may, m[1])
		}
		layers = append(layers, l)
	}
	if len(layers) < 6 {
		t.Fatalf("README.md Code layout: %d rows read", len(layers))
	}
	allowed := func(l layer, dep string) bool {
		// internal/: "leaf utilities every layer may use".
		if dep == l.folder || strings.HasPrefix(dep, l.folder+"/") || strings.HasPrefix(dep, "internal/") {
			return true
		}
		for _, m := range l.may {
			if dep == m || strings.HasSuffix(m, "/") && (strings.HasPrefix(dep, m) || dep+"/" == m) || m == "" {
				return true
			}
		}
		return false
	}
	out, err := exec.Command("go", "list", "-f", "{{.ImportPath}}: {{join .Imports \" \"}}", mod+"...").CombinedOutput()
	if err != nil {
		t.Fatalf("go list: %v\n%s", err, out)
	}
	checked := 0
	for _, line := range strings.Split(strings.TrimSpace(string(out)), "\n") {
		pkg, imports, _ := strings.Cut(line, ": ")
		rel := strings.TrimPrefix(pkg, mod)
		for _, l := range layers {
			if rel != l.folder && !strings.HasPrefix(rel, l.folder+"/") {
				continue
			}
			checked++
			for _, dep := range strings.Fields(imports) {
				switch {
				case strings.HasPrefix(dep, mod):
					if d := strings.TrimPrefix(dep, mod); !allowed(l, d) {
						t.Errorf("%s imports %s: README.md's Code layout lets %s/ import %q", rel, d, l.folder, l.may)
					}
				case l.folder == "internal" && strings.Contains(strings.SplitN(dep, "/", 2)[0], "."):
					if !allowed(l, dep) {
						t.Errorf("%s imports %s: README.md's Code layout lets internal/ import %q", rel, dep, l.may)
					}
				}
			}
		}
	}
	if checked < 10 {
		t.Fatalf("checked only %d packages", checked)
	}
}

var parenthesized = regexp.MustCompile(`\([^)]*\)`)
