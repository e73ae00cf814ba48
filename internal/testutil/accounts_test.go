package testutil

import (
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
