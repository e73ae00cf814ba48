package broker

import (
	"os/exec"
	"strings"
	"testing"
)

// TestNoCgoDeps keeps cgo at the edges (tokens/pcsc, auth/pam): the
// packages below must not link PC/SC, PAM or any other non-standard package
// with cgo files, so the core builds and runs anywhere pure Go does. Some
// also must not depend on packages above them in the layering.
func TestNoCgoDeps(t *testing.T) {
	const mod = "github.com/hotdesk/hotdesk/"
	pkgs := map[string][]string{ // package → substrings its dependencies must not contain
		"proto":             {mod + "auth", mod + "registry", "go.etcd.io"},
		"registry":          nil,
		"broker":            nil,
		"auth":              {mod + "auth/pam"},
		"tokens":            nil,
		"tokens/soft":       nil,
		"tokens/pairing":    nil,
		"tokens/nfc":        nil,
		"tokens/pcsc/vcard": nil,
		"compositor/weston": nil,
		"compositor/wayray": nil,
	}
	for pkg, banned := range pkgs {
		out, err := exec.Command("go", "list", "-deps", "-f", "{{.ImportPath}} {{.Standard}} {{len .CgoFiles}}", mod+pkg).CombinedOutput()
		if err != nil {
			t.Fatalf("go list %s: %v\n%s", pkg, err, out)
		}
		for _, line := range strings.Split(strings.TrimSpace(string(out)), "\n") {
			f := strings.Fields(line)
			if len(f) != 3 {
				t.Fatalf("go list line %q", line)
			}
			if f[1] != "true" && f[2] != "0" {
				t.Errorf("%s depends on cgo package %s", pkg, f[0])
			}
			for _, b := range append(banned, "ebfe/scard", "msteinert/pam") {
				if strings.Contains(f[0], b) {
					t.Errorf("%s depends on %s", pkg, f[0])
				}
			}
		}
	}
}
