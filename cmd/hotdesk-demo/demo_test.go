package main

import (
	"context"
	"errors"
	"os"
	"os/exec"
	"testing"
	"time"

	"github.com/hotdesk/hotdesk/internal/testutil"
	"github.com/hotdesk/hotdesk/tokens/pcsc/pcscdtest"
)

// buildBinaries builds the real commands into a temporary directory.
func buildBinaries(t *testing.T) string {
	t.Helper()
	testutil.NeedTools(t, "weston")
	bin := t.TempDir()
	cmd := exec.Command("go", "build", "-o", bin+"/", "../hotdeskd", "../hotdesk-term", "../hotdeskctl")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	return bin
}

// TestDemoScript runs the scripted hot-desk of `make demo` against the real
// binaries: it fails if any step of the lifecycle does not happen.
func TestDemoScript(t *testing.T) {
	bin := buildBinaries(t)
	dir := t.TempDir()
	d := &demo{bin: bin, dir: dir}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	defer d.stopAll()
	if err := d.script(ctx); err != nil {
		t.Fatal(err)
	}
}

// TestCardDemo runs `make demo-card`: a virtual card through real pcscd,
// the agents and the daemon.
func TestCardDemo(t *testing.T) {
	bin := buildBinaries(t)
	d := &demo{bin: bin, dir: t.TempDir()}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	defer d.stopAll()
	if err := d.cardScript(ctx); err != nil {
		if errors.Is(err, pcscdtest.ErrMissing) && os.Getenv("CI") != "true" {
			t.Skip(err)
		}
		t.Fatal(err)
	}
}
