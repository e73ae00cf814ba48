package main

import (
	"os"
	"regexp"
	"strings"
	"testing"

	"github.com/spf13/cobra"
)

// mention is a hotdeskctl command line of a document.
type mention struct {
	line string // what follows "hotdeskctl "
	code bool   // in a fenced code block: a command line, never prose
}

// docMentions returns the hotdeskctl command lines of a document: from
// each "hotdeskctl " in a backquoted span or a line of a fenced code block
// (or of comments, with comments) to the end of that span or line, a shell
// comment cut off. A line that lists two commands with " | " gives each
// ("token pair list | token pair revoke CODE").
func docMentions(doc string, comments bool) []mention {
	var spans []mention
	fenced := false
	for _, line := range strings.Split(doc, "\n") {
		if strings.HasPrefix(strings.TrimSpace(line), "```") {
			fenced = !fenced
			continue
		}
		if fenced {
			line, _, _ = strings.Cut(line, " #")
			spans = append(spans, mention{line, true})
			continue
		}
		if comments {
			spans = append(spans, mention{line, false})
			continue
		}
		for _, m := range regexp.MustCompile("`([^`]+)`").FindAllStringSubmatch(line, -1) {
			spans = append(spans, mention{m[1], false})
		}
	}
	var out []mention
	for _, s := range spans {
		parts := strings.Split(s.line, "hotdeskctl ")
		for _, p := range parts[1:] {
			p, _, _ = strings.Cut(p, "&&")
			alts := strings.Split(p, " | ")
			out = append(out, mention{alts[0], s.code})
			for _, a := range alts[1:] {
				out = append(out, mention{strings.TrimSpace(a), s.code})
			}
		}
	}
	return out
}

// resolve follows the words of a command line from root: a word a|b|c
// names several subcommands. It returns the commands reached and the
// words left (arguments and flags).
func resolve(root *cobra.Command, words []string) ([]*cobra.Command, []string) {
	cmds := []*cobra.Command{root}
	for i, w := range words {
		var next []*cobra.Command
		for _, c := range cmds {
			for _, alt := range strings.Split(w, "|") {
				for _, sub := range c.Commands() {
					if sub.Name() == alt && !sub.Hidden {
						next = append(next, sub)
					}
				}
			}
		}
		if len(next) == 0 {
			return cmds, words[i:]
		}
		cmds = next
	}
	return cmds, nil
}

// TestREADMECommands keeps the documents' hotdeskctl command lines in step
// with the CLI: every command (but completion's shells and help) is shown
// in the README, and every command line of README.md, packaging/README.Debian,
// the sample configurations and proto/*.md names commands that exist, with
// flags those commands take.
func TestREADMECommands(t *testing.T) {
	root := newRoot(&cli{})
	initCompletion(root)
	initHelp(root)
	docs := map[string][]mention{}
	for _, f := range []string{"../../README.md", "../../packaging/README.Debian", "../../configs/hotdesk.hcl",
		"../../configs/group/hotdesk.hcl", "../../proto/ADMIN.md", "../../proto/PROTOCOL.md"} {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		docs[f] = docMentions(string(b), !strings.HasSuffix(f, ".md"))
	}
	shown := map[*cobra.Command]bool{}
	for f, mentions := range docs {
		for _, mm := range mentions {
			m := mm.line
			cmds, rest := resolve(root, strings.Fields(m))
			if cmds[0] == root {
				// Prose ("hotdeskctl talks to the admin socket") but in a
				// code block, where every hotdeskctl line is a command.
				if mm.code && len(rest) > 0 && !strings.HasPrefix(rest[0], "-") {
					t.Errorf("%s: `hotdeskctl %s`: no command %q", f, strings.TrimSpace(m), rest[0])
				}
				continue
			}
			for _, c := range cmds {
				for p := c; p != nil && strings.HasSuffix(f, "README.md"); p = p.Parent() {
					shown[p] = true
				}
				for _, w := range rest {
					w = strings.Trim(w, "[]`,.;:()")
					if !strings.HasPrefix(w, "-") || w == "-" || strings.HasPrefix(w, "--") && len(w) == 2 {
						continue
					}
					name, _, _ := strings.Cut(strings.TrimLeft(w, "-"), "=")
					fl := c.Flags().Lookup(name)
					if fl == nil && len(name) == 1 {
						fl = c.Flags().ShorthandLookup(name)
					}
					if fl == nil {
						t.Errorf("%s: `hotdeskctl %s`: %s takes no flag %s", f, strings.TrimSpace(m), c.CommandPath(), w)
					}
				}
			}
		}
	}
	var walk func(c *cobra.Command)
	walk = func(c *cobra.Command) {
		for _, sub := range c.Commands() {
			if sub.Hidden || sub.Name() == "help" {
				continue
			}
			if sub.Runnable() && !shown[sub] {
				t.Errorf("README.md shows no `%s`", sub.CommandPath())
			}
			if sub.Name() != "completion" {
				walk(sub)
			}
		}
	}
	walk(root)
}
