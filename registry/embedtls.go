package registry

import (
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"os"
	"path/filepath"
	"time"

	"github.com/hotdesk/hotdesk/internal/atomicfile"
	"github.com/hotdesk/hotdesk/internal/pki"
)

// Files of an embedded member's private PKI, in EmbedConfig.TLSDir.
const (
	embedCAFile     = "ca.crt"
	embedServerCert = "server.crt"
	embedServerKey  = "server.key"
	embedClientCert = "client.crt"
	embedClientKey  = "client.key"
)

// EmbedTLSFiles names the CA, client certificate and client key of an
// embedded member whose EmbedConfig.TLSDir was dir: what another process of
// the same owner (a second broker on this host, an operator as root) needs
// to be let in.
func EmbedTLSFiles(dir string) (ca, cert, key string) {
	return filepath.Join(dir, embedCAFile), filepath.Join(dir, embedClientCert), filepath.Join(dir, embedClientKey)
}

// ensureEmbedPKI makes dir (0700) hold a CA, a server certificate for the
// loopback addresses (also used as the peer certificate) and a client
// certificate, creating all of them when any is missing. The CA's key is not
// kept: nothing else can ever be signed by it.
func ensureEmbedPKI(dir string) error {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return err
	}
	// An existing directory may have been created with a looser mode.
	if err := os.Chmod(dir, 0o700); err != nil {
		return err
	}
	names := []string{embedCAFile, embedServerCert, embedServerKey, embedClientCert, embedClientKey}
	complete := true
	for _, n := range names {
		if _, err := os.Stat(filepath.Join(dir, n)); errors.Is(err, fs.ErrNotExist) {
			complete = false
		} else if err != nil {
			return err
		}
	}
	if complete {
		return nil
	}
	now := time.Now()
	ca, err := pki.Issue(&x509.Certificate{
		Subject:               pkix.Name{CommonName: "hotdesk embedded etcd CA"},
		NotBefore:             now.Add(-time.Hour),
		NotAfter:              now.AddDate(20, 0, 0),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature,
		BasicConstraintsValid: true,
		IsCA:                  true,
		MaxPathLenZero:        true,
	}, nil, nil)
	if err != nil {
		return err
	}
	leaf := func(cn string, usage []x509.ExtKeyUsage, withHosts bool) (*pki.Issued, error) {
		tmpl := &x509.Certificate{
			Subject:     pkix.Name{CommonName: cn},
			NotBefore:   now.Add(-time.Hour),
			NotAfter:    now.AddDate(20, 0, 0),
			KeyUsage:    x509.KeyUsageDigitalSignature,
			ExtKeyUsage: usage,
		}
		if withHosts {
			tmpl.DNSNames = []string{"localhost"}
			tmpl.IPAddresses = []net.IP{net.IPv4(127, 0, 0, 1), net.IPv6loopback}
		}
		return pki.Issue(tmpl, ca.Cert, ca.Key)
	}
	// The member presents the server certificate to clients and to peers,
	// and as a client to its peers.
	srv, err := leaf("hotdesk embedded etcd", []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth}, true)
	if err != nil {
		return err
	}
	cli, err := leaf("hotdeskd", []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}, false)
	if err != nil {
		return err
	}
	files := []struct {
		name string
		data []byte
	}{
		{embedServerKey, srv.KeyPEM}, {embedClientKey, cli.KeyPEM},
		{embedServerCert, srv.CertPEM}, {embedClientCert, cli.CertPEM},
		{embedCAFile, ca.CertPEM},
	}
	for _, f := range files {
		if err := atomicfile.Write(filepath.Join(dir, f.name), f.data, 0o600); err != nil {
			return err
		}
	}
	return nil
}

// MaxCAFile bounds the read of a CA bundle (a few hundred certificates).
const MaxCAFile = 1 << 20

// ClientTLSFromFiles loads a client TLS configuration for etcd: ca verifies
// the members, cert and key (both or neither) are the client's certificate.
func ClientTLSFromFiles(ca, cert, key string) (*tls.Config, error) {
	tc := &tls.Config{MinVersion: tls.VersionTLS12}
	if ca != "" {
		b, err := atomicfile.ReadLimited(ca, MaxCAFile)
		if err != nil {
			return nil, fmt.Errorf("registry: etcd ca: %w", err)
		}
		tc.RootCAs = x509.NewCertPool()
		if !tc.RootCAs.AppendCertsFromPEM(b) {
			return nil, fmt.Errorf("registry: etcd ca %s: no certificate found", ca)
		}
	}
	if cert != "" || key != "" {
		c, err := tls.LoadX509KeyPair(cert, key)
		if err != nil {
			return nil, fmt.Errorf("registry: etcd client certificate: %w", err)
		}
		tc.Certificates = []tls.Certificate{c}
	}
	return tc, nil
}
