package weston

import (
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/hotdesk/hotdesk/internal/freeport"
)

// prepareRDP gives session s of the RDP backend its own TLS key pair (RSA
// 2048, self-signed; 0600, owned by the session's user when it runs as one)
// and a free loopback port, and returns weston's arguments for them and
// the port. The RDP listener is bound to 127.0.0.1 only: terminals reach
// it through the broker's attach gateway, never directly (and the port is
// guarded before weston starts: see Config.RDPGuard).
func prepareRDP(s *session, uid, gid int) ([]string, int, error) {
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		return nil, 0, fmt.Errorf("rdp key: %w", err)
	}
	serial, _ := rand.Int(rand.Reader, big.NewInt(1<<62))
	tmpl := &x509.Certificate{
		SerialNumber: serial,
		Subject:      pkix.Name{CommonName: "hotdesk session " + s.id},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(10 * 365 * 24 * time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature | x509.KeyUsageKeyEncipherment,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		IPAddresses:  []net.IP{net.IPv4(127, 0, 0, 1)},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return nil, 0, fmt.Errorf("rdp certificate: %w", err)
	}
	certPath, keyPath := filepath.Join(s.dir, "rdp.crt"), filepath.Join(s.dir, "rdp.key")
	files := map[string][]byte{
		certPath: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}),
		keyPath:  pem.EncodeToMemory(&pem.Block{Type: "RSA PRIVATE KEY", Bytes: x509.MarshalPKCS1PrivateKey(key)}),
	}
	for p, b := range files {
		if err := os.WriteFile(p, b, 0o600); err != nil {
			return nil, 0, fmt.Errorf("rdp: %w", err)
		}
		if uid >= 0 {
			if err := os.Chown(p, uid, gid); err != nil {
				return nil, 0, fmt.Errorf("rdp: %w", err)
			}
		}
	}
	port, err := freeport.Loopback()
	if err != nil {
		return nil, 0, fmt.Errorf("rdp port: %w", err)
	}
	return []string{"--address=127.0.0.1", "--port=" + strconv.Itoa(port),
		"--rdp-tls-cert=" + certPath, "--rdp-tls-key=" + keyPath}, port, nil
}

// rdpPortOf parses the port of an "rdp://127.0.0.1:PORT" endpoint (0 if
// the endpoint is not an RDP one).
func rdpPortOf(endpoint string) int {
	hostport, ok := strings.CutPrefix(endpoint, "rdp://")
	if !ok {
		return 0
	}
	_, p, err := net.SplitHostPort(hostport)
	if err != nil {
		return 0
	}
	n, _ := strconv.Atoi(p)
	return n
}
