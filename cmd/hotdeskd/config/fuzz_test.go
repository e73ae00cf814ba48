package config

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/hashicorp/hcl/v2"
)

// FuzzParse: a configuration file, whatever its bytes, parses into a valid
// Config or fails with an *Error whose every problem names the file, a
// line and a column inside it ("file:line:column: …"): never a panic,
// never an error without its place.
func FuzzParse(f *testing.F) {
	files, err := filepath.Glob(filepath.Join("testdata", "*.hcl"))
	if err != nil {
		f.Fatal(err)
	}
	files = append(files, filepath.Join("..", "..", "..", "configs", "hotdesk.hcl"))
	for _, name := range files {
		b, err := os.ReadFile(name)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	for _, s := range []string{
		"",
		"listen = \"127.0.0.1:1\"\n\netcd {\n  bogus = 1\n}\n",
		"tls \"main\" {\n}\n",
		"session {\n  max_sessions = \"many\"\n}\n",
		"session {\n  suspend_timeout = \"1 day\"\n}\n",
		"etcd {\n  lease_ttl = \"5s\"\n}\n\netcd {\n}\n",
		"listen = \"0.0.0.0\"\n",
		"auth {\n  policy {\n    match = \"uid.*\"\n    auth = \"pin\"\n  }\n}\n",
		"session { max_sessions = -1 }\n",
		"etcd { endpoints = [\"a:1\", 2] }\n",
		"x = ${\n",
		"data_dir = \"\\u0000\"\n",
		"log_level = <<EOT\ninfo\nEOT\n",
		"listen = \"[::1]:99999\"\n",
		"a = 1 /* unterminated",
		"\xff\xfe = 1\n",
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, src []byte) {
		if len(src) > MaxFileSize {
			return // Load refuses it before parsing
		}
		const name = "fuzz.hcl"
		c, err := Parse(src, name)
		if err == nil {
			if c == nil {
				t.Fatal("nil config without an error")
			}
			if err := c.Validate(); err != nil {
				t.Fatalf("a parsed config does not validate: %v", err)
			}
			c.GroupSettings()
			c.Warnings()
			return
		}
		var ce *Error
		if !errors.As(err, &ce) || !errors.Is(err, ErrInvalid) {
			t.Fatalf("error %T %v is not an *Error", err, err)
		}
		lines := bytes.Count(src, []byte("\n")) + 1
		n := 0
		for _, d := range ce.Diagnostics {
			if d.Severity != hcl.DiagError {
				continue
			}
			n++
			if d.Subject == nil || d.Subject.Filename != name || d.Subject.Start.Line < 1 || d.Subject.Start.Column < 1 ||
				d.Subject.Start.Line > lines {
				t.Fatalf("problem %q has no place in the file: %+v", d.Summary, d.Subject)
			}
		}
		if n == 0 {
			t.Fatalf("error %q holds no problem", err)
		}
		if !strings.HasPrefix(err.Error(), name+":") {
			t.Fatalf("error %q does not start with the file's name", err)
		}
	})
}
