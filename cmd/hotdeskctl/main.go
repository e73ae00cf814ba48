// Command hotdeskctl is the administrator's CLI for a hotdesk server group.
// It talks to one hotdeskd's admin API over a local unix socket (the daemon
// checks the caller's credentials: root, the daemon's user, or the admin
// group); that daemon answers for the whole group, forwarding what another
// member must do to it.
//
//	hotdeskctl sessions [--user U] [--terminal T] [--server S] [--state ST] [--token K] [--json]
//	hotdeskctl session kill|disconnect|lock ID
//	hotdeskctl terminals [--json]
//	hotdeskctl readers [--json] [--tap]
//	hotdeskctl events [-f] [-n N] [--json]
//	hotdeskctl token pair --user USER [--label L] [--ttl 10m] [--json]
//	hotdeskctl token pair list [--json] | token pair revoke ID
//	hotdeskctl token list [--json]
//	hotdeskctl token register ID --user USER [--label L]
//	hotdeskctl token alias ID --of TOKEN [--label L]
//	hotdeskctl token disable|enable|delete ID
//	hotdeskctl server list [--json]
//	hotdeskctl server drain|undrain [ID]
//	hotdeskctl ready
//	hotdeskctl version
//
// Flags may be written with one dash or two (-socket, --socket). Exit
// status: 0 success, 1 failure, 2 usage error. A sessions listing that
// some members did not answer is a success with a warning on stderr.
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/signal"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/spf13/cobra"

	"github.com/hotdesk/hotdesk/cmd/internal/adminapi"
	"github.com/hotdesk/hotdesk/internal/version"
)

const defaultSocket = "/run/hotdesk/admin.sock"

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	if err != nil {
		fmt.Fprintln(os.Stderr, "hotdeskctl:", err)
		var ue usageError
		if errors.As(err, &ue) {
			os.Exit(2)
		}
		os.Exit(1)
	}
}

// usageError is a command line the CLI does not understand (exit 2).
type usageError struct{ msg string }

func (u usageError) Error() string { return u.msg }

func usagef(format string, args ...any) error { return usageError{fmt.Sprintf(format, args...)} }

// cli holds the global flags and the client built from them.
type cli struct {
	socket  string
	timeout time.Duration
	out     io.Writer
	client  *adminapi.Client
}

// run parses args and runs the command, writing to out and errOut.
func run(ctx context.Context, args []string, out, errOut io.Writer) error {
	c := &cli{out: out}
	root := newRoot(c)
	root.SetArgs(normalizeArgs(args))
	root.SetOut(out)
	root.SetErr(errOut)
	root.SetContext(ctx)
	initCompletion(root)
	initHelp(root)
	cmd, err := root.ExecuteC()
	if err != nil && isUsage(err) {
		return usageError{fmt.Sprintf("%v\nrun '%s --help' for usage", err, cmd.CommandPath())}
	}
	return err
}

// isUsage tells cobra's parse errors from the command's own.
func isUsage(err error) bool {
	var ue usageError
	if errors.As(err, &ue) {
		return true
	}
	msg := err.Error()
	for _, p := range []string{"unknown command", "unknown flag", "unknown shorthand flag", "flag needs an argument",
		"invalid argument", "accepts ", "requires at least", "requires at most", "required flag"} {
		if strings.Contains(msg, p) {
			return true
		}
	}
	return false
}

// normalizeArgs turns single-dash long flags (-socket, -json, the CLI's
// historical spelling) into double-dash ones; "-f" and "-n" stay shorthands.
// Nothing after "--" is touched.
func normalizeArgs(args []string) []string {
	out := make([]string, 0, len(args))
	for i, a := range args {
		if a == "--" {
			return append(out, args[i:]...)
		}
		if len(a) > 2 && a[0] == '-' && a[1] != '-' && isFlagName(strings.SplitN(a[1:], "=", 2)[0]) {
			a = "-" + a
		}
		out = append(out, a)
	}
	return out
}

func isFlagName(s string) bool {
	if len(s) < 2 {
		return false
	}
	for _, r := range s {
		if !(r >= 'a' && r <= 'z' || r == '-') {
			return false
		}
	}
	return true
}

func newRoot(c *cli) *cobra.Command {
	root := &cobra.Command{
		Use:   "hotdeskctl",
		Short: "Administer a hotdesk server group",
		Long: `hotdeskctl administers a hotdesk server group through one hotdeskd's admin
socket. The daemon answers for the whole group: sessions, terminals and
events of every member, and actions forwarded to the member that runs the
session.

Exit status: 0 on success, 1 on a failure (hotdeskd unreachable or refusing,
an unknown session), 2 on a usage error (an unknown command or flag, a bad
argument). A listing some members did not answer is a success (0) with a
warning on stderr naming them (see hotdeskctl sessions --help).`,
		Version:       version.String(),
		SilenceUsage:  true,
		SilenceErrors: true,
		Args:          cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return usagef("which command? (hotdeskctl --help lists them)")
		},
		PersistentPreRunE: func(cmd *cobra.Command, _ []string) error {
			c.connect(cmd)
			return nil
		},
	}
	root.SetVersionTemplate("hotdeskctl {{.Version}}\n")
	root.SetFlagErrorFunc(func(_ *cobra.Command, err error) error { return usageError{err.Error()} })
	// The flag's default is the built-in one, whatever the environment:
	// the help and the man pages show it. $HOTDESK_ADMIN_SOCKET applies
	// when the command runs (connect).
	root.PersistentFlags().StringVar(&c.socket, "socket", defaultSocket, "admin socket of hotdeskd (if not given: $"+socketEnv+" if set, else this default)")
	root.PersistentFlags().DurationVar(&c.timeout, "timeout", 30*time.Second, "bound on the whole command (not on events -f); a kill waits until the desktop is gone")
	root.AddCommand(
		sessionsCmd(c), sessionCmd(c), terminalsCmd(c), readersCmd(c), eventsCmd(c),
		tokenCmd(c), lockoutCmd(c), serverCmd(c), readyCmd(c), versionCmd(), gendocsCmd(root),
	)
	return root
}

// initCompletion adds cobra's completion command (once root's output is
// set: the scripts are written there), where an unknown shell (or none) is a
// usage error, not its help with status 0.
func initCompletion(root *cobra.Command) {
	root.InitDefaultCompletionCmd()
	for _, sub := range root.Commands() {
		if sub.Name() == "completion" {
			sub.RunE = func(cmd *cobra.Command, _ []string) error {
				return usagef("completion: which shell? one of %s", strings.Join(shells(cmd), ", "))
			}
			sub.Args = func(cmd *cobra.Command, args []string) error {
				if len(args) > 0 {
					return usagef("completion: unknown shell %q: one of %s", args[0], strings.Join(shells(cmd), ", "))
				}
				return nil
			}
		}
	}
}

// initHelp adds cobra's help command, where a command that does not exist
// (`help bogus`, `help session bogus`) is a usage error naming it; cobra's
// own showed the nearest existing command's help with status 0.
func initHelp(root *cobra.Command) {
	root.InitDefaultHelpCmd()
	for _, sub := range root.Commands() {
		if sub.Name() == "help" {
			sub.Args = func(cmd *cobra.Command, args []string) error {
				target, rest, err := cmd.Root().Find(args)
				unknown := err != nil
				for _, a := range rest {
					unknown = unknown || !strings.HasPrefix(a, "-")
				}
				if !unknown {
					return nil
				}
				path := root.Name()
				if target != nil {
					path = target.CommandPath()
				}
				return usagef("help: unknown command %q for %q (%s --help lists them)", strings.Join(args, " "), path, path)
			}
		}
	}
}

// shells lists the completion command's shells.
func shells(completion *cobra.Command) []string {
	var out []string
	for _, s := range completion.Commands() {
		out = append(out, s.Name())
	}
	return out
}

// socketEnv names the environment variable that replaces the default
// admin socket.
const socketEnv = "HOTDESK_ADMIN_SOCKET"

// connect settles the socket (-socket, else $HOTDESK_ADMIN_SOCKET, else the
// default) and makes the client for it.
func (c *cli) connect(cmd *cobra.Command) {
	if f := cmd.Flags().Lookup("socket"); f == nil || !f.Changed {
		if v := os.Getenv(socketEnv); v != "" {
			c.socket = v
		}
	}
	c.client = adminapi.NewClient(c.socket)
}

// bounded returns the command's context bounded by -timeout.
func (c *cli) bounded(cmd *cobra.Command) (context.Context, context.CancelFunc) {
	return context.WithTimeout(cmd.Context(), c.timeout)
}

// call runs f with the command's context bounded by --timeout and returns
// its error explained.
func (c *cli) call(cmd *cobra.Command, f func(ctx context.Context) error) error {
	ctx, cancel := c.bounded(cmd)
	defer cancel()
	return c.explain(f(ctx))
}

// explain turns an API error into one that says what to do.
func (c *cli) explain(err error) error {
	switch {
	case err == nil:
		return nil
	case adminapi.IsUnavailable(err) && errors.Is(err, fs.ErrPermission):
		return fmt.Errorf("cannot reach hotdeskd at %s: permission denied\nyou need to be root or in hotdeskd's admin group%s", c.socket, socketGroup(c.socket))
	case adminapi.IsUnavailable(err):
		return fmt.Errorf("cannot reach hotdeskd at %s: %w\nis hotdeskd running? try -socket or HOTDESK_ADMIN_SOCKET", c.socket, err)
	case errors.Is(err, adminapi.ErrForbidden):
		return fmt.Errorf("%w\nrun as root, as hotdeskd's user, or as a member of its admin_group", err)
	case errors.Is(err, context.DeadlineExceeded):
		return fmt.Errorf("%w\nhotdeskd did not answer within -timeout %s", err, c.timeout)
	}
	return err
}

func versionCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "version",
		Short: "Print hotdeskctl's version",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			fmt.Fprintf(cmd.OutOrStdout(), "hotdeskctl %s\n", version.String())
			return nil
		},
	}
}

func readyCmd(c *cli) *cobra.Command {
	return &cobra.Command{
		Use:   "ready",
		Short: "Exit 0 if hotdeskd is ready (holds its registry lease), 1 with the reason otherwise",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := c.call(cmd, c.client.Ready); err != nil {
				return err
			}
			fmt.Fprintln(c.out, "ready")
			return nil
		},
	}
}

// socketGroup names the group the admin socket (or its directory) is
// shared with, as " (NAME)", when it is not root's: hotdeskd gives both to
// its admin_group. "" when unknown.
func socketGroup(path string) string {
	for _, p := range []string{path, filepath.Dir(path)} {
		fi, err := os.Stat(p)
		if err != nil {
			continue
		}
		st, ok := fi.Sys().(*syscall.Stat_t)
		if !ok || st.Gid == 0 {
			continue
		}
		if g, err := user.LookupGroupId(strconv.Itoa(int(st.Gid))); err == nil {
			return " (" + g.Name + ")"
		}
		return fmt.Sprintf(" (gid %d)", st.Gid)
	}
	return ""
}

// dash prints s as safe does, or "-" when it is empty.
func dash(s string) string {
	if s == "" {
		return "-"
	}
	return safe(s)
}

// dashUnset formats n, or "-" when it is not set (not positive).
func dashUnset(n int) string {
	if n <= 0 {
		return "-"
	}
	return fmt.Sprint(n)
}
