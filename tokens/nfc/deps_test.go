package nfc_test

import (
	"os"
	"os/exec"
	"strings"
	"testing"
)

// TestNoCgoDeps keeps tokens/nfc and tokens/pcsc/vcard pure Go: phone apps,
// tests and tools use them without pcsc-lite.
func TestNoCgoDeps(t *testing.T) {
	gobin, err := exec.LookPath("go")
	if err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("go tool not found: %v", err)
		}
		t.Skipf("go tool not found: %v", err)
	}
	for _, pkg := range []string{"github.com/hotdesk/hotdesk/tokens/nfc", "github.com/hotdesk/hotdesk/tokens/pcsc/vcard"} {
		out, err := exec.Command(gobin, "list", "-deps", "-f", "{{.ImportPath}} {{.Standard}} {{len .CgoFiles}}", pkg).CombinedOutput()
		if err != nil {
			t.Fatalf("go list %s: %v\n%s", pkg, err, out)
		}
		for _, line := range strings.Split(strings.TrimSpace(string(out)), "\n") {
			f := strings.Fields(line)
			if len(f) != 3 {
				t.Fatalf("go list line %q", line)
			}
			path, std, cgoFiles := f[0], f[1] == "true", f[2]
			if !std && cgoFiles != "0" {
				t.Errorf("%s depends on cgo package %s", pkg, path)
			}
			if strings.Contains(path, "scard") {
				t.Errorf("%s depends on %s", pkg, path)
			}
		}
	}
}
