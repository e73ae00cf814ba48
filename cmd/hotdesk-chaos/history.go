package main

import (
	"encoding/json"
	"io"
	"sync"
	"time"
)

// Kind names a terminal observation.
type Kind string

// What a terminal can see. Every message from a broker that matters to the
// checker is recorded the moment the terminal reads it.
const (
	KindConnected    Kind = "connected"    // a connection to Server is up (Welcome read)
	KindDisconnected Kind = "disconnected" // connection Conn is gone (Detail says why)
	KindAttached     Kind = "attached"     // Attached{Session, Token} on Conn
	KindDetached     Kind = "detached"     // Detached{Session, Reason} on Conn
	KindRedirect     Kind = "redirect"     // Redirect{Token} to Server
	KindError        Kind = "error"        // Error{Reason=code, Token} on Conn, or a local failure (redirect not followed)
)

// Event is one observation of one terminal, at a time relative to the
// start of the run.
type Event struct {
	At      time.Duration `json:"at"`
	Kind    Kind          `json:"kind"`
	Term    string        `json:"term"`
	Conn    int64         `json:"conn,omitempty"` // the terminal's connection serial
	Server  string        `json:"server,omitempty"`
	Token   string        `json:"token,omitempty"`
	Session string        `json:"session,omitempty"`
	Reason  string        `json:"reason,omitempty"` // detach reason or error code name
	Detail  string        `json:"detail,omitempty"`
}

// Op is one operation of the workload (or a probe): its start and end, and
// whether it did what the person asked (insert → Attached at that terminal,
// remove → Detached token_removed or no longer shown) or the administrator
// asked (admin.go: the admin API's answer was a success).
type Op struct {
	Kind    string        `json:"op"`   // insert, takeover, remove, probe; kill, disconnect, lock, drain, undrain
	Term    string        `json:"term"` // the terminal; for an administrator's action "admin@" and the broker asked
	Token   string        `json:"token"`
	Start   time.Duration `json:"start"`
	End     time.Duration `json:"end"`
	OK      bool          `json:"ok"`
	Session string        `json:"session,omitempty"` // the session attached; for kill, disconnect and lock the one acted on
	Server  string        `json:"server,omitempty"`  // drain, undrain: the server named
	Err     string        `json:"error,omitempty"`
	// Probe marks the harness's own recovery probes; they do not count as
	// workload operations.
	Probe bool `json:"probe,omitempty"`
}

// Fault is one injected fault: when it was injected, healed (the process
// restarted, the link restored, …) and when the group was seen working
// again (every broker ready, a probe through each broker succeeded, every
// terminal connected). Recovered is 0 if that never happened.
type Fault struct {
	Name      string        `json:"fault"`
	Target    string        `json:"target"`
	Start     time.Duration `json:"start"`
	Healed    time.Duration `json:"healed"`
	Recovered time.Duration `json:"recovered"`
}

// Orphan is a session an admin listing showed as orphaned (visible, with
// the broker that took its token).
type Orphan struct {
	At      time.Duration `json:"at"`
	Server  string        `json:"server"`
	Session string        `json:"session"`
	Token   string        `json:"token"`
	Owner   string        `json:"owner"`
}

// ClaimEvent is a change of a session claim (sessions/<token>) in the
// etcd history: who holds the token's claim from this revision on.
type ClaimEvent struct {
	// At is the earliest it may have happened: when the watch received it,
	// or the time its writer stamped into it if that is earlier.
	At time.Duration `json:"at"`
	// Received is when the harness's watch received it (0: At).
	Received time.Duration `json:"received,omitempty"`
	Rev      int64         `json:"rev"`
	Token    string        `json:"token"`
	Server   string        `json:"server"` // the holder; with Deleted, the one that held it
	Session  string        `json:"session"`
	Deleted  bool          `json:"deleted,omitempty"`
}

// History is everything the checker reads.
type History struct {
	Events  []Event  `json:"events"`
	Ops     []Op     `json:"ops"`
	Faults  []Fault  `json:"faults"`
	Orphans []Orphan `json:"orphans"`
	// Claims is the etcd history of the session claims, in revision order.
	Claims []ClaimEvent `json:"claims"`
	// Begin is when the workload started (after setup); End when it stopped.
	Begin time.Duration `json:"begin"`
	End   time.Duration `json:"end"`
}

// recorder collects a History from many goroutines and mirrors every entry
// as a JSON line to w (the run's history.jsonl).
type recorder struct {
	start time.Time

	mu sync.Mutex // guards the fields below
	h  History
	w  *json.Encoder
}

func newRecorder(start time.Time, w io.Writer) *recorder {
	r := &recorder{start: start}
	if w != nil {
		r.w = json.NewEncoder(w)
	}
	return r
}

func (r *recorder) now() time.Duration { return time.Since(r.start) }

func (r *recorder) event(e Event) {
	e.At = r.now()
	record(r, &r.h.Events, "event", e)
}

func (r *recorder) op(o Op) { record(r, &r.h.Ops, "op", o) }

func (r *recorder) orphan(o Orphan) {
	o.At = r.now()
	record(r, &r.h.Orphans, "orphan", o)
}

// record appends v to list, one of r.h's lists, and mirrors it as what.
func record[T any](r *recorder, list *[]T, what string, v T) {
	r.mu.Lock()
	defer r.mu.Unlock()
	*list = append(*list, v)
	r.mirror(what, v)
}

// claim records c; c.At is the caller's estimate of when it happened.
func (r *recorder) claim(c ClaimEvent) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.h.Claims = append(r.h.Claims, c)
}

// fault records f, or updates it if a fault with the same Start exists.
func (r *recorder) fault(f Fault) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for i := range r.h.Faults {
		if r.h.Faults[i].Start == f.Start {
			r.h.Faults[i] = f
			r.mirror("fault", f)
			return
		}
	}
	r.h.Faults = append(r.h.Faults, f)
	r.mirror("fault", f)
}

func (r *recorder) setBegin() {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.h.Begin = time.Since(r.start)
}

// history returns a copy of the history so far, ending now.
func (r *recorder) history() History {
	r.mu.Lock()
	defer r.mu.Unlock()
	h := r.h
	h.Events = append([]Event(nil), r.h.Events...)
	h.Ops = append([]Op(nil), r.h.Ops...)
	h.Faults = append([]Fault(nil), r.h.Faults...)
	h.Orphans = append([]Orphan(nil), r.h.Orphans...)
	h.Claims = append([]ClaimEvent(nil), r.h.Claims...)
	h.End = time.Since(r.start)
	return h
}

func (r *recorder) mirror(what string, v any) {
	if r.w != nil {
		_ = r.w.Encode(map[string]any{what: v})
	}
}
