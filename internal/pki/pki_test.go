package pki

import (
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"math/big"
	"strings"
	"testing"
	"time"
)

// TestIssue: a CA issued self-signed signs a leaf that verifies against it
// for its name and usage; each PEM pair loads as a TLS key pair; serials
// are random and positive unless the template sets one; the template is
// left as it was; a signing key that is not the parent's is refused.
func TestIssue(t *testing.T) {
	now := time.Now()
	caTmpl := &x509.Certificate{
		Subject:               pkix.Name{CommonName: "test CA"},
		NotBefore:             now.Add(-time.Hour),
		NotAfter:              now.Add(time.Hour),
		KeyUsage:              x509.KeyUsageCertSign,
		BasicConstraintsValid: true,
		IsCA:                  true,
	}
	ca, err := Issue(caTmpl, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	if caTmpl.SerialNumber != nil {
		t.Error("Issue set the template's serial number")
	}
	if err := ca.Cert.CheckSignatureFrom(ca.Cert); err != nil {
		t.Errorf("CA is not self-signed: %v", err)
	}
	leafTmpl := &x509.Certificate{
		SerialNumber: big.NewInt(42),
		Subject:      pkix.Name{CommonName: "leaf"},
		DNSNames:     []string{"leaf.example"},
		NotBefore:    now.Add(-time.Hour),
		NotAfter:     now.Add(time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	leaf, err := Issue(leafTmpl, ca.Cert, ca.Key)
	if err != nil {
		t.Fatal(err)
	}
	if leaf.Cert.SerialNumber.Int64() != 42 {
		t.Errorf("leaf serial = %v; want 42 (the template's)", leaf.Cert.SerialNumber)
	}
	roots := x509.NewCertPool()
	roots.AddCert(ca.Cert)
	if _, err := leaf.Cert.Verify(x509.VerifyOptions{DNSName: "leaf.example", Roots: roots}); err != nil {
		t.Errorf("leaf does not verify against the CA: %v", err)
	}
	if _, err := leaf.Cert.Verify(x509.VerifyOptions{DNSName: "leaf.example", Roots: x509.NewCertPool()}); err == nil {
		t.Error("leaf verifies without the CA")
	}
	for name, iss := range map[string]*Issued{"ca": ca, "leaf": leaf} {
		if _, err := tls.X509KeyPair(iss.CertPEM, iss.KeyPEM); err != nil {
			t.Errorf("%s: PEM pair does not load: %v", name, err)
		}
	}
	again, err := Issue(caTmpl, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range []*big.Int{ca.Cert.SerialNumber, again.Cert.SerialNumber} {
		if s.Sign() <= 0 || s.BitLen() > 127 {
			t.Errorf("serial %v: want positive, at most 127 bits", s)
		}
	}
	if ca.Cert.SerialNumber.Cmp(again.Cert.SerialNumber) == 0 {
		t.Error("two issues got the same serial")
	}
	if _, err := Issue(leafTmpl, ca.Cert, leaf.Key); err == nil || !strings.HasPrefix(err.Error(), `pki: issue "leaf": `) {
		t.Errorf("Issue signed by a key that is not the parent's: err = %v; want a pki: issue \"leaf\" error", err)
	}
}
