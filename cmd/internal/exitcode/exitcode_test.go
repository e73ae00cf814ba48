package exitcode

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"strings"
	"testing"
)

func TestParse(t *testing.T) {
	newFS := func() *flag.FlagSet {
		fs := flag.NewFlagSet("cmd", flag.ContinueOnError)
		fs.SetOutput(io.Discard)
		fs.Bool("v", false, "")
		return fs
	}
	if err := Parse(newFS(), []string{"-v", "x"}); err != nil {
		t.Errorf("Parse(-v x) = %v; want nil", err)
	}
	if err := Parse(newFS(), []string{"-nope"}); !errors.Is(err, ErrUsage) || !strings.Contains(err.Error(), "nope") {
		t.Errorf("Parse(-nope) = %v; want a usage error naming the flag", err)
	}
	if err := Parse(newFS(), []string{"-h"}); !errors.Is(err, flag.ErrHelp) || errors.Is(err, ErrUsage) {
		t.Errorf("Parse(-h) = %v; want flag.ErrHelp, not a usage error", err)
	}
}

func TestReport(t *testing.T) {
	for _, tc := range []struct {
		err     error
		ok      []error
		code    int
		printed string
	}{
		{nil, nil, 0, ""},
		{context.Canceled, []error{context.Canceled}, 0, ""},
		{fmt.Errorf("run: %w", flag.ErrHelp), []error{context.Canceled, flag.ErrHelp}, 0, ""},
		{fmt.Errorf("%w: -x", ErrUsage), nil, 2, "cmd: usage error: -x\n"},
		{errors.New("boom"), []error{context.Canceled}, 1, "cmd: boom\n"},
	} {
		var out strings.Builder
		if code := report(&out, "cmd", tc.err, tc.ok); code != tc.code || out.String() != tc.printed {
			t.Errorf("report(%v) = %d, printed %q; want %d, %q", tc.err, code, out.String(), tc.code, tc.printed)
		}
	}
}
