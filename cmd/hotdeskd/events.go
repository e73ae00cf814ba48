package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os/exec"
	"syscall"
	"time"

	"github.com/hashicorp/go-hclog"

	"github.com/hotdesk/hotdesk/broker"
	"github.com/hotdesk/hotdesk/internal/clock"
	"github.com/hotdesk/hotdesk/internal/event"
	"github.com/hotdesk/hotdesk/registry"
)

// Event plumbing of the daemon: the broker emits into one broker.Bus (which
// writes the info log line); subscribers store each event in the group
// registry for `hotdeskctl events` on any member, keep terminal presence and
// metrics, and run the configured hook.

const (
	publishBuffer = 1024 // events waiting to be stored in etcd
	hookBuffer    = 256  // events waiting for the hook
	maxHookOutput = 4 << 10
)

// publishEvents stores every event of sub in the group's event log until
// sub closes or ctx ends: with the events queued behind it, up to
// registry's transaction bound, in one etcd write. Storage failures are
// logged at debug level: the stream is best effort, the log line is the
// record.
func publishEvents(ctx context.Context, log *registry.EventLog, sub *broker.Subscription, logger hclog.Logger) {
	sub.Each(ctx, func(e event.Event) { storeEvents(ctx, log, queuedAfter(sub, e), logger) })
}

// storeEvent stores e in the group's event log (see storeEvents).
func storeEvent(ctx context.Context, log *registry.EventLog, e event.Event, logger hclog.Logger) {
	storeEvents(ctx, log, []event.Event{e}, logger)
}

// storeEvents appends es to the group's event log, within 5 s of ctx; a
// failure is logged at debug (the log line of each event is its record).
func storeEvents(ctx context.Context, log *registry.EventLog, es []event.Event, logger hclog.Logger) {
	bs := make([][]byte, 0, len(es))
	for _, e := range es {
		if b, err := json.Marshal(e); err == nil {
			bs = append(bs, b)
		}
	}
	cctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	if err := log.Append(cctx, bs...); err != nil {
		logger.Debug("events not stored in the registry", "events", len(bs), "first", string(es[0].Kind), "error", err)
	}
}

// storeBatch is how many events storeEvents is given at most at once.
const storeBatch = 64

// queuedAfter returns first and the events sub holds now behind it,
// without waiting for more, storeBatch at most.
func queuedAfter(sub *broker.Subscription, first event.Event) []event.Event {
	es := []event.Event{first}
	for len(es) < storeBatch {
		select {
		case e, ok := <-sub.C:
			if !ok {
				return es
			}
			es = append(es, e)
		default:
			return es
		}
	}
	return es
}

// storePending stores the events sub holds now, without waiting for more
// (at a stop, once the publisher's run has ended), a batch at a time, each
// within ctx.
func storePending(ctx context.Context, log *registry.EventLog, sub *broker.Subscription, logger hclog.Logger) {
	for ctx.Err() == nil {
		select {
		case e, ok := <-sub.C:
			if !ok {
				return
			}
			storeEvents(ctx, log, queuedAfter(sub, e), logger)
		default:
			return
		}
	}
}

// runHook runs the hook executable once per event of sub, one at a time,
// with the event as JSON on stdin and timeout (on clk) as its bound. Its
// output is logged (bounded); a failure is logged and the next event goes
// on.
//
// The hook runs in a process group of its own, and at the timeout the
// whole group is killed: a script waiting for a command it started (curl,
// sleep, ...) must not leave that command running once hotdeskd has given
// up on it. Children a hook leaves behind when it exits in time are its
// own business, unless they hold its output: those are killed with its
// process group a second after it exits.
//
// It returns when sub closes and every event queued has been run, or when
// ctx ends: that kills a hook still running, and the events still queued
// are dropped, with one warn line saying how many.
func runHook(ctx context.Context, clk clock.Clock, path string, timeout time.Duration, sub *broker.Subscription, logger hclog.Logger) {
	dropped := 0
	defer func() {
		for {
			select {
			case _, ok := <-sub.C:
				if ok {
					dropped++
					continue
				}
			default:
			}
			break
		}
		if dropped > 0 {
			logger.Warn("events not given to the event hook: stopped", "hook", path, "events", dropped)
		}
	}()
	sub.Each(ctx, func(e event.Event) {
		if ctx.Err() != nil { // Each may still pick a queued event
			dropped++
			return
		}
		b, _ := json.Marshal(e)
		hctx, cancel := context.WithCancelCause(ctx)
		expired := clk.AfterFunc(timeout, func() { cancel(errHookTimedOut) })
		cmd := exec.CommandContext(hctx, path, string(e.Kind))
		cmd.Stdin = bytes.NewReader(append(b, '\n'))
		var out boundedBuffer
		out.max = maxHookOutput
		cmd.Stdout, cmd.Stderr = &out, &out
		cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
		cmd.Cancel = func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) }
		cmd.WaitDelay = time.Second
		err := cmd.Run()
		expired.Stop()
		switch {
		case err != nil && errors.Is(context.Cause(hctx), errHookTimedOut):
			err = fmt.Errorf("timed out after %s (event_hook_timeout), killed with its children: %w", timeout, err)
		case errors.Is(err, exec.ErrWaitDelay):
			// The hook exited, but a process it started still held its
			// output a second later (a job put in the background
			// without redirecting it): one left for every event would
			// pile up. It is killed with the hook's process group.
			_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
			err = errors.New("it exited, leaving a process that held its output; that process was killed with the hook's process group (redirect the output of what a hook leaves running)")
		}
		cancel(nil)
		if err != nil {
			logger.Warn("event hook failed", "hook", path, "kind", string(e.Kind), "error", err, "output", out.String())
		} else if out.Len() > 0 {
			logger.Debug("event hook output", "hook", path, "kind", string(e.Kind), "output", out.String())
		}
	})
}

// errHookTimedOut ends a hook's context at event_hook_timeout.
var errHookTimedOut = errors.New("event hook timed out")

// boundedBuffer keeps the first max bytes written to it.
type boundedBuffer struct {
	bytes.Buffer
	max int
}

func (b *boundedBuffer) Write(p []byte) (int, error) {
	if room := b.max - b.Len(); room > 0 {
		b.Buffer.Write(p[:min(len(p), room)])
	}
	return len(p), nil
}
