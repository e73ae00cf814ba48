package burstlog

import (
	"bytes"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"
)

func TestOneLinePerKindPerInterval(t *testing.T) {
	var out bytes.Buffer
	now := time.Unix(1000, 0)
	l := New(hclog.New(&hclog.LoggerOptions{Output: &out}), 10*time.Second, func() time.Time { return now })
	if !l.Warn("a", "refused") {
		t.Fatal("the first event of a burst was not logged")
	}
	for range 5 {
		if l.Warn("a", "refused") {
			t.Fatal("an event inside the interval was logged")
		}
	}
	if !l.Warn("b", "other") {
		t.Fatal("another kind was held back by the first")
	}
	now = now.Add(10 * time.Second)
	if !l.Warn("a", "refused") {
		t.Fatal("no line after the interval")
	}
	lines := strings.Split(strings.TrimSpace(out.String()), "\n")
	if len(lines) != 3 || !strings.Contains(lines[2], "count=6") || !strings.Contains(lines[2], "limit=a") {
		t.Fatalf("lines = %q; want 3, the last counting the 6 events of kind a", lines)
	}
}
