// Package pki makes the keys and X.509 certificates hotdesk generates for
// itself (a broker's self-signed certificate, an embedded etcd member's
// private CA): ECDSA P-256 keys, random serial numbers, PEM output with
// PKCS#8 keys. It holds no state and writes no files.
package pki

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"math/big"
)

// Issued is a new certificate and its key.
type Issued struct {
	Cert    *x509.Certificate
	Key     *ecdsa.PrivateKey
	CertPEM []byte // "CERTIFICATE"
	KeyPEM  []byte // "PRIVATE KEY", PKCS#8
}

// Issue makes a new P-256 key and a certificate for it from tmpl, signed by
// parentKey as parent, or self-signed (by the new key) if parent is nil. A
// nil tmpl.SerialNumber is set to a random one. tmpl is not modified.
func Issue(tmpl, parent *x509.Certificate, parentKey crypto.Signer) (*Issued, error) {
	iss, err := issue(*tmpl, parent, parentKey)
	if err != nil {
		return nil, fmt.Errorf("pki: issue %q: %w", tmpl.Subject.CommonName, err)
	}
	return iss, nil
}

func issue(tmpl x509.Certificate, parent *x509.Certificate, parentKey crypto.Signer) (*Issued, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	if tmpl.SerialNumber == nil {
		// Positive and at most 20 octets (RFC 5280, 4.1.2.2).
		if tmpl.SerialNumber, err = rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127)); err != nil {
			return nil, err
		}
	}
	if parent == nil {
		parent, parentKey = &tmpl, key
	}
	der, err := x509.CreateCertificate(rand.Reader, &tmpl, parent, &key.PublicKey, parentKey)
	if err != nil {
		return nil, err
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, err
	}
	pkcs8, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return nil, err
	}
	return &Issued{
		Cert:    cert,
		Key:     key,
		CertPEM: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}),
		KeyPEM:  pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: pkcs8}),
	}, nil
}
