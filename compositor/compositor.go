// Package compositor starts, suspends, resumes and destroys the desktop
// sessions that hotdesk brokers. A Backend runs one compositor process per
// session; subpackages implement backends (weston).
//
// Contract: Create returns once the compositor is ready to accept a client.
// Suspend cuts the display stream but keeps the compositor and its
// applications running; Resume makes it displayable again. Destroy stops
// the compositor (idempotent: destroying an unknown or dead session is not
// an error). A compositor that exits on its own is reported once on Exits,
// and the backend forgets it.
package compositor

import (
	"context"
	"errors"
	"time"

	"github.com/hotdesk/hotdesk/internal/rlimit"
)

// ErrNotFound is returned for an unknown session id.
var ErrNotFound = errors.New("compositor: session not found")

// ErrFull is wrapped by a Create refused because the backend runs as many
// sessions as it may (a session cap, taken atomically with the start).
var ErrFull = errors.New("compositor: session limit reached")

// Spec describes a session to create.
type Spec struct {
	SessionID string // [A-Za-z0-9-], unique per backend
	User      string // local user the session belongs to
	// Env is extra environment (KEY=VALUE) for the compositor, e.g. from PAM.
	Env []string
	// Limits are resource limits for the compositor and what it starts,
	// e.g. from the PAM session (pam_limits); a backend that runs
	// desktops as their users applies them, within its own hard limits.
	Limits []rlimit.Limit
	// Labels are the broker's own small facts about the session (its
	// token, creation time), kept with the compositor's state so that a
	// restarted broker re-adopting it knows what it is. Bounded by the
	// backend (a few KB).
	Labels map[string]string
}

// Info describes a running compositor.
type Info struct {
	SessionID string
	User      string
	PID       int
	// Endpoint is where a display client connects, e.g. "wayland:/run/…/wayland-0"
	// or "rdp://127.0.0.1:3390".
	Endpoint  string
	Started   time.Time
	Suspended bool
	Labels    map[string]string // as given to Create
}

// Exit reports a compositor that ended without Destroy.
type Exit struct {
	SessionID string
	PID       int
	Err       error // why: exit status or signal
}

// Backend manages compositor processes.
type Backend interface {
	Create(ctx context.Context, spec Spec) (Info, error)
	Suspend(ctx context.Context, sessionID string) error
	Resume(ctx context.Context, sessionID string) (Info, error)
	Destroy(ctx context.Context, sessionID string) error
	// List returns every compositor this backend runs.
	List(ctx context.Context) ([]Info, error)
	// Adopt finds compositors left running by a previous broker process in
	// the backend's state directory, verifies each is the process that was
	// started, takes over its supervision and returns it. Entries that
	// cannot be adopted are cleaned up and returned in lost with a reason.
	Adopt(ctx context.Context) (adopted []Info, lost []Exit, err error)
	// Exits reports compositors that ended on their own. It is never closed
	// before Close.
	Exits() <-chan Exit
	// Close stops supervising without killing compositors (they outlive the
	// broker and can be re-adopted).
	Close() error
}
