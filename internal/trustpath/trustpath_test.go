package trustpath

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/hotdesk/hotdesk/internal/testutil"
)

// other is a uid that is neither root nor the test's (nobody).
const other = 65534

// TestCheck: what root and this user alone can change passes; a file,
// directory or link another user owns or may write, anywhere on the way,
// is refused.
func TestCheck(t *testing.T) {
	t.Parallel()
	testutil.NeedRoot(t, "needs root (files of another uid)")
	dir := t.TempDir()
	mk := func(rel string, mode os.FileMode) string {
		t.Helper()
		p := filepath.Join(dir, rel)
		var err error
		if strings.HasSuffix(rel, "/") {
			err = os.Mkdir(p, mode)
		} else {
			err = os.WriteFile(p, []byte("#!/bin/sh\n"), mode)
		}
		if err == nil {
			err = os.Chmod(p, mode) // whatever the umask
		}
		if err != nil {
			t.Fatal(err)
		}
		return filepath.Clean(p)
	}
	chown := func(p string) {
		t.Helper()
		if err := os.Lchown(p, other, other); err != nil {
			t.Fatal(err)
		}
	}
	link := func(to, rel string) string {
		t.Helper()
		p := filepath.Join(dir, rel)
		if err := os.Symlink(to, p); err != nil {
			t.Fatal(err)
		}
		return p
	}

	good := mk("hook", 0o755)
	mk("bin/", 0o755)
	for _, ok := range []string{
		good,
		link(good, "rootlink"),        // root's link
		filepath.Join(dir, "missing"), // nobody else may create it
		mk("bin/tool", 0o700),         // below a directory of root's
		link("bin/tool", "rellink"),   // relative link of root's
		filepath.Join(mk("sticky/", os.ModeSticky|0o777), "../hook"), // lexical .. through a sticky dir
	} {
		if err := Check(ok); err != nil {
			t.Errorf("Check(%s) = %v; want nil", ok, err)
		}
	}
	// A root file in a sticky world-writable directory cannot be replaced
	// by others; a missing one there can be created by anyone.
	if err := Check(mk("sticky/roots", 0o755)); err != nil {
		t.Errorf("root's file in a sticky directory: %v; want nil", err)
	}

	theirFile := mk("theirs", 0o755)
	chown(theirFile)
	theirDir := mk("theirdir/", 0o755)
	inTheirDir := mk("theirdir/hook", 0o755)
	chown(theirDir)
	theirLink := link(good, "theirlink")
	chown(theirLink)
	theirLinkDir := link(filepath.Join(dir, "bin"), "theirlinkdir")
	chown(theirLinkDir)
	for _, c := range []struct{ path, want string }{
		{theirFile, "belongs to uid 65534"},
		{inTheirDir, "belongs to uid 65534"},
		{theirLink, "a link on the way"},
		{filepath.Join(theirLinkDir, "tool"), "a link on the way"},
		{link(theirLink, "roottotheirs"), "a link on the way"}, // root's link to their link
		{mk("groupw", 0o775), "may be written by others"},
		{mk("worldw", 0o757), "may be written by others"},
		{mk("gwdir/", 0o775) + "/../hook", ""}, // lexically clean: dir/hook, fine
		{filepath.Join(mk("gwdir2/", 0o775), "x"), "may be written by others"},
		{filepath.Join(dir, "sticky", "missing"), "may be written by others"},
		{filepath.Join(dir, "nosuchdir", "hook"), "no such file"},
	} {
		err := Check(c.path)
		switch {
		case c.want == "" && err != nil:
			t.Errorf("Check(%s) = %v; want nil", c.path, err)
		case c.want != "" && (err == nil || !strings.Contains(err.Error(), c.want)):
			t.Errorf("Check(%s) = %v; want an error containing %q", c.path, err, c.want)
		}
	}
	// A file in a group-writable directory, once mk made it.
	inGW := mk("gwdir/hook", 0o755)
	if err := Check(inGW); err == nil || !strings.Contains(err.Error(), "may be written by others") {
		t.Errorf("Check(%s) = %v; want refused (its directory is group-writable)", inGW, err)
	}
}

// TestCheckDir: a directory to be created (with its parents) passes below
// a directory only root may write; below /tmp-like sticky directories, or
// another user's, it does not: they could create it first.
func TestCheckDir(t *testing.T) {
	t.Parallel()
	testutil.NeedRoot(t, "needs root (files of another uid)")
	dir := t.TempDir()
	sticky := testutil.StickyDir(t, filepath.Join(dir, "tmp"))
	theirs := testutil.NobodysDir(t, filepath.Join(sticky, "hotdesk"), 0o700)
	for _, ok := range []string{dir, filepath.Join(dir, "data"), filepath.Join(dir, "data", "sessions")} {
		if err := CheckDir(ok); err != nil {
			t.Errorf("CheckDir(%s) = %v; want nil", ok, err)
		}
	}
	for _, c := range []struct{ path, want string }{
		{filepath.Join(sticky, "data"), "may be written by others"},
		{filepath.Join(sticky, "data", "sessions"), "may be written by others"},
		{theirs, "belongs to uid 65534"}, // created first by them
		{filepath.Join(theirs, "sessions"), "belongs to uid 65534"},
	} {
		if err := CheckDir(c.path); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("CheckDir(%s) = %v; want an error containing %q", c.path, err, c.want)
		}
	}
}

// TestCheckLinkInTheirDir: a link of root's on the way, in a directory
// another user may write, is theirs to replace: root's hook, reached
// through root's link in their directory, runs whatever they link there
// next. The directory holding the link is neither above the path nor above
// what it resolves to, and must be checked too.
func TestCheckLinkInTheirDir(t *testing.T) {
	t.Parallel()
	testutil.NeedRoot(t, "needs root (files of another uid)")
	dir := t.TempDir()
	hook := filepath.Join(dir, "hook")
	if err := os.WriteFile(hook, []byte("#!/bin/sh\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		name string
		mode os.FileMode
		uid  int
		want string
	}{
		{"theirs", 0o755, other, "belongs to uid 65534"},
		{"shared", 0o775, 0, "may be written by others"},
		{"roots", 0o755, 0, ""},
		{"sticky", os.ModeSticky | 0o777, 0, ""}, // root's link there is root's to replace
	} {
		mid := filepath.Join(dir, c.name)
		if err := os.Mkdir(mid, 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.Chmod(mid, c.mode); err != nil {
			t.Fatal(err)
		}
		if err := os.Chown(mid, c.uid, c.uid); err != nil {
			t.Fatal(err)
		}
		// root's links: <name>-entry -> <name>/link -> hook
		if err := os.Symlink(hook, filepath.Join(mid, "link")); err != nil {
			t.Fatal(err)
		}
		entry := filepath.Join(dir, c.name+"-entry")
		if err := os.Symlink(filepath.Join(mid, "link"), entry); err != nil {
			t.Fatal(err)
		}
		err := Check(entry)
		switch {
		case c.want == "" && err != nil:
			t.Errorf("%s: Check(%s) = %v; want nil", c.name, entry, err)
		case c.want != "" && (err == nil || !strings.Contains(err.Error(), c.want)):
			t.Errorf("%s: Check(%s) = %v; want an error containing %q", c.name, entry, err, c.want)
		}
	}
}

// TestCheckDotDotAfterLink: the kernel resolves "link/.." as the parent
// of where the link leads, not lexically: with their link on the way
// (/opt/theirs/../hook), what is run is wherever they point it, below
// their directory, though the path lexically names root's hook.
func TestCheckDotDotAfterLink(t *testing.T) {
	t.Parallel()
	testutil.NeedRoot(t, "needs root (files of another uid)")
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "hook"), []byte("#!/bin/sh\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	sub := filepath.Join(dir, "sub")
	if err := os.Mkdir(sub, 0o755); err != nil {
		t.Fatal(err)
	}
	theirs := filepath.Join(dir, "theirlink")
	if err := os.Symlink(sub, theirs); err != nil {
		t.Fatal(err)
	}
	if err := os.Lchown(theirs, other, other); err != nil {
		t.Fatal(err)
	}
	roots := filepath.Join(dir, "rootlink")
	if err := os.Symlink(sub, roots); err != nil {
		t.Fatal(err)
	}
	if err := Check(theirs + "/../hook"); err == nil || !strings.Contains(err.Error(), "a link on the way") {
		t.Errorf("Check(%s/../hook) = %v; want refused (their link on the way)", theirs, err)
	}
	// root's link to a directory of theirs: its .. is where they say.
	their := filepath.Join(dir, "their")
	if err := os.Mkdir(their, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(filepath.Join(their, "a", "b"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(their, "a", "hook"), []byte("#!/bin/sh\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Chown(their, other, other); err != nil {
		t.Fatal(err)
	}
	deep := filepath.Join(dir, "deeplink")
	if err := os.Symlink(filepath.Join(their, "a", "b"), deep); err != nil {
		t.Fatal(err)
	}
	if err := Check(deep + "/../hook"); err == nil || !strings.Contains(err.Error(), "belongs to uid 65534") {
		t.Errorf("Check(%s/../hook) = %v; want refused (resolves below their directory)", deep, err)
	}
	// root's link to root's directory: fine.
	if err := Check(roots + "/../hook"); err != nil {
		t.Errorf("Check(%s/../hook) = %v; want nil", roots, err)
	}
}
