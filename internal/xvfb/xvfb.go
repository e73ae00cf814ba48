// Package xvfb starts a virtual X server (Xvfb) on a display number it
// picks itself, for the tests and the pixel benchmark, which read a
// terminal's screen.
//
// Contract: Start returns once Xvfb has told its display number over a
// pipe (-displayfd), so the number is Xvfb's own, taken under its lock
// file; a number chosen by the caller could belong to another X server,
// which would then answer in this one's place. The caller stops the
// server with Stop (kill and reap), or signals Cmd itself and waits on
// Exited.
package xvfb

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"time"
)

// numberTimeout bounds the wait for Xvfb's display number.
const numberTimeout = 30 * time.Second

// Server is a running Xvfb.
type Server struct {
	// Display is the X display name, ":N".
	Display string
	// Cmd is the Xvfb process; Exited is closed once it has been reaped.
	Cmd    *exec.Cmd
	Exited <-chan struct{}
}

// Stop kills Xvfb and waits until it is reaped.
func (s *Server) Stop() {
	_ = s.Cmd.Process.Kill()
	<-s.Exited
}

// Start runs Xvfb with one screen of size ("WxHxDEPTH"), no TCP listener
// and the extra arguments, and waits for its display number (at most 30 s
// or until ctx ends). prepare, if not nil, is called on the command before
// it starts (e.g. to set SysProcAttr).
func Start(ctx context.Context, size string, prepare func(*exec.Cmd), args ...string) (*Server, error) {
	pr, pw, err := os.Pipe()
	if err != nil {
		return nil, fmt.Errorf("xvfb: %w", err)
	}
	defer pr.Close()
	cmd := exec.Command("Xvfb", append([]string{"-displayfd", "3", "-screen", "0", size, "-nolisten", "tcp"}, args...)...)
	cmd.ExtraFiles = []*os.File{pw} // fd 3
	if prepare != nil {
		prepare(cmd)
	}
	err = cmd.Start()
	pw.Close()
	if err != nil {
		return nil, fmt.Errorf("xvfb: %w", err)
	}
	exited := make(chan struct{})
	go func() { _ = cmd.Wait(); close(exited) }()
	s := &Server{Cmd: cmd, Exited: exited}
	num := make(chan string, 1)
	go func() { // ends when Xvfb writes its number or exits (pw closed)
		line, _ := bufio.NewReader(pr).ReadString('\n')
		num <- strings.TrimSpace(line)
	}()
	timer := time.NewTimer(numberTimeout)
	defer timer.Stop()
	select {
	case n := <-num:
		if n == "" {
			s.Stop()
			return nil, errors.New("xvfb: Xvfb exited without a display number")
		}
		s.Display = ":" + n
		return s, nil
	case <-timer.C:
		s.Stop()
		return nil, fmt.Errorf("xvfb: no display number in %v", numberTimeout)
	case <-ctx.Done():
		s.Stop()
		return nil, fmt.Errorf("xvfb: %w", ctx.Err())
	}
}
