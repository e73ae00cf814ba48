package version

import "testing"

func TestStampedVersionWins(t *testing.T) {
	Version = "1.2.3"
	defer func() { Version = "" }()
	if got := compute(); got != "1.2.3" {
		t.Fatalf("compute() = %q, want the stamped 1.2.3", got)
	}
}

func TestUnstampedVersionIsDev(t *testing.T) {
	if got := compute(); len(got) < 3 || got[:3] != "dev" {
		t.Fatalf("compute() = %q, want a dev version", got)
	}
}
