package soft_test

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/hotdesk/hotdesk/tokens/soft"
)

// mustOpen opens the keystore at path or fails t.
func mustOpen(t *testing.T, path string) *soft.Keystore {
	t.Helper()
	ks, err := soft.OpenKeystore(path)
	if err != nil {
		t.Fatal(err)
	}
	return ks
}

// mustGenerate generates a key named name (no label) in ks or fails t.
func mustGenerate(t *testing.T, ks *soft.Keystore, name string) soft.Key {
	t.Helper()
	k, err := ks.Generate(name, "")
	if err != nil {
		t.Fatal(err)
	}
	return k
}

// mustSave saves ks or fails t.
func mustSave(t *testing.T, ks *soft.Keystore) {
	t.Helper()
	if err := ks.Save(); err != nil {
		t.Fatal(err)
	}
}

func TestKeystoreRoundTrip(t *testing.T) {
	path := filepath.Join(t.TempDir(), "conf", "hotdesk", "tokens.json")
	ks, err := soft.OpenKeystore(path)
	if err != nil {
		t.Fatalf("OpenKeystore(missing) = %v; want empty keystore", err)
	}
	if got := ks.List(); len(got) != 0 {
		t.Fatalf("List = %v; want empty", got)
	}
	a, err := ks.Generate("default", "Alice's laptop")
	if err != nil {
		t.Fatal(err)
	}
	if a.Token != soft.TokenID(a.Public) || a.Name != "default" || a.Label != "Alice's laptop" {
		t.Errorf("Generate = %+v; want name default, its label and token id", a)
	}
	if _, err := ks.Generate("default", ""); !errors.Is(err, soft.ErrExists) {
		t.Errorf("Generate(taken name) = %v; want ErrExists", err)
	}
	if _, err := os.Stat(path); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("file exists before Save (stat err %v)", err)
	}
	b := mustGenerate(t, ks, "badge-2")
	mustSave(t, ks)
	st, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if got := st.Mode().Perm(); got != 0o600 {
		t.Errorf("file mode = %04o; want 0600", got)
	}
	dst, err := os.Stat(filepath.Dir(path))
	if err != nil {
		t.Fatal(err)
	}
	if got := dst.Mode().Perm(); got != 0o700 {
		t.Errorf("dir mode = %04o; want 0700", got)
	}
	if ents, _ := os.ReadDir(filepath.Dir(path)); len(ents) != 2 || ents[0].Name() != filepath.Base(path) || ents[1].Name() != filepath.Base(path)+".lock" {
		t.Errorf("directory holds %v; want only the keystore and its lock file (no temp files)", ents)
	}

	ks2 := mustOpen(t, path)
	got := ks2.List()
	if len(got) != 2 || got[0].Name != "default" || got[1].Name != "badge-2" ||
		got[0].Token != a.Token || got[1].Token != b.Token || !got[0].Public.Equal(a.Public) || got[0].Label != a.Label {
		t.Fatalf("reopened List = %+v; want default (%s), badge-2 (%s)", got, a.Token, b.Token)
	}
	msg := []byte("challenge")
	sig, err := ks2.Sign(a.Token, msg)
	if err != nil {
		t.Fatal(err)
	}
	if err := soft.Verify(a.Public, msg, sig); err != nil {
		t.Errorf("Verify(reopened key's signature) = %v; want nil", err)
	}
	if err := soft.Verify(b.Public, msg, sig); !errors.Is(err, soft.ErrBadProof) {
		t.Errorf("Verify(with other key) = %v; want ErrBadProof", err)
	}
	if _, err := ks2.Sign("soft.nosuchtoken", msg); !errors.Is(err, soft.ErrNotFound) {
		t.Errorf("Sign(unknown token) = %v; want ErrNotFound", err)
	}
	if _, err := ks2.Get("nope"); !errors.Is(err, soft.ErrNotFound) {
		t.Errorf("Get(unknown) = %v; want ErrNotFound", err)
	}
	if k, err := ks2.Get("badge-2"); err != nil || k.Token != b.Token {
		t.Errorf("Get(badge-2) = %+v, %v; want token %s", k, err, b.Token)
	}
	// The private key is stored as its seed under the documented field.
	raw, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(raw), `"seed"`) {
		t.Errorf("keystore file lacks seeds: %s", raw)
	}
}

func TestKeystoreGenerateValidation(t *testing.T) {
	ks := mustOpen(t, filepath.Join(t.TempDir(), "k.json"))
	tests := []struct {
		name, key, label string
		wantErr          bool
	}{
		{"ok", "desk_1.a-b", "Desk 1 ☕", false},
		{"empty name", "", "", true},
		{"slash", "a/b", "", true},
		{"space", "a b", "", true},
		{"long name", strings.Repeat("n", soft.MaxNameLen+1), "", true},
		{"max name", strings.Repeat("n", soft.MaxNameLen), "", false},
		{"long label", "l1", strings.Repeat("l", soft.MaxLabelLen+1), true},
		{"control in label", "l2", "a\nb", true},
		{"bad utf8 label", "l3", "\xff", true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := ks.Generate(tt.key, tt.label)
			if gotErr := err != nil; gotErr != tt.wantErr {
				t.Errorf("Generate(%q, %q) = %v; want error %v", tt.key, tt.label, err, tt.wantErr)
			}
		})
	}
}

func TestOpenKeystoreRefuses(t *testing.T) {
	// A valid file to tamper with.
	dir := t.TempDir()
	good := filepath.Join(dir, "good.json")
	ks := mustOpen(t, good)
	mustGenerate(t, ks, "a")
	mustGenerate(t, ks, "b")
	mustSave(t, ks)
	raw, err := os.ReadFile(good)
	if err != nil {
		t.Fatal(err)
	}
	edit := func(f func(k0, k1 map[string]any, doc map[string]any)) []byte {
		var d map[string]any
		_ = json.Unmarshal(raw, &d)
		ks := d["keys"].([]any)
		f(ks[0].(map[string]any), ks[1].(map[string]any), d)
		out, _ := json.Marshal(d)
		return out
	}

	tests := []struct {
		name string
		data []byte
		mode os.FileMode
	}{
		{"world readable", raw, 0o644},
		{"group readable", raw, 0o640},
		{"not json", []byte("{"), 0o600},
		{"wrong version", edit(func(_, _, d map[string]any) { d["version"] = 2 }), 0o600},
		{"token mismatch", edit(func(k0, k1, _ map[string]any) { k0["token"] = k1["token"] }), 0o600},
		{"public key mismatch", edit(func(k0, k1, _ map[string]any) { k0["public_key"] = k1["public_key"] }), 0o600},
		{"short seed", edit(func(k0, _, _ map[string]any) { k0["seed"] = "AAAA" }), 0o600},
		{"duplicate name", edit(func(k0, k1, _ map[string]any) { k1["name"] = k0["name"] }), 0o600},
		{"bad name", edit(func(k0, _, _ map[string]any) { k0["name"] = "../x" }), 0o600},
		{"too large", append(raw, make([]byte, 1<<20)...), 0o600},
	}
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := filepath.Join(dir, "bad"+string(rune('a'+i))+".json")
			if err := os.WriteFile(p, tt.data, tt.mode); err != nil {
				t.Fatal(err)
			}
			if err := os.Chmod(p, tt.mode); err != nil {
				t.Fatal(err)
			}
			if _, err := soft.OpenKeystore(p); err == nil {
				t.Errorf("OpenKeystore = nil error; want refusal")
			}
		})
	}
	if _, err := soft.OpenKeystore(good); err != nil {
		t.Errorf("OpenKeystore(untampered) = %v; want nil", err)
	}
	if _, err := soft.OpenKeystore(dir); err == nil {
		t.Errorf("OpenKeystore(directory) = nil error; want refusal")
	}
}

// TestKeystoreSeesKeysSavedByAnother: a key another process saved to the
// keystore's file after this one opened it is found by name (a terminal
// agent running while `hotdesk-term pair` enrols a key); a name in neither
// is ErrNotFound.
func TestKeystoreSeesKeysSavedByAnother(t *testing.T) {
	path := filepath.Join(t.TempDir(), "keys.json")
	running := mustOpen(t, path)
	mustGenerate(t, running, "old")
	mustSave(t, running)
	pairing := mustOpen(t, path)
	badge := mustGenerate(t, pairing, "badge")
	mustSave(t, pairing)
	got, err := running.Get("badge")
	if err != nil || got.Token != badge.Token {
		t.Fatalf("Get(badge) = %v, %v; want the key the other keystore saved (%s)", got.Token, err, badge.Token)
	}
	if _, err := running.Sign(badge.Token, []byte("m")); err != nil {
		t.Fatalf("Sign with the merged key: %v", err)
	}
	if _, err := running.Get("old"); err != nil {
		t.Fatalf("Get(old) after the merge: %v", err)
	}
	if _, err := running.Get("nope"); !errors.Is(err, soft.ErrNotFound) {
		t.Fatalf("Get(nope) = %v; want ErrNotFound", err)
	}
}

// TestKeystoreSaveKeepsOthersKeys: two keystores opened on one file (two
// enrolments at once) each save a new key; the file ends with both.
func TestKeystoreSaveKeepsOthersKeys(t *testing.T) {
	path := filepath.Join(t.TempDir(), "keys.json")
	a, b := mustOpen(t, path), mustOpen(t, path)
	mustGenerate(t, a, "phone")
	mustGenerate(t, b, "badge")
	mustSave(t, a)
	mustSave(t, b)
	disk := mustOpen(t, path)
	var names []string
	for _, k := range disk.List() {
		names = append(names, k.Name)
	}
	if len(names) != 2 {
		t.Fatalf("the file holds %v; want phone and badge", names)
	}
}

// TestKeystoreConcurrentSavesKeepBoth: two keystores on one file (two
// hotdesk-term processes: the lock is per open file, as between
// processes) saving at the same moment each keep their key, every time.
func TestKeystoreConcurrentSavesKeepBoth(t *testing.T) {
	lost := 0
	const rounds = 100
	for i := range rounds {
		path := filepath.Join(t.TempDir(), fmt.Sprintf("keys%d.json", i))
		a, b := mustOpen(t, path), mustOpen(t, path)
		mustGenerate(t, a, "phone")
		mustGenerate(t, b, "badge")
		errs := make(chan error, 2)
		for _, ks := range []*soft.Keystore{a, b} {
			go func() { errs <- ks.Save() }()
		}
		for range 2 {
			if err := <-errs; err != nil {
				t.Fatal(err)
			}
		}
		if n := len(mustOpen(t, path).List()); n != 2 {
			lost++
		}
	}
	if lost > 0 {
		t.Errorf("%d of %d rounds of two saves at once lost a key", lost, rounds)
	}
}

// TestKeystoreSaveNotHeldByOthers: a process that can only read the
// keystore's directory (another user, where the directory is 0755) cannot
// hold its saves: the lock they take is on a file only the keystore's
// owner may open, not on the directory anyone may open and flock.
func TestKeystoreSaveNotHeldByOthers(t *testing.T) {
	dir := t.TempDir()
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	ks := mustOpen(t, filepath.Join(dir, "keys.json"))
	mustGenerate(t, ks, "phone")
	d, err := os.Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	if err := syscall.Flock(int(d.Fd()), syscall.LOCK_EX); err != nil {
		t.Fatal(err)
	}
	saved := make(chan error, 1)
	go func() { saved <- ks.Save() }()
	select {
	case err := <-saved:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("Save still waiting after 30s for a flock another process holds on the keystore's directory")
	}
	if fi, err := os.Stat(filepath.Join(dir, "keys.json.lock")); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("lock file: %v, %v; want mode 0600", fi, err)
	}
}
