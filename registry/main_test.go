package registry_test

import (
	"os"
	"testing"
	"time"

	"github.com/hotdesk/hotdesk/internal/testutil"
)

// TestMain fails the package if the tests leave etcd members, clients,
// keepalives or registry goroutines running. It runs up to 4 tests at once
// unless -test.parallel is given: they wait on etcd and leases far more
// than they compute.
func TestMain(m *testing.M) {
	testutil.RaiseParallel(4)
	os.Exit(testutil.CheckLeaks(m.Run(), 10*time.Second,
		"go.etcd.io/", "google.golang.org/grpc", "hotdesk/registry."))
}
