package testutil

import (
	"os/exec"
	"regexp"
	"strings"
	"testing"
)

func TestWithOwnKioskAccounts(t *testing.T) {
	prefixLine := regexp.MustCompile(`kiosk_account_prefix = "hdt[a-z]{5}"`)
	for _, tc := range []struct {
		name, in string
		blocks   int // compositor blocks expected
	}{
		{"no compositor block", "server_id = \"x\"\n", 1},
		{"a compositor block", "compositor {\n  backend = \"rdp\"\n}\n", 1},
		{"a prefix already", "compositor {\n  run_as_user = true\n  kiosk_account_prefix = \"hdkiosk\"\n}\n", 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := WithOwnKioskAccounts(t, tc.in)
			if n := len(prefixLine.FindAllString(got, -1)); n != 1 {
				t.Fatalf("got %q; want exactly one prefix of the test's own", got)
			}
			if strings.Contains(got, `"hdkiosk"`) {
				t.Fatalf("got %q; the shared prefix is still there", got)
			}
			if n := strings.Count(got, "compositor {"); n != tc.blocks {
				t.Fatalf("got %q: %d compositor blocks; want %d", got, n, tc.blocks)
			}
		})
	}
}

// TestRemoveAccountAfter: an account a test creates is gone after it, one
// that existed before the test stays.
func TestRemoveAccountAfter(t *testing.T) {
	NeedRoot(t, "needs root (useradd)")
	name := KioskAccountPrefix(t) + "x" // a fresh name
	t.Run("creates", func(t *testing.T) {
		RemoveAccountAfter(t, name)
		if out, err := exec.Command("useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", name).CombinedOutput(); err != nil {
			t.Fatalf("useradd: %v: %s", err, out)
		}
		RemoveAccountAfter(t, name) // exists now: not this call's to remove
	})
	if exec.Command("id", name).Run() == nil {
		t.Fatalf("%s still exists after the test that created it", name)
	}
	t.Run("keeps", func(t *testing.T) {
		RemoveAccountAfter(t, "nobody") // exists: not the test's
	})
	if exec.Command("id", "nobody").Run() != nil {
		t.Fatal("nobody was removed by a test that did not create it")
	}
}
