// Package prototest holds helpers for tests that speak the terminal
// protocol to a broker.
package prototest

import (
	"crypto/tls"
	"testing"

	"github.com/hotdesk/hotdesk/proto"
)

// PinnedTLS returns the client TLS configuration of a terminal that trusts
// the server whose certificate fingerprint is pin (proto.ClientTLSConfig
// with no server name and no roots); a pin that is not a SHA-256 digest
// fails t.
func PinnedTLS(t testing.TB, pin []byte) *tls.Config {
	t.Helper()
	cfg, err := proto.ClientTLSConfig("", pin, nil)
	if err != nil {
		t.Fatal(err)
	}
	return cfg
}
