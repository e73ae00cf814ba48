package clock

import (
	"context"
	"testing"
	"time"
)

func TestFakeFiresInOrderAndStops(t *testing.T) {
	c := NewFake(time.Unix(0, 0))
	var got []int
	c.AfterFunc(3*time.Second, func() { got = append(got, 3) })
	c.AfterFunc(1*time.Second, func() { got = append(got, 1) })
	stopped := c.AfterFunc(2*time.Second, func() { got = append(got, 2) })
	if !stopped.Stop() {
		t.Fatal("Stop() = false for a pending timer; want true")
	}
	c.Advance(999 * time.Millisecond)
	if len(got) != 0 {
		t.Fatalf("fired early: %v", got)
	}
	c.Advance(5 * time.Second)
	if len(got) != 2 || got[0] != 1 || got[1] != 3 {
		t.Fatalf("fired %v; want [1 3]", got)
	}
	if c.Pending() != 0 {
		t.Fatalf("pending = %d; want 0", c.Pending())
	}
	if stopped.Stop() {
		t.Fatal("second Stop() = true; want false")
	}
	if want := time.Unix(0, 0).Add(5999 * time.Millisecond); !c.Now().Equal(want) {
		t.Fatalf("now = %v; want %v", c.Now(), want)
	}
}

// TestSleep: Sleep returns true once d has passed on the clock, not
// before, and false as soon as its context ends, its timer stopped.
func TestSleep(t *testing.T) {
	c := NewFake(time.Unix(0, 0))
	done := make(chan bool, 1)
	go func() { done <- Sleep(context.Background(), c, time.Second) }()
	for c.Pending() != 1 {
		time.Sleep(time.Millisecond)
	}
	c.Advance(999 * time.Millisecond)
	select {
	case ok := <-done:
		t.Fatalf("Sleep = %v before its second passed; want it still sleeping", ok)
	default:
	}
	c.Advance(time.Millisecond)
	if ok := <-done; !ok {
		t.Fatal("Sleep = false after its second; want true")
	}

	ctx, cancel := context.WithCancel(context.Background())
	go func() { done <- Sleep(ctx, c, time.Second) }()
	for c.Pending() != 1 {
		time.Sleep(time.Millisecond)
	}
	cancel()
	if ok := <-done; ok {
		t.Fatal("Sleep = true after its context ended; want false")
	}
	if n := c.Pending(); n != 0 {
		t.Fatalf("pending = %d after the cancelled Sleep; want 0 (its timer stopped)", n)
	}
}
