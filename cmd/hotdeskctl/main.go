// Command hotdeskctl is the administrator's CLI for hotdeskd. It talks to
// the daemon's admin API over a local unix socket; the daemon checks the
// caller's credentials (root, the daemon's user, or the admin group).
//
//	hotdeskctl [-socket PATH] sessions [--json]
//	hotdeskctl [-socket PATH] session kill ID
//	hotdeskctl [-socket PATH] token pair -user USER [-label L] [-ttl 10m] [--json]
//	hotdeskctl [-socket PATH] token list [--json]
//	hotdeskctl [-socket PATH] token register ID -user USER [-label L]
//	hotdeskctl [-socket PATH] token alias ID -of TOKEN [-label L]
//	hotdeskctl [-socket PATH] token disable|enable|delete ID
//	hotdeskctl [-socket PATH] server list [--json]
//	hotdeskctl [-socket PATH] server drain|undrain [ID]
//	hotdeskctl [-socket PATH] ready
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/hotdesk/hotdesk/cmd/internal/adminapi"
)

const defaultSocket = "/run/hotdesk/admin.sock"

func main() {
	if err := run(context.Background(), os.Args[1:], os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, "hotdeskctl:", err)
		var ue usageError
		if errors.As(err, &ue) {
			os.Exit(2)
		}
		os.Exit(1)
	}
}

type usageError string

func (u usageError) Error() string { return string(u) }

const usage = `usage:
  hotdeskctl [-socket PATH] sessions [-json]
  hotdeskctl [-socket PATH] session kill ID
  hotdeskctl [-socket PATH] token pair -user USER [-label LABEL] [-ttl 10m] [-json]
  hotdeskctl [-socket PATH] token list [-json]
  hotdeskctl [-socket PATH] token register ID -user USER [-label LABEL]   (uid.… and piv.… cards)
  hotdeskctl [-socket PATH] token alias ID -of TOKEN [-label LABEL]       (same user as TOKEN)
  hotdeskctl [-socket PATH] token disable|enable|delete ID
  hotdeskctl [-socket PATH] server list [-json]
  hotdeskctl [-socket PATH] server drain|undrain [ID]     (default: this server)
  hotdeskctl [-socket PATH] ready`

func run(ctx context.Context, args []string, out io.Writer) error {
	fs := flag.NewFlagSet("hotdeskctl", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	socket := fs.String("socket", envOr("HOTDESK_ADMIN_SOCKET", defaultSocket), "admin socket of hotdeskd")
	timeout := fs.Duration("timeout", 10*time.Second, "bound on the whole command")
	if err := fs.Parse(args); err != nil {
		return usageError(err.Error() + "\n" + usage)
	}
	rest := fs.Args()
	if len(rest) == 0 {
		return usageError(usage)
	}
	ctx, cancel := context.WithTimeout(ctx, *timeout)
	defer cancel()
	c := adminapi.NewClient(*socket)

	switch rest[0] {
	case "sessions":
		return sessions(ctx, c, rest[1:], out)
	case "session":
		if len(rest) != 3 || rest[1] != "kill" {
			return usageError(usage)
		}
		if err := c.KillSession(ctx, rest[2]); err != nil {
			return err
		}
		fmt.Fprintf(out, "session %s killed\n", rest[2])
		return nil
	case "token":
		if len(rest) < 2 {
			return usageError(usage)
		}
		if rest[1] == "pair" {
			return pair(ctx, c, rest[2:], out)
		}
		return token(ctx, c, rest[1], rest[2:], out)
	case "server":
		if len(rest) < 2 {
			return usageError(usage)
		}
		return server(ctx, c, rest[1], rest[2:], out)
	case "ready":
		if err := c.Ready(ctx); err != nil {
			return err
		}
		fmt.Fprintln(out, "ready")
		return nil
	}
	return usageError(fmt.Sprintf("unknown command %q\n%s", rest[0], usage))
}

func sessions(ctx context.Context, c *adminapi.Client, args []string, out io.Writer) error {
	fs := flag.NewFlagSet("sessions", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	asJSON := fs.Bool("json", false, "print JSON")
	if err := fs.Parse(args); err != nil {
		return usageError(err.Error())
	}
	ss, err := c.Sessions(ctx)
	if err != nil {
		return err
	}
	if *asJSON {
		if ss == nil {
			ss = []adminapi.SessionInfo{}
		}
		enc := json.NewEncoder(out)
		enc.SetIndent("", "  ")
		return enc.Encode(ss)
	}
	tw := tabwriter.NewWriter(out, 2, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "SESSION\tSTATE\tUSER\tTERMINAL\tSERVER\tPID\tCREATED\tEXPIRES")
	for _, s := range ss {
		exp := "-"
		if s.ExpiresAt != nil {
			exp = s.ExpiresAt.Local().Format(time.DateTime)
		}
		state := s.State
		if s.Orphaned {
			// Its token belongs to another session now: reachable only by
			// an administrator until killed or timed out.
			state += " (orphaned, token on " + dash(s.OrphanOwner) + ")"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%d\t%s\t%s\n", s.ID, state, dash(s.User), dash(s.Terminal),
			s.ServerID, s.PID, s.Created.Local().Format(time.DateTime), exp)
	}
	return tw.Flush()
}

func pair(ctx context.Context, c *adminapi.Client, args []string, out io.Writer) error {
	fs := flag.NewFlagSet("token pair", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	user := fs.String("user", "", "user the token will belong to (required)")
	label := fs.String("label", "", "label for the token (e.g. \"alice's laptop\")")
	ttl := fs.Duration("ttl", 0, "code lifetime (default: the daemon's pairing.code_ttl)")
	asJSON := fs.Bool("json", false, "print JSON")
	if err := fs.Parse(args); err != nil {
		return usageError(err.Error())
	}
	if strings.TrimSpace(*user) == "" {
		return usageError("token pair: -user is required")
	}
	resp, err := c.PairToken(ctx, adminapi.PairRequest{User: *user, Label: *label, TTLSeconds: int(ttl.Seconds())})
	if err != nil {
		return err
	}
	if *asJSON {
		return json.NewEncoder(out).Encode(resp)
	}
	fmt.Fprintf(out, "pairing code: %s (single use, expires %s)\n", resp.Code, resp.Expires.Local().Format(time.DateTime))
	fmt.Fprintf(out, "on the terminal: hotdesk-term -server ADDR -pin FINGERPRINT pair %s\n", resp.Code)
	return nil
}

func token(ctx context.Context, c *adminapi.Client, verb string, args []string, out io.Writer) error {
	switch verb {
	case "list":
		fs := flag.NewFlagSet("token list", flag.ContinueOnError)
		fs.SetOutput(io.Discard)
		asJSON := fs.Bool("json", false, "print JSON")
		if err := fs.Parse(args); err != nil {
			return usageError(err.Error())
		}
		ts, err := c.Tokens(ctx)
		if err != nil {
			return err
		}
		if *asJSON {
			if ts == nil {
				ts = []adminapi.TokenInfo{}
			}
			enc := json.NewEncoder(out)
			enc.SetIndent("", "  ")
			return enc.Encode(ts)
		}
		tw := tabwriter.NewWriter(out, 2, 4, 2, ' ', 0)
		fmt.Fprintln(tw, "TOKEN\tUSER\tLABEL\tSTATE\tREGISTERED BY\tREGISTERED")
		for _, t := range ts {
			state := "enabled"
			if t.Disabled {
				state = "disabled"
			}
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\n", t.ID, t.User, dash(t.Label), state, dash(t.RegisteredBy),
				t.Registered.Local().Format(time.DateTime))
		}
		return tw.Flush()
	case "register", "alias":
		if len(args) < 1 || strings.HasPrefix(args[0], "-") {
			return usageError(usage)
		}
		id := args[0]
		fs := flag.NewFlagSet("token "+verb, flag.ContinueOnError)
		fs.SetOutput(io.Discard)
		user := fs.String("user", "", "user the token belongs to")
		of := fs.String("of", "", "existing token whose user the new one gets")
		label := fs.String("label", "", "label")
		if err := fs.Parse(args[1:]); err != nil {
			return usageError(err.Error())
		}
		var ti adminapi.TokenInfo
		var err error
		if verb == "register" {
			if *user == "" {
				return usageError("token register: -user is required")
			}
			ti, err = c.RegisterToken(ctx, adminapi.RegisterRequest{ID: id, User: *user, Label: *label})
		} else {
			if *of == "" {
				return usageError("token alias: -of is required")
			}
			ti, err = c.AliasToken(ctx, id, adminapi.AliasRequest{Of: *of, Label: *label})
		}
		if err != nil {
			return err
		}
		fmt.Fprintf(out, "token %s registered to %s\n", ti.ID, ti.User)
		return nil
	case "disable", "enable", "delete":
		if len(args) != 1 {
			return usageError(usage)
		}
		var err error
		if verb == "delete" {
			err = c.DeleteToken(ctx, args[0])
		} else {
			err = c.SetTokenDisabled(ctx, args[0], verb == "disable")
		}
		if err != nil {
			return err
		}
		fmt.Fprintf(out, "token %s: %sd\n", args[0], strings.TrimSuffix(verb, "e"))
		return nil
	}
	return usageError(usage)
}

func server(ctx context.Context, c *adminapi.Client, verb string, args []string, out io.Writer) error {
	switch verb {
	case "list":
		fs := flag.NewFlagSet("server list", flag.ContinueOnError)
		fs.SetOutput(io.Discard)
		asJSON := fs.Bool("json", false, "print JSON")
		if err := fs.Parse(args); err != nil {
			return usageError(err.Error())
		}
		ss, err := c.Servers(ctx)
		if err != nil {
			return err
		}
		if *asJSON {
			if ss == nil {
				ss = []adminapi.ServerInfo{}
			}
			enc := json.NewEncoder(out)
			enc.SetIndent("", "  ")
			return enc.Encode(ss)
		}
		tw := tabwriter.NewWriter(out, 2, 4, 2, ' ', 0)
		fmt.Fprintln(tw, "SERVER\tADDRESS\tSESSIONS\tCAPACITY\tWEIGHT\tSTATE\tSTARTED")
		for _, s := range ss {
			state := "active"
			if s.Draining {
				state = fmt.Sprintf("draining (%d remaining)", s.Sessions)
			}
			id := s.ID
			if s.Self {
				id += " *"
			}
			capacity := "-"
			if s.Capacity > 0 {
				capacity = fmt.Sprint(s.Capacity)
			}
			fmt.Fprintf(tw, "%s\t%s\t%d\t%s\t%d\t%s\t%s\n", id, s.Addr, s.Sessions, capacity, s.Weight, state,
				s.Started.Local().Format(time.DateTime))
		}
		return tw.Flush()
	case "drain", "undrain":
		if len(args) > 1 {
			return usageError(usage)
		}
		id := "self"
		if len(args) == 1 {
			id = args[0]
		}
		if err := c.SetDraining(ctx, id, verb == "drain"); err != nil {
			return err
		}
		fmt.Fprintf(out, "server %s: %sed\n", id, verb)
		return nil
	}
	return usageError(usage)
}

func dash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

func envOr(k, def string) string {
	if v := os.Getenv(k); v != "" {
		return v
	}
	return def
}
