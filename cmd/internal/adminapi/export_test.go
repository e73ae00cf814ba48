package adminapi

import "time"

// SetShutdownTimeoutForTest sets how long Serve lets requests in flight
// finish after its context ends (NewServer: 2 s).
func (s *Server) SetShutdownTimeoutForTest(d time.Duration) { s.shutdownTimeout = d }

// SetMaxConnsForTest sets how many connections the server holds at once
// (NewServer: 32).
func (s *Server) SetMaxConnsForTest(n int) { s.maxConns = n }
