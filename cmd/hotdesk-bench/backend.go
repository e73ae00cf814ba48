package main

import (
	"context"
	"fmt"
	"os"
	"sync"
	"time"

	"github.com/hotdesk/hotdesk/compositor"
)

// nullBackend is a compositor.Backend that starts no process at all: Create
// records the session and returns at once, Suspend and Resume flip a flag.
//
// THE BENCHMARK USES IT ON PURPOSE: what is measured is the broker's part of
// the hot-desk path (terminal protocol, token proof, registry, redirect),
// not weston's start-up, and 10,000 westons cannot run on a 2-core machine.
// Every JSON row says so in its "notes".
type nullBackend struct {
	mu        sync.Mutex
	sessions  map[string]compositor.Info
	exits     chan compositor.Exit
	closeOnce sync.Once
}

var _ compositor.Backend = (*nullBackend)(nil)

func newNullBackend() *nullBackend {
	return &nullBackend{sessions: make(map[string]compositor.Info), exits: make(chan compositor.Exit)}
}

// Create implements compositor.Backend. PID is the bench's own process:
// there is no compositor process.
func (n *nullBackend) Create(ctx context.Context, spec compositor.Spec) (compositor.Info, error) {
	if err := ctx.Err(); err != nil {
		return compositor.Info{}, fmt.Errorf("bench: null compositor: create: %w", err)
	}
	info := compositor.Info{
		SessionID: spec.SessionID, User: spec.User, PID: os.Getpid(),
		Endpoint: "null:" + spec.SessionID, Started: time.Now(),
	}
	n.mu.Lock()
	defer n.mu.Unlock()
	if _, ok := n.sessions[spec.SessionID]; ok {
		return compositor.Info{}, fmt.Errorf("bench: null compositor: create: session %q exists", spec.SessionID)
	}
	n.sessions[spec.SessionID] = info
	return info, nil
}

func (n *nullBackend) setSuspended(id string, v bool) (compositor.Info, error) {
	n.mu.Lock()
	defer n.mu.Unlock()
	info, ok := n.sessions[id]
	if !ok {
		return compositor.Info{}, fmt.Errorf("bench: null compositor: %q: %w", id, compositor.ErrNotFound)
	}
	info.Suspended = v
	n.sessions[id] = info
	return info, nil
}

// Suspend implements compositor.Backend.
func (n *nullBackend) Suspend(_ context.Context, id string) error {
	_, err := n.setSuspended(id, true)
	return err
}

// Resume implements compositor.Backend.
func (n *nullBackend) Resume(_ context.Context, id string) (compositor.Info, error) {
	return n.setSuspended(id, false)
}

// Destroy implements compositor.Backend (idempotent).
func (n *nullBackend) Destroy(_ context.Context, id string) error {
	n.mu.Lock()
	delete(n.sessions, id)
	n.mu.Unlock()
	return nil
}

// List implements compositor.Backend.
func (n *nullBackend) List(context.Context) ([]compositor.Info, error) {
	n.mu.Lock()
	defer n.mu.Unlock()
	out := make([]compositor.Info, 0, len(n.sessions))
	for _, i := range n.sessions {
		out = append(out, i)
	}
	return out, nil
}

// Adopt implements compositor.Backend: nothing survives a bench run.
func (n *nullBackend) Adopt(context.Context) ([]compositor.Info, []compositor.Exit, error) {
	return nil, nil, nil
}

// Exits implements compositor.Backend: a null compositor never exits on its own.
func (n *nullBackend) Exits() <-chan compositor.Exit { return n.exits }

// Close implements compositor.Backend.
func (n *nullBackend) Close() error {
	n.closeOnce.Do(func() { close(n.exits) })
	return nil
}
