package main

import (
	"go/ast"
	"go/parser"
	"go/token"
	"os"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
)

// declaredMetrics returns the metrics metrics.go declares, by name, with
// their label names (variable and constant, sorted): the Name of every
// prometheus …Opts with the label list of its constructor, and every
// prometheus.NewDesc.
func declaredMetrics(t *testing.T) map[string][]string {
	t.Helper()
	f, err := parser.ParseFile(token.NewFileSet(), "metrics.go", nil, 0)
	if err != nil {
		t.Fatal(err)
	}
	str := func(e ast.Expr) string {
		lit, ok := e.(*ast.BasicLit)
		if !ok || lit.Kind != token.STRING {
			t.Fatalf("metrics.go: a metric's name or label is not a string literal: %#v", e)
		}
		s, err := strconv.Unquote(lit.Value)
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
	strs := func(e ast.Expr) []string {
		var out []string
		if cl, ok := e.(*ast.CompositeLit); ok {
			for _, el := range cl.Elts {
				if kv, ok := el.(*ast.KeyValueExpr); ok {
					el = kv.Key
				}
				out = append(out, str(el))
			}
		}
		return out
	}
	out := map[string][]string{}
	ast.Inspect(f, func(n ast.Node) bool {
		call, ok := n.(*ast.CallExpr)
		if !ok {
			return true
		}
		sel, ok := call.Fun.(*ast.SelectorExpr)
		if !ok || len(call.Args) == 0 {
			return true
		}
		if x, ok := sel.X.(*ast.Ident); !ok || x.Name != "prometheus" {
			return true
		}
		if sel.Sel.Name == "NewDesc" {
			out[str(call.Args[0])] = slices.Sorted(slices.Values(strs(call.Args[2])))
			return true
		}
		opts, ok := call.Args[0].(*ast.CompositeLit)
		if !ok {
			return true
		}
		var name string
		var labels []string
		for _, el := range opts.Elts {
			kv, ok := el.(*ast.KeyValueExpr)
			if !ok {
				continue
			}
			switch kv.Key.(*ast.Ident).Name {
			case "Name":
				name = str(kv.Value)
			case "ConstLabels":
				labels = append(labels, strs(kv.Value)...)
			}
		}
		if name == "" {
			return true
		}
		if len(call.Args) > 1 {
			labels = append(labels, strs(call.Args[1])...)
		}
		out[name] = slices.Sorted(slices.Values(labels))
		return true
	})
	if len(out) < 10 {
		t.Fatalf("metrics.go: found only %d metrics: %v", len(out), out)
	}
	return out
}

// TestMetricsInREADME keeps the README's list of metrics (Administering a
// group: Metrics and health) in step with metrics.go: every metric is
// named there with its labels (`name{label,…}`, or `name` alone when it
// has none), and every hotdesk_ metric the README names exists.
func TestMetricsInREADME(t *testing.T) {
	b, err := os.ReadFile("../../README.md")
	if err != nil {
		t.Fatal(err)
	}
	readme := string(b)
	declared := declaredMetrics(t)
	for name, labels := range declared {
		m := regexp.MustCompile("`"+name+`(\{[^}]*\})?`+"`").FindAllStringSubmatch(readme, -1)
		if m == nil {
			t.Errorf("README.md does not name the metric %s", name)
			continue
		}
		var shown []string // the labels of its first mention with labels
		for _, mm := range m {
			if mm[1] == "" {
				continue
			}
			for l := range strings.SplitSeq(strings.Trim(mm[1], "{}"), ",") {
				l, _, _ = strings.Cut(strings.TrimSpace(l), "=")
				shown = append(shown, l)
			}
			break
		}
		if slices.Sort(shown); !slices.Equal(shown, labels) {
			t.Errorf("README.md shows %s with labels %v; metrics.go declares %v", name, shown, labels)
		}
	}
	for _, m := range regexp.MustCompile(`\bhotdesk_[a-z_]*[a-z]\b`).FindAllString(readme, -1) {
		if _, ok := declared[m]; !ok {
			t.Errorf("README.md names a metric %s that metrics.go does not declare", m)
		}
	}
}
