package pairing

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/hotdesk/hotdesk/internal/clock"
)

func TestParseKDF(t *testing.T) {
	t.Parallel()
	tests := []struct {
		in string
		ok bool
	}{
		{currentKDF.String(), true},
		{"argon2id;t=1;m=8;p=1", true},
		{"argon2id;t=2;m=19456;p=1;x", false},
		{"argon2id;t=0;m=19456;p=1", false},
		{"argon2id;t=2;m=1048576;p=1", false}, // 1 GiB a check
		{"argon2id;t=100;m=19456;p=1", false},
		{"argon2id;t=2;m=19456;p=64", false},
		{"argon2i;t=2;m=19456;p=1", false},
		{"", false},
	}
	for _, tt := range tests {
		_, err := parseKDF(tt.in)
		if (err == nil) != tt.ok || err != nil && !errors.Is(err, errKDF) {
			t.Errorf("parseKDF(%q) = %v; want ok %v", tt.in, err, tt.ok)
		}
	}
}

// TestCheckSecretWaitsForSlot: the slow hash runs only with a hash slot
// held, so however many attempts arrive, at most cap(hashSlots) hash at
// once; one that finds every slot taken waits, until its context ends.
// The legacy SHA-256 check needs no slot.
func TestCheckSecretWaitsForSlot(t *testing.T) {
	t.Parallel()
	p := New(nil)
	salt, sum, kdf, err := currentKDF.newHash("ABCDEFGH")
	if err != nil {
		t.Fatal(err)
	}
	if ok, err := p.checkSecret(t.Context(), "ABCDEFGH", salt, sum, kdf); !ok || err != nil {
		t.Fatalf("check of the right secret = %v, %v; want true, nil", ok, err)
	}
	if ok, err := p.checkSecret(t.Context(), "ABCDEFGJ", salt, sum, kdf); ok || err != nil {
		t.Fatalf("check of a wrong secret = %v, %v; want false, nil", ok, err)
	}
	for range cap(p.hashSlots) {
		p.hashSlots <- struct{}{}
	}
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() {
		_, err := p.checkSecret(ctx, "ABCDEFGH", salt, sum, kdf)
		done <- err
	}()
	cancel()
	if err := <-done; !errors.Is(err, context.Canceled) {
		t.Errorf("check with every slot taken, then cancelled: err = %v; want %v", err, context.Canceled)
	}
	if _, err := p.checkSecret(t.Context(), "ABCDEFGH", nil, make([]byte, 32), ""); err != nil {
		t.Errorf("a legacy check with every slot taken: err = %v; want nil", err)
	}
}

// TestCheckSecretBusy: a check that finds every slot taken waits
// SlotWait at most (on the Pairer's clock), then is ErrBusy; one that gets
// a slot within it is judged.
func TestCheckSecretBusy(t *testing.T) {
	t.Parallel()
	clk := clock.NewFake(time.Unix(1_000_000, 0))
	p := New(nil, WithClock(clk))
	salt, sum, kdf, err := currentKDF.newHash("ABCDEFGH")
	if err != nil {
		t.Fatal(err)
	}
	for range cap(p.hashSlots) {
		p.hashSlots <- struct{}{}
	}
	check := func() <-chan error {
		done := make(chan error, 1)
		go func() {
			ok, err := p.checkSecret(t.Context(), "ABCDEFGH", salt, sum, kdf)
			if err == nil && !ok {
				err = errors.New("the right secret did not match")
			}
			done <- err
		}()
		for clk.Pending() == 0 {
			time.Sleep(time.Millisecond)
		}
		return done
	}
	done := check()
	clk.Advance(SlotWait - time.Millisecond)
	select {
	case err := <-done:
		t.Fatalf("check returned %v before SlotWait passed", err)
	default:
	}
	clk.Advance(time.Millisecond)
	if err := <-done; !errors.Is(err, ErrBusy) {
		t.Fatalf("check with every slot taken for SlotWait: err = %v; want %v", err, ErrBusy)
	}

	done = check()
	<-p.hashSlots // a slot frees within SlotWait
	if err := <-done; err != nil {
		t.Fatalf("check that got a slot within SlotWait: %v", err)
	}
	if n := clk.Pending(); n != 0 {
		t.Errorf("%d timers left after the check got its slot; want 0", n)
	}
}

// BenchmarkHashSecret measures one check at the current parameters: it
// should take tens of milliseconds (measured 2026-12-03 on the project's
// 2-core machine: about 45 ms).
func BenchmarkHashSecret(b *testing.B) {
	salt := make([]byte, saltLen)
	for b.Loop() {
		currentKDF.hash("ABCDEFGH", salt)
	}
}
