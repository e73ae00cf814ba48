package main

import (
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
)

// testSources returns the contents of every _test.go file of the tree.
func testSources(t *testing.T) map[string][]byte {
	t.Helper()
	out := map[string][]byte{}
	err := filepath.WalkDir("../..", func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() && (strings.HasPrefix(d.Name(), ".") && path != "../.." || d.Name() == "testdata" || d.Name() == "bin" || d.Name() == "build") {
			return filepath.SkipDir
		}
		if !strings.HasSuffix(path, "_test.go") {
			return nil
		}
		src, err := os.ReadFile(path)
		out[path] = src
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// TestDocsNameRealTests: every test or benchmark the README and proto/*.md
// name (`TestX`, `BenchmarkX`, `TestX*` for a family) is a function of
// the tree's tests.
func TestDocsNameRealTests(t *testing.T) {
	var all []byte
	for _, src := range testSources(t) {
		all = append(all, src...)
	}
	docs, _ := filepath.Glob("../../proto/*.md")
	docs = append(docs, "../../README.md")
	named := 0
	for _, doc := range docs {
		b, err := os.ReadFile(doc)
		if err != nil {
			t.Fatal(err)
		}
		for _, m := range regexp.MustCompile("`((?:Test|Benchmark|Fuzz)[A-Z][A-Za-z0-9_]*)(\\*?)").FindAllSubmatch(b, -1) {
			named++
			pat := `(?m)^func ` + string(m[1]) + `\(`
			if len(m[2]) > 0 {
				pat = `(?m)^func ` + string(m[1]) + `\w*\(`
			}
			if !regexp.MustCompile(pat).Match(all) {
				t.Errorf("%s names %s%s; no such test in the tree", doc, m[1], m[2])
			}
		}
	}
	if named < 10 {
		t.Fatalf("only %d tests named in the docs: the pattern is wrong", named)
	}
}

// TestREADMEFuzzCount: the README's count of fuzz targets (Under attack:
// Fuzzing) is the number of Fuzz functions in the tree, which make fuzz
// runs one after the other.
func TestREADMEFuzzCount(t *testing.T) {
	b, err := os.ReadFile("../../README.md")
	if err != nil {
		t.Fatal(err)
	}
	m := regexp.MustCompile(`fuzz target\s+\((\d+):`).FindSubmatch(b)
	if m == nil {
		t.Fatal("README.md: no count of fuzz targets (\"fuzz target (N: …\")")
	}
	want, _ := strconv.Atoi(string(m[1]))
	target := regexp.MustCompile(`(?m)^func Fuzz\w+\(\w+ \*testing\.F\)`)
	got := 0
	for _, src := range testSources(t) {
		got += len(target.FindAll(src, -1))
	}
	if got != want {
		t.Errorf("README.md counts %d fuzz targets; the tree has %d", want, got)
	}
}
