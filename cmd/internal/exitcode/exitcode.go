// Package exitcode is the exit status convention of hotdesk's commands: 0
// success, 1 failure, 2 a usage error (a bad flag or argument), and the
// flag parsing that marks usage errors as such.
package exitcode

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
)

// ErrUsage marks a command-line error (exit status 2).
var ErrUsage = errors.New("usage error")

// Parse parses args with fs (made with flag.ContinueOnError): a bad flag
// is an error wrapping ErrUsage; -h and -help return flag.ErrHelp, after fs
// has printed its usage.
func Parse(fs *flag.FlagSet, args []string) error {
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return err
		}
		return fmt.Errorf("%w: %v", ErrUsage, err)
	}
	return nil
}

// Exit ends the process for err, what the command named name returned: it
// returns when err is nil or matches one of ok (a clean end, status 0);
// otherwise it prints "name: err" to stderr and exits with status 2 for a
// usage error, 1 for any other.
func Exit(name string, err error, ok ...error) {
	if code := report(os.Stderr, name, err, ok); code != 0 {
		os.Exit(code)
	}
}

func report(w io.Writer, name string, err error, ok []error) int {
	if err == nil {
		return 0
	}
	for _, o := range ok {
		if errors.Is(err, o) {
			return 0
		}
	}
	fmt.Fprintf(w, "%s: %v\n", name, err)
	if errors.Is(err, ErrUsage) {
		return 2
	}
	return 1
}
