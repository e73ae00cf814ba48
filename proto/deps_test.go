package proto_test

import (
	"os"
	"os/exec"
	"strings"
	"testing"
)

// TestNoCgoDeps keeps cgo at the edges: proto must not link PC/SC, PAM or
// any other non-standard package with cgo files.
func TestNoCgoDeps(t *testing.T) {
	gobin, err := exec.LookPath("go")
	if err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("go tool not found: %v", err)
		}
		t.Skipf("go tool not found: %v", err)
	}
	out, err := exec.Command(gobin, "list", "-deps", "-f", "{{.ImportPath}} {{.Standard}} {{len .CgoFiles}}", "github.com/hotdesk/hotdesk/proto").CombinedOutput()
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
			t.Errorf("proto depends on cgo package %s", path)
		}
		for _, banned := range []string{"scard", "pam", "hotdesk/auth", "hotdesk/registry", "go.etcd.io"} {
			if strings.Contains(path, banned) {
				t.Errorf("proto depends on %s", path)
			}
		}
	}
}
