package testutil

import (
	"strings"
	"testing"

	"github.com/hashicorp/go-hclog"
)

// TestLoggerAfterEnd: a line logged after the test has ended is dropped,
// not a panic; lines before it reach the test's log.
func TestLoggerAfterEnd(t *testing.T) {
	var log hclog.Logger
	rec := &recorder{}
	t.Run("inner", func(t *testing.T) {
		log = hclog.New(&hclog.LoggerOptions{Name: "x", Output: LogWriter(rec.wrap(t))})
		log.Info("during the test")
	})
	log.Info("after the test") // would panic in t.Log without the guard
	if got := strings.Join(rec.lines, "|"); !strings.Contains(got, "during the test") || strings.Contains(got, "after the test") {
		t.Errorf("logged %q; want only the line from during the test", got)
	}
}

// recorder wraps a testing.TB, keeping what is logged through it.
type recorder struct{ lines []string }

type recordingTB struct {
	testing.TB
	r *recorder
}

func (r *recorder) wrap(t testing.TB) testing.TB { return recordingTB{TB: t, r: r} }

func (c recordingTB) Log(args ...any) {
	for _, a := range args {
		c.r.lines = append(c.r.lines, a.(string))
	}
	c.TB.Log(args...)
}
