package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"slices"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/spf13/cobra"

	"github.com/hotdesk/hotdesk/cmd/internal/adminapi"
	"github.com/hotdesk/hotdesk/internal/event"
)

func printJSON(out io.Writer, v any) error {
	enc := json.NewEncoder(out)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

// listCmd makes cmd (its name and help set) a listing: it fetches the rows
// with list (a method expression such as (*adminapi.Client).Tokens: the
// client is made when the command runs) and prints them as a table, header
// and then each row's cells, or with --json as a JSON array ([] when there
// are none).
func listCmd[T any](c *cli, cmd *cobra.Command, list func(*adminapi.Client, context.Context) ([]T, error),
	header string, cells func(T) []string) *cobra.Command {
	var asJSON bool
	cmd.Args = cobra.NoArgs
	cmd.RunE = func(cmd *cobra.Command, _ []string) error {
		var rows []T
		err := c.call(cmd, func(ctx context.Context) (err error) {
			rows, err = list(c.client, ctx)
			return err
		})
		if err != nil {
			return err
		}
		if asJSON {
			if rows == nil {
				rows = []T{}
			}
			return printJSON(c.out, rows)
		}
		tw := tabwriter.NewWriter(c.out, 2, 4, 2, ' ', 0)
		fmt.Fprintln(tw, header)
		for _, r := range rows {
			fmt.Fprintln(tw, strings.Join(cells(r), "\t"))
		}
		return tw.Flush()
	}
	cmd.Flags().BoolVar(&asJSON, "json", false, "print JSON")
	return cmd
}

// ago formats how long ago t was, briefly ("45s", "12m", "3h05m", "2d4h").
func ago(now, t time.Time) string {
	if t.IsZero() {
		return "-"
	}
	d := max(now.Sub(t), 0)
	switch {
	case d < time.Minute:
		return fmt.Sprintf("%ds", int(d.Seconds()))
	case d < time.Hour:
		return fmt.Sprintf("%dm", int(d.Minutes()))
	case d < 24*time.Hour:
		return fmt.Sprintf("%dh%02dm", int(d.Hours()), int(d.Minutes())%60)
	}
	return fmt.Sprintf("%dd%dh", int(d.Hours())/24, int(d.Hours())%24)
}

func sessionsCmd(c *cli) *cobra.Command {
	var f adminapi.SessionFilter
	var listed adminapi.SessionList
	cmd := listCmd(c, &cobra.Command{
		Use:   "sessions",
		Short: "List the sessions of the whole group",
		Long: `List the sessions of every member of the group. Filters combine (all must
match); --terminal matches the terminal showing the session or, for a
suspended session, the one that showed it last; --state is creating, active,
suspended or orphaned. IDLE counts from the session's last attach or suspend.

A member that does not answer in time (stopped, overloaded, cut off) is named
in a warning on stderr, one line per member, also with --json (whose output
on stdout is unchanged). Its sessions are listed from the group registry,
rows marked partial (in --json: "partial": true), without their PID and
orphan details; if its lease expired meanwhile, the registry holds none and
the warning says that sessions it still runs are not listed. The exit status
is still 0: the listing is complete for every member that answered.`,
	}, func(cl *adminapi.Client, ctx context.Context) ([]adminapi.SessionInfo, error) {
		var err error
		listed, err = cl.ListSessions(ctx, f)
		return listed.Sessions, err
	},
		"SESSION\tSTATE\tUSER\tTOKEN\tTERMINAL\tSERVER\tIDLE\tPID\tCREATED\tEXPIRES\tORPHANED",
		func(s adminapi.SessionInfo) []string {
			exp := "-"
			if s.ExpiresAt != nil {
				exp = s.ExpiresAt.Local().Format(time.DateTime)
			}
			term := dash(s.Terminal)
			if s.Terminal == "" && s.LastTerminal != "" {
				term = "(" + safe(s.LastTerminal) + ")"
			}
			idle := "-"
			if s.IdleSince != nil {
				idle = ago(time.Now(), *s.IdleSince)
			}
			orphan := "-"
			if s.Orphaned {
				orphan = "owner " + dash(s.OrphanOwner)
			}
			state := s.State
			if s.Partial {
				state += " (partial)"
			}
			return []string{safe(s.ID), state, dash(s.User), dash(s.Token), term,
				safe(s.ServerID), idle, dashUnset(s.PID), s.Created.Local().Format(time.DateTime), exp, orphan}
		})
	fl := cmd.Flags()
	fl.StringVar(&f.User, "user", "", "only sessions of this user")
	fl.StringVar(&f.Terminal, "terminal", "", "only sessions shown (or last shown) at this terminal")
	fl.StringVar(&f.Server, "server", "", "only sessions running on this server")
	fl.StringVar(&f.State, "state", "", "only sessions in this state ("+strings.Join(adminapi.SessionStates, ", ")+")")
	fl.StringVar(&f.Token, "token", "", "only the session of this token")
	_ = cmd.RegisterFlagCompletionFunc("state", func(*cobra.Command, []string, string) ([]string, cobra.ShellCompDirective) {
		return adminapi.SessionStates, cobra.ShellCompDirectiveNoFileComp
	})
	cmd.PreRunE = func(*cobra.Command, []string) error {
		if f.State != "" && !slices.Contains(adminapi.SessionStates, f.State) {
			return usagef("sessions: unknown --state %q: one of %s", f.State, strings.Join(adminapi.SessionStates, ", "))
		}
		return nil
	}
	list := cmd.RunE
	cmd.RunE = func(cmd *cobra.Command, args []string) error {
		err := list(cmd, args)
		// After the table: the last thing the administrator sees.
		for _, w := range listed.Warnings(f != adminapi.SessionFilter{}) {
			fmt.Fprintf(cmd.ErrOrStderr(), "warning: %s\n", w)
		}
		return err
	}
	return cmd
}

// groupCmd is a command that only groups its subcommands: run alone, it is a
// usage error asking which one (which lists them).
func groupCmd(use, short, which string, subs ...*cobra.Command) *cobra.Command {
	cmd := &cobra.Command{
		Use:   use,
		Short: short,
		Args:  cobra.NoArgs,
		RunE: func(*cobra.Command, []string) error {
			return usagef("%s: which action? %s", use, which)
		},
	}
	cmd.AddCommand(subs...)
	return cmd
}

func sessionCmd(c *cli) *cobra.Command {
	const what = "a session id (see hotdeskctl sessions)"
	return groupCmd("session", "Act on one session, wherever in the group it runs", "kill, disconnect or lock",
		actionCmd(c, "kill ID", "End the session: its desktop is stopped and its terminal told",
			what, (*adminapi.Client).KillSession, "session %s killed"),
		actionCmd(c, "disconnect ID", "Suspend the session: its terminal is detached, the desktop keeps running",
			what, (*adminapi.Client).DisconnectSession, "session %s disconnected"),
		actionCmd(c, "lock ID", "Lock the session: suspended, its user must present a token (and log in) again",
			what, (*adminapi.Client).LockSession, "session %s locked"),
	)
}

// actionCmd is a command acting on the one object its argument names (what
// describes the argument for a usage error): do acts through the client
// and, once it has succeeded, done is printed with the argument.
func actionCmd(c *cli, use, short, what string, do func(cl *adminapi.Client, ctx context.Context, id string) error, done string) *cobra.Command {
	return &cobra.Command{
		Use:   use,
		Short: short,
		Args:  exactArgs(1, what),
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := c.call(cmd, func(ctx context.Context) error { return do(c.client, ctx, args[0]) }); err != nil {
				return err
			}
			fmt.Fprintf(c.out, done+"\n", args[0])
			return nil
		},
	}
}

// exactArgs is cobra.ExactArgs with a usage error naming what is expected;
// an empty (or blank) argument is one too.
func exactArgs(n int, what string) cobra.PositionalArgs {
	return func(cmd *cobra.Command, args []string) error {
		if len(args) != n {
			return usagef("%s: expects %s", cmd.CommandPath(), what)
		}
		for _, a := range args {
			if strings.TrimSpace(a) == "" {
				return usagef("%s: expects %s, not an empty argument", cmd.CommandPath(), what)
			}
		}
		return nil
	}
}

func terminalsCmd(c *cli) *cobra.Command {
	return listCmd(c, &cobra.Command{
		Use:   "terminals",
		Short: "List the terminals connected to any broker of the group",
		Long: `List the terminals connected to any broker of the group. A terminal is listed
as soon as its broker has it; it leaves the list when its connection ends, or
at the latest when its broker's read timeout (3 ping intervals of a sixth of
etcd.lease_ttl each: 2.5 s with the default 5 s lease) drops a silent one, or
when a dead broker's lease expires.`,
	}, (*adminapi.Client).Terminals,
		"TERMINAL\tNAME\tADDRESS\tSERVER\tTOKENS\tSESSION\tUSER\tCONNECTED\tLAST SEEN",
		func(t adminapi.TerminalInfo) []string {
			toks := "-"
			if len(t.Tokens) > 0 {
				toks = safe(t.Tokens[0])
				for _, tok := range t.Tokens[1:] {
					toks += "," + safe(tok)
				}
			}
			return []string{safe(t.ID), dash(t.Name), dash(t.Addr), safe(t.ServerID), toks, dash(t.Session),
				dash(t.User), t.Connected.Local().Format(time.DateTime), ago(time.Now(), t.LastSeen) + " ago"}
		})
}

// reader is one token present in a terminal's reader.
type reader struct {
	Terminal string `json:"terminal"`
	Server   string `json:"server_id"`
	Token    string `json:"token"`
	Session  string `json:"session,omitempty"`
}

// readers lists the tokens present in the group's terminals.
func readers(cl *adminapi.Client, ctx context.Context) ([]reader, error) {
	ts, err := cl.Terminals(ctx)
	if err != nil {
		return nil, err
	}
	var rs []reader
	for _, t := range ts {
		for _, tok := range t.Tokens {
			r := reader{Terminal: t.ID, Server: t.ServerID, Token: tok}
			if len(t.Tokens) == 1 {
				r.Session = t.Session
			}
			rs = append(rs, r)
		}
	}
	return rs, nil
}

func readersCmd(c *cli) *cobra.Command {
	cmd := listCmd(c, &cobra.Command{
		Use:   "readers",
		Short: "List the tokens present in the group's readers, or read one card's id (--tap)",
		Long: `List every token present in a reader of a connected terminal now, with its
terminal and server. With --tap, wait for the next card or token presented at
any terminal of the group and print its id (for "hotdeskctl token register").`,
	}, readers, "TERMINAL\tSERVER\tTOKEN\tSESSION",
		func(r reader) []string {
			return []string{safe(r.Terminal), safe(r.Server), safe(r.Token), dash(r.Session)}
		})
	var tap bool
	list := cmd.RunE
	cmd.RunE = func(cmd *cobra.Command, args []string) error {
		if tap {
			return c.tap(cmd)
		}
		return list(cmd, args)
	}
	cmd.Flags().BoolVar(&tap, "tap", false, "wait for the next token presented anywhere and print its id (bounded by -timeout)")
	return cmd
}

// tap waits for the next token event of the group and prints its id.
func (c *cli) tap(cmd *cobra.Command) error {
	ctx, cancel := c.bounded(cmd)
	defer cancel()
	// The daemon answers first: running out of time afterwards means no
	// card came, not that hotdeskd is silent.
	if err := c.client.Live(ctx); err != nil {
		return c.explain(err)
	}
	fmt.Fprintln(cmd.ErrOrStderr(), "present a card or token at any terminal...")
	var got string
	errDone := fmt.Errorf("done")
	err := c.client.Events(ctx, 0, true, func(e event.Event) error {
		if (e.Kind == event.TokenInserted || e.Kind == event.TokenRefused) && e.Token != "" {
			got = e.Token
			fmt.Fprintf(c.out, "%s\t(at terminal %s, server %s)\n", safe(e.Token), safe(e.Terminal), safe(e.Server))
			return errDone
		}
		return nil
	})
	if got != "" {
		return nil
	}
	if err == nil && errors.Is(ctx.Err(), context.DeadlineExceeded) && cmd.Context().Err() == nil {
		return fmt.Errorf("no card or token was presented within %s (-timeout)", c.timeout)
	}
	if err == nil {
		err = ctx.Err()
	}
	return c.explain(err)
}

func eventsCmd(c *cli) *cobra.Command {
	var follow, asJSON bool
	var n int
	cmd := &cobra.Command{
		Use:   "events",
		Short: "Show the group's events (token inserted/removed, attached, suspended, takeover, redirect, logins, servers)",
		Long: `Show the recent events of the whole group (the last -n, kept about 5-10
minutes), and with -f every new one as it happens, until interrupted. Every
line names the session, user, terminal and server it is about.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			ctx := cmd.Context()
			if !follow {
				var cancel func()
				ctx, cancel = c.bounded(cmd)
				defer cancel()
			}
			enc := json.NewEncoder(c.out)
			err := c.client.Events(ctx, n, follow, func(e event.Event) error {
				if asJSON {
					return enc.Encode(e)
				}
				_, err := fmt.Fprintln(c.out, formatEvent(e))
				return err
			})
			if err != nil && cmd.Context().Err() == nil {
				return c.explain(err)
			}
			return nil
		},
	}
	cmd.Flags().BoolVarP(&follow, "follow", "f", false, "keep printing new events as they happen")
	cmd.Flags().IntVarP(&n, "lines", "n", 20, "how many recent events to print first (at most 1000)")
	cmd.Flags().BoolVar(&asJSON, "json", false, "print one JSON object per event")
	return cmd
}

// formatEvent is one human line: time, kind, then the fields that are set.
func formatEvent(e event.Event) string {
	var b strings.Builder
	fmt.Fprintf(&b, "%s  %-20s server=%s", e.Time.Local().Format("2006-01-02 15:04:05.000"), e.Kind, dash(e.Server))
	for _, kv := range [][2]string{{"session", e.Session}, {"user", e.User}, {"terminal", e.Terminal},
		{"token", e.Token}, {"target", e.Target}, {"reason", e.Reason}} {
		if kv[1] != "" {
			fmt.Fprintf(&b, " %s=%s", kv[0], safe(kv[1]))
		}
	}
	if e.Hops > 0 {
		fmt.Fprintf(&b, " hops=%d", e.Hops)
	}
	return b.String()
}

// safe is how hotdeskctl prints every value that may come from a peer (a
// terminal's id, name, address or tokens, a user name, a label, a lockout
// key): as it is when plain, else quoted with strconv.Quote, so that
// control characters and escape sequences reach the admin's screen as
// text and a value never passes for another field, column or line. Plain
// is printable UTF-8 without spaces, quotes or backslashes.
func safe(s string) string {
	for _, r := range s {
		if r == ' ' || r == '"' || r == '\\' || r == utf8.RuneError || !unicode.IsPrint(r) {
			return strconv.Quote(s)
		}
	}
	return s
}

func tokenCmd(c *cli) *cobra.Command {
	const what = "a token id (see hotdeskctl token list)"
	setDisabled := func(disabled bool) func(*adminapi.Client, context.Context, string) error {
		return func(cl *adminapi.Client, ctx context.Context, id string) error {
			return cl.SetTokenDisabled(ctx, id, disabled)
		}
	}
	return groupCmd("token", "Manage tokens: pairing codes, cards, aliases",
		"pair, list, register, alias, disable, enable or delete",
		pairCmd(c), tokenListCmd(c), registerCmd(c, "register"), registerCmd(c, "alias"),
		actionCmd(c, "disable ID", "Disable a token (its session is locked wherever it runs)",
			what, setDisabled(true), "token %s: disabled"),
		actionCmd(c, "enable ID", "Enable a disabled token", what, setDisabled(false), "token %s: enabled"),
		actionCmd(c, "delete ID", "Delete a token from the registry (its session is locked wherever it runs)",
			what, (*adminapi.Client).DeleteToken, "token %s: deleted"),
	)
}

func pairCmd(c *cli) *cobra.Command {
	var user, label string
	var ttl time.Duration
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "pair --user USER",
		Short: "Create a one-time pairing code that enrolls a software token or phone for USER",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if strings.TrimSpace(user) == "" {
				return usagef("token pair: --user is required")
			}
			if ttl < 0 || ttl > 0 && ttl < time.Second || ttl%time.Second != 0 {
				return usagef("token pair: --ttl %s: a whole number of seconds, at least 1s", ttl)
			}
			var resp adminapi.PairResponse
			err := c.call(cmd, func(ctx context.Context) (err error) {
				resp, err = c.client.PairToken(ctx, adminapi.PairRequest{User: user, Label: label, TTLSeconds: int(ttl.Seconds())})
				return err
			})
			if err != nil {
				return err
			}
			for _, w := range resp.Warnings {
				fmt.Fprintf(cmd.ErrOrStderr(), "warning: %s\n", w)
			}
			if asJSON {
				return json.NewEncoder(c.out).Encode(resp)
			}
			fmt.Fprintf(c.out, "pairing code: %s (single use, expires %s)\n", resp.Code, resp.Expires.Local().Format(time.DateTime))
			fmt.Fprintf(c.out, "a software token: hotdesk-term -server ADDR -pin FINGERPRINT pair %s\n", resp.Code)
			fmt.Fprintf(c.out, "a phone: F2 on the terminal's greeter, or hotdesk-term -server ADDR -pin FINGERPRINT -pcsc pair %s\n", resp.Code)
			return nil
		},
	}
	cmd.Flags().StringVar(&user, "user", "", "user the token will belong to (required)")
	cmd.Flags().StringVar(&label, "label", "", "label for the token (e.g. \"alice's laptop\")")
	cmd.Flags().DurationVar(&ttl, "ttl", 0, "code lifetime, at most the daemon's pairing.code_ttl (default: that)")
	cmd.Flags().BoolVar(&asJSON, "json", false, "print JSON")

	list := listCmd(c, &cobra.Command{
		Use:   "list",
		Short: "List pending pairing codes (their ids; the secret part is never shown again)",
	}, (*adminapi.Client).Pairings, "CODE\tUSER\tLABEL\tCREATED BY\tEXPIRES",
		func(p adminapi.PairingInfo) []string {
			return []string{safe(p.ID) + "-…", safe(p.User), dash(p.Label), dash(p.CreatedBy), p.Expires.Local().Format(time.DateTime)}
		})
	revoke := &cobra.Command{
		Use:   "revoke CODE",
		Short: "Revoke a pending pairing code (its first group, or the whole code)",
		Args:  exactArgs(1, "a pairing code or its first group (see token pair list)"),
		RunE: func(cmd *cobra.Command, args []string) error {
			id := strings.ToUpper(strings.SplitN(args[0], "-", 2)[0])
			if err := c.call(cmd, func(ctx context.Context) error { return c.client.RevokePairing(ctx, id) }); err != nil {
				return err
			}
			fmt.Fprintf(c.out, "pairing code %s-…: revoked\n", id)
			return nil
		},
	}
	cmd.AddCommand(list, revoke)
	return cmd
}

func tokenListCmd(c *cli) *cobra.Command {
	return listCmd(c, &cobra.Command{Use: "list", Short: "List the token registry"}, (*adminapi.Client).Tokens,
		"TOKEN\tUSER\tLABEL\tSTATE\tREGISTERED BY\tREGISTERED",
		func(t adminapi.TokenInfo) []string {
			state := "enabled"
			if t.Disabled {
				state = "disabled"
			}
			return []string{safe(t.ID), safe(t.User), dash(t.Label), state, dash(t.RegisteredBy), t.Registered.Local().Format(time.DateTime)}
		})
}

func registerCmd(c *cli, verb string) *cobra.Command {
	var user, of, label string
	cmd := &cobra.Command{
		Args: exactArgs(1, "a token id such as uid.04a1b2c3 or piv.<guid>"),
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx, cancel := c.bounded(cmd)
			defer cancel()
			var ti adminapi.TokenInfo
			var err error
			if verb == "register" {
				if user == "" {
					return usagef("token register: --user is required")
				}
				ti, err = c.client.RegisterToken(ctx, adminapi.RegisterRequest{ID: args[0], User: user, Label: label})
			} else {
				if of == "" {
					return usagef("token alias: --of is required")
				}
				ti, err = c.client.AliasToken(ctx, args[0], adminapi.AliasRequest{Of: of, Label: label})
			}
			if err != nil {
				return c.explain(err)
			}
			fmt.Fprintf(c.out, "token %s registered to %s\n", safe(ti.ID), safe(ti.User))
			return nil
		},
	}
	if verb == "register" {
		cmd.Use = "register ID --user USER"
		cmd.Short = "Register a card read by UID or PIV CHUID (uid.…, piv.…) to a user"
		cmd.Flags().StringVar(&user, "user", "", "user the token belongs to (required)")
	} else {
		cmd.Use = "alias ID --of TOKEN"
		cmd.Short = "Register a card to the same user as an existing token"
		cmd.Flags().StringVar(&of, "of", "", "existing token whose user the new one gets (required)")
	}
	cmd.Flags().StringVar(&label, "label", "", "label")
	return cmd
}

// settingsCell says which group-wide settings a member runs with other
// values than the server answering ("-": none that it knows of).
func settingsCell(si adminapi.ServerInfo) string {
	var cells []string
	if clk := si.ClockOutOfStep(); clk != "" {
		cells = append(cells, "clock "+clk)
	}
	if len(si.SettingsDiffer) > 0 {
		s := make([]string, len(si.SettingsDiffer))
		for i, d := range si.SettingsDiffer {
			s[i] = fmt.Sprintf("%s = %s (here: %s)", safe(d.Key), quoteEmpty(d.Theirs), quoteEmpty(d.Ours))
		}
		cells = append(cells, "differ: "+strings.Join(s, ", "))
	}
	if len(cells) == 0 {
		return "-"
	}
	return strings.Join(cells, "; ")
}

// quoteEmpty is safe, with "" for an empty value.
func quoteEmpty(s string) string {
	if s == "" {
		return `""`
	}
	return safe(s)
}

func serverCmd(c *cli) *cobra.Command {
	list := listCmd(c, &cobra.Command{Use: "list", Short: "List the members of the group"}, (*adminapi.Client).Servers,
		"SERVER\tADDRESS\tSESSIONS\tCAPACITY\tWEIGHT\tSTATE\tVERSION\tSTARTED\tSETTINGS",
		func(s adminapi.ServerInfo) []string {
			state := "active"
			if s.Draining {
				state = fmt.Sprintf("draining (%d remaining)", s.Sessions)
			}
			id := safe(s.ID)
			if s.Self {
				id += " *"
			}
			return []string{id, safe(s.Addr), fmt.Sprint(s.Sessions), dashUnset(s.Capacity), fmt.Sprint(s.Weight), state,
				dash(s.Version), s.Started.Local().Format(time.DateTime), settingsCell(s)}
		})
	cmd := groupCmd("server", "List, drain and undrain the group's servers", "list, drain or undrain", list)
	for _, verb := range []string{"drain", "undrain"} {
		short := "Drain a server (default: this one): no new sessions there, existing ones stay"
		if verb == "undrain" {
			short = "Undrain a server (default: this one): it takes new sessions again"
		}
		cmd.AddCommand(&cobra.Command{
			Use:   verb + " [ID]",
			Short: short,
			Args: func(cmd *cobra.Command, args []string) error {
				if len(args) > 1 {
					return usagef("%s: expects at most one server id", cmd.CommandPath())
				}
				return nil
			},
			ValidArgsFunction: func(cmd *cobra.Command, _ []string, _ string) ([]string, cobra.ShellCompDirective) {
				return c.serverIDs(cmd), cobra.ShellCompDirectiveNoFileComp
			},
			RunE: func(cmd *cobra.Command, args []string) error {
				id := "self"
				if len(args) == 1 {
					id = args[0]
				}
				if err := c.call(cmd, func(ctx context.Context) error { return c.client.SetDraining(ctx, id, verb == "drain") }); err != nil {
					return err
				}
				if id == "self" {
					id = c.selfID(cmd)
				}
				fmt.Fprintf(c.out, "server %s: %sed\n", id, verb)
				return nil
			},
		})
	}
	return cmd
}

// selfID returns the id of the server hotdeskctl talks to, or "self" if it
// cannot be listed.
func (c *cli) selfID(cmd *cobra.Command) string {
	ctx, cancel := c.bounded(cmd)
	defer cancel()
	ss, err := c.client.Servers(ctx)
	if err == nil {
		for _, s := range ss {
			if s.Self {
				return s.ID
			}
		}
	}
	return "self"
}

// serverIDs completes server ids from the daemon (none if unreachable).
func (c *cli) serverIDs(cmd *cobra.Command) []string {
	if c.client == nil {
		c.connect(cmd)
	}
	ctx, cancel := c.bounded(cmd)
	defer cancel()
	ss, err := c.client.Servers(ctx)
	if err != nil {
		return nil
	}
	ids := make([]string, 0, len(ss))
	for _, s := range ss {
		ids = append(ids, s.ID)
	}
	return ids
}

func lockoutCmd(c *cli) *cobra.Command {
	list := listCmd(c, &cobra.Command{
		Use:   "list",
		Short: "List the login lockouts in force in the group (after too many failed logins)",
	}, (*adminapi.Client).Lockouts, "KEY\tUNTIL\tLEFT\tLOCKOUTS\tSTARTED AT",
		func(l adminapi.LockoutInfo) []string {
			return []string{safe(l.Key), l.Until.Local().Format(time.DateTime), time.Until(l.Until).Round(time.Second).String(),
				fmt.Sprint(l.Level), safe(l.Server)}
		})
	clearCmd := actionCmd(c, "clear KEY", "End a lockout, and the group's count of the key's failures, at every broker (the key as listed: user:NAME, token:ID or terminal:ID@ADDRESS)",
		"a lockout's key (see hotdeskctl lockout list)", (*adminapi.Client).ClearLockout, "lockout of %s: cleared")
	failures := listCmd(c, &cobra.Command{
		Use:   "failures",
		Short: "List the group's counts of failed logins (max_failures of a key within failure_window lock it out)",
	}, (*adminapi.Client).Failures, "KEY\tFAILURES\tSINCE\tLAST AT",
		func(f adminapi.FailureInfo) []string {
			return []string{safe(f.Key), fmt.Sprint(f.Count), f.Since.Local().Format(time.DateTime), safe(f.Server)}
		})
	return groupCmd("lockout", "List and clear login lockouts and failure counts (group-wide)", "list, failures or clear", list, failures, clearCmd)
}
