// Package clidoc renders one description of a command — its flag.FlagSet,
// synopsis, commands and prose — as the command's --help text, a roff man
// page, and bash and zsh completion scripts, so that none of them can drift
// from the flags the binary really parses.
//
// A binary builds its Page once and uses it twice: Page.Usage as the
// FlagSet's Usage, and Main for the hidden `BINARY __gendocs man|bash|zsh
// DIR` mode the packaging calls. ConfigPage turns a commented sample
// configuration file (the one that is shipped) into a section-5 page.
//
// Prose markup (Description, Section bodies): paragraphs are separated by
// blank lines; a paragraph whose every line starts with two spaces or a tab
// is literal (an example, kept as is). Nothing is interpreted otherwise;
// roff special characters are escaped.
package clidoc

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"time"
)

// GenDocsArg is the hidden first argument that selects the generator mode.
const GenDocsArg = "__gendocs"

// Page describes one command (or one file format, for section 5).
type Page struct {
	Name    string // the binary (or file) name
	Section int    // man section: 1 user commands, 5 file formats, 8 administration
	Short   string // one line, no final period: the NAME line and the head of --help
	// Synopsis lines without the name, e.g. "[flags] pair CODE".
	Synopsis    []string
	Description string        // prose (see the package doc for the markup)
	Flags       *flag.FlagSet // may be nil (a file format)
	Commands    []Command     // positional commands, for the help, the man page and completion
	Sections    []Section     // further sections, in order (EXIT STATUS, FILES, ...)
	SeeAlso     []string      // e.g. "hotdeskctl(8)"
}

// Command is one positional command. Name may hold several words for a
// nested command ("token pair"); completion offers each word after the
// words before it.
type Command struct {
	Name string // "pair", "token pair"
	Args string // "CODE", "-user USER [-label LABEL]"
	Help string // one line
}

// Section is a titled block of prose.
type Section struct {
	Title string // e.g. "EXIT STATUS"; upper-cased unless Sub
	Body  string
	Sub   bool // a subsection of the section before it
}

// Usage writes the --help text.
func (p *Page) Usage(w io.Writer) {
	for i, s := range p.synopsis() {
		if i == 0 {
			fmt.Fprintf(w, "usage: %s %s\n", p.Name, s)
		} else {
			fmt.Fprintf(w, "       %s %s\n", p.Name, s)
		}
	}
	fmt.Fprintf(w, "\n%s.\n", p.Short)
	if len(p.Commands) > 0 {
		fmt.Fprintf(w, "\ncommands:\n")
		for _, c := range p.Commands {
			fmt.Fprintf(w, "  %s\n    \t%s\n", strings.TrimSpace(c.Name+" "+c.Args), c.Help)
		}
	}
	if fl := p.flags(); len(fl) > 0 {
		fmt.Fprintf(w, "\nflags:\n")
		for _, f := range fl {
			fmt.Fprintf(w, "  %s\n    \t%s\n", f.head(), strings.ReplaceAll(f.help(), "\n", "\n    \t"))
		}
	}
	fmt.Fprintf(w, "\nSee %s(%d) for more.\n", p.Name, p.Section)
}

func (p *Page) synopsis() []string {
	if len(p.Synopsis) > 0 {
		return p.Synopsis
	}
	return []string{"[flags]"}
}

// flagDoc is one flag as the documents show it.
type flagDoc struct {
	name, metavar, usage, def string
	isBool                    bool
}

func (f flagDoc) head() string {
	if f.metavar == "" {
		return "-" + f.name
	}
	return "-" + f.name + " " + f.metavar
}

func (f flagDoc) help() string {
	if f.def == "" {
		return f.usage
	}
	return fmt.Sprintf("%s (default %s)", f.usage, f.def)
}

// flags lists the FlagSet's flags in name order, with the metavar and the
// default as flag.PrintDefaults derives them. Flags whose usage starts with
// "HIDDEN" are left out.
func (p *Page) flags() []flagDoc {
	if p.Flags == nil {
		return nil
	}
	var out []flagDoc
	p.Flags.VisitAll(func(f *flag.Flag) {
		if strings.HasPrefix(f.Usage, "HIDDEN") {
			return
		}
		metavar, usage := flag.UnquoteUsage(f)
		d := flagDoc{name: f.Name, usage: usage}
		if bf, ok := f.Value.(interface{ IsBoolFlag() bool }); ok && bf.IsBoolFlag() {
			d.isBool = true
		} else {
			if metavar == "" {
				metavar = "value"
			}
			d.metavar = metavar
		}
		switch f.DefValue {
		case "", "0", "false", "0s", "[]":
		default:
			if g, ok := f.Value.(flag.Getter); ok && isString(g.Get()) {
				d.def = strconv.Quote(f.DefValue)
			} else {
				d.def = f.DefValue
			}
		}
		out = append(out, d)
	})
	return out
}

func isString(v any) bool { _, ok := v.(string); return ok }

// Main handles the hidden generator mode: if args (os.Args[1:]) start with
// GenDocsArg it writes the requested documents for pages into the
// directory and returns true and the error; otherwise it returns false, nil
// and the caller goes on as usual. args must be exactly
// "__gendocs man|bash|zsh DIR". Man pages are written for every page;
// completion only for pages that have flags or commands.
func Main(args []string, version string, pages ...*Page) (bool, error) {
	if len(args) == 0 || args[0] != GenDocsArg {
		return false, nil
	}
	if len(args) != 3 {
		return true, errors.New("usage: " + GenDocsArg + " man|bash|zsh DIR")
	}
	return true, Generate(args[1], args[2], version, pages...)
}

// Generate writes kind ("man", "bash" or "zsh") documents for pages into
// dir (created if needed): NAME.SECTION, NAME (bash, as
// bash-completion's completions/ directory wants) or _NAME (zsh).
func Generate(kind, dir, version string, pages ...*Page) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return fmt.Errorf("clidoc: %w", err)
	}
	for _, p := range pages {
		var name string
		var render func(io.Writer) error
		switch kind {
		case "man":
			name = fmt.Sprintf("%s.%d", p.Name, p.Section)
			render = func(w io.Writer) error { return p.Man(w, version) }
		case "bash":
			name, render = p.Name, p.Bash
		case "zsh":
			name, render = "_"+p.Name, p.Zsh
		default:
			return fmt.Errorf("clidoc: unknown kind %q (want man, bash or zsh)", kind)
		}
		if kind != "man" && p.Flags == nil && len(p.Commands) == 0 {
			continue
		}
		var b strings.Builder
		if err := render(&b); err != nil {
			return err
		}
		if err := os.WriteFile(filepath.Join(dir, name), []byte(b.String()), 0o644); err != nil {
			return fmt.Errorf("clidoc: %w", err)
		}
	}
	return nil
}

// manDate is the page's date: SOURCE_DATE_EPOCH when set (reproducible
// builds), else today.
func manDate() string {
	t := time.Now()
	if s := os.Getenv("SOURCE_DATE_EPOCH"); s != "" {
		if n, err := strconv.ParseInt(s, 10, 64); err == nil {
			t = time.Unix(n, 0)
		}
	}
	return t.UTC().Format("2006-01-02")
}

// commandTree maps a space-joined prefix of command words to the words that
// may follow it, in first-seen order.
func (p *Page) commandTree() (keys []string, next map[string][]string) {
	next = map[string][]string{}
	for _, c := range p.Commands {
		words := strings.Fields(c.Name)
		for i, w := range words {
			k := strings.Join(words[:i], " ")
			if _, ok := next[k]; !ok {
				keys = append(keys, k)
			}
			if !contains(next[k], w) {
				next[k] = append(next[k], w)
			}
		}
	}
	sort.Strings(keys)
	return keys, next
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

// fileMetavar reports whether a flag's value is a path (completed as a file).
func fileMetavar(m string) bool {
	switch strings.ToUpper(m) {
	case "FILE", "PATH", "DIR", "SOCKET":
		return true
	}
	return false
}

// paragraphs splits prose into paragraphs, each marked literal or not.
func paragraphs(s string) (out []struct {
	text    string
	literal bool
}) {
	for _, block := range strings.Split(strings.Trim(s, "\n"), "\n\n") {
		block = strings.Trim(block, "\n")
		if strings.TrimSpace(block) == "" {
			continue
		}
		lit := true
		for _, l := range strings.Split(block, "\n") {
			if !strings.HasPrefix(l, "  ") && !strings.HasPrefix(l, "\t") {
				lit = false
				break
			}
		}
		out = append(out, struct {
			text    string
			literal bool
		}{block, lit})
	}
	return out
}
