package config

import (
	"os"
	"reflect"
	"regexp"
	"strings"
	"testing"
)

// TestREADMETableHasEveryKey: the README's configuration table (section
// Configuration) names every key the file format has, each in a row of its
// block: `key` for a top-level one, `block { … key … }` (blocks nested as
// in the file) for the others.
func TestREADMETableHasEveryKey(t *testing.T) {
	b, err := os.ReadFile("../../../README.md")
	if err != nil {
		t.Fatal(err)
	}
	_, table, ok := strings.Cut(string(b), "| block / key | default | meaning |")
	if !ok {
		t.Fatal("README.md: no configuration table")
	}
	table, _, _ = strings.Cut(table, "\n\n")
	var keys []string // each row's first cell
	for _, row := range strings.Split(table, "\n") {
		if cells := strings.Split(row, "|"); len(cells) > 3 && strings.Contains(cells[1], "`") {
			keys = append(keys, cells[1])
		}
	}
	if len(keys) < 10 {
		t.Fatalf("README.md configuration table: %d rows read", len(keys))
	}
	// shown reports whether a row names key inside the blocks of path.
	shown := func(path []string, key string) bool {
		word := regexp.MustCompile(`[\s{` + "`" + `]` + regexp.QuoteMeta(key) + `[\s}` + "`" + `]`)
	rows:
		for _, cell := range keys {
			rest := cell
			for _, block := range path {
				m := regexp.MustCompile(`\b` + regexp.QuoteMeta(block) + `\b( "[A-Z]+")? \{`).FindStringIndex(rest)
				if m == nil {
					continue rows
				}
				rest = rest[m[1]-1:]
			}
			if len(path) == 0 {
				rest = regexp.MustCompile(`\{[^}]*\}`).ReplaceAllString(rest, "")
			}
			if word.MatchString(rest) {
				return true
			}
		}
		return false
	}
	var walk func(rt reflect.Type, path []string)
	walk = func(rt reflect.Type, path []string) {
		for f := range rt.Fields() {
			name, kind, _ := strings.Cut(f.Tag.Get("hcl"), ",")
			if name == "" || kind == "label" {
				continue
			}
			if kind == "block" {
				bt := f.Type
				for bt.Kind() == reflect.Pointer || bt.Kind() == reflect.Slice {
					bt = bt.Elem()
				}
				walk(bt, append(path[:len(path):len(path)], name))
				continue
			}
			if !shown(path, name) {
				where := "top level"
				if len(path) > 0 {
					where = strings.Join(path, " { ") + " {"
				}
				t.Errorf("README.md's configuration table does not name %s (%s)", name, where)
			}
		}
	}
	walk(reflect.TypeFor[rawConfig](), nil)
}
