package broker

import (
	"bytes"
	"io"
	"net"
	"testing"
)

// TestBufferedCopyTakesAll: the compositor's side is read to its end
// while the terminal takes nothing (so the compositor never waits on the
// terminal), and the terminal then gets every byte in order.
func TestBufferedCopyTakesAll(t *testing.T) {
	t.Parallel()
	compW, compR := net.Pipe() // compositor writes compW; the gateway reads compR
	termR, termW := net.Pipe() // the gateway writes termW; the terminal reads termR
	want := make([]byte, 1<<20)
	for i := range want {
		want[i] = byte(i * 31)
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		bufferedCopy(termW, compR, maxDownBuffer)
		termW.Close()
	}()
	// net.Pipe is synchronous: these writes return only when the gateway
	// has read them, and nobody reads the terminal's side yet.
	for off := 0; off < len(want); off += 4096 {
		if _, err := compW.Write(want[off : off+4096]); err != nil {
			t.Fatalf("compositor write at %d: %v", off, err)
		}
	}
	compW.Close()
	got, err := io.ReadAll(termR)
	if err != nil {
		t.Fatal(err)
	}
	<-done
	if !bytes.Equal(got, want) {
		t.Fatalf("terminal got %d bytes, equal %v; want the %d bytes sent", len(got), bytes.Equal(got, want), len(want))
	}
}

// TestBufferedCopyDeadTerminal: when the terminal's side fails, the copy
// ends and closes the compositor's side, even while nothing arrives.
func TestBufferedCopyDeadTerminal(t *testing.T) {
	t.Parallel()
	compW, compR := net.Pipe()
	termR, termW := net.Pipe()
	done := make(chan struct{})
	go func() {
		defer close(done)
		bufferedCopy(termW, compR, maxDownBuffer)
	}()
	termR.Close() // the terminal is gone
	if _, err := compW.Write([]byte("frame")); err != nil {
		t.Fatal(err)
	}
	<-done // the write to the terminal failed: the copy ended
	if _, err := compW.Write([]byte("more")); err == nil {
		t.Fatal("compositor side still open after the terminal failed")
	}
}
