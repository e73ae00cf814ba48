package testutil

import (
	"io"
	"strings"
	"sync"
	"testing"

	"github.com/hashicorp/go-hclog"
)

// Logger returns an hclog logger named name, at level, writing each line
// into t's log. Lines logged after t has ended (a goroutine of the code
// under test still running) are dropped: testing panics on a Log after the
// end. Call it before registering the cleanup that stops what logs, so that
// the logger falls silent only after that cleanup has run.
func Logger(t testing.TB, name string, level hclog.Level) hclog.Logger {
	return hclog.New(&hclog.LoggerOptions{Name: name, Level: level, Output: LogWriter(t)})
}

// LogWriter is the io.Writer behind Logger: each Write is one t.Log line
// (its trailing newline trimmed) until t has ended.
func LogWriter(t testing.TB) io.Writer {
	w := &logWriter{t: t}
	t.Cleanup(func() {
		w.mu.Lock()
		w.done = true
		w.mu.Unlock()
	})
	return w
}

// logWriter writes into a test's log until the test has ended.
type logWriter struct {
	mu   sync.Mutex
	t    testing.TB
	done bool
}

func (w *logWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if !w.done {
		w.t.Log(strings.TrimRight(string(p), "\n"))
	}
	return len(p), nil
}
