package pairing

import (
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/hotdesk/hotdesk/internal/clock"
)

func TestParseCode(t *testing.T) {
	t.Parallel()
	tests := []struct {
		in             string
		wantID, wantSe string
		wantErr        bool
	}{
		{"ABCD-EFGH-JKMN", "ABCD", "EFGHJKMN", false},
		{"abcd-efgh-jkmn", "ABCD", "EFGHJKMN", false},
		{"abcdefghjkmn", "ABCD", "EFGHJKMN", false},
		{" abcd efgh jkmn ", "ABCD", "EFGHJKMN", false},
		{"ab-cd-ef-gh-jk-mn", "ABCD", "EFGHJKMN", false},
		{"o0Il-1234-5678", "0011", "12345678", false},
		{"PQRS-TVWX-YZ09", "PQRS", "TVWXYZ09", false},
		{"", "", "", true},
		{"ABCD-EFGH-JKM", "", "", true},       // 11 characters
		{"ABCD-EFGH-JKMNP", "", "", true},     // 13 characters
		{"ABCD-EFGH-JKMU", "", "", true},      // U is not in the alphabet
		{"ABCD_EFGH_JKMN", "", "", true},      // underscore
		{"ABCD-EFGH-JKM\u00e9", "", "", true}, // non-ASCII
		{strings.Repeat("-", 70) + "ABCDEFGHJKMN", "", "", true},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			id, secret, err := ParseCode(tt.in)
			if tt.wantErr {
				if !errors.Is(err, ErrInvalidCode) {
					t.Errorf("ParseCode(%q) = %q, %q, %v; want ErrInvalidCode", tt.in, id, secret, err)
				}
				return
			}
			if err != nil || id != tt.wantID || secret != tt.wantSe {
				t.Errorf("ParseCode(%q) = %q, %q, %v; want %q, %q, nil", tt.in, id, secret, err, tt.wantID, tt.wantSe)
			}
		})
	}
}

func TestNewCode(t *testing.T) {
	t.Parallel()
	seen := map[string]bool{}
	for range 200 {
		c, err := newCode()
		if err != nil {
			t.Fatal(err)
		}
		f := format(c)
		if len(f) != 14 || f[4] != '-' || f[9] != '-' {
			t.Fatalf("format(%q) = %q; want XXXX-XXXX-XXXX", c, f)
		}
		got, err := FormatCode(strings.ToLower(c))
		if err != nil || got != f {
			t.Fatalf("FormatCode(lower %q) = %q, %v; want %q", c, got, err, f)
		}
		if strings.ContainsAny(c, "ILOU") {
			t.Fatalf("code %q has a character outside Crockford base32", c)
		}
		seen[c] = true
	}
	if len(seen) < 200 {
		t.Errorf("%d distinct codes out of 200; want 200", len(seen))
	}
}

func TestLimiterSource(t *testing.T) {
	t.Parallel()
	clk := clock.NewFake(time.Unix(1_000_000, 0))
	l := &limiter{clk: clk, maxFailures: 3, window: time.Minute, lockout: 10 * time.Minute,
		globalN: 1000, globalWindow: time.Minute, sources: newLRU[*sourceState](100)}

	// Failures spread wider than the window never lock.
	for range 5 {
		if r := l.allow("a"); r != allowed {
			t.Fatalf("allow = %v; want allowed", r)
		}
		if l.fail("a") {
			t.Fatal("locked by failures spread over more than the window")
		}
		clk.Advance(31 * time.Second)
	}
	clk.Advance(time.Minute)
	l.fail("a")
	l.fail("a")
	if !l.fail("a") {
		t.Fatal("3 failures within the window did not lock the source")
	}
	if r := l.allow("a"); r != sourceLocked {
		t.Errorf("allow(locked) = %v; want %v", r, sourceLocked)
	}
	if r := l.allow("b"); r != allowed {
		t.Errorf("allow(other source) = %v; want allowed", r)
	}
	clk.Advance(10*time.Minute - time.Nanosecond)
	if r := l.allow("a"); r != sourceLocked {
		t.Errorf("allow(just before lockout ends) = %v; want %v", r, sourceLocked)
	}
	clk.Advance(time.Nanosecond)
	if r := l.allow("a"); r != allowed {
		t.Errorf("allow(after lockout) = %v; want allowed", r)
	}
	// The counter starts afresh after a lockout.
	if first, second := l.fail("a"), l.fail("a"); first || second {
		t.Error("locked again before maxFailures new failures")
	}
	l.succeed("a")
	if first, second := l.fail("a"), l.fail("a"); first || second {
		t.Error("failures survived a success")
	}
}

func TestLimiterGlobal(t *testing.T) {
	t.Parallel()
	clk := clock.NewFake(time.Unix(1_000_000, 0))
	l := &limiter{clk: clk, maxFailures: 3, window: time.Minute, lockout: time.Minute,
		globalN: 3, globalWindow: time.Minute, sources: newLRU[*sourceState](100)}
	for i, src := range []string{"a", "b", "c"} {
		if r := l.allow(src); r != allowed {
			t.Fatalf("attempt %d = %v; want allowed", i, r)
		}
		clk.Advance(10 * time.Second)
	}
	if r := l.allow("d"); r != globalLimited {
		t.Errorf("4th attempt in a window = %v; want %v", r, globalLimited)
	}
	clk.Advance(30 * time.Second) // the first attempt leaves the window
	if r := l.allow("d"); r != allowed {
		t.Errorf("attempt after the window moved = %v; want allowed", r)
	}
	if len(l.global) > l.globalN {
		t.Errorf("global holds %d times; want at most %d", len(l.global), l.globalN)
	}
}

// TestLimiterBounded: memory is bounded by maxSources sources without a
// lockout plus maxSources locked out, and a locked-out source is never
// evicted to make room: one failure each of 100 other sources (IPv6: the
// /64s of one /48) leaves it locked out. With every lockout place taken, a
// source reaching its limit is still refused.
func TestLimiterBounded(t *testing.T) {
	t.Parallel()
	clk := clock.NewFake(time.Unix(1_000_000, 0))
	l := &limiter{clk: clk, maxFailures: 2, window: time.Minute, lockout: time.Hour,
		globalN: 1 << 20, globalWindow: time.Minute, sources: newLRU[*sourceState](10)}
	l.fail("2001:db8:0:1::/64")
	l.fail("2001:db8:0:1::/64") // locked
	if r := l.allow("2001:db8:0:1::/64"); r != sourceLocked {
		t.Fatalf("allow = %v; want %v", r, sourceLocked)
	}
	for i := range 100 {
		l.fail(fmt.Sprintf("2001:db8:0:%x::/64", i+2))
	}
	if got := l.sources.len(); got != 10 {
		t.Errorf("tracked sources = %d; want the bound 10", got)
	}
	if r := l.allow("2001:db8:0:1::/64"); r != sourceLocked {
		t.Errorf("locked-out source after 100 others failed once: allow = %v; want %v", r, sourceLocked)
	}
	for i := range 20 {
		src := fmt.Sprintf("10.0.0.%d", i)
		l.fail(src)
		l.fail(src)
		if r := l.allow(src); r != sourceLocked {
			t.Errorf("%s, locked out with %d lockouts in force: allow = %v; want %v", src, i+1, r, sourceLocked)
		}
	}
	if got := len(l.locked) + l.sources.len(); got > 20 {
		t.Errorf("tracked sources = %d; want at most 2 × 10", got)
	}
	// Lockouts end: the places are free again.
	clk.Advance(time.Hour)
	if r := l.allow("2001:db8:0:1::/64"); r != allowed {
		t.Errorf("after the lockout: allow = %v; want allowed", r)
	}
	if len(l.locked) != 0 {
		t.Errorf("%d lockouts held after every one ended; want 0", len(l.locked))
	}
}

// TestLimiterReserves: an attempt counts from the moment allow lets it
// through, so a source cannot have more than maxFailures attempts in
// flight and failed within the window; a release (no guess) gives the
// place back, and the failures of the attempts in flight lock it out.
func TestLimiterReserves(t *testing.T) {
	t.Parallel()
	clk := clock.NewFake(time.Unix(1_000_000, 0))
	l := &limiter{clk: clk, maxFailures: 3, window: time.Minute, lockout: time.Hour, sources: newLRU[*sourceState](10)}
	for i := range 3 {
		if r := l.allow("a"); r != allowed {
			t.Fatalf("attempt %d in flight: allow = %v; want allowed", i, r)
		}
	}
	if r := l.allow("a"); r != sourceBusy {
		t.Fatalf("a 4th attempt with 3 in flight: allow = %v; want %v", r, sourceBusy)
	}
	if r := l.allow("b"); r != allowed {
		t.Fatalf("another source: allow = %v; want allowed", r)
	}
	l.release("a")
	if r := l.allow("a"); r != allowed {
		t.Fatalf("after a release: allow = %v; want allowed", r)
	}
	if first, second, third := l.fail("a"), l.fail("a"), l.fail("a"); first || second || !third {
		t.Fatal("the 3 attempts in flight failing did not lock the source out at the 3rd")
	}
	if r := l.allow("a"); r != sourceLocked {
		t.Fatalf("after 3 failures: allow = %v; want %v", r, sourceLocked)
	}
}

// TestLimiterSucceedKeepsInFlight: a source's successful redemption
// forgets its failures, but not its other attempts still in flight (one
// good code sent alongside guesses does not open room for more guesses),
// nor a lockout one of them started.
func TestLimiterSucceedKeepsInFlight(t *testing.T) {
	t.Parallel()
	clk := clock.NewFake(time.Unix(1_000_000, 0))
	l := &limiter{clk: clk, maxFailures: 3, window: time.Minute, lockout: time.Hour, sources: newLRU[*sourceState](10)}
	l.fail("a") // an earlier wrong guess
	for i := range 2 {
		if r := l.allow("a"); r != allowed {
			t.Fatalf("attempt %d: allow = %v; want allowed", i, r)
		}
	}
	l.succeed("a") // one of the two was a good code: its failure is forgotten
	if r := l.allow("a"); r != allowed {
		t.Fatalf("after the success: allow = %v; want allowed", r)
	}
	if r := l.allow("a"); r != allowed {
		t.Fatalf("after the success, 2nd: allow = %v; want allowed", r)
	}
	if r := l.allow("a"); r != sourceBusy {
		t.Fatalf("3 attempts in flight after the success: allow = %v; want %v", r, sourceBusy)
	}
	if first, second, third := l.fail("a"), l.fail("a"), l.fail("a"); first || second || !third {
		t.Fatal("the 3 attempts in flight failing did not lock the source out at the 3rd")
	}
	l.succeed("a") // a success that raced the lockout does not end it
	if r := l.allow("a"); r != sourceLocked {
		t.Fatalf("after a lockout and a late success: allow = %v; want %v", r, sourceLocked)
	}
	clk.Advance(time.Hour)
	if r := l.allow("a"); r != allowed {
		t.Fatalf("after the lockout: allow = %v; want allowed", r)
	}
}

func TestLRU(t *testing.T) {
	t.Parallel()
	c := newLRU[int](2)
	c.put("a", 1)
	c.put("b", 2)
	c.get("a") // b is now the least recently used
	c.put("c", 3)
	if _, ok := c.get("b"); ok {
		t.Errorf("b survived eviction")
	}
	for k, want := range map[string]int{"a": 1, "c": 3} {
		if got, ok := c.get(k); !ok || got != want {
			t.Errorf("get(%s) = %d, %v; want %d, true", k, got, ok, want)
		}
	}
	c.remove("a")
	if c.len() != 1 {
		t.Errorf("len = %d; want 1", c.len())
	}
}
