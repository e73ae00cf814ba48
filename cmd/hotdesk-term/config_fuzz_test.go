package main

import (
	"os"
	"regexp"
	"strconv"
	"strings"
	"testing"
)

// FuzzParseConfig: the terminal's config file, whatever its bytes, parses
// or fails with errors that each name the file, a line and a column inside
// it: never a panic, never a problem without its place.
func FuzzParseConfig(f *testing.F) {
	b, err := os.ReadFile("../../configs/hotdesk-term.hcl")
	if err != nil {
		f.Fatal(err)
	}
	f.Add(b)
	for _, s := range []string{
		"",
		"servers = [\"a\"]\n",
		"pins = [\"sha256:00\"]\n",
		"timeout = \"-1s\"\n",
		"pcsc {\n  readers = [\"r\"]\n  remove_grace = \"x\"\n}\n",
		"pcsc {}\npcsc {}\n",
		"log_level = \"loud\"\n",
		"greeter = \"yes\"\n",
		"bogus = 1\n",
		"servers = [\"a:1\", 2]\n",
		"x = ${\n",
	} {
		f.Add([]byte(s))
	}
	pos := regexp.MustCompile(`^fuzz\.hcl:([0-9]+):([0-9]+): `)
	f.Fuzz(func(t *testing.T, src []byte) {
		if len(src) > maxConfigSize {
			return // loadConfigFile refuses it before parsing
		}
		_, err := parseConfig(src, "fuzz.hcl")
		if err == nil {
			return
		}
		msg, ok := strings.CutPrefix(err.Error(), "config: ")
		if !ok {
			t.Fatalf("error %q does not start with \"config: \"", err)
		}
		lines := strings.Count(string(src), "\n") + 1
		for _, l := range strings.Split(msg, "\n") {
			m := pos.FindStringSubmatch(l)
			if m == nil {
				if strings.HasPrefix(l, "fuzz.hcl") {
					t.Fatalf("problem %q names no line and column", l)
				}
				continue // a continuation line of a problem's detail
			}
			if n, _ := strconv.Atoi(m[1]); n < 1 || n > lines {
				t.Fatalf("problem %q: line %d of %d", l, n, lines)
			}
		}
		if !pos.MatchString(msg) {
			t.Fatalf("error %q does not start with file:line:column", err)
		}
	})
}
