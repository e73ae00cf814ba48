package testutil

import (
	"fmt"
	"os"
	"path/filepath"
	"testing"
)

// MatrixModule is pam_wrapper's pam_matrix test module (libpam-wrapper): it
// checks passwords against a file of "user:secret:service" lines.
const MatrixModule = "/usr/lib/x86_64-linux-gnu/pam_wrapper/pam_matrix.so"

// NeedMatrix fails the test under CI=true, and skips it otherwise, when
// pam_matrix is not installed.
func NeedMatrix(t testing.TB) {
	t.Helper()
	if _, err := os.Stat(MatrixModule); err != nil {
		SkipOrFail(t, "pam_matrix (libpam-wrapper) missing: %v", err)
	}
}

// MatrixStack is a PAM service that authenticates and admits against the
// pam_matrix database db.
func MatrixStack(db string) string {
	return fmt.Sprintf("auth required %[1]s passdb=%[2]s\naccount required %[1]s passdb=%[2]s\n", MatrixModule, db)
}

// MatrixServices writes the pam_matrix database entries ("user:secret:
// service" lines) to dir/passdb and, in dir/pam.d, one service per name in
// services checking against it (MatrixStack, then extra lines); it returns
// the pam.d directory, as hotdeskd's auth.pam_dir takes it.
func MatrixServices(t testing.TB, dir, entries, extra string, services ...string) string {
	t.Helper()
	pamDir := filepath.Join(dir, "pam.d")
	if err := os.MkdirAll(pamDir, 0o755); err != nil {
		t.Fatal(err)
	}
	db := filepath.Join(dir, "passdb")
	if err := os.WriteFile(db, []byte(entries), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, svc := range services {
		if err := os.WriteFile(filepath.Join(pamDir, svc), []byte(MatrixStack(db)+extra), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return pamDir
}

// PermitAccountsDir writes, in dir/pam.d, a "hotdesk" service that
// authenticates nobody, admits every account and opens every session
// (pam_permit), and returns that directory, as hotdeskd's auth.pam_dir
// takes it: for a test daemon whose card-policy users are not accounts
// of this host (the card policy consults the account stack of its
// service and, with open_session, the default, opens a new desktop's
// session through it: an empty session stack refuses every login).
func PermitAccountsDir(t testing.TB, dir string) string {
	t.Helper()
	pamDir := filepath.Join(dir, "pam.d")
	if err := os.MkdirAll(pamDir, 0o755); err != nil {
		t.Fatal(err)
	}
	stack := "auth required pam_deny.so\naccount required pam_permit.so\nsession required pam_permit.so\n"
	if err := os.WriteFile(filepath.Join(pamDir, "hotdesk"), []byte(stack), 0o644); err != nil {
		t.Fatal(err)
	}
	return pamDir
}
