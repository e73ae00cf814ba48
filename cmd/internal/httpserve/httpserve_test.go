package httpserve

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"io"
	"log"
	"math/big"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/hotdesk/hotdesk/internal/testutil"
)

// serve runs Serve on a fresh loopback listener and returns the listener's
// address, ctx's cancel and Serve's result (closed after it, so the test's
// cleanup can wait for Serve too).
func serve(t *testing.T, srv *http.Server, grace time.Duration) (string, context.CancelFunc, <-chan error) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		done <- Serve(ctx, srv, ln, grace)
		close(done)
	}()
	t.Cleanup(func() {
		cancel()
		<-done
	})
	return ln.Addr().String(), cancel, done
}

func hello(w http.ResponseWriter, _ *http.Request) { io.WriteString(w, "hello") }

func get(t *testing.T, c *http.Client, url string) string {
	t.Helper()
	resp, err := c.Get(url)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// Serve answers until ctx ends, then returns nil with the listener closed.
func TestServeUntilCancelled(t *testing.T) {
	addr, cancel, done := serve(t, &http.Server{Handler: http.HandlerFunc(hello)}, time.Second)
	c := &http.Client{Transport: &http.Transport{DisableKeepAlives: true}}
	if got := get(t, c, "http://"+addr+"/"); got != "hello" {
		t.Fatalf("body = %q; want hello", got)
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatalf("Serve after cancel = %v; want nil", err)
	}
	if conn, err := net.Dial("tcp", addr); err == nil {
		conn.Close()
		t.Fatalf("listener %s still accepts after Serve returned", addr)
	}
}

// A listener that fails ends Serve with its error at once.
func TestServeListenerError(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ln.Close()
	err = Serve(context.Background(), &http.Server{Handler: http.HandlerFunc(hello)}, ln, time.Second)
	if err == nil || !errors.Is(err, net.ErrClosed) {
		t.Fatalf("Serve on a closed listener = %v; want net.ErrClosed", err)
	}
}

// A request stuck in its handler holds up shutdown only for grace: then
// its connection is closed, and that is logged.
func TestServeShutdownBound(t *testing.T) {
	entered, release := make(chan struct{}), make(chan struct{})
	t.Cleanup(func() { close(release) })
	var logs testutil.LockedBuffer
	srv := &http.Server{
		Handler: http.HandlerFunc(func(http.ResponseWriter, *http.Request) {
			close(entered)
			<-release
		}),
		ErrorLog: log.New(&logs, "", 0),
	}
	addr, cancel, done := serve(t, srv, 50*time.Millisecond)
	res := make(chan error, 1)
	go func() {
		resp, err := http.Get("http://" + addr + "/")
		if err == nil {
			resp.Body.Close()
		}
		res <- err
	}()
	<-entered
	cancel()
	if err := <-done; err != nil {
		t.Fatalf("Serve after cancel = %v; want nil", err)
	}
	if err := <-res; err == nil {
		t.Errorf("stuck request got = nil error; want its connection closed")
	}
	if got := logs.String(); !strings.Contains(got, "[WARN] shutdown did not finish") {
		t.Errorf("error log = %q; want the forced close logged", got)
	}
}

// With a TLSConfig the server speaks HTTPS with its certificate.
func TestServeTLS(t *testing.T) {
	cert, pool := selfSigned(t)
	srv := &http.Server{
		Handler:   http.HandlerFunc(hello),
		TLSConfig: &tls.Config{Certificates: []tls.Certificate{cert}},
		ErrorLog:  log.New(io.Discard, "", 0),
	}
	addr, _, _ := serve(t, srv, time.Second)
	c := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}, DisableKeepAlives: true}}
	if got := get(t, c, "https://"+addr+"/"); got != "hello" {
		t.Fatalf("body over TLS = %q; want hello", got)
	}
	// A plain HTTP request is refused (Go's TLS server answers it 400).
	if got := get(t, c, "http://"+addr+"/"); got == "hello" {
		t.Errorf("plain HTTP to the TLS server answered %q; want a refusal", got)
	}
}

// selfSigned is a certificate for 127.0.0.1 and a pool that trusts it.
func selfSigned(t *testing.T) (tls.Certificate, *x509.CertPool) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1),
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(time.Hour),
		IPAddresses:  []net.IP{net.IPv4(127, 0, 0, 1)},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	leaf, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AddCert(leaf)
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key, Leaf: leaf}, pool
}

// TestLimitPerSource: one source holding its share of connections open
// gets no more (closed at once), while another source is still served;
// a closed connection gives its slot back.
func TestLimitPerSource(t *testing.T) {
	t.Parallel()
	raw, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ln := Limit(raw, 8, 2)
	defer ln.Close()
	accepted := make(chan net.Conn, 16)
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				close(accepted)
				return
			}
			accepted <- c
		}
	}()
	dialFrom := func(src string) net.Conn {
		t.Helper()
		d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(src)}}
		c, err := d.Dial("tcp", raw.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		return c
	}
	closedByServer := func(c net.Conn) bool {
		c.SetReadDeadline(time.Now().Add(5 * time.Second))
		_, err := c.Read(make([]byte, 1))
		return err == io.EOF
	}
	var mine []net.Conn
	for range 2 {
		dialFrom("127.0.0.1")
		mine = append(mine, <-accepted)
	}
	third := dialFrom("127.0.0.1")
	if !closedByServer(third) {
		t.Fatal("a third connection from one source was not closed")
	}
	dialFrom("127.0.0.2") // another source is served
	select {
	case <-accepted:
	case <-time.After(5 * time.Second):
		t.Fatal("another source's connection was not accepted")
	}
	mine[0].Close()
	dialFrom("127.0.0.1")
	select {
	case <-accepted:
	case <-time.After(5 * time.Second):
		t.Fatal("no slot given back by a closed connection")
	}
}
