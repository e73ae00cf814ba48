package pairing

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"errors"
	"fmt"
	"time"

	"golang.org/x/crypto/argon2"
)

// A code's secret is 40 bits: a fast hash of it (SHA-256) is undone in
// minutes by anyone who reads the registry (a backup, any etcd member),
// who could then enrol their own key as the code's user. The registry
// therefore holds Argon2id of the secret with a random salt per code, at
// parameters that cost tens of milliseconds and kdfMemoryKiB of memory
// per check (BenchmarkHashSecret): 2^40 of them are out of reach, and a
// precomputed table is useless against a fresh salt.
const (
	kdfName      = "argon2id"
	kdfTime      = 2
	kdfMemoryKiB = 19 * 1024
	kdfThreads   = 1
	kdfKeyLen    = 32
	saltLen      = 16
	// Bounds on the parameters a record may ask for: a record is read
	// from the registry, and a check must not cost whatever it says.
	maxKDFTime      = 16
	maxKDFMemoryKiB = 256 * 1024
	maxKDFThreads   = 4
)

// kdfParams are the parameters of one stored hash, as SecretKDF names
// them: "argon2id;t=2;m=19456;p=1".
type kdfParams struct {
	time, memoryKiB uint32
	threads         uint8
}

var currentKDF = kdfParams{time: kdfTime, memoryKiB: kdfMemoryKiB, threads: kdfThreads}

func (k kdfParams) String() string {
	return fmt.Sprintf("%s;t=%d;m=%d;p=%d", kdfName, k.time, k.memoryKiB, k.threads)
}

// errKDF: a stored hash names a function or parameters this version does
// not check (a corrupt record, or one of a later version).
var errKDF = errors.New("unsupported secret hash")

func parseKDF(s string) (kdfParams, error) {
	var t, m, p uint64
	if _, err := fmt.Sscanf(s, kdfName+";t=%d;m=%d;p=%d", &t, &m, &p); err != nil ||
		t < 1 || t > maxKDFTime || m < 8 || m > maxKDFMemoryKiB || p < 1 || p > maxKDFThreads {
		return kdfParams{}, fmt.Errorf("%w: %q", errKDF, s)
	}
	k := kdfParams{time: uint32(t), memoryKiB: uint32(m), threads: uint8(p)}
	if k.String() != s { // trailing or odd text
		return kdfParams{}, fmt.Errorf("%w: %q", errKDF, s)
	}
	return k, nil
}

func (k kdfParams) hash(secret string, salt []byte) []byte {
	return argon2.IDKey([]byte(secret), salt, k.time, k.memoryKiB, k.threads, kdfKeyLen)
}

// newHash returns a fresh salt and the hash of secret with it at k, and
// k as SecretKDF names it.
func (k kdfParams) newHash(secret string) (salt, sum []byte, kdf string, err error) {
	salt = make([]byte, saltLen)
	if _, err := rand.Read(salt); err != nil {
		return nil, nil, "", err
	}
	return salt, k.hash(secret, salt), k.String(), nil
}

// SlotWait bounds how long a secret check waits for a hash slot (on the
// Pairer's clock). Beyond it the attempt is refused with ErrBusy, unjudged:
// a flood of checks from many sources delays a pairing, and whatever a
// terminal sent after its Pair, by this much at most instead of for as
// long as the flood lasts.
const SlotWait = 5 * time.Second

// checkSecret reports whether secret matches the stored hash, in constant
// time. A record without kdf holds SHA-256 of the secret (written before
// salted hashes; such codes expire within their TTL after an upgrade and
// are accepted until then). The slow hash runs only with one of the
// Pairer's hash slots held (waiting for it until ctx ends or SlotWait
// passes: ErrBusy), so that what attackers make it hash in all is bounded
// whatever their number of sources. A kdf this version cannot check is
// errKDF.
func (p *Pairer) checkSecret(ctx context.Context, secret string, salt, sum []byte, kdf string) (bool, error) {
	if kdf == "" {
		h := sha256.Sum256([]byte(secret))
		return subtle.ConstantTimeCompare(h[:], sum) == 1, nil
	}
	k, err := parseKDF(kdf)
	if err != nil {
		return false, err
	}
	select {
	case p.hashSlots <- struct{}{}:
	default:
		expired := make(chan struct{})
		t := p.clk.AfterFunc(SlotWait, func() { close(expired) })
		defer t.Stop()
		select {
		case p.hashSlots <- struct{}{}:
		case <-expired:
			return false, fmt.Errorf("%w: every secret check slot stayed taken for %s", ErrBusy, SlotWait)
		case <-ctx.Done():
			return false, ctx.Err()
		}
	}
	defer func() { <-p.hashSlots }()
	return subtle.ConstantTimeCompare(k.hash(secret, salt), sum) == 1, nil
}

// dummySalt stands for the salt of a code that does not exist: checking
// a secret against it costs what a real check does, so that the time of
// an answer does not tell whether a code id is pending.
var dummySalt = make([]byte, saltLen)
