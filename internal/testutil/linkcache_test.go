package testutil

import "testing"

// TestCacheKey: one entry for the same binaries whichever order they are
// named in, relative or not; another for other flags or other packages.
func TestCacheKey(t *testing.T) {
	t.Parallel()
	key := func(args ...string) string {
		t.Helper()
		k, err := cacheKey(args)
		if err != nil {
			t.Fatal(err)
		}
		return k
	}
	base := key("-ldflags=-X a=b", ".", "../stamp")
	if k := key("-ldflags=-X a=b", "../stamp", "./"); k != base {
		t.Errorf("the same packages in another order: key %s; want %s", k, base)
	}
	for _, other := range [][]string{
		{"-ldflags=-X a=c", ".", "../stamp"},
		{".", "../stamp"},
		{"-ldflags=-X a=b", "."},
		{"-ldflags=-X a=b", ".", "../stamp", "../skip"},
	} {
		if k := key(other...); k == base {
			t.Errorf("%q has the key of %q", other, []string{"-ldflags=-X a=b", ".", "../stamp"})
		}
	}
}
