package proto_test

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hotdesk/hotdesk/proto"
	"github.com/hotdesk/hotdesk/proto/prototest"
)

// newCert makes a fresh self-signed certificate in a temporary directory.
func newCert(t *testing.T, hosts ...string) tls.Certificate {
	t.Helper()
	dir := t.TempDir()
	cert, err := proto.LoadOrCreateCert(filepath.Join(dir, "tls.crt"), filepath.Join(dir, "tls.key"), hosts)
	if err != nil {
		t.Fatal(err)
	}
	return cert
}

// server is a real TLS listener on loopback running handle on every
// accepted connection (after the TLS handshake).
type server struct {
	addr string
	pin  []byte
	errs chan error // TLS handshake errors
}

func startServer(t *testing.T, cfg *tls.Config, handle func(*proto.Conn)) *server {
	t.Helper()
	ln, err := tls.Listen("tcp", "127.0.0.1:0", cfg)
	if err != nil {
		t.Fatal(err)
	}
	s := &server{addr: ln.Addr().String(), errs: make(chan error, 16)}
	if len(cfg.Certificates) > 0 {
		s.pin = proto.Fingerprint(cfg.Certificates[0].Certificate[0])
	}
	var (
		wg    sync.WaitGroup
		mu    sync.Mutex
		conns []net.Conn
	)
	wg.Go(func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			conns = append(conns, c)
			mu.Unlock()
			wg.Go(func() {
				defer c.Close()
				ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
				defer cancel()
				if err := c.(*tls.Conn).HandshakeContext(ctx); err != nil {
					select {
					case s.errs <- err:
					default:
					}
					return
				}
				handle(proto.NewConn(c))
			})
		}
	})
	t.Cleanup(func() {
		ln.Close()
		mu.Lock()
		for _, c := range conns {
			c.Close()
		}
		mu.Unlock()
		wg.Wait()
	})
	return s
}

// handshakeErr returns the next failed server-side TLS handshake's error.
func (s *server) handshakeErr(t *testing.T) error {
	t.Helper()
	select {
	case err := <-s.errs:
		return err
	case <-time.After(10 * time.Second):
		t.Fatal("no server handshake failure reported")
		return nil
	}
}

func dial(t *testing.T, addr string, cfg *tls.Config) (*proto.Conn, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, err := proto.Dial(ctx, addr, cfg)
	if err == nil {
		t.Cleanup(func() { c.Close() })
	}
	return c, err
}

func TestPinnedTLS(t *testing.T) {
	cert := newCert(t)
	s := startServer(t, proto.ServerTLSConfig(cert), func(c *proto.Conn) { c.Recv() })

	c, err := dial(t, s.addr, prototest.PinnedTLS(t, s.pin))
	if err != nil {
		t.Fatal(err)
	}
	st := c.NetConn().(*tls.Conn).ConnectionState()
	if st.Version != tls.VersionTLS13 || st.NegotiatedProtocol != proto.ALPN {
		t.Fatalf("version %x alpn %q; want TLS 1.3, %q", st.Version, st.NegotiatedProtocol, proto.ALPN)
	}

	// Any other certificate fails the handshake, on both sides.
	other := newCert(t)
	_, err = dial(t, s.addr, prototest.PinnedTLS(t, proto.Fingerprint(other.Certificate[0])))
	if !errors.Is(err, proto.ErrPinMismatch) {
		t.Fatalf("dial with wrong pin: err = %v; want ErrPinMismatch", err)
	}
	if err := s.handshakeErr(t); err == nil {
		t.Fatal("server handshake succeeded with a client that refused its certificate")
	}
}

// TestPinnedTLSConfigCheck: PinnedTLSConfig asks check about the server's
// leaf fingerprint at every handshake and refuses the server with check's
// error until check accepts it (a trust set that grew meanwhile).
func TestPinnedTLSConfigCheck(t *testing.T) {
	s := startServer(t, proto.ServerTLSConfig(newCert(t)), func(c *proto.Conn) { c.Recv() })
	var (
		mu      sync.Mutex
		trusted [][]byte
		asked   [][]byte
	)
	errUntrusted := errors.New("pin not in the trust set")
	cfg := proto.PinnedTLSConfig("", func(fp []byte) error {
		mu.Lock()
		defer mu.Unlock()
		asked = append(asked, fp)
		for _, p := range trusted {
			if bytes.Equal(p, fp) {
				return nil
			}
		}
		return errUntrusted
	})
	if _, err := dial(t, s.addr, cfg); !errors.Is(err, errUntrusted) {
		t.Fatalf("dial before the pin is trusted: err = %v; want %v", err, errUntrusted)
	}
	mu.Lock()
	trusted = append(trusted, s.pin)
	mu.Unlock()
	if _, err := dial(t, s.addr, cfg); err != nil {
		t.Fatalf("dial once the pin is trusted: err = %v; want nil", err)
	}
	mu.Lock()
	defer mu.Unlock()
	if len(asked) != 2 || !bytes.Equal(asked[0], s.pin) || !bytes.Equal(asked[1], s.pin) {
		t.Errorf("check asked about %x; want the server's fingerprint twice", asked)
	}
}

func TestClientTLSConfigRefuses(t *testing.T) {
	tests := []struct {
		name       string
		serverName string
		pin        []byte
		roots      *x509.CertPool
	}{
		{"neither pin nor roots", "localhost", nil, nil},
		{"short pin", "", make([]byte, 31), nil},
		{"empty pin", "", []byte{}, nil},
		{"roots without server name", "", nil, x509.NewCertPool()},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if cfg, err := proto.ClientTLSConfig(tc.serverName, tc.pin, tc.roots); err == nil {
				t.Fatalf("got = %v, nil; want an error", cfg)
			}
		})
	}
}

func TestRootsTLS(t *testing.T) {
	cert := newCert(t, "broker.hotdesk.test")
	s := startServer(t, proto.ServerTLSConfig(cert), func(c *proto.Conn) { c.Recv() })
	roots := x509.NewCertPool()
	roots.AddCert(cert.Leaf)
	tests := []struct {
		name       string
		serverName string
		roots      *x509.CertPool
		ok         bool
	}{
		{"name in certificate", "broker.hotdesk.test", roots, true},
		{"localhost", "localhost", roots, true},
		{"other name", "other.hotdesk.test", roots, false},
		{"unknown root", "localhost", x509.NewCertPool(), false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			cfg, err := proto.ClientTLSConfig(tc.serverName, nil, tc.roots)
			if err != nil {
				t.Fatal(err)
			}
			_, err = dial(t, s.addr, cfg)
			if (err == nil) != tc.ok {
				t.Fatalf("dial err = %v; want ok %v", err, tc.ok)
			}
		})
	}
	// A pin takes precedence over roots.
	cfg, err := proto.ClientTLSConfig("other.hotdesk.test", s.pin, x509.NewCertPool())
	if err != nil {
		t.Fatal(err)
	}
	if _, err := dial(t, s.addr, cfg); err != nil {
		t.Fatalf("pinned dial: %v", err)
	}
}

// TestTLSPolicy: TLS 1.3 and ALPN hotdesk/1 are required on both sides.
func TestTLSPolicy(t *testing.T) {
	cert := newCert(t)
	s := startServer(t, proto.ServerTLSConfig(cert), func(c *proto.Conn) { c.Recv() })
	tests := []struct {
		name string
		cfg  *tls.Config
	}{
		{"tls 1.2", &tls.Config{InsecureSkipVerify: true, MaxVersion: tls.VersionTLS12, NextProtos: []string{proto.ALPN}}},
		{"no alpn", &tls.Config{InsecureSkipVerify: true}},
		{"other alpn", &tls.Config{InsecureSkipVerify: true, NextProtos: []string{"h2"}}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			c, err := dial(t, s.addr, tc.cfg)
			if err == nil {
				// TLS 1.3 client handshakes complete before the server's
				// verdict arrives; the server's refusal shows on first read.
				_, err = c.Recv()
			}
			if err == nil {
				t.Fatal("connection accepted; want refused")
			}
			if err := s.handshakeErr(t); err == nil {
				t.Fatal("server handshake succeeded")
			} else {
				t.Logf("server: %v", err)
			}
		})
	}

	// A server that does not speak ALPN hotdesk/1 is refused by the client.
	plain := startServer(t, &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS13}, func(c *proto.Conn) { c.Recv() })
	if _, err := dial(t, plain.addr, prototest.PinnedTLS(t, plain.pin)); !errors.Is(err, proto.ErrALPN) {
		t.Fatalf("dial server without alpn: err = %v; want ErrALPN", err)
	}
}

func TestDialContext(t *testing.T) {
	// A TCP listener that never answers the TLS handshake: Dial returns
	// when the context is cancelled.
	addr, accepted := acceptOne(t)
	ctx, cancel := context.WithCancel(context.Background())
	errc := make(chan error, 1)
	go func() {
		_, err := proto.Dial(ctx, addr, prototest.PinnedTLS(t, make([]byte, 32)))
		errc <- err
	}()
	c := <-accepted
	if c == nil {
		t.Fatal("accept failed")
	}
	defer c.Close()
	cancel()
	if err := <-errc; !errors.Is(err, context.Canceled) {
		t.Fatalf("err = %v; want context.Canceled", err)
	}
	if _, err := proto.Dial(context.Background(), addr, nil); err == nil {
		t.Fatal("dial with nil config succeeded")
	}
}

func TestLoadOrCreateCert(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "etc", "hotdesk")
	certFile, keyFile := filepath.Join(dir, "tls.crt"), filepath.Join(dir, "tls.key")
	created, err := proto.LoadOrCreateCert(certFile, keyFile, []string{"broker1.example", "10.1.2.3", "  ", "localhost"})
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range []struct {
		path string
		mode os.FileMode
	}{{dir, 0o700 | os.ModeDir}, {certFile, 0o644}, {keyFile, 0o600}} {
		fi, err := os.Stat(f.path)
		if err != nil {
			t.Fatal(err)
		}
		if got := fi.Mode(); got != f.mode {
			t.Errorf("%s mode = %v; want %v", f.path, got, f.mode)
		}
	}
	leaf := created.Leaf
	if leaf == nil {
		t.Fatal("Leaf not set")
	}
	if got, want := leaf.DNSNames, []string{"broker1.example", "localhost"}; !slices.Equal(got, want) {
		t.Errorf("DNSNames = %v; want %v", got, want)
	}
	var ips []string
	for _, ip := range leaf.IPAddresses {
		ips = append(ips, ip.String())
	}
	if got, want := ips, []string{"10.1.2.3", "127.0.0.1", "::1"}; !slices.Equal(got, want) {
		t.Errorf("IPAddresses = %v; want %v", got, want)
	}
	if got := leaf.NotAfter.Sub(leaf.NotBefore); got < 3650*24*time.Hour {
		t.Errorf("validity = %v; want ≥ 10 years", got)
	}
	if pub, ok := leaf.PublicKey.(*ecdsa.PublicKey); !ok || pub.Curve != elliptic.P256() {
		t.Errorf("public key = %T; want ECDSA P-256", leaf.PublicKey)
	}
	keyPEM, err := os.ReadFile(keyFile)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(string(keyPEM), "-----BEGIN PRIVATE KEY-----") {
		t.Errorf("key file does not start with a PKCS#8 PEM block")
	}
	if entries, _ := os.ReadDir(dir); len(entries) != 2 {
		t.Errorf("dir holds %d entries; want 2 (no temporary files left)", len(entries))
	}

	// Loading again returns the same certificate.
	loaded, err := proto.LoadOrCreateCert(certFile, keyFile, nil)
	if err != nil {
		t.Fatal(err)
	}
	if got, want := proto.Fingerprint(loaded.Certificate[0]), proto.Fingerprint(created.Certificate[0]); !bytes.Equal(got, want) {
		t.Fatalf("fingerprint = %x; want %x", got, want)
	}
	if loaded.Leaf == nil {
		t.Fatal("loaded Leaf not set")
	}

	// Only one file present: refuse rather than overwrite.
	if err := os.Remove(certFile); err != nil {
		t.Fatal(err)
	}
	if _, err := proto.LoadOrCreateCert(certFile, keyFile, nil); err == nil {
		t.Fatal("key without cert: got nil error")
	}
	if after, _ := os.ReadFile(keyFile); !bytes.Equal(after, keyPEM) {
		t.Fatal("key file was overwritten")
	}
	// Garbage files are an error.
	if err := os.WriteFile(certFile, []byte("not pem"), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := proto.LoadOrCreateCert(certFile, keyFile, nil); err == nil {
		t.Fatal("garbage cert: got nil error")
	}
}

func TestFingerprint(t *testing.T) {
	fp := proto.Fingerprint([]byte("der"))
	s := proto.FormatFingerprint(fp)
	if !strings.HasPrefix(s, "sha256:") || len(s) != 7+64 || strings.ToLower(s) != s {
		t.Fatalf("FormatFingerprint = %q; want sha256:<64 lower-case hex>", s)
	}
	hexs := strings.TrimPrefix(s, "sha256:")
	var colons []string
	for i := 0; i < len(hexs); i += 2 {
		colons = append(colons, hexs[i:i+2])
	}
	for _, in := range []string{s, hexs, strings.ToUpper(hexs), strings.Join(colons, ":"), "SHA256:" + strings.ToUpper(strings.Join(colons, ":")), " " + s + "\n"} {
		got, err := proto.ParseFingerprint(in)
		if err != nil || !bytes.Equal(got, fp) {
			t.Errorf("ParseFingerprint(%q) = %x, %v; want %x", in, got, err, fp)
		}
	}
	for _, in := range []string{"", "sha256:", "sha1:" + hexs, hexs[:62], hexs + "00", "zz" + hexs[2:], "md5:" + hexs} {
		if got, err := proto.ParseFingerprint(in); err == nil {
			t.Errorf("ParseFingerprint(%q) = %x; want an error", in, got)
		}
	}
}
