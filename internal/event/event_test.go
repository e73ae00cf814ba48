package event

import (
	"encoding/json"
	"go/ast"
	"go/parser"
	"go/token"
	"os"
	"reflect"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"
)

var (
	backquoted    = regexp.MustCompile("`([a-z_]+)`")
	parenthesized = regexp.MustCompile(`\([^)]*\)`)
)

// names returns the backquoted names in the part of text that starts at
// the first occurrence of from and ends at the first stop after it, leaving
// out what stands in parentheses (notes about a name).
func names(t *testing.T, text, from, stop string) []string {
	t.Helper()
	_, part, ok := strings.Cut(text, from)
	if !ok {
		t.Fatalf("spec: %q not found", from)
	}
	part, _, _ = strings.Cut(part, stop)
	part = parenthesized.ReplaceAllString(part, "")
	var out []string
	for _, m := range backquoted.FindAllStringSubmatch(part, -1) {
		out = append(out, m[1])
	}
	return out
}

// TestMatchesSpec keeps proto/ADMIN.md §2 in step with this package: the
// JSON fields of Event and the Kind constants declared in event.go are the
// ones it lists, in its order.
func TestMatchesSpec(t *testing.T) {
	b, err := os.ReadFile("../../proto/ADMIN.md")
	if err != nil {
		t.Fatal(err)
	}
	_, spec, ok := strings.Cut(string(b), "## 2. Events")
	if !ok {
		t.Fatal("proto/ADMIN.md: no section 2. Events")
	}
	spec, _, _ = strings.Cut(spec, "\n## ")

	t.Run("fields", func(t *testing.T) {
		var got []string
		for f := range reflect.TypeFor[Event]().Fields() {
			name, _, _ := strings.Cut(f.Tag.Get("json"), ",")
			got = append(got, name)
		}
		if want := names(t, spec, "package `internal/event`:", ";"); !slices.Equal(got, want) {
			t.Errorf("Event JSON fields = %v; proto/ADMIN.md lists %v", got, want)
		}
	})
	t.Run("kinds", func(t *testing.T) {
		got := kindValues(t)
		if want := names(t, spec, "Kinds:", ".\n"); !slices.Equal(got, want) {
			t.Errorf("Kind constants = %v; proto/ADMIN.md lists %v", got, want)
		}
		if len(slices.Compact(slices.Sorted(slices.Values(got)))) != len(got) {
			t.Errorf("two Kind constants share a name: %v", got)
		}
	})
}

// kindValues returns the values of the Kind constants declared in
// event.go, in order.
func kindValues(t *testing.T) []string {
	t.Helper()
	f, err := parser.ParseFile(token.NewFileSet(), "event.go", nil, 0)
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, d := range f.Decls {
		gd, ok := d.(*ast.GenDecl)
		if !ok || gd.Tok != token.CONST {
			continue
		}
		for _, s := range gd.Specs {
			vs := s.(*ast.ValueSpec)
			if id, ok := vs.Type.(*ast.Ident); !ok || id.Name != "Kind" {
				continue
			}
			for _, v := range vs.Values {
				lit, ok := v.(*ast.BasicLit)
				if !ok {
					t.Fatalf("event.go: a Kind constant is not a string literal: %#v", v)
				}
				s, err := strconv.Unquote(lit.Value)
				if err != nil {
					t.Fatal(err)
				}
				got = append(got, s)
			}
		}
	}
	return got
}

// TestJSONOmitsEmpty: an event names only the fields that apply to it,
// and decodes to what was encoded.
func TestJSONOmitsEmpty(t *testing.T) {
	at := time.Date(2026, 12, 2, 4, 0, 0, 0, time.UTC)
	e := Event{Kind: TerminalRedirected, Time: at, Server: "b1", Terminal: "t-1", Target: "b2", Hops: 1}
	b, err := json.Marshal(e)
	if err != nil {
		t.Fatal(err)
	}
	const want = `{"kind":"redirect","time":"2026-12-02T04:00:00Z","server":"b1","terminal":"t-1","hops":1,"target":"b2"}`
	if string(b) != want {
		t.Errorf("json = %s; want %s", b, want)
	}
	var back Event
	if err := json.Unmarshal(b, &back); err != nil || back != e {
		t.Errorf("decoded %+v, %v; want %+v", back, err, e)
	}
}

// TestREADMEListsKinds: the README's list of events (Administering a
// group: **Events** (…)) names every Kind constant and no other
// (`terminal_connected`/`_disconnected` is two).
func TestREADMEListsKinds(t *testing.T) {
	b, err := os.ReadFile("../../README.md")
	if err != nil {
		t.Fatal(err)
	}
	_, list, ok := strings.Cut(string(b), "**Events** (")
	if !ok {
		t.Fatal("README.md: no **Events** list")
	}
	list, _, _ = strings.Cut(list, ")")
	var got []string
	base := ""
	for _, m := range regexp.MustCompile("`(_?[a-z_]+)`").FindAllStringSubmatch(list, -1) {
		name := m[1]
		if strings.HasPrefix(name, "_") {
			name = base + name
		} else {
			base, _, _ = strings.Cut(name, "_")
		}
		got = append(got, name)
	}
	want := kindValues(t)
	slices.Sort(got)
	slices.Sort(want)
	if !slices.Equal(got, want) {
		t.Errorf("README.md lists the events %v; event.go declares %v", got, want)
	}
}
