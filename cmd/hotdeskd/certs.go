package main

import (
	"context"
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"io"
	"os"
	"sync"
	"time"

	"github.com/hashicorp/go-hclog"

	"github.com/hotdesk/hotdesk/cmd/hotdeskd/config"
	"github.com/hotdesk/hotdesk/internal/clock"
)

// Certificates that expire: a site's own certificate for the terminal
// listener (tls.cert_file: with terminals that check a CA, every terminal
// refuses the broker from that second), the etcd client certificate and CA
// of a group (every broker loses the registry: no login, no hot-desk) and
// the dashboard's. Nothing else tells before the day. The daemon reads
// them at start, as it loads them, and from then on says how long each
// has left: a warn line a day from certExpirySoon before, an error line a
// day once expired, and hotdesk_certificate_expiry_timestamp_seconds.
// A renewed file is read at the next start: the lines go on until then.

const (
	certExpirySoon     = 30 * 24 * time.Hour
	certCheckInterval  = time.Hour
	certRepeatInterval = 24 * time.Hour
)

// certFile is one certificate file of the configuration as read at start.
type certFile struct {
	key, path string
	notAfter  time.Time // of the first of its certificates to expire
	subject   string    // that certificate's
}

// certFiles reads the certificate files the configuration names (a file
// that cannot be read or holds no certificate is left to the checks that
// load it).
func certFiles(cfg *config.Config) []certFile {
	keys := []struct{ key, path string }{{"tls.cert_file", cfg.TLS.CertFile}, {"dashboard.cert_file", cfg.Dashboard.CertFile}}
	if len(cfg.Etcd.Endpoints) > 0 {
		keys = append(keys, struct{ key, path string }{"etcd.cert_file", cfg.Etcd.CertFile}, struct{ key, path string }{"etcd.ca_file", cfg.Etcd.CAFile})
	}
	var out []certFile
	for _, k := range keys {
		if k.path == "" {
			continue
		}
		if c, ok := readCertFile(k.path); ok {
			c.key = k.key
			out = append(out, c)
		}
	}
	return out
}

// maxCertFile bounds a certificate file's read (a CA bundle of a few
// hundred certificates).
const maxCertFile = 1 << 20

// readCertFile returns the certificate of path's PEM blocks that expires
// first.
func readCertFile(path string) (certFile, bool) {
	f, err := os.Open(path)
	if err != nil {
		return certFile{}, false
	}
	defer f.Close()
	data, err := io.ReadAll(io.LimitReader(f, maxCertFile))
	if err != nil {
		return certFile{}, false
	}
	c := certFile{path: path}
	for {
		var b *pem.Block
		b, data = pem.Decode(data)
		if b == nil {
			break
		}
		if b.Type != "CERTIFICATE" {
			continue
		}
		x, err := x509.ParseCertificate(b.Bytes)
		if err != nil {
			continue
		}
		if c.notAfter.IsZero() || x.NotAfter.Before(c.notAfter) {
			c.notAfter, c.subject = x.NotAfter, x.Subject.String()
		}
	}
	return c, !c.notAfter.IsZero()
}

// certWarning says what c having until its notAfter means at now, or ""
// while it has more than certExpirySoon left; expired tells which.
func certWarning(c certFile, now time.Time) (msg string, expired bool) {
	left := c.notAfter.Sub(now)
	what := map[string]string{
		"tls.cert_file":       "terminals that check the broker's certificate against a CA refuse it",
		"dashboard.cert_file": "browsers refuse the dashboard",
		"etcd.cert_file":      "etcd refuses this broker: no login, no hot-desk",
		"etcd.ca_file":        "this broker refuses etcd: no login, no hot-desk",
	}[c.key]
	on := c.notAfter.UTC().Format("2006-01-02 15:04 MST")
	switch {
	case left <= 0:
		return fmt.Sprintf("%s %s (%s) expired on %s: %s; renew it and restart hotdeskd", c.key, c.path, c.subject, on, what), true
	case left < certExpirySoon:
		return fmt.Sprintf("%s %s (%s) expires on %s, in %d days: then %s; renew it and restart hotdeskd (the file is read at start)",
			c.key, c.path, c.subject, on, int(left.Hours()/24), what), false
	}
	return "", false
}

// certWatch tells, once a day, of the certificates read at start that
// expire soon or have.
type certWatch struct {
	log hclog.Logger

	mu    sync.Mutex
	files []certFile
	told  map[string]time.Time // key → when last told
}

func newCertWatch(log hclog.Logger, files []certFile) *certWatch {
	return &certWatch{log: log, files: files, told: map[string]time.Time{}}
}

func (w *certWatch) check(now time.Time) {
	w.mu.Lock()
	defer w.mu.Unlock()
	for _, c := range w.files {
		msg, expired := certWarning(c, now)
		if msg == "" {
			continue
		}
		if last, ok := w.told[c.key]; ok && now.Sub(last) < certRepeatInterval {
			continue
		}
		w.told[c.key] = now
		if expired {
			w.log.Error(msg)
		} else {
			w.log.Warn(msg)
		}
	}
}

// loaded adds the certificate the daemon loaded for key from path if the
// start's reading had none: the terminal listener's, generated on the
// first start after that reading (its series and lines would otherwise
// wait for the next start).
func (w *certWatch) loaded(key, path string, leaf *x509.Certificate) {
	w.mu.Lock()
	defer w.mu.Unlock()
	for _, c := range w.files {
		if c.key == key {
			return
		}
	}
	w.files = append(w.files, certFile{key: key, path: path, notAfter: leaf.NotAfter, subject: leaf.Subject.String()})
}

// expiries returns each certificate's expiry, by configuration key.
func (w *certWatch) expiries() map[string]time.Time {
	w.mu.Lock()
	defer w.mu.Unlock()
	out := make(map[string]time.Time, len(w.files))
	for _, c := range w.files {
		out[c.key] = c.notAfter
	}
	return out
}

// warnings returns a line for each certificate that expires soon or has,
// for hotdeskd -check.
func (w *certWatch) warnings(now time.Time) []string {
	w.mu.Lock()
	defer w.mu.Unlock()
	var out []string
	for _, c := range w.files {
		if msg, _ := certWarning(c, now); msg != "" {
			out = append(out, msg)
		}
	}
	return out
}

// run checks every certCheckInterval until ctx ends.
func (w *certWatch) run(ctx context.Context, clk clock.Clock) {
	for clock.Sleep(ctx, clk, certCheckInterval) {
		w.check(clk.Now())
	}
}
