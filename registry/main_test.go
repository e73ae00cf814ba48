package registry_test

import (
	"fmt"
	"os"
	"runtime"
	"strings"
	"testing"
	"time"
)

// TestMain fails the package if the tests leave etcd members, clients,
// keepalives or registry goroutines running.
func TestMain(m *testing.M) {
	code := m.Run()
	if code == 0 {
		if leaked := leakedGoroutines(10 * time.Second); len(leaked) > 0 {
			fmt.Fprintf(os.Stderr, "leaked %d goroutines:\n\n%s\n", len(leaked), strings.Join(leaked, "\n\n"))
			code = 1
		}
	}
	os.Exit(code)
}

// leakedGoroutines waits up to d for goroutines running etcd, gRPC or
// registry code to end and returns the stacks of those that did not.
func leakedGoroutines(d time.Duration) []string {
	deadline := time.Now().Add(d)
	for {
		var leaked []string
		buf := make([]byte, 4<<20)
		buf = buf[:runtime.Stack(buf, true)]
		for _, g := range strings.Split(string(buf), "\n\n") {
			if strings.Contains(g, "leakedGoroutines") {
				continue
			}
			for _, pkg := range []string{"go.etcd.io/", "google.golang.org/grpc", "hotdesk/registry."} {
				if strings.Contains(g, pkg) {
					leaked = append(leaked, g)
					break
				}
			}
		}
		if len(leaked) == 0 || time.Now().After(deadline) {
			return leaked
		}
		time.Sleep(50 * time.Millisecond)
	}
}
