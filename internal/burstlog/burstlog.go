// Package burstlog logs events that can come in floods (refused logins,
// refused connections, accept errors) as one line per kind per interval,
// with how many events the line stands for: an attacker's flood costs a
// line, not a line per attempt, and the first event of a burst is logged at
// once.
package burstlog

import (
	"sync"
	"time"

	"github.com/hashicorp/go-hclog"
)

// Logger is safe for concurrent use; its memory is bounded by the number of
// kinds its callers use (a fixed set of names, never peer input).
type Logger struct {
	log   hclog.Logger
	every time.Duration
	now   func() time.Time

	mu    sync.Mutex
	last  map[string]time.Time
	count map[string]int
}

// New returns a Logger writing to log at most once per kind per every. now
// is the clock (nil: time.Now).
func New(log hclog.Logger, every time.Duration, now func() time.Time) *Logger {
	if now == nil {
		now = time.Now
	}
	return &Logger{log: log, every: every, now: now, last: map[string]time.Time{}, count: map[string]int{}}
}

// Warn counts one event of kind and, unless kind was logged less than the
// interval ago, logs msg at warn level with args plus "limit" (the kind)
// and "count" (the events since the last line, this one included). It
// reports whether it logged.
func (l *Logger) Warn(kind, msg string, args ...any) bool {
	return l.emit(hclog.Warn, "limit", kind, msg, args)
}

// Info is Warn at info level, for floods of ordinary events (e.g. the event
// log's refused tokens); the kind is logged as "burst".
func (l *Logger) Info(kind, msg string, args ...any) bool {
	return l.emit(hclog.Info, "burst", kind, msg, args)
}

func (l *Logger) emit(level hclog.Level, kindKey, kind, msg string, args []any) bool {
	now := l.now()
	l.mu.Lock()
	l.count[kind]++
	if last, ok := l.last[kind]; ok && now.Sub(last) < l.every {
		l.mu.Unlock()
		return false
	}
	n := l.count[kind]
	l.count[kind] = 0
	l.last[kind] = now
	l.mu.Unlock()
	l.log.Log(level, msg, append(args, kindKey, kind, "count", n)...)
	return true
}
