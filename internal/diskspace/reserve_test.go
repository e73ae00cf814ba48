package diskspace

import (
	"os"
	"os/exec"
	"path/filepath"
	"testing"

	"github.com/hotdesk/hotdesk/internal/testutil"
)

// TestReserve: on a filesystem of 200 MiB, a reserve of 128 MiB takes its
// room (the free space drops by as much) in a file only root reads; a
// second one finds no room, fails and leaves no file; releasing the first
// gives the room back, and releasing it again is nothing.
func TestReserve(t *testing.T) {
	t.Parallel()
	testutil.NeedRoot(t, "mounts a tmpfs")
	testutil.NeedTools(t, "mount", "umount")
	dir := t.TempDir()
	if out, err := exec.Command("mount", "-t", "tmpfs", "-o", "size=200m,mode=0700", "tmpfs", dir).CombinedOutput(); err != nil {
		testutil.SkipOrFail(t, "mount a tmpfs: %v: %s", err, out)
	}
	t.Cleanup(func() { _ = exec.Command("umount", "-l", dir).Run() })
	free := func() uint64 {
		t.Helper()
		room, _, err := Free(dir)
		if err != nil {
			t.Fatal(err)
		}
		return room.Bytes
	}
	before := free()
	r := Reserve{Path: filepath.Join(dir, "reserve"), Size: ReserveSize}
	if r.Held() {
		t.Fatal("Held before Hold")
	}
	if err := r.Hold(); err != nil {
		t.Fatal(err)
	}
	if !r.Held() {
		t.Fatal("not Held after Hold")
	}
	if got := before - free(); got < ReserveSize {
		t.Errorf("the reserve took %d bytes of room; want %d", got, ReserveSize)
	}
	fi, err := os.Stat(r.Path)
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Errorf("reserve file: %v, %v; want mode 0600", fi, err)
	}
	if err := r.Hold(); err != nil { // held already: nothing to do
		t.Errorf("Hold again: %v", err)
	}

	second := Reserve{Path: filepath.Join(dir, "second"), Size: ReserveSize}
	if err := second.Hold(); err == nil {
		t.Fatal("a second reserve found room on a filesystem without it")
	}
	if _, err := os.Lstat(second.Path); !os.IsNotExist(err) {
		t.Errorf("the failed reserve left its file: %v", err)
	}

	if held, err := r.Release(); !held || err != nil {
		t.Fatalf("Release = %v, %v; want true", held, err)
	}
	if got := free(); got < before-1<<20 {
		t.Errorf("free after Release %d; want about %d again", got, before)
	}
	if held, err := r.Release(); held || err != nil {
		t.Fatalf("Release again = %v, %v; want false, nil", held, err)
	}
}

// TestReserveNoFollow: a link where the reserve goes is neither followed
// by Hold nor counted as held.
func TestReserveNoFollow(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	target := filepath.Join(dir, "target")
	if err := os.WriteFile(target, []byte("keep"), 0o644); err != nil {
		t.Fatal(err)
	}
	r := Reserve{Path: filepath.Join(dir, "reserve"), Size: 1 << 20}
	if err := os.Symlink(target, r.Path); err != nil {
		t.Fatal(err)
	}
	if r.Held() {
		t.Error("a link counted as the reserve")
	}
	if err := r.Hold(); err == nil {
		t.Error("Hold followed a link")
	}
	if b, err := os.ReadFile(target); err != nil || string(b) != "keep" {
		t.Errorf("the link's target: %q, %v; want it untouched", b, err)
	}
}

// TestReserveSparse: a file of the reserve's size whose blocks are not
// allocated (sparse, as a filesystem that keeps no room for zeros leaves
// it) holds no room; Hold allocates them.
func TestReserveSparse(t *testing.T) {
	t.Parallel()
	r := Reserve{Path: filepath.Join(t.TempDir(), "reserve"), Size: 1 << 20}
	f, err := os.Create(r.Path)
	if err != nil {
		t.Fatal(err)
	}
	if err := f.Truncate(r.Size); err != nil {
		t.Fatal(err)
	}
	f.Close()
	if r.Held() {
		t.Fatal("a sparse file counted as the reserve")
	}
	if err := r.Hold(); err != nil {
		t.Fatal(err)
	}
	if !r.Held() {
		t.Fatal("not Held after Hold")
	}
}
