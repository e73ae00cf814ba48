package soft

import (
	"crypto/ed25519"
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"syscall"

	"github.com/hotdesk/hotdesk/internal/atomicfile"
	"github.com/hotdesk/hotdesk/internal/printable"
)

// Keystore errors. Test for them with errors.Is.
var (
	// ErrExists: a key with that name is already in the keystore.
	ErrExists = errors.New("soft: key exists")
	// ErrNotFound: no key with that name or token id.
	ErrNotFound = errors.New("soft: key not found")
)

// Keystore limits.
const (
	// MaxKeys bounds the number of keys in one keystore.
	MaxKeys = 256
	// MaxNameLen and MaxLabelLen bound a key's name and label, in bytes.
	MaxNameLen  = 64
	MaxLabelLen = 128
	// maxFileSize bounds the keystore file read by OpenKeystore.
	maxFileSize = 1 << 20
	// fileVersion is the keystore file format version.
	fileVersion = 1
)

// Key is the public part of one keystore entry.
type Key struct {
	Name   string
	Token  string // TokenID(Public)
	Label  string
	Public ed25519.PublicKey
}

// Keystore is a terminal's file of named software-token keys. It is safe
// for concurrent use. Changes stay in memory until Save, which writes the
// whole file atomically (temporary file + rename) with mode 0600 in a
// directory of mode 0700.
type Keystore struct {
	path string

	mu   sync.Mutex
	keys []entry // in creation order
}

type entry struct {
	Key
	priv ed25519.PrivateKey
}

// fileFormat is the keystore file: JSON, private keys as 32-byte seeds.
type fileFormat struct {
	Version int         `json:"version"`
	Keys    []fileEntry `json:"keys"`
}

type fileEntry struct {
	Name  string `json:"name"`
	Token string `json:"token"`
	Label string `json:"label,omitempty"`
	// Public is redundant with Seed; it is checked on load.
	Public []byte `json:"public_key"`
	Seed   []byte `json:"seed"`
}

// OpenKeystore reads the keystore at path. A missing file is an empty
// keystore (Save creates it). A file readable or writable by group or others
// is refused, as is a malformed one or one whose keys do not match their
// token ids.
func OpenKeystore(path string) (*Keystore, error) {
	ks := &Keystore{path: path}
	data, err := atomicfile.ReadPrivate(path, maxFileSize, 0o077, false)
	if errors.Is(err, fs.ErrNotExist) {
		return ks, nil
	}
	if err != nil {
		return nil, fmt.Errorf("soft: open keystore: %w (private keys: keep it mode 0600)", err)
	}
	var ff fileFormat
	if err := json.Unmarshal(data, &ff); err != nil {
		return nil, fmt.Errorf("soft: open keystore %s: %w", path, err)
	}
	if ff.Version != fileVersion {
		return nil, fmt.Errorf("soft: open keystore %s: version %d; want %d", path, ff.Version, fileVersion)
	}
	if len(ff.Keys) > MaxKeys {
		return nil, fmt.Errorf("soft: open keystore %s: %d keys, limit %d", path, len(ff.Keys), MaxKeys)
	}
	for i, fe := range ff.Keys {
		e, err := fe.entry()
		if err != nil {
			return nil, fmt.Errorf("soft: open keystore %s: key %d: %w", path, i, err)
		}
		if ks.find(func(x *entry) bool { return x.Name == e.Name || x.Token == e.Token }) != nil {
			return nil, fmt.Errorf("soft: open keystore %s: key %q: duplicate name or token", path, e.Name)
		}
		ks.keys = append(ks.keys, e)
	}
	return ks, nil
}

func (fe fileEntry) entry() (entry, error) {
	if err := checkName(fe.Name); err != nil {
		return entry{}, err
	}
	if err := checkLabel(fe.Label); err != nil {
		return entry{}, err
	}
	if len(fe.Seed) != ed25519.SeedSize {
		return entry{}, fmt.Errorf("seed is %d bytes; want %d", len(fe.Seed), ed25519.SeedSize)
	}
	priv := ed25519.NewKeyFromSeed(fe.Seed)
	pub := priv.Public().(ed25519.PublicKey)
	if !pub.Equal(ed25519.PublicKey(fe.Public)) {
		return entry{}, fmt.Errorf("key %q: public key does not match seed", fe.Name)
	}
	if id := TokenID(pub); id != fe.Token {
		return entry{}, fmt.Errorf("key %q: token %q does not match key (%s)", fe.Name, fe.Token, id)
	}
	return entry{Key: Key{Name: fe.Name, Token: fe.Token, Label: fe.Label, Public: pub}, priv: priv}, nil
}

// checkName accepts 1 to MaxNameLen bytes of [A-Za-z0-9._-].
func checkName(name string) error {
	if name == "" || len(name) > MaxNameLen {
		return fmt.Errorf("soft: key name must be 1 to %d bytes", MaxNameLen)
	}
	for _, c := range name {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '.' || c == '_' || c == '-') {
			return fmt.Errorf("soft: key name %q has invalid character %q", name, c)
		}
	}
	return nil
}

// checkLabel accepts up to MaxLabelLen bytes of printable UTF-8.
func checkLabel(label string) error {
	if len(label) > MaxLabelLen {
		return fmt.Errorf("soft: label longer than %d bytes", MaxLabelLen)
	}
	if !printable.String(label) {
		return fmt.Errorf("soft: label %q is not printable UTF-8", label)
	}
	return nil
}

func (k *Keystore) find(match func(*entry) bool) *entry {
	for i := range k.keys {
		if match(&k.keys[i]) {
			return &k.keys[i]
		}
	}
	return nil
}

// Path returns the keystore's file name.
func (k *Keystore) Path() string { return k.path }

// Generate creates a new key named name (1 to MaxNameLen bytes of
// [A-Za-z0-9._-]) with a label (at most MaxLabelLen printable bytes). It
// fails with ErrExists if the name is taken. The key is not written to disk
// until Save.
func (k *Keystore) Generate(name, label string) (Key, error) {
	if err := checkName(name); err != nil {
		return Key{}, fmt.Errorf("soft: generate: %w", err)
	}
	if err := checkLabel(label); err != nil {
		return Key{}, fmt.Errorf("soft: generate: %w", err)
	}
	pub, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		return Key{}, fmt.Errorf("soft: generate: %w", err)
	}
	k.mu.Lock()
	defer k.mu.Unlock()
	if k.find(func(e *entry) bool { return e.Name == name }) != nil {
		return Key{}, fmt.Errorf("%w: %q", ErrExists, name)
	}
	if len(k.keys) >= MaxKeys {
		return Key{}, fmt.Errorf("soft: generate %q: keystore holds %d keys, the limit", name, MaxKeys)
	}
	e := entry{Key: Key{Name: name, Token: TokenID(pub), Label: label, Public: pub}, priv: priv}
	k.keys = append(k.keys, e)
	return e.Key.clone(), nil
}

func (key Key) clone() Key {
	key.Public = slices.Clone(key.Public)
	return key
}

// Save writes the keystore to its file atomically: a temporary file of mode
// 0600 in the same directory, fsynced, then renamed over the old file. A
// missing directory is created with mode 0700. Keys another process saved
// to the file since it was read are kept (merged first): two enrolments at
// once each keep their key: the read, merge and write hold an exclusive
// flock on "<file>.lock" (see lockFile).
func (k *Keystore) Save() error {
	unlock, err := k.lockFile()
	if err != nil {
		return fmt.Errorf("soft: save keystore: %w", err)
	}
	defer unlock()
	if err := k.merge(); err != nil {
		return fmt.Errorf("soft: save keystore: reading it first: %w", err)
	}
	k.mu.Lock()
	ff := fileFormat{Version: fileVersion, Keys: make([]fileEntry, 0, len(k.keys))}
	for _, e := range k.keys {
		ff.Keys = append(ff.Keys, fileEntry{Name: e.Name, Token: e.Token, Label: e.Label, Public: e.Public, Seed: e.priv.Seed()})
	}
	k.mu.Unlock()
	if err := atomicfile.WriteJSON(k.path, ff, 0o600); err != nil {
		return fmt.Errorf("soft: save keystore: %w", err)
	}
	return nil
}

// lockFile takes the exclusive flock that orders the saves of every
// process (and every Keystore) on k's file: a flock on "<file>.lock"
// beside it (mode 0600, created if missing, as is the directory, 0700),
// which only the keystore's owner may open. Not on the directory: anyone
// who may read it (one of mode 0755) could take that flock and hold every
// save for as long as they like. It returns the release.
func (k *Keystore) lockFile() (func(), error) {
	if err := os.MkdirAll(filepath.Dir(k.path), 0o700); err != nil {
		return nil, err
	}
	f, err := os.OpenFile(k.path+".lock", os.O_RDWR|os.O_CREATE|syscall.O_NOFOLLOW, 0o600)
	if err != nil {
		return nil, err
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX); err != nil {
		f.Close()
		return nil, fmt.Errorf("lock %s: %w", f.Name(), err)
	}
	return func() {
		_ = syscall.Flock(int(f.Fd()), syscall.LOCK_UN)
		f.Close()
	}, nil
}

// Get returns the key named name. A name this keystore does not hold is
// looked for again in its file, which another process may have written
// since it was opened (`hotdesk-term pair` while `hotdesk-term run` runs):
// keys found there are added. ErrNotFound if the file has none either.
func (k *Keystore) Get(name string) (Key, error) {
	if key, ok := k.get(name); ok {
		return key, nil
	}
	if err := k.merge(); err != nil {
		return Key{}, fmt.Errorf("%w: %q (reading %s again: %v)", ErrNotFound, name, k.path, err)
	}
	if key, ok := k.get(name); ok {
		return key, nil
	}
	return Key{}, fmt.Errorf("%w: %q", ErrNotFound, name)
}

func (k *Keystore) get(name string) (Key, bool) {
	k.mu.Lock()
	defer k.mu.Unlock()
	e := k.find(func(e *entry) bool { return e.Name == name })
	if e == nil {
		return Key{}, false
	}
	return e.Key.clone(), true
}

// merge reads the keystore's file again and adds the keys it does not hold
// yet (by name and token id), within MaxKeys; it keeps the keys it has.
func (k *Keystore) merge() error {
	disk, err := OpenKeystore(k.path)
	if err != nil {
		return err
	}
	k.mu.Lock()
	defer k.mu.Unlock()
	for _, e := range disk.keys {
		if len(k.keys) >= MaxKeys {
			break
		}
		if k.find(func(x *entry) bool { return x.Name == e.Name || x.Token == e.Token }) == nil {
			k.keys = append(k.keys, e)
		}
	}
	return nil
}

// List returns every key, in creation order.
func (k *Keystore) List() []Key {
	k.mu.Lock()
	defer k.mu.Unlock()
	out := make([]Key, 0, len(k.keys))
	for _, e := range k.keys {
		out = append(out, e.Key.clone())
	}
	return out
}

// Sign signs msg with the key of token id token; ErrNotFound if no key in
// the keystore has that token id.
func (k *Keystore) Sign(token string, msg []byte) ([]byte, error) {
	k.mu.Lock()
	e := k.find(func(e *entry) bool { return e.Token == token })
	var priv ed25519.PrivateKey
	if e != nil {
		priv = e.priv
	}
	k.mu.Unlock()
	if priv == nil {
		return nil, fmt.Errorf("%w: no key for token %q", ErrNotFound, token)
	}
	return ed25519.Sign(priv, msg), nil
}
