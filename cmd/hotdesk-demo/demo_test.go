package main

import (
	"context"
	"errors"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/hotdesk/hotdesk/internal/testutil"
	"github.com/hotdesk/hotdesk/tokens/pcsc/pcscdtest"
)

// TestMain removes the binaries the tests built.
func TestMain(m *testing.M) {
	os.Exit(testutil.RunWithBuilds(m))
}

// buildBinaries builds the real commands once per test process.
func buildBinaries(t *testing.T) string {
	t.Helper()
	testutil.NeedTools(t, "weston")
	return testutil.BuildHotdesk(t)
}

// TestDemoScript runs the scripted hot-desk of `make demo` against the real
// binaries: it fails if any step of the lifecycle does not happen.
//
// The demos run side by side: each has its own directory (state, sockets,
// PAM service), free ports and, for the card demo, its own private pcscd
// with vpcd on free ports; the desktops of both run as the local user
// "demo" when it exists (the card demo adds it and leaves it), else as
// pooled kiosk accounts, which the daemons share safely (one lock file per
// account across processes).
func TestDemoScript(t *testing.T) {
	t.Parallel()
	bin := buildBinaries(t)
	dir := t.TempDir()
	// With -v's copy of the daemons' logs (it once killed the daemon at
	// its first line after the start: the copy's file closed under it).
	var logs testutil.LockedBuffer
	d := &demo{bin: bin, dir: dir, verbose: &logs}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	defer d.stopAll()
	if err := d.script(ctx); err != nil {
		t.Fatalf("%v\nthe daemons' logs:\n%s", err, logs.String())
	}
	if !strings.Contains(logs.String(), "hotdeskd ready") {
		t.Fatalf("-v copied none of the daemons' logs:\n%s", logs.String())
	}
}

// TestCardDemo runs `make demo-card`: a virtual card through real pcscd,
// the agents and the daemon.
func TestCardDemo(t *testing.T) {
	t.Parallel()
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
