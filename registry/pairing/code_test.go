package pairing

import (
	"errors"
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
	if l.fail("a") || l.fail("a") {
		t.Error("locked again before maxFailures new failures")
	}
	l.succeed("a")
	if l.fail("a") || l.fail("a") {
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

func TestLimiterBounded(t *testing.T) {
	t.Parallel()
	clk := clock.NewFake(time.Unix(1_000_000, 0))
	l := &limiter{clk: clk, maxFailures: 2, window: time.Minute, lockout: time.Hour,
		globalN: 1 << 20, globalWindow: time.Minute, sources: newLRU[*sourceState](10)}
	l.fail("first")
	l.fail("first") // locked
	if r := l.allow("first"); r != sourceLocked {
		t.Fatalf("allow = %v; want %v", r, sourceLocked)
	}
	for i := range 100 {
		l.fail("src-" + strings.Repeat("x", i))
	}
	if got := l.sources.len(); got != 10 {
		t.Errorf("tracked sources = %d; want the bound 10", got)
	}
	// The oldest source was evicted.
	if _, ok := l.sources.get("first"); ok {
		t.Errorf("oldest source still tracked after 100 newer ones")
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
