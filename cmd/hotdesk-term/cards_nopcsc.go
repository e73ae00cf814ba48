//go:build nopcsc

package main

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"syscall"

	"github.com/hashicorp/go-hclog"
)

// This build does not link PC/SC: a terminal with software tokens only
// never loads libpcsclite. With -pcsc it replaces itself (exec, same
// arguments, same pid) with pcscHelper, the same agent built with PC/SC,
// looked up next to this binary, then in ../libexec/hotdesk and
// ../lib/hotdesk relative to it (the Debian package ships it in
// /usr/libexec/hotdesk).

const pcscHelper = "hotdesk-term-pcsc"

func execPCSC(args []string) error {
	exe, err := os.Executable()
	if err != nil {
		return fmt.Errorf("pcsc: %w", err)
	}
	dir := filepath.Dir(exe)
	for _, p := range []string{
		filepath.Join(dir, pcscHelper),
		filepath.Join(dir, "..", "libexec", "hotdesk", pcscHelper),
		filepath.Join(dir, "..", "lib", "hotdesk", pcscHelper),
	} {
		if st, err := os.Stat(p); err == nil && !st.IsDir() {
			err := syscall.Exec(p, append([]string{p}, args...), os.Environ())
			return fmt.Errorf("pcsc: exec %s: %w", p, err)
		}
	}
	return fmt.Errorf("pcsc: this hotdesk-term is built without PC/SC and %s is not installed next to it", pcscHelper)
}

func newCards([]string, options, hclog.Logger) (Cards, error) {
	return nil, errors.New("pcsc: built without PC/SC support")
}
