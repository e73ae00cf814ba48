package proto

import (
	"bytes"
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"os"
	"slices"
	"strings"
	"time"

	"github.com/hotdesk/hotdesk/internal/atomicfile"
	"github.com/hotdesk/hotdesk/internal/pki"
)

// ALPN is the TLS application protocol name of this protocol.
const ALPN = "hotdesk/1"

// certValidity is the lifetime of a generated self-signed certificate.
const certValidity = 10 * 365 * 24 * time.Hour

var (
	// ErrPinMismatch reports a server certificate that does not match the pinned fingerprint.
	ErrPinMismatch = errors.New("proto: server certificate does not match pinned fingerprint")
	// ErrALPN reports a peer that did not agree on ALPN "hotdesk/1".
	ErrALPN = errors.New("proto: peer did not negotiate " + ALPN)
)

// LoadOrCreateCert loads the PEM certificate chain and private key from
// certFile and keyFile. If both are absent it generates a self-signed ECDSA
// P-256 certificate valid for 10 years for hosts (DNS names or IP addresses)
// plus "localhost", 127.0.0.1 and ::1, writes the certificate (0644) and the
// key (0600, PKCS#8), creating missing directories with mode 0700, and
// returns it. If only one of the two files exists it fails rather than
// overwrite anything. The returned certificate has Leaf set.
func LoadOrCreateCert(certFile, keyFile string, hosts []string) (tls.Certificate, error) {
	certExists, err := exists(certFile)
	if err != nil {
		return tls.Certificate{}, fmt.Errorf("proto: load cert: %w", err)
	}
	keyExists, err := exists(keyFile)
	if err != nil {
		return tls.Certificate{}, fmt.Errorf("proto: load cert: %w", err)
	}
	switch {
	case certExists && keyExists:
		cert, err := tls.LoadX509KeyPair(certFile, keyFile)
		if err != nil {
			return tls.Certificate{}, fmt.Errorf("proto: load cert: %w", err)
		}
		return withLeaf(cert)
	case certExists || keyExists:
		return tls.Certificate{}, fmt.Errorf("proto: load cert: only one of %s and %s exists; provide both or neither", certFile, keyFile)
	}
	certPEM, keyPEM, err := generateCert(hosts)
	if err != nil {
		return tls.Certificate{}, fmt.Errorf("proto: create cert: %w", err)
	}
	for _, f := range []struct {
		path string
		data []byte
		mode os.FileMode
	}{{keyFile, keyPEM, 0o600}, {certFile, certPEM, 0o644}} {
		if err := atomicfile.WriteMkdir(f.path, f.data, f.mode); err != nil {
			return tls.Certificate{}, fmt.Errorf("proto: create cert: %w", err)
		}
	}
	cert, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		return tls.Certificate{}, fmt.Errorf("proto: create cert: %w", err)
	}
	return withLeaf(cert)
}

func exists(path string) (bool, error) {
	_, err := os.Stat(path)
	switch {
	case err == nil:
		return true, nil
	case errors.Is(err, fs.ErrNotExist):
		return false, nil
	}
	return false, err
}

func withLeaf(cert tls.Certificate) (tls.Certificate, error) {
	if cert.Leaf != nil {
		return cert, nil
	}
	if len(cert.Certificate) == 0 {
		return tls.Certificate{}, errors.New("proto: certificate file holds no certificate")
	}
	leaf, err := x509.ParseCertificate(cert.Certificate[0])
	if err != nil {
		return tls.Certificate{}, fmt.Errorf("proto: parse certificate: %w", err)
	}
	cert.Leaf = leaf
	return cert, nil
}

// generateCert makes a self-signed P-256 certificate and returns it and its
// key in PEM.
func generateCert(hosts []string) (certPEM, keyPEM []byte, err error) {
	now := time.Now()
	tmpl := &x509.Certificate{
		Subject:               pkix.Name{CommonName: "hotdesk broker"},
		NotBefore:             now.Add(-time.Hour),
		NotAfter:              now.Add(certValidity),
		KeyUsage:              x509.KeyUsageDigitalSignature,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		BasicConstraintsValid: true,
	}
	seen := map[string]bool{}
	for _, h := range append(slices.Clone(hosts), "localhost", "127.0.0.1", "::1") {
		h = strings.TrimSpace(h)
		if h == "" || seen[h] {
			continue
		}
		seen[h] = true
		if ip := net.ParseIP(h); ip != nil {
			tmpl.IPAddresses = append(tmpl.IPAddresses, ip)
		} else {
			tmpl.DNSNames = append(tmpl.DNSNames, h)
		}
	}
	cert, err := pki.Issue(tmpl, nil, nil)
	if err != nil {
		return nil, nil, err
	}
	return cert.CertPEM, cert.KeyPEM, nil
}

// Fingerprint returns the SHA-256 of a certificate's DER encoding (use the
// leaf certificate).
func Fingerprint(der []byte) []byte {
	sum := sha256.Sum256(der)
	return sum[:]
}

// FormatFingerprint renders fp as "sha256:" followed by lower-case hex.
func FormatFingerprint(fp []byte) string { return "sha256:" + hex.EncodeToString(fp) }

// ParseFingerprint parses "sha256:<hex>" or bare hex, with or without colons
// between bytes, in either case, and requires 32 bytes.
func ParseFingerprint(s string) ([]byte, error) {
	h := strings.TrimSpace(s)
	if len(h) >= 7 && strings.EqualFold(h[:7], "sha256:") {
		h = h[7:]
	}
	h = strings.ReplaceAll(h, ":", "")
	fp, err := hex.DecodeString(h)
	if err != nil {
		return nil, fmt.Errorf("proto: parse fingerprint: %w", err)
	}
	if len(fp) != sha256.Size {
		return nil, fmt.Errorf("proto: parse fingerprint: %d bytes; want %d", len(fp), sha256.Size)
	}
	return fp, nil
}

// ServerTLSConfig returns the broker's TLS configuration: TLS 1.3 only, ALPN
// "hotdesk/1" required (a client offering no ALPN or another one is refused),
// no client certificates.
func ServerTLSConfig(cert tls.Certificate) *tls.Config {
	return &tls.Config{
		Certificates:     []tls.Certificate{cert},
		MinVersion:       tls.VersionTLS13,
		NextProtos:       []string{ALPN},
		VerifyConnection: checkALPN,
	}
}

// ClientTLSConfig returns a terminal's TLS configuration: TLS 1.3 only, ALPN
// "hotdesk/1" required. If pin is not nil, the server's leaf certificate
// must have exactly that SHA-256 fingerprint (compared in constant time) and
// nothing else about it is checked (ErrPinMismatch otherwise); serverName is
// then only sent as SNI and may be empty. Else, if roots is not nil, the
// chain is verified against roots for serverName, which must not be empty.
// Both nil is an error.
func ClientTLSConfig(serverName string, pin []byte, roots *x509.CertPool) (*tls.Config, error) {
	switch {
	case pin != nil:
		if len(pin) != sha256.Size {
			return nil, fmt.Errorf("proto: client tls: pin is %d bytes; want %d", len(pin), sha256.Size)
		}
		want := bytes.Clone(pin)
		return PinnedTLSConfig(serverName, func(fp []byte) error {
			if subtle.ConstantTimeCompare(fp, want) != 1 {
				return fmt.Errorf("%w: got %s", ErrPinMismatch, FormatFingerprint(fp))
			}
			return nil
		}), nil
	case roots != nil:
		if serverName == "" {
			return nil, errors.New("proto: client tls: server name required to verify against roots")
		}
		cfg := clientTLSBase(serverName)
		cfg.RootCAs = roots
		cfg.VerifyConnection = checkALPN
		return cfg, nil
	}
	return nil, errors.New("proto: client tls: neither a pin nor roots given")
}

// PinnedTLSConfig is ClientTLSConfig for a server known by fingerprint,
// with the pin check left to the caller: the handshake is refused
// (ErrPinMismatch) when the server presents no certificate, and otherwise
// when check returns an error for the SHA-256 fingerprint of its leaf
// certificate; nothing else about the certificate is checked. check runs
// during every handshake, so the fingerprints it accepts may change; it
// should compare in constant time and wrap ErrPinMismatch.
func PinnedTLSConfig(serverName string, check func(fp []byte) error) *tls.Config {
	cfg := clientTLSBase(serverName)
	cfg.InsecureSkipVerify = true // replaced by the pin check below
	cfg.VerifyConnection = func(cs tls.ConnectionState) error {
		if len(cs.PeerCertificates) == 0 {
			return ErrPinMismatch
		}
		if err := check(Fingerprint(cs.PeerCertificates[0].Raw)); err != nil {
			return err
		}
		return checkALPN(cs)
	}
	return cfg
}

// clientTLSBase is a terminal's TLS configuration before the server check:
// TLS 1.3 only, ALPN "hotdesk/1" offered.
func clientTLSBase(serverName string) *tls.Config {
	return &tls.Config{
		ServerName: serverName,
		MinVersion: tls.VersionTLS13,
		NextProtos: []string{ALPN},
	}
}

// checkALPN refuses a connection (either side's) that did not agree on
// ALPN "hotdesk/1".
func checkALPN(cs tls.ConnectionState) error {
	if cs.NegotiatedProtocol != ALPN {
		return ErrALPN
	}
	return nil
}

// Dial connects to addr over TCP and completes the TLS handshake with cfg,
// both bounded by ctx, and returns the Conn. If cfg has no ServerName and
// does not skip verification, the host part of addr is used. The TCP
// connection's retransmission timeout is capped (BoundRetransmits).
func Dial(ctx context.Context, addr string, cfg *tls.Config, opts ...ConnOption) (*Conn, error) {
	if cfg == nil {
		return nil, errors.New("proto: dial: nil tls config")
	}
	var d net.Dialer
	raw, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("proto: dial %s: %w", addr, err)
	}
	BoundRetransmits(raw)
	cfg = cfg.Clone()
	if cfg.ServerName == "" && !cfg.InsecureSkipVerify {
		if host, _, err := net.SplitHostPort(addr); err == nil {
			cfg.ServerName = host
		}
	}
	tc := tls.Client(raw, cfg)
	if err := tc.HandshakeContext(ctx); err != nil {
		raw.Close()
		return nil, fmt.Errorf("proto: dial %s: tls handshake: %w", addr, err)
	}
	return NewConn(tc, opts...), nil
}

// MaxRetransmit is the longest a terminal or attach connection waits
// before sending a lost segment again (BoundRetransmits): 1 s, the least
// Linux allows.
const MaxRetransmit = time.Second
