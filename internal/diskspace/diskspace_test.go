package diskspace

import (
	"os"
	"syscall"
	"testing"
)

func TestLevelOf(t *testing.T) {
	t.Parallel()
	for _, c := range []struct {
		free uint64
		want Level
	}{{0, Full}, {Critical - 1, Full}, {Critical, LowSpace}, {Low - 1, LowSpace}, {Low, OK}, {1 << 40, OK}} {
		if got := LevelOf(c.free); got != c.want {
			t.Errorf("LevelOf(%d) = %v; want %v", c.free, got, c.want)
		}
	}
}

func TestRoomLevel(t *testing.T) {
	t.Parallel()
	for _, c := range []struct {
		room Room
		want Level
		text string
	}{
		{Room{Bytes: 1 << 30, Files: NoFileLimit}, OK, "1.0 GiB"},
		{Room{Bytes: 1 << 30, Files: LowFiles}, OK, "1.0 GiB"},
		{Room{Bytes: 1 << 30, Files: LowFiles - 1}, LowSpace, "1.0 GiB, 9999 files"},
		{Room{Bytes: 1 << 30, Files: 0}, Full, "1.0 GiB, 0 files"},
		{Room{Bytes: Critical - 1, Files: 1 << 20}, Full, "63 MiB"},
	} {
		if got := c.room.Level(); got != c.want {
			t.Errorf("%+v.Level() = %v; want %v", c.room, got, c.want)
		}
		if got := c.room.String(); got != c.text {
			t.Errorf("%+v.String() = %q; want %q", c.room, got, c.text)
		}
	}
}

func TestFormat(t *testing.T) {
	t.Parallel()
	for n, want := range map[uint64]string{0: "0 B", 1023: "1023 B", 4 << 10: "4 KiB", 12<<20 + 5: "12 MiB", 3<<30 + 1<<29: "3.5 GiB", 12 << 30: "12 GiB"} {
		if got := Format(n); got != want {
			t.Errorf("Format(%d) = %q; want %q", n, got, want)
		}
	}
}

// TestFree reads the real filesystem of a directory: some room, and the
// device stat reports.
func TestFree(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	room, dev, err := Free(dir)
	if err != nil || room.Bytes == 0 || room.Files == 0 {
		t.Fatalf("Free = %+v, %v; want the room left", room, err)
	}
	fi, err := os.Stat(dir)
	if err != nil {
		t.Fatal(err)
	}
	if want := uint64(fi.Sys().(*syscall.Stat_t).Dev); dev != want {
		t.Fatalf("dev = %d; want %d", dev, want)
	}
	if _, _, err := Free(dir + "/missing"); err == nil {
		t.Fatal("Free of a missing directory: no error")
	}
}
