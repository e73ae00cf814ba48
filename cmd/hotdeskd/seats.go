package main

import (
	"bufio"
	"context"
	"encoding/json"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	"github.com/hashicorp/go-hclog"

	"github.com/hotdesk/hotdesk/cmd/hotdeskd/config"
	"github.com/hotdesk/hotdesk/internal/clock"
)

// seatAgent returns the terminal agent binary for seats: the configured
// one, else hotdesk-term next to this executable, else from $PATH.
func seatAgent(cfg *config.Config) string {
	if cfg.SeatAgent != "" {
		return cfg.SeatAgent
	}
	if self, err := os.Executable(); err == nil {
		p := filepath.Join(filepath.Dir(self), "hotdesk-term")
		if _, err := os.Stat(p); err == nil {
			return p
		}
	}
	return "hotdesk-term"
}

// runSeat keeps a local terminal agent running for seat: readers attached
// to this host (a kiosk or a console) act as a terminal named
// "seat-<name>" connected to this broker over loopback, pinned to its
// certificate. The agent is restarted with backoff on clk if it exits
// (1 s, doubled up to 30 s; back to 1 s after a run of a minute), until
// ctx ends. Its events are logged.
func runSeat(ctx context.Context, clk clock.Clock, cfg *config.Config, seat config.Seat, listen net.Addr, pin string, logger hclog.Logger) {
	_, port, _ := net.SplitHostPort(listen.String())
	args := []string{"-server", net.JoinHostPort("127.0.0.1", port), "-pin", pin, "-id", "seat-" + seat.Name,
		"-name", seat.Name, "-keystore", filepath.Join(cfg.DataDir, "seats", seat.Name+".json"),
		"-pcsc", "-readers", strings.Join(seat.Readers, ","), "-remove-grace", seat.RemoveGrace.String(), "-json", "run"}
	agent := seatAgent(cfg)
	backoff := time.Second
	for ctx.Err() == nil {
		cmd := exec.CommandContext(ctx, agent, args...)
		stdin, err := cmd.StdinPipe() // kept open: EOF would make the agent quit
		if err != nil {
			logger.Error("seat agent", "error", err)
			return
		}
		stdout, err := cmd.StdoutPipe()
		if err != nil {
			logger.Error("seat agent", "error", err)
			return
		}
		started := clk.Now()
		if err := cmd.Start(); err != nil {
			logger.Error("starting the seat agent", "agent", agent, "error", err)
		} else {
			logger.Info("seat agent started", "pid", cmd.Process.Pid, "readers", seat.Readers)
			sc := bufio.NewScanner(stdout)
			for sc.Scan() {
				var ev map[string]any
				if json.Unmarshal(sc.Bytes(), &ev) == nil {
					logger.Debug("seat event", "event", ev["event"], "token", ev["token"], "session", ev["session"])
				}
			}
			if err := sc.Err(); err != nil {
				// A line too long: the rest is read and dropped, or the
				// agent would block on a full pipe and Wait with it.
				logger.Warn("seat agent output unreadable; dropping the rest", "error", err)
				_, _ = io.Copy(io.Discard, stdout)
			}
			err = cmd.Wait()
			stdin.Close()
			if ctx.Err() != nil {
				return
			}
			logger.Warn("seat agent exited", "error", err)
		}
		if clk.Now().Sub(started) > time.Minute {
			backoff = time.Second
		}
		if !clock.Sleep(ctx, clk, backoff) {
			return
		}
		backoff = min(2*backoff, 30*time.Second)
	}
}
