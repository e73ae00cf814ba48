package pairing

// DefaultKDF is SecretKDF of the codes a Pairer stores by default.
var DefaultKDF = currentKDF.String()

// WithCheapHash makes the Pairer store codes with the cheapest Argon2id
// parameters, for tests that try many codes (under the race detector a
// check at the real parameters takes about half a second).
func WithCheapHash() Option {
	return func(p *Pairer) { p.kdf = kdfParams{time: 1, memoryKiB: 8, threads: 1} }
}

// WithDefaultHash undoes WithCheapHash.
func WithDefaultHash() Option { return func(p *Pairer) { p.kdf = currentKDF } }
