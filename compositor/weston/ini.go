package weston

import (
	"fmt"
	"os"
	"path/filepath"
	"syscall"
)

// sessionIni is a desktop's weston.ini when the administrator gives weston
// none: weston's defaults (as with --no-config) but for the input method.
//
// Weston starts two helper clients of its own for every desktop: the
// desktop shell (background, panel, launchers: the desktop itself) and
// weston-keyboard, an on-screen keyboard for touch screens, as its input
// method. Thin clients have keyboards, and every helper is a process per
// desktop (about 11 MB resident) and one more client weston 10's RDP
// backend can kill: it gives each RDP peer a wl_seat and destroys the
// global at once when the peer leaves, and a client still binding it (a
// peer that left right after it came; slower under load) dies of "invalid
// global wl_seat". weston-keyboard is respawned ("input_method
// disconnected, respawning..."), five times in ten seconds at most; an
// empty path starts none.
const sessionIni = `# Written by hotdesk for this desktop; weston's defaults otherwise.
# No on-screen keyboard (weston-keyboard): thin clients have keyboards.
[input-method]
path=
`

// writeIni writes the session's weston.ini into its state directory, owned
// as its other files are (by the desktop's account when it runs as one:
// weston reads it after it dropped root), and returns its path.
func writeIni(s *session, uid, gid int) (string, error) {
	path := filepath.Join(s.dir, iniName)
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL|syscall.O_NOFOLLOW, 0o600)
	if err != nil {
		return "", fmt.Errorf("weston.ini: %w", err)
	}
	_, err = f.WriteString(sessionIni)
	if err == nil && uid >= 0 {
		err = f.Chown(uid, gid)
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return "", fmt.Errorf("weston.ini: %w", err)
	}
	return path, nil
}
