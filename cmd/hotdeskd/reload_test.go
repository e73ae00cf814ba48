package main

import (
	"os"
	"path/filepath"
	"slices"
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
	if got := restartNeeded(a, b); len(got) != 0 {
		t.Fatalf("restartNeeded = %q for two loads of the same file", got)
	}
	b.LogLevel = "trace"
	if got := restartNeeded(a, b); len(got) != 0 {
		t.Fatalf("restartNeeded = %q for a log level change, which applies at once", got)
	}
	c := load(src)
	c.Session.SuspendTimeout++
	c.MetricsListen = "127.0.0.1:1"
	if got := restartNeeded(a, c); !slices.Equal(got, []string{"metrics_listen", "session.suspend_timeout"}) {
		t.Fatalf("restartNeeded = %q; want the two changed settings named", got)
	}
}
