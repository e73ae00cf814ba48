//go:build !race

package testutil

// raceEnabled reports whether the race detector is on.
const raceEnabled = false
