//go:build !nopcsc

package main

import (
	"github.com/hashicorp/go-hclog"

	"github.com/hotdesk/hotdesk/tokens/pcsc"
)

// This build links PC/SC (libpcsclite, through tokens/pcsc); -pcsc is
// served in this process. Build with -tags nopcsc for an agent without
// cgo that hands -pcsc to the hotdesk-term-pcsc helper instead
// (cards_nopcsc.go).

// execPCSC is a no-op here: this binary reads the readers itself.
func execPCSC([]string) error { return nil }

func newCards(readers []string, o options, logger hclog.Logger) (Cards, error) {
	return pcsc.New(pcsc.Config{Readers: readers, RemoveGrace: o.removeGrace, Logger: logger.Named("pcsc")})
}
