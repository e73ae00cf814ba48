package testutil

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/hotdesk/hotdesk/internal/atomicfile"
)

func TestShortTempDir(t *testing.T) {
	var dir string
	t.Run("inner", func(t *testing.T) {
		dir = ShortTempDir(t, "hd")
		if len(filepath.Join(dir, "sessions", "0123456789abcdef", "control.sock")) > 107 {
			t.Errorf("ShortTempDir = %q; too long for a unix socket path below it", dir)
		}
		if fi, err := os.Stat(dir); err != nil || !fi.IsDir() {
			t.Errorf("ShortTempDir = %q: %v; want a directory", dir, err)
		}
	})
	if _, err := os.Stat(dir); !os.IsNotExist(err) {
		t.Errorf("%s after the test ended: %v; want it removed", dir, err)
	}
}

func TestRecv(t *testing.T) {
	ch := make(chan int, 2)
	ch <- 7
	ch <- 8
	if got := Recv(t, ch, time.Minute, "first value"); got != 7 {
		t.Errorf("Recv = %d; want 7", got)
	}
	if got := Recv(t, ch, time.Minute, "second value"); got != 8 {
		t.Errorf("Recv = %d; want 8", got)
	}
}

// fatalRecorder records Fatalf and ends the goroutine, as testing.T does.
type fatalRecorder struct {
	testing.TB
	msg string
}

func (f *fatalRecorder) Helper() {}

func (f *fatalRecorder) Fatalf(format string, args ...any) {
	f.msg = fmt.Sprintf(format, args...)
	runtime.Goexit()
}

func TestRecvFailsWhenNothingArrives(t *testing.T) {
	rec := &fatalRecorder{TB: t}
	done := make(chan struct{})
	go func() {
		defer close(done)
		Recv(rec, make(chan int), time.Millisecond, "no value")
		t.Error("Recv returned without a value")
	}()
	<-done
	if !strings.HasPrefix(rec.msg, "no value") {
		t.Errorf("failure = %q; want it to start with %q", rec.msg, "no value")
	}
}

// TestConcurrently: the functions run at the same time (each waits for the
// other to have started), and the errors of those that failed fail the
// test, all of them named.
func TestConcurrently(t *testing.T) {
	t.Parallel()
	a, b := make(chan struct{}), make(chan struct{})
	meet := func(mine, theirs chan struct{}) func() error {
		return func() error {
			close(mine)
			select {
			case <-theirs:
				return nil
			case <-time.After(10 * time.Second):
				return fmt.Errorf("the other function did not start meanwhile")
			}
		}
	}
	Concurrently(t, meet(a, b), meet(b, a))

	var e endTB
	Concurrently(&e, func() error { return nil }, func() error { return fmt.Errorf("first broke") }, func() error { return fmt.Errorf("second broke") })
	if !strings.Contains(e.fatal, "first broke") || !strings.Contains(e.fatal, "second broke") {
		t.Fatalf("Concurrently failed the test with %q; want both errors", e.fatal)
	}
	e = endTB{}
	Concurrently(&e, func() error { return nil })
	if e.fatal != "" {
		t.Fatalf("Concurrently failed a test whose functions all succeeded: %q", e.fatal)
	}
}

// TestDiscardConns: each connection is accepted and closed (the dialler
// reads EOF); DiscardConns returns once the listener is closed.
func TestDiscardConns(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		DiscardConns(ln)
	}()
	for range 2 {
		c, err := net.Dial("tcp", ln.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		if _, err := c.Read(make([]byte, 1)); !errors.Is(err, io.EOF) {
			t.Errorf("read from a discarded connection = %v; want EOF", err)
		}
		c.Close()
	}
	ln.Close()
	Recv(t, done, 10*time.Second, "DiscardConns did not return after the listener closed")
}

// TestClosesOnCancel: a stream that closes once cancelled passes, what is
// left in it dropped; one that stays open fails the test.
func TestClosesOnCancel(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	ch := make(chan int)
	go func() {
		defer close(ch)
		for i := 0; ; i++ {
			select {
			case ch <- i:
			case <-ctx.Done():
				return
			}
		}
	}()
	<-ch
	ClosesOnCancel(t, cancel, ch, 10*time.Second)

	rec := &errorRecorder{TB: t}
	open := make(chan int, 1)
	open <- 1
	ClosesOnCancel(rec, func() {}, open, 10*time.Millisecond)
	if !strings.HasPrefix(rec.msg, "channel not closed") {
		t.Errorf("failure = %q; want the channel named not closed", rec.msg)
	}
}

// errorRecorder records Errorf.
type errorRecorder struct {
	testing.TB
	msg string
}

func (e *errorRecorder) Helper() {}

func (e *errorRecorder) Errorf(format string, args ...any) { e.msg = fmt.Sprintf(format, args...) }

func TestOneWinner(t *testing.T) {
	lost := errors.New("lost")
	other := errors.New("broken")
	tests := []struct {
		name string
		errs []error
		want []string // in the error, in order; none: nil
	}{
		{"one winner", []error{lost, nil, fmt.Errorf("wrapped: %w", lost)}, nil},
		{"alone", []error{nil}, nil},
		{"no winner", []error{lost, lost}, []string{"0 of 2 attempts succeeded"}},
		{"two winners", []error{nil, lost, nil}, []string{"2 of 3 attempts succeeded"}},
		{"another error", []error{nil, other}, []string{"attempt 1: err = broken; want nil or lost"}},
		{"another error, no winner", []error{other, lost}, []string{"attempt 0: err = broken", "0 of 2 attempts succeeded"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := OneWinner(tt.errs, lost)
			if len(tt.want) == 0 {
				if err != nil {
					t.Fatalf("OneWinner = %v; want nil", err)
				}
				return
			}
			if err == nil {
				t.Fatalf("OneWinner = nil; want %q", tt.want)
			}
			msg := err.Error()
			for _, w := range tt.want {
				i := strings.Index(msg, w)
				if i < 0 {
					t.Fatalf("OneWinner = %q; want it to say %q", err, w)
				}
				msg = msg[i+len(w):]
			}
		})
	}
	if err := OneWinner([]error{nil, other}, lost); !errors.Is(err, other) {
		t.Errorf("OneWinner = %v; want it to wrap the unexpected error", err)
	}
}

func TestBlockFile(t *testing.T) {
	t.Parallel()
	path := filepath.Join(t.TempDir(), "rec.json")
	if err := atomicfile.Write(path, []byte("1"), 0o600); err != nil {
		t.Fatal(err)
	}
	unblock := BlockFile(t, path)
	if err := atomicfile.Write(path, []byte("2"), 0o600); err == nil {
		t.Fatal("write of a blocked file: no error")
	}
	unblock()
	if err := atomicfile.Write(path, []byte("3"), 0o600); err != nil {
		t.Fatalf("write after unblock: %v", err)
	}
}
