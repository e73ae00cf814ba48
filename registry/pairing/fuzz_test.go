package pairing

import (
	"errors"
	"strings"
	"testing"
)

// FuzzParseCode: a pairing code as a person types it (or a hostile
// terminal sends it) normalises to 4 + 8 characters of the alphabet or
// fails with ErrInvalidCode; normalising is idempotent, and the formatted
// code reads back as the same id and secret.
func FuzzParseCode(f *testing.F) {
	for _, s := range []string{
		"ABCD-EFGH-JKMN", "abcd efgh jkmn", "0O1I-L234-5678", "ABCDEFGHJKMN", "ABCD-EFGH-JKM",
		"ABCD-EFGH-JKMNP", "ABCU-EFGH-JKMN", "----", "", "ÄBCD-EFGH-JKMN", strings.Repeat("-", 200),
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		id, secret, err := ParseCode(s)
		if err != nil {
			if !errors.Is(err, ErrInvalidCode) {
				t.Fatalf("error %v is not ErrInvalidCode", err)
			}
			if id != "" || secret != "" {
				t.Fatalf("id %q, secret %q with error %v", id, secret, err)
			}
			return
		}
		if len(id) != IDLen || len(secret) != SecretLen || strings.Trim(id+secret, alphabet) != "" {
			t.Fatalf("%q parsed as %q %q", s, id, secret)
		}
		formatted, err := FormatCode(s)
		if err != nil {
			t.Fatalf("FormatCode(%q): %v", s, err)
		}
		if formatted != id+"-"+secret[:4]+"-"+secret[4:] {
			t.Fatalf("%q formatted as %q", s, formatted)
		}
		id2, secret2, err := ParseCode(formatted)
		if err != nil || id2 != id || secret2 != secret {
			t.Fatalf("%q reads back as %q %q (%v); want %q %q", formatted, id2, secret2, err, id, secret)
		}
	})
}

// FuzzParseKDF: the hash parameters stored with a pairing code (a record
// another member, or anyone with write access to etcd, wrote) are accepted
// only in their canonical form and within the bounds that keep a check's
// cost bounded.
func FuzzParseKDF(f *testing.F) {
	f.Add(currentKDF.String())
	f.Add("argon2id;t=16;m=262144;p=4")
	f.Add("argon2id;t=17;m=8;p=1")
	f.Add("argon2id;t=1;m=8;p=1 ")
	f.Add("argon2id;t=+1;m=8;p=1")
	f.Add("argon2id;t=01;m=8;p=1")
	f.Add("argon2id;t=1;m=18446744073709551617;p=1")
	f.Add("scrypt;t=1;m=8;p=1")
	f.Add("")
	f.Fuzz(func(t *testing.T, s string) {
		k, err := parseKDF(s)
		if err != nil {
			if !errors.Is(err, errKDF) {
				t.Fatalf("error %v is not errKDF", err)
			}
			return
		}
		if k.String() != s {
			t.Fatalf("%q accepted as %v", s, k)
		}
		if k.time < 1 || k.time > maxKDFTime || k.memoryKiB < 8 || k.memoryKiB > maxKDFMemoryKiB || k.threads < 1 || k.threads > maxKDFThreads {
			t.Fatalf("%q accepted out of bounds: %+v", s, k)
		}
	})
}
