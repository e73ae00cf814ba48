package main

import (
	"bytes"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"math/big"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"

	"github.com/hotdesk/hotdesk/cmd/hotdeskd/config"
)

// certPEM returns a self-signed certificate for cn, valid until notAfter,
// and its key, both PEM.
func certPEM(t *testing.T, cn string, notAfter time.Time) (cert, key []byte) {
	t.Helper()
	pub, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: cn},
		NotBefore: notAfter.Add(-400 * 24 * time.Hour), NotAfter: notAfter, DNSNames: []string{"localhost"}}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, pub, priv)
	if err != nil {
		t.Fatal(err)
	}
	pk, err := x509.MarshalPKCS8PrivateKey(priv)
	if err != nil {
		t.Fatal(err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: pk})
}

// TestCertWatch: of the certificates read at start, one that expires
// within 30 days is a warn line, one expired (a CA bundle's first to
// expire) an error line, each once a day; the others nothing.
func TestCertWatch(t *testing.T) {
	t.Parallel()
	now := time.Date(2026, 12, 3, 12, 0, 0, 0, time.UTC)
	dir := t.TempDir()
	write := func(name string, data ...[]byte) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, bytes.Join(data, nil), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	soon, _ := certPEM(t, "broker.example", now.Add(10*24*time.Hour+time.Hour))
	caOld, _ := certPEM(t, "old-ca", now.Add(-time.Hour))
	caNew, _ := certPEM(t, "new-ca", now.Add(300*24*time.Hour))
	later, _ := certPEM(t, "dash.example", now.Add(365*24*time.Hour))
	cfg := &config.Config{}
	cfg.TLS.CertFile = write("server.crt", soon)
	cfg.Dashboard.CertFile = write("dash.crt", later)
	cfg.Etcd.Endpoints = []string{"https://etcd:2379"}
	cfg.Etcd.CAFile = write("ca.crt", caNew, []byte("junk\n"), caOld)
	cfg.Etcd.CertFile = write("client.crt", []byte("not a certificate"))

	files := certFiles(cfg)
	if len(files) != 3 {
		t.Fatalf("certFiles = %+v; want the three with certificates", files)
	}
	var buf bytes.Buffer
	w := newCertWatch(hclog.New(&hclog.LoggerOptions{Output: &buf}), files)
	lines := func() []string {
		s := strings.TrimSpace(buf.String())
		buf.Reset()
		if s == "" {
			return nil
		}
		return strings.Split(s, "\n")
	}
	w.check(now)
	got := lines()
	if len(got) != 2 ||
		!strings.Contains(got[0], "[WARN]  tls.cert_file "+cfg.TLS.CertFile+" (CN=broker.example) expires on 2026-12-13 13:00 UTC, in 10 days: then terminals that check") ||
		!strings.Contains(got[1], "[ERROR] etcd.ca_file "+cfg.Etcd.CAFile+" (CN=old-ca) expired on 2026-12-03 11:00 UTC: this broker refuses etcd") {
		t.Fatalf("log = %q", got)
	}
	w.check(now.Add(23 * time.Hour))
	if got := lines(); got != nil {
		t.Fatalf("log within the day = %q; want nothing", got)
	}
	w.check(now.Add(25 * time.Hour))
	if got := lines(); len(got) != 2 {
		t.Fatalf("log the next day = %q; want both again", got)
	}
	if warns := w.warnings(now); len(warns) != 2 {
		t.Fatalf("warnings = %q", warns)
	}
	exp := w.expiries()
	if !exp["etcd.ca_file"].Equal(now.Add(-time.Hour)) || !exp["dashboard.cert_file"].Equal(now.Add(365*24*time.Hour)) || len(exp) != 3 {
		t.Fatalf("expiries = %v", exp)
	}
}

// TestCheckCertExpiry: hotdeskd -check names a certificate that expires
// within 30 days.
func TestCheckCertExpiry(t *testing.T) {
	t.Parallel()
	bin := buildBinaries(t)
	dir := t.TempDir()
	cert, key := certPEM(t, "broker.example", time.Now().Add(5*24*time.Hour))
	crt, keyf := filepath.Join(dir, "s.crt"), filepath.Join(dir, "s.key")
	if err := os.WriteFile(crt, cert, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(keyf, key, 0o600); err != nil {
		t.Fatal(err)
	}
	cfg := filepath.Join(dir, "h.hcl")
	if err := os.WriteFile(cfg, []byte(fmt.Sprintf("data_dir = %q\ntls {\n  cert_file = %q\n  key_file = %q\n}\n", filepath.Join(dir, "data"), crt, keyf)), 0o600); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command(filepath.Join(bin, "hotdeskd"), "-config", cfg, "-check").CombinedOutput()
	if err != nil || !strings.Contains(string(out), "WARNING: "+cfg+": tls.cert_file "+crt+" (CN=broker.example) expires on ") {
		t.Fatalf("hotdeskd -check: %v\n%s", err, out)
	}
}

// TestCertWatchGenerated: the terminal listener's certificate, generated
// on the first start after the start read the configured files (none
// there yet), is watched from that start, not from the next one; one
// read at start is kept.
func TestCertWatchGenerated(t *testing.T) {
	t.Parallel()
	now := time.Date(2026, 12, 3, 12, 0, 0, 0, time.UTC)
	dir := t.TempDir()
	cfg := &config.Config{}
	cfg.TLS.CertFile, cfg.TLS.KeyFile = filepath.Join(dir, "server.crt"), filepath.Join(dir, "server.key")
	w := newCertWatch(hclog.NewNullLogger(), certFiles(cfg))
	if exp := w.expiries(); len(exp) != 0 {
		t.Fatalf("expiries before the certificate exists = %v", exp)
	}
	gen := func(notAfter time.Time) *x509.Certificate {
		c, _ := certPEM(t, "broker.example", notAfter)
		b, _ := pem.Decode(c)
		x, err := x509.ParseCertificate(b.Bytes)
		if err != nil {
			t.Fatal(err)
		}
		return x
	}
	first := now.Add(10 * 365 * 24 * time.Hour).Truncate(time.Second)
	w.loaded("tls.cert_file", cfg.TLS.CertFile, gen(first))
	w.loaded("tls.cert_file", cfg.TLS.CertFile, gen(now.Add(time.Hour)))
	if exp := w.expiries(); len(exp) != 1 || !exp["tls.cert_file"].Equal(first) {
		t.Fatalf("expiries = %v; want tls.cert_file at %v", exp, first)
	}
	if warns := w.warnings(now); len(warns) != 0 {
		t.Fatalf("warnings = %q", warns)
	}
}
