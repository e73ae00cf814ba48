package main

import (
	"fmt"
	"io"
	"net"
	"os"
	"strings"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/hcl/v2"
	"github.com/hashicorp/hcl/v2/gohcl"
	"github.com/hashicorp/hcl/v2/hclparse"
	"github.com/hashicorp/hcl/v2/hclsyntax"
	"github.com/hotdesk/hotdesk/proto"
)

// maxConfigSize bounds the terminal config file.
const maxConfigSize = 1 << 20

// fileConfig is the terminal config file (HCL; configs/hotdesk-term.hcl
// documents every key). Unknown keys are an error. Every key has the
// command-line flag of the same meaning; a flag given on the command line
// wins over the file.
type fileConfig struct {
	Servers    []string   `hcl:"servers,optional"`
	SRV        string     `hcl:"srv,optional"`
	Pins       []string   `hcl:"pins,optional"`
	CAFile     string     `hcl:"ca_file,optional"`
	TerminalID string     `hcl:"terminal_id,optional"`
	Name       string     `hcl:"name,optional"`
	Keystore   string     `hcl:"keystore,optional"`
	StateDir   string     `hcl:"state_dir,optional"`
	Display    string     `hcl:"display,optional"`
	Greeter    *bool      `hcl:"greeter,optional"`
	JSON       *bool      `hcl:"json,optional"`
	LogLevel   string     `hcl:"log_level,optional"`
	Timeout    string     `hcl:"timeout,optional"`
	Keepalive  string     `hcl:"keepalive,optional"`
	MinBackoff string     `hcl:"min_backoff,optional"`
	MaxBackoff string     `hcl:"max_backoff,optional"`
	PCSC       *filePCSC  `hcl:"pcsc,block"`
	durations  []duration // parsed, in the order above
}

type filePCSC struct {
	Readers     []string `hcl:"readers,optional"`
	RemoveGrace string   `hcl:"remove_grace,optional"`
}

type duration struct {
	key string
	val time.Duration
}

// loadConfigFile parses path. Errors name file:line:column.
func loadConfigFile(path string) (fileConfig, error) {
	var fc fileConfig
	f, err := os.Open(path)
	if err != nil {
		return fc, fmt.Errorf("config: %w", err)
	}
	defer f.Close()
	// Bounded as read, not by its size: a pipe or a device has none
	// (-config /dev/zero read until memory ran out), a file may grow.
	src, err := io.ReadAll(io.LimitReader(f, maxConfigSize+1))
	if err != nil {
		return fc, fmt.Errorf("config: %w", err)
	}
	if len(src) > maxConfigSize {
		return fc, fmt.Errorf("config: %s is larger than %d bytes", path, maxConfigSize)
	}
	return parseConfig(src, path)
}

func parseConfig(src []byte, filename string) (fileConfig, error) {
	var fc fileConfig
	f, diags := hclparse.NewParser().ParseHCL(src, filename)
	if diags.HasErrors() {
		return fc, fmt.Errorf("config: %s", diagText(diags))
	}
	if diags := gohcl.DecodeBody(f.Body, nil, &fc); diags.HasErrors() {
		return fc, fmt.Errorf("config: %s", diagText(diags))
	}
	body, _ := f.Body.(*hclsyntax.Body)
	// bad names the key's place in the file: "file:line:column: key = …".
	bad := func(block, key, format string, args ...any) error {
		pos := filename
		if r, ok := attrRange(body, block, key); ok {
			pos = fmt.Sprintf("%s:%d:%d", r.Filename, r.Start.Line, r.Start.Column)
		}
		name := key
		if block != "" {
			name = block + "." + key
		}
		return fmt.Errorf("config: %s: %s %s", pos, name, fmt.Sprintf(format, args...))
	}
	for _, d := range []struct {
		key string
		val string
	}{{"timeout", fc.Timeout}, {"keepalive", fc.Keepalive}, {"min_backoff", fc.MinBackoff}, {"max_backoff", fc.MaxBackoff}} {
		if d.val == "" {
			continue
		}
		v, err := time.ParseDuration(d.val)
		if err != nil || v <= 0 {
			return fc, bad("", d.key, "= %q: want a positive duration such as \"500ms\"", d.val)
		}
		fc.durations = append(fc.durations, duration{d.key, v})
	}
	if fc.PCSC != nil && fc.PCSC.RemoveGrace != "" {
		if v, err := time.ParseDuration(fc.PCSC.RemoveGrace); err != nil || v < 0 {
			return fc, bad("pcsc", "remove_grace", "= %q: want a duration such as \"1s\"", fc.PCSC.RemoveGrace)
		}
	}
	for _, s := range fc.Servers {
		if _, _, err := net.SplitHostPort(s); err != nil {
			return fc, bad("", "servers", "entry %q: want host:port (%v)", s, err)
		}
	}
	for _, pin := range fc.Pins {
		if _, err := proto.ParseFingerprint(pin); err != nil {
			return fc, bad("", "pins", "entry %q: %v", pin, err)
		}
	}
	if fc.LogLevel != "" && hclog.LevelFromString(fc.LogLevel) == hclog.NoLevel {
		return fc, bad("", "log_level", "= %q: want trace, debug, info, warn or error", fc.LogLevel)
	}
	return fc, nil
}

// attrRange is where key (in block, "" for the top level) is set in body.
func attrRange(body *hclsyntax.Body, block, key string) (hcl.Range, bool) {
	if body == nil {
		return hcl.Range{}, false
	}
	if block != "" {
		for _, b := range body.Blocks {
			if b.Type == block {
				return attrRange(b.Body, "", key)
			}
		}
		return hcl.Range{}, false
	}
	if a, ok := body.Attributes[key]; ok {
		return a.SrcRange, true
	}
	return hcl.Range{}, false
}

// diagText is HCL's diagnostics as "file:line:column: summary; detail"
// (HCL's own text says "file:2,1-6").
func diagText(diags hcl.Diagnostics) string {
	var parts []string
	for _, d := range diags {
		msg := d.Summary
		if d.Detail != "" {
			msg += "; " + d.Detail
		}
		if d.Subject != nil {
			msg = fmt.Sprintf("%s:%d:%d: %s", d.Subject.Filename, d.Subject.Start.Line, d.Subject.Start.Column, msg)
		}
		parts = append(parts, msg)
	}
	return strings.Join(parts, "\n")
}

// apply copies the file's settings into o, except those whose flag was set
// on the command line (set).
func (fc fileConfig) apply(o *options, set map[string]bool) {
	str := func(flag string, dst *string, v string) {
		if !set[flag] && v != "" {
			*dst = v
		}
	}
	if !set["server"] && len(fc.Servers) > 0 {
		o.servers = fc.Servers
	}
	if !set["pin"] && len(fc.Pins) > 0 {
		o.pins = fc.Pins
	}
	str("srv", &o.srv, fc.SRV)
	str("ca", &o.ca, fc.CAFile)
	str("id", &o.id, fc.TerminalID)
	str("name", &o.name, fc.Name)
	str("keystore", &o.keystore, fc.Keystore)
	str("state-dir", &o.stateDir, fc.StateDir)
	str("display", &o.display, fc.Display)
	str("log-level", &o.logLevel, fc.LogLevel)
	if !set["greeter"] && fc.Greeter != nil {
		o.greeter = *fc.Greeter
	}
	if !set["json"] && fc.JSON != nil {
		o.json = *fc.JSON
	}
	for _, d := range fc.durations {
		flag := strings.ReplaceAll(d.key, "_", "-")
		if set[flag] {
			continue
		}
		switch d.key {
		case "timeout":
			o.timeout = d.val
		case "keepalive":
			o.keepalive = d.val
		case "min_backoff":
			o.minBackoff = d.val
		case "max_backoff":
			o.maxBackoff = d.val
		}
	}
	if fc.PCSC != nil {
		if !set["pcsc"] {
			o.pcsc = true
		}
		if !set["readers"] && len(fc.PCSC.Readers) > 0 {
			o.readers = strings.Join(fc.PCSC.Readers, ",")
		}
		if !set["remove-grace"] && fc.PCSC.RemoveGrace != "" {
			o.removeGrace, _ = time.ParseDuration(fc.PCSC.RemoveGrace)
		}
	}
}
