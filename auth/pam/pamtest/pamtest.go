// Package pamtest lets a test binary serve as the PAM helper of the
// pam.Authenticators its tests create, as hotdeskd serves as its own with
// "hotdeskd pam-helper". Tests point Config.HelperCommand at the test binary
// (os.Args[0] or os.Executable) and call Main from TestMain.
package pamtest

import (
	"os"
	"testing"

	"github.com/hotdesk/hotdesk/auth/pam"
)

// Main runs the tests of m and exits with their code; in a helper process
// (the Authenticator starts every helper with HOTDESK_PAM_HELPER=1) it runs
// pam.HelperMain instead. Call it from TestMain, which runs on the main
// goroutine, as HelperMain requires.
func Main(m *testing.M) {
	if os.Getenv("HOTDESK_PAM_HELPER") == "1" {
		os.Exit(pam.HelperMain())
	}
	os.Exit(m.Run())
}
