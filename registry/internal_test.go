package registry

import (
	"bytes"
	"errors"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/hashicorp/go-hclog"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
)

func TestValidateKey(t *testing.T) {
	t.Parallel()
	tests := []struct {
		key  string
		want error
	}{
		{"soft.abc-1_X", nil},
		{"alice@example.com", nil},
		{"DOMAIN\\user", nil},
		{"ünïcode", nil},
		{strings.Repeat("k", MaxKeyLen), nil},
		{"", ErrInvalidKey},
		{strings.Repeat("k", MaxKeyLen+1), ErrInvalidKey},
		{"a/b", ErrInvalidKey},
		{"/", ErrInvalidKey},
		{".", ErrInvalidKey},
		{"..", ErrInvalidKey},
		{"a b", ErrInvalidKey},
		{"a\tb", ErrInvalidKey},
		{"a\x00b", ErrInvalidKey},
		{"a\x7fb", ErrInvalidKey},
		{"\xff\xfe", ErrInvalidKey},
		{"a\u2028b", ErrInvalidKey},
	}
	for _, tt := range tests {
		if got := validateKey(tt.key); !errors.Is(got, tt.want) {
			t.Errorf("validateKey(%q) = %v; want %v", tt.key, got, tt.want)
		}
	}
}

func TestOptions(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name       string
		opt        Option
		wantPrefix string
		wantTTL    string
	}{
		{"defaults", func(*options) {}, "/hotdesk/", "5s"},
		{"prefix slash added", WithPrefix("/x"), "/x/", "5s"},
		{"empty prefix keeps default", WithPrefix(""), "/hotdesk/", "5s"},
		{"ttl below minimum", WithLeaseTTL(500_000_000), "/hotdesk/", "1s"},
		{"zero ttl keeps default", WithLeaseTTL(0), "/hotdesk/", "5s"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			o := options{prefix: DefaultPrefix, leaseTTL: DefaultLeaseTTL}
			tt.opt(&o)
			if o.prefix != tt.wantPrefix || o.leaseTTL.String() != tt.wantTTL {
				t.Errorf("prefix, ttl = %q, %v; want %q, %s", o.prefix, o.leaseTTL, tt.wantPrefix, tt.wantTTL)
			}
		})
	}
}

func TestZapBridge(t *testing.T) {
	t.Parallel()
	var buf bytes.Buffer
	lg := hclog.New(&hclog.LoggerOptions{Level: hclog.Debug, Output: &buf})
	var quiet atomic.Bool
	z := newZapLogger(lg, zapcore.ErrorLevel, &quiet).With(zap.String("member", "m0"))
	z.Warn("dropped warning")
	z.Error("disk failed", zap.Int("code", 5))
	// A fresh member's storage version monitor before its first term
	// (seen in a CI run of hotdeskd's embedded etcd): no one's fault.
	z.Error("failed to update storage version", zap.String("cluster-version", "3.7.0"), zap.Error(errors.New("cannot detect storage schema version: missing term information")))
	z.Error("failed to update storage version", zap.Error(errors.New("disk full")))
	quiet.Store(true)
	z.Error("listener closed")
	out := buf.String()
	for _, want := range []string{"[ERROR] disk failed: code=5 member=m0", "[DEBUG] listener closed: member=m0",
		`[DEBUG] failed to update storage version: cluster-version=3.7.0 error="cannot detect storage schema version: missing term information"`,
		`[ERROR] failed to update storage version: error="disk full"`} {
		if !strings.Contains(out, want) {
			t.Errorf("log = %q; want it to contain %q", out, want)
		}
	}
	if strings.Contains(out, "dropped warning") {
		t.Errorf("log = %q; want no warning below error level", out)
	}
}

// TestZapFatal: a fatal entry of the embedded member (a commit that found
// the disk full) is followed by the daemon's own line saying what it
// means, then exit(1).
func TestZapFatal(t *testing.T) {
	t.Parallel()
	var buf bytes.Buffer
	lg := hclog.New(&hclog.LoggerOptions{Level: hclog.Debug, Output: &buf})
	code := -1
	var quiet atomic.Bool
	z := zap.New(&hclogCore{lg: lg, min: zapcore.ErrorLevel, quiet: &quiet},
		zap.WithFatalHook(fatalHook{lg: lg, exit: func(c int) { code = c }})).With(zap.String("member", "m0"))
	z.Fatal("failed to commit tx", zap.Error(errors.New("write /var/lib/hotdesk/etcd/member/snap/db: no space left on device")))
	out := buf.String()
	for _, want := range []string{`[ERROR] failed to commit tx: error="write /var/lib/hotdesk/etcd/member/snap/db: no space left on device" member=m0`,
		`[ERROR] the embedded etcd stopped: the disk of data_dir is full (above); hotdeskd exits now`} {
		if !strings.Contains(out, want) {
			t.Errorf("log = %q; want it to contain %q", out, want)
		}
	}
	if code != 1 {
		t.Fatalf("exit code = %d; want 1", code)
	}
	buf.Reset()
	z.Fatal("failed to open database", zap.Error(errors.New("invalid database")))
	if out := buf.String(); !strings.Contains(out, "the embedded etcd stopped on an error of its storage (above)") {
		t.Fatalf("log = %q; want the daemon's words", out)
	}
}
