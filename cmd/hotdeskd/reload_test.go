package main

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/hotdesk/hotdesk/cmd/hotdeskd/config"
)

// A reload of an unchanged file must not report "restart needed", also when
// a policy holds pointer-valued settings (reauth_on_hotdesk is a *bool), and a
// real change must still be reported.
func TestRestartNeededComparesValues(t *testing.T) {
	t.Parallel()
	src, err := os.ReadFile(filepath.Join("config", "testdata", "full.hcl"))
	if err != nil {
		t.Fatal(err)
	}
	load := func(s []byte) *config.Config {
		t.Helper()
		c, err := config.Parse(s, "full.hcl")
		if err != nil {
			t.Fatal(err)
		}
		return c
	}
	a, b := load(src), load(src)
	if restartNeeded(a, b) {
		t.Fatal("restartNeeded = true for two loads of the same file")
	}
	b.LogLevel = "trace"
	if restartNeeded(a, b) {
		t.Fatal("restartNeeded = true for a log level change, which applies at once")
	}
	c := load(src)
	c.Session.SuspendTimeout++
	if !restartNeeded(a, c) {
		t.Fatal("restartNeeded = false for a changed session setting")
	}
}
