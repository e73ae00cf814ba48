package auth_test

import (
	"errors"
	"math"
	"testing"
	"time"

	"github.com/hotdesk/hotdesk/auth"
	"github.com/hotdesk/hotdesk/internal/clock"
)

// FuzzGroupLockout: a lockout and a failure count another member of the
// group published (registry records: anyone who can write to etcd, or a
// corrupted record) never make this member's limiter hang, panic or lock a
// key out for longer than MaxLockout, whatever their level, times and
// count, and whatever lockout bounds the configuration allows.
func FuzzGroupLockout(f *testing.F) {
	f.Add(int64(0), 1, int64(60_000), int64(0), 0, int64(0), int64(0))
	f.Add(int64(0), 3, int64(1), int64(1000), 5, int64(-1000), int64(0))
	f.Add(int64(0), math.MaxInt, int64(1), int64(1000), 0, int64(0), int64(0))
	f.Add(int64(0), math.MinInt, int64(math.MaxInt64), int64(0), math.MaxInt, int64(math.MinInt64), int64(0))
	f.Fuzz(func(t *testing.T, maxLockout int64, level int, untilMs, advanceMs int64, count int, firstMs, sinceMs int64) {
		start := time.Unix(1_700_000_000, 0)
		clk := clock.NewFake(start)
		base := 30 * time.Second
		var started []auth.Lockout
		l := auth.NewLimiter(auth.LimiterConfig{Clock: clk, BaseLockout: base, MaxLockout: time.Duration(max(maxLockout, 0)),
			OnLockout: func(lo auth.Lockout) { started = append(started, lo) }})
		limit := time.Duration(maxLockout)
		if maxLockout <= 0 {
			limit = 15 * time.Minute
		}
		limit = max(limit, base)
		check := func(what string) {
			t.Helper()
			now := clk.Now()
			var le *auth.LockoutError
			if err := l.Check("x", "", ""); errors.As(err, &le) && (le.Remaining <= 0 || le.Remaining > limit) {
				t.Fatalf("%s: locked for %v; limit %v", what, le.Remaining, limit)
			}
			for _, lo := range started {
				if !lo.Until.After(now) || lo.Until.Sub(now) > limit {
					t.Fatalf("%s: lockout %+v at %v; limit %v", what, lo, now, limit)
				}
			}
			started = nil
		}
		l.Apply(auth.Lockout{Key: "token:x", Until: start.Add(time.Duration(untilMs) * time.Millisecond), Level: level,
			Since: time.UnixMilli(sinceMs)})
		check("apply")
		clk.Advance(time.Duration(min(max(advanceMs, 0), int64(time.Hour/time.Millisecond))) * time.Millisecond)
		l.Observe("token:x", count, clk.Now().Add(time.Duration(firstMs)*time.Millisecond))
		check("observe")
		for range 5 {
			l.Failure("x", "", "")
			check("failure")
		}
	})
}
