package proto_test

import (
	"os"
	"testing"
	"time"

	"github.com/hotdesk/hotdesk/internal/testutil"
)

// TestMain fails the package if the tests leave connection goroutines
// (TLS handshakes, readers, listeners) running.
func TestMain(m *testing.M) {
	os.Exit(testutil.CheckLeaks(m.Run(), 5*time.Second,
		"hotdesk/proto", "crypto/tls.", "net.(*pipe)", "net.(*conn)", "net.(*TCPListener)"))
}
