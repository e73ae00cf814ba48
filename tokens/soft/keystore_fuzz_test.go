package soft_test

import (
	"crypto/ed25519"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"github.com/hotdesk/hotdesk/tokens/soft"
)

// FuzzOpenKeystore: a keystore file (the terminal's, perhaps corrupted or
// edited by hand) opens into keys whose names, labels and token ids are
// valid and whose private keys match them, or fails: never a panic. What
// opens saves and opens again to the same keys.
func FuzzOpenKeystore(f *testing.F) {
	dir := f.TempDir()
	ks, err := soft.OpenKeystore(filepath.Join(dir, "seed.json"))
	if err != nil {
		f.Fatal(err)
	}
	for _, n := range []string{"laptop", "phone.2"} {
		if _, err := ks.Generate(n, "a label: ü"); err != nil {
			f.Fatal(err)
		}
	}
	if err := ks.Save(); err != nil {
		f.Fatal(err)
	}
	b, err := os.ReadFile(ks.Path())
	if err != nil {
		f.Fatal(err)
	}
	f.Add(b)
	s := string(b)
	f.Add([]byte(strings.Replace(s, `"version": 1`, `"version": 2`, 1)))
	f.Add([]byte(strings.Replace(s, "phone.2", "laptop", 1)))
	f.Add([]byte(strings.Replace(s, "laptop", "lap top", 1)))
	f.Add([]byte(`{"version":1,"keys":[{"name":"a","token":"soft.x","public_key":"AAAA","seed":"AAAA"}]}`))
	f.Add([]byte(`{"version":1,"keys":null}`))
	f.Add([]byte(`{"version":1}`))
	f.Add([]byte(``))
	path := filepath.Join(dir, "fuzz.json")
	f.Fuzz(func(t *testing.T, b []byte) {
		if err := os.WriteFile(path, b, 0o600); err != nil {
			t.Fatal(err)
		}
		ks, err := soft.OpenKeystore(path)
		if err != nil {
			return
		}
		keys := ks.List()
		if len(keys) > soft.MaxKeys {
			t.Fatalf("%d keys", len(keys))
		}
		names, tokens := map[string]bool{}, map[string]bool{}
		for _, k := range keys {
			if k.Name == "" || len(k.Name) > soft.MaxNameLen || len(k.Label) > soft.MaxLabelLen || names[k.Name] || tokens[k.Token] {
				t.Fatalf("key %+v accepted", k)
			}
			names[k.Name], tokens[k.Token] = true, true
			if k.Token != soft.TokenID(k.Public) {
				t.Fatalf("key %q: token %q is not its key's", k.Name, k.Token)
			}
			sig, err := ks.Sign(k.Token, []byte("m"))
			if err != nil || !ed25519.Verify(k.Public, []byte("m"), sig) {
				t.Fatalf("key %q: its private key does not match (%v)", k.Name, err)
			}
		}
		if len(keys) == 0 {
			return
		}
		if err := ks.Save(); err != nil { // merges the file (the same keys) and writes it
			t.Fatalf("save: %v", err)
		}
		ks2, err := soft.OpenKeystore(path)
		if err != nil {
			t.Fatalf("open the saved keystore: %v", err)
		}
		if got := ks2.List(); !reflect.DeepEqual(got, keys) {
			t.Fatalf("saved %+v, opened %+v", keys, got)
		}
	})
}
