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
	err = filepath.WalkDir("../..", func(path string, d fs.DirEntry, err error) error {
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
		if err != nil {
			return err
		}
		got += len(target.FindAll(src, -1))
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if got != want {
		t.Errorf("README.md counts %d fuzz targets; the tree has %d", want, got)
	}
}
