package registry

import (
	"bytes"
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"time"

	"go.etcd.io/etcd/api/v3/mvccpb"

	"github.com/hotdesk/hotdesk/internal/clock"
)

// FuzzDecodeRecords: a record another member of the group (or anyone with
// write access to etcd) stored under a token's, a server's, a session's or
// a pairing code's key, or as a lockout, a failure count or a terminal's
// presence, decodes to a record of that key or fails with
// ErrCorrupt (ErrNotFound for an expired code): never a panic. What
// decodes encodes and decodes again to the same record.
func FuzzDecodeRecords(f *testing.F) {
	add := func(id string, v any) {
		b, err := json.Marshal(v)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(id, b)
	}
	add("soft.abc", TokenRecord{ID: "soft.abc", Kind: "soft", PublicKey: make([]byte, 32), User: "alice", Label: "laptop", RegisteredUnixMs: 1})
	add("srv-1", ServerRecord{ID: "srv-1", Addr: "127.0.0.1:4500", Fingerprint: []byte{1, 2}, Capacity: 50, Settings: map[string]string{"a": "b"}})
	add("soft.abc", Session{ID: "s1", Key: "soft.abc", ServerID: "srv-1", User: "alice", State: "active"})
	add("ABCD", Pairing{ID: "ABCD", SecretHash: make([]byte, 32), SecretSalt: make([]byte, 16), SecretKDF: "argon2id;t=2;m=19456;p=1", ExpiresUnixMs: 2e12})
	add("", Lockout{Key: "token:soft.abc", UntilUnixMs: 2e12, SinceUnixMs: 1e12, Level: 3, Server: "srv-1", ClearedUnixMs: 5})
	add("", Failures{Key: "source:2001:db8::/64", Count: 4, FirstUnixMs: 1e12, Server: "srv-1"})
	add("", TerminalRecord{ID: "desk 5@10.0.0.7", Name: "Room 3", ServerID: "srv-1", Tokens: []string{"soft.abc"}, SeenUnixMs: 1})
	f.Add("x", []byte(`{"key":"","count":1}`))
	f.Add("x", []byte(`{"id":"y"}`))
	f.Add("x", []byte(`{"id":1}`))
	f.Add("x", []byte(`null`))
	f.Add("x", []byte(`{"settings":{"a":null},"fingerprint":"!!"}`))
	f.Add("x", []byte(`{"expires_unix_ms":1e400}`))
	s := &Store{opts: options{clock: clock.NewFake(time.UnixMilli(1_700_000_000_000))}}
	f.Fuzz(func(t *testing.T, id string, val []byte) {
		if validateKey(id) != nil {
			return // list and get read only valid keys
		}
		roundTrip := func(what string, rec any, again func([]byte) (any, error)) {
			t.Helper()
			b, err := json.Marshal(rec)
			if err != nil {
				t.Fatalf("%s: encode %+v: %v", what, rec, err)
			}
			rec2, err := again(b)
			if err != nil {
				t.Fatalf("%s: decode %s: %v", what, b, err)
			}
			b2, _ := json.Marshal(rec2)
			if !bytes.Equal(b, b2) {
				t.Fatalf("%s: %s decodes and encodes as %s", what, b, b2)
			}
		}
		corrupt := func(what string, err error, ok ...error) {
			t.Helper()
			if errors.Is(err, ErrCorrupt) {
				return
			}
			for _, e := range ok {
				if errors.Is(err, e) {
					return
				}
			}
			t.Fatalf("%s: error %v is not ErrCorrupt", what, err)
		}
		if tok, err := decodeToken(id, val); err != nil {
			corrupt("token", err)
		} else {
			if tok.ID != id {
				t.Fatalf("token %q under key %q", tok.ID, id)
			}
			roundTrip("token", tok, func(b []byte) (any, error) { return decodeToken(id, b) })
		}
		if srv, err := decodeServer(id, val); err != nil {
			corrupt("server", err)
		} else {
			if srv.ID != id {
				t.Fatalf("server %q under key %q", srv.ID, id)
			}
			roundTrip("server", srv, func(b []byte) (any, error) { return decodeServer(id, b) })
		}
		kv := &mvccpb.KeyValue{Key: []byte("/hotdesk/sessions/" + id), Value: val, CreateRevision: 7, ModRevision: 9}
		if c, err := decodeClaim(id, kv); err != nil {
			corrupt("session", err)
		} else {
			if c.Key != id || c.Session.Key != id || c.Fence != 7 || c.ModRev != 9 {
				t.Fatalf("claim %+v under key %q", c, id)
			}
			roundTrip("session", c.Session, func(b []byte) (any, error) {
				c, err := decodeClaim(id, &mvccpb.KeyValue{Value: b})
				return c.Session, err
			})
		}
		if lo, err := decodeLockout(val); err != nil {
			corrupt("lockout", err)
		} else {
			if lo.Key == "" || len(lo.Key) > maxLockoutKey {
				t.Fatalf("lockout of key %q", lo.Key)
			}
			roundTrip("lockout", lo, func(b []byte) (any, error) { return decodeLockout(b) })
		}
		if fc, err := decodeFailures(val); err != nil {
			corrupt("failure count", err)
		} else {
			if fc.Key == "" || len(fc.Key) > maxLockoutKey {
				t.Fatalf("failure count of key %q", fc.Key)
			}
			roundTrip("failure count", fc, func(b []byte) (any, error) { return decodeFailures(b) })
		}
		if tr, err := decodeTerminal(val); err != nil {
			corrupt("terminal", err)
		} else {
			if tr.ID == "" {
				t.Fatal("terminal record without an id")
			}
			roundTrip("terminal", tr, func(b []byte) (any, error) { return decodeTerminal(b) })
		}
		if p, err := s.decodePairing("pairing", id, val); err != nil {
			corrupt("pairing", err, ErrNotFound)
		} else {
			if p.ID != id {
				t.Fatalf("pairing %q under key %q", p.ID, id)
			}
			roundTrip("pairing", p, func(b []byte) (any, error) { return s.decodePairing("pairing", id, b) })
		}
	})
}

// FuzzTerminalKey: a terminal's id (its Hello's: any text a terminal
// chooses) names one key directly under its server's terminals, a valid
// key, and two ids never share one.
func FuzzTerminalKey(f *testing.F) {
	for _, p := range [][2]string{{"desk-5", "desk 5"}, {"room 4/desk 2", "room 4%2Fdesk 2"}, {"%abc", "abc"}, {".", ".."},
		{"ünïcode", "\xff"}, {strings.Repeat("k", MaxKeyLen), strings.Repeat("k", MaxKeyLen+1)}} {
		f.Add(p[0], p[1])
	}
	s := &Store{opts: options{prefix: "/hotdesk/"}}
	dir := "/hotdesk/terminals/srv-1/"
	f.Fuzz(func(t *testing.T, a, b string) {
		ka, kb := s.terminalKey("srv-1", a), s.terminalKey("srv-1", b)
		for _, k := range []string{ka, kb} {
			name, ok := strings.CutPrefix(k, dir)
			if !ok || validateKey(name) != nil {
				t.Fatalf("key %q is not one valid name under %q", k, dir)
			}
		}
		if a != b && ka == kb {
			t.Fatalf("ids %q and %q share key %q", a, b, ka)
		}
	})
}
