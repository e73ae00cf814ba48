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
	free, dev, err := Free(dir)
	if err != nil || free == 0 {
		t.Fatalf("Free = %d, %v; want the room left", free, err)
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
