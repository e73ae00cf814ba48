package clidoc

import (
	"regexp"
	"strings"
)

var (
	// blockOpen is a block header: `name {` or `name "label" {`.
	blockOpen = regexp.MustCompile(`^([a-z_][a-z0-9_]*)(\s+"[^"]*")?\s*\{\s*$`)
	// codeLike is a commented-out setting, block header or block end.
	codeLike = regexp.MustCompile(`^([a-z_][a-z0-9_]*\s*=|[a-z_][a-z0-9_]*(\s+"[^"]*")?\s*\{\s*$|\}\s*$)`)
)

// ConfigPage renders a commented sample configuration file in HCL as a
// file-format page: the leading comment block is the description, every
// top-level block a subsection of SETTINGS, comments become prose and
// settings (also commented-out examples) literal examples. The sample is
// the file that is shipped, so the page and the file cannot disagree.
func ConfigPage(name string, section int, short, sample string, extra []Section, seeAlso []string) *Page {
	p := &Page{Name: name, Section: section, Short: short, SeeAlso: seeAlso}
	lines := strings.Split(strings.ReplaceAll(sample, "\r\n", "\n"), "\n")

	// The head comment (up to the first blank line) is the description.
	i := 0
	var head []string
	for ; i < len(lines) && strings.HasPrefix(strings.TrimSpace(lines[i]), "#"); i++ {
		head = append(head, commentText(lines[i]))
	}
	p.Description = joinProse(head)

	var secs []Section
	cur := &Section{Title: "SETTINGS", Body: ""}
	var body []string // markup lines of cur
	kind := ""        // "prose", "lit" or "" (after a blank)
	emit := func(k, l string) {
		if kind != k && kind != "" {
			body = append(body, "")
		}
		kind = k
		body = append(body, l)
	}
	flush := func() {
		cur.Body = strings.Join(body, "\n")
		if strings.TrimSpace(cur.Body) != "" || len(secs) == 0 {
			secs = append(secs, *cur)
		}
		body, kind = nil, ""
	}
	depth := 0
	afterBlock := false
	for ; i < len(lines); i++ {
		raw := strings.TrimRight(lines[i], " \t")
		t := strings.TrimSpace(raw)
		if t == "" {
			if kind != "" {
				body = append(body, "")
			}
			kind = ""
			continue
		}
		if depth == 0 && !strings.HasPrefix(t, "#") {
			if m := blockOpen.FindStringSubmatch(t); m != nil {
				// The block's header is the subsection's title.
				flush()
				cur = &Section{Title: m[1] + strings.TrimRight(m[2], " ") + " { }", Sub: true}
				afterBlock = false
				depth++
				continue
			} else if afterBlock {
				flush()
				key, _, _ := strings.Cut(t, "=")
				cur = &Section{Title: strings.TrimSpace(key), Sub: true}
				afterBlock = false
			}
		}
		if depth == 0 && afterBlock && strings.HasPrefix(t, "#") {
			// A comment between blocks opens the next top-level group.
			flush()
			cur = &Section{Title: "", Sub: true}
			afterBlock = false
		}
		switch {
		case strings.HasPrefix(t, "#"):
			c := commentText(t)
			switch {
			case codeLike.MatchString(strings.TrimSpace(c)):
				emit("lit", "  "+raw)
			case strings.HasPrefix(c, "  "):
				emit("table", "  "+c)
			default:
				emit("prose", c)
			}
		default:
			depth += strings.Count(t, "{") - strings.Count(t, "}")
			if depth == 0 && t == "}" {
				afterBlock = true // the end of a top-level block
				continue
			}
			emit("lit", "  "+raw)
			if depth == 0 && strings.HasSuffix(t, "}") {
				afterBlock = true
			}
		}
	}
	flush()
	// A group opened by a comment is named by its first setting.
	for j := range secs {
		if secs[j].Sub && secs[j].Title == "" {
			secs[j].Title = firstKey(secs[j].Body)
		}
	}
	p.Sections = append(secs, extra...)
	return p
}

// commentText strips the comment marker and one following space.
func commentText(l string) string {
	l = strings.TrimSpace(l)
	l = strings.TrimPrefix(l, "#")
	return strings.TrimPrefix(l, " ")
}

func joinProse(lines []string) string {
	var out []string
	for _, l := range lines {
		if strings.TrimSpace(l) == "" {
			out = append(out, "")
			continue
		}
		out = append(out, l)
	}
	return strings.Join(out, "\n")
}

func firstKey(body string) string {
	for _, l := range strings.Split(body, "\n") {
		t := strings.TrimSpace(strings.TrimPrefix(strings.TrimSpace(l), "#"))
		if m := codeLike.FindString(t); m != "" {
			k := strings.Fields(strings.TrimSuffix(strings.TrimSpace(m), "="))
			if len(k) > 0 {
				return k[0]
			}
		}
	}
	return "more settings"
}
