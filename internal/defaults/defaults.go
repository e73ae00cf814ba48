// Package defaults fills in unset configuration values. Across hotdesk a
// numeric setting (a duration, a count, a size) that is zero or negative
// means "not set": the component's default applies. Set is that rule, in
// one place, so that a constructor's defaults read as a list.
package defaults

// Number is what Set fills: integers, floats and types made of them
// (time.Duration).
type Number interface {
	~int | ~int8 | ~int16 | ~int32 | ~int64 | ~uint8 | ~float32 | ~float64
}

// Set sets *p to def when *p is zero or negative.
func Set[T Number](p *T, def T) {
	if *p <= 0 {
		*p = def
	}
}
