// Package httpserve runs an http.Server for as long as a context lives: the
// one serve-then-shut-down loop of hotdeskd's HTTP listeners (admin API,
// metrics, dashboard).
package httpserve

import (
	"context"
	"errors"
	"net"
	"net/http"
	"time"
)

// Serve serves srv on ln until ctx ends or the listener fails. With
// srv.TLSConfig set it serves HTTPS (the certificates come from the
// TLSConfig), otherwise plain HTTP. When ctx ends it shuts srv down: the
// requests in flight get up to grace to finish, then their connections are
// closed (logged on srv.ErrorLog, if set). Serve closes ln and returns only
// after srv's serving goroutine has ended: nil after ctx ended, or the
// error the listener failed with.
func Serve(ctx context.Context, srv *http.Server, ln net.Listener, grace time.Duration) error {
	errc := make(chan error, 1)
	go func() {
		if srv.TLSConfig != nil {
			errc <- srv.ServeTLS(ln, "", "")
			return
		}
		errc <- srv.Serve(ln)
	}()
	select {
	case err := <-errc:
		if errors.Is(err, http.ErrServerClosed) {
			return nil
		}
		return err
	case <-ctx.Done():
	}
	sctx, cancel := context.WithTimeout(context.Background(), grace)
	defer cancel()
	if err := srv.Shutdown(sctx); err != nil {
		if srv.ErrorLog != nil {
			srv.ErrorLog.Printf("[WARN] shutdown did not finish in %v, closing connections: %v", grace, err)
		}
		srv.Close()
	}
	<-errc
	return nil
}
