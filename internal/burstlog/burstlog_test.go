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

func TestInfoLevel(t *testing.T) {
	var out bytes.Buffer
	now := time.Unix(1000, 0)
	l := New(hclog.New(&hclog.LoggerOptions{Output: &out, Level: hclog.Info}), time.Second, func() time.Time { return now })
	for range 3 {
		l.Info("token_refused", "event", "kind", "token_refused")
	}
	now = now.Add(time.Second)
	l.Info("token_refused", "event", "kind", "token_refused")
	lines := strings.Split(strings.TrimSpace(out.String()), "\n")
	if len(lines) != 2 || !strings.Contains(lines[0], "[INFO]") || !strings.Contains(lines[1], "burst=token_refused") || !strings.Contains(lines[1], "count=3") {
		t.Fatalf("lines = %q; want 2 info lines, the second counting 3", lines)
	}
}
