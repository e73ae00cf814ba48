package registry

import (
	"os"
	"sort"
	"strings"
	"sync/atomic"

	"github.com/hashicorp/go-hclog"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
)

// newZapLogger returns a zap logger that forwards entries at min level and
// above to lg, so that the embedded etcd member logs through the daemon's
// hclog tree instead of its own stderr writer. Once quiet is set (the member
// is being closed, when etcd reports its listeners closing as errors),
// entries are logged at debug level only.
//
// etcd stops the process with a fatal entry when its storage fails (a
// commit that finds the disk full, a corrupt database): zap exits at once,
// after etcd's own words. The member's last entry is followed by the
// daemon's: what it means and what to do, then exit(1).
func newZapLogger(lg hclog.Logger, min zapcore.Level, quiet *atomic.Bool) *zap.Logger {
	return zap.New(&hclogCore{lg: lg, min: min, quiet: quiet}, zap.WithFatalHook(fatalHook{lg: lg, exit: os.Exit}))
}

// fatalHook ends the process after a fatal entry of the member.
type fatalHook struct {
	lg   hclog.Logger
	exit func(code int)
}

func (h fatalHook) OnWrite(e *zapcore.CheckedEntry, fields []zapcore.Field) {
	enc := zapcore.NewMapObjectEncoder()
	for _, f := range fields {
		f.AddTo(enc)
	}
	msg := "the embedded etcd stopped on an error of its storage (above): hotdeskd exits now; desktops are kept and adopted at the next start"
	if err, _ := enc.Fields["error"].(string); strings.Contains(err, "no space left on device") {
		msg = "the embedded etcd stopped: the disk of data_dir is full (above); hotdeskd exits now; its next start gives the etcd the room set aside for it (data_dir/reserve) if it still has it, else it cannot run until there is room there again; desktops are kept and adopted at the next start"
	}
	h.lg.Error(msg, "etcd_error", e.Message)
	h.exit(1)
}

// hclogCore is a zapcore.Core writing to an hclog.Logger. Fields are
// rendered with zap's map encoder and passed as sorted key/value pairs.
type hclogCore struct {
	lg     hclog.Logger
	min    zapcore.Level
	quiet  *atomic.Bool
	fields []zapcore.Field
}

var _ zapcore.Core = (*hclogCore)(nil)

func (c *hclogCore) Enabled(l zapcore.Level) bool { return l >= c.min }

func (c *hclogCore) With(fields []zapcore.Field) zapcore.Core {
	n := &hclogCore{lg: c.lg, min: c.min, quiet: c.quiet}
	n.fields = append(append(n.fields, c.fields...), fields...)
	return n
}

func (c *hclogCore) Check(e zapcore.Entry, ce *zapcore.CheckedEntry) *zapcore.CheckedEntry {
	if c.Enabled(e.Level) {
		return ce.AddCore(e, c)
	}
	return ce
}

func (c *hclogCore) Write(e zapcore.Entry, fields []zapcore.Field) error {
	enc := zapcore.NewMapObjectEncoder()
	for _, f := range c.fields {
		f.AddTo(enc)
	}
	for _, f := range fields {
		f.AddTo(enc)
	}
	keys := make([]string, 0, len(enc.Fields))
	for k := range enc.Fields {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	args := make([]any, 0, 2*len(keys)+2)
	if e.LoggerName != "" {
		args = append(args, "component", e.LoggerName)
	}
	for _, k := range keys {
		args = append(args, k, enc.Fields[k])
	}
	switch {
	case c.quiet.Load() || benign(e.Message, enc.Fields):
		c.lg.Debug(e.Message, args...)
	case e.Level >= zapcore.ErrorLevel:
		c.lg.Error(e.Message, args...)
	case e.Level == zapcore.WarnLevel:
		c.lg.Warn(e.Message, args...)
	case e.Level == zapcore.InfoLevel:
		c.lg.Info(e.Message, args...)
	default:
		c.lg.Debug(e.Message, args...)
	}
	return nil
}

func (c *hclogCore) Sync() error { return nil }

// benign reports whether an error the member logs is a known one that
// needs no one's attention: an administrator reading "[ERROR]" in a fresh
// install's log would look for a fault that is not there.
//   - "failed to update storage version … missing term information": a
//     new member's storage version monitor runs before the first term is
//     written; it tries again and succeeds once the member has a leader.
func benign(msg string, fields map[string]any) bool {
	if msg == "failed to update storage version" {
		err, _ := fields["error"].(string)
		return strings.Contains(err, "missing term information")
	}
	return false
}
