package registry_test

import (
	"os"
	"testing"
	"time"

	"github.com/hotdesk/hotdesk/internal/testutil"
)

// TestMain fails the package if the tests leave etcd members, clients,
// keepalives or registry goroutines running.
func TestMain(m *testing.M) {
	os.Exit(testutil.CheckLeaks(m.Run(), 10*time.Second,
		"go.etcd.io/", "google.golang.org/grpc", "hotdesk/registry."))
}
