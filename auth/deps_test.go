package auth_test

import (
	"os"
	"os/exec"
	"strings"
	"testing"
)

// TestNoCgoDeps keeps PAM at the edge: the broker imports auth, so auth must
// not link auth/pam (cgo) or any other cgo package.
func TestNoCgoDeps(t *testing.T) {
	gobin, err := exec.LookPath("go")
	if err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("go tool not found: %v", err)
		}
		t.Skipf("go tool not found: %v", err)
	}
	out, err := exec.Command(gobin, "list", "-deps", "-f", "{{.ImportPath}} {{.Standard}} {{len .CgoFiles}}", "github.com/hotdesk/hotdesk/auth").CombinedOutput()
	if err != nil {
		t.Fatalf("go list: %v\n%s", err, out)
	}
	for _, line := range strings.Split(strings.TrimSpace(string(out)), "\n") {
		f := strings.Fields(line)
		if len(f) != 3 {
			t.Fatalf("go list line %q", line)
		}
		path, std, cgoFiles := f[0], f[1] == "true", f[2]
		if !std && cgoFiles != "0" {
			t.Errorf("auth depends on cgo package %s", path)
		}
		if strings.Contains(path, "pam") || strings.Contains(path, "scard") {
			t.Errorf("auth depends on %s", path)
		}
	}
}
