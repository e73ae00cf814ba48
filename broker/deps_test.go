package broker

import (
	"os/exec"
	"strings"
	"testing"
)

// TestNoCgoDeps keeps cgo at the edges: the broker and the registry must
// not link PC/SC, PAM or any other non-standard package with cgo files, so
// they build and run anywhere the daemon's pure-Go core does.
func TestNoCgoDeps(t *testing.T) {
	for _, pkg := range []string{"github.com/hotdesk/hotdesk/broker", "github.com/hotdesk/hotdesk/registry"} {
		out, err := exec.Command("go", "list", "-deps", "-f", "{{.ImportPath}} {{.Standard}} {{len .CgoFiles}}", pkg).CombinedOutput()
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
			if strings.Contains(f[0], "ebfe/scard") || strings.Contains(f[0], "msteinert/pam") {
				t.Errorf("%s depends on %s", pkg, f[0])
			}
		}
	}
}
