package adminapi

import (
	"context"
	"net/http"
	"time"
)

// SetShutdownTimeoutForTest sets how long Serve lets requests in flight
// finish after its context ends (NewServer: 2 s).
func (s *Server) SetShutdownTimeoutForTest(d time.Duration) { s.shutdownTimeout = d }

// SetMaxConnsForTest sets how many connections the server holds at once
// (NewServer: 32).
func (s *Server) SetMaxConnsForTest(n int) { s.maxConns = n }

// ServeForTest serves one request as if it came over the admin socket
// from an allowed peer of uid (no socket, no credentials read).
func (s *Server) ServeForTest(w http.ResponseWriter, r *http.Request, uid int) {
	p := &peer{PID: 1, UID: uid, GID: uid, Known: true, Allowed: true}
	s.handler.ServeHTTP(w, r.WithContext(context.WithValue(r.Context(), peerKey{}, p)))
}
