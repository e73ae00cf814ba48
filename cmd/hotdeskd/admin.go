package main

import (
	"context"
	"errors"
	"fmt"
	"os/user"
	"regexp"
	"strconv"
	"time"

	"github.com/hotdesk/hotdesk/cmd/internal/adminapi"
	"github.com/hotdesk/hotdesk/internal/event"
	"github.com/hotdesk/hotdesk/proto"
	"github.com/hotdesk/hotdesk/registry"
	"github.com/hotdesk/hotdesk/tokens"
)

// adminBackend serves the admin API from the running subsystems.
type adminBackend struct{ d *daemon }

var _ adminapi.Backend = (*adminBackend)(nil)

func (a *adminBackend) PairToken(ctx context.Context, createdBy string, req adminapi.PairRequest) (adminapi.PairResponse, error) {
	ttl := a.d.cfg.Pairing.CodeTTL
	if req.TTLSeconds > 0 {
		if want := time.Duration(req.TTLSeconds) * time.Second; want <= ttl {
			ttl = want
		} else {
			return adminapi.PairResponse{}, fmt.Errorf("%w: ttl %s is over the longest a pairing code may live, %s (pairing.code_ttl)", adminapi.ErrInvalid, want, ttl)
		}
	}
	if req.User == "" {
		return adminapi.PairResponse{}, fmt.Errorf("%w: a user is required", adminapi.ErrInvalid)
	}
	// A software token may belong to a user without a local account (its
	// desktops run as a pooled kiosk account; the demo, the chaos harness
	// and kiosk installs pair such users), unlike a card (checkUser): say
	// so, in case the name is a typo.
	var warnings []string
	if err := checkUser(req.User); errors.Is(err, adminapi.ErrInvalid) {
		warnings = append(warnings, fmt.Sprintf("user %q is not known on this host: its desktops run as a pooled kiosk account, a login (PIN, password) works only if PAM knows the user, and token register would refuse it", req.User))
	}
	code, exp, err := a.d.pairer.Create(ctx, req.User, req.Label, createdBy, ttl)
	if err != nil {
		return adminapi.PairResponse{}, err
	}
	return adminapi.PairResponse{Code: code, Expires: exp, Warnings: warnings}, nil
}

func (a *adminBackend) Ready() error { return a.d.broker.Ready() }

func (a *adminBackend) Servers(ctx context.Context) ([]adminapi.ServerInfo, error) {
	recs, err := a.d.registry().Servers(ctx)
	offsets := a.d.clocks.offsets()
	return convertAll(recs, err, func(r registry.ServerRecord) adminapi.ServerInfo {
		self := r.ID == a.d.cfg.ServerID
		si := adminapi.ServerInfo{
			ID: r.ID, Addr: r.Addr, Fingerprint: proto.FormatFingerprint(r.Fingerprint),
			Sessions: r.Sessions, Capacity: r.Capacity, Weight: r.Weight, Draining: r.Draining,
			Started: time.UnixMilli(r.StartedUnixMs), Self: self, Version: r.Version,
		}
		if !self {
			si.SettingsDiffer = differingSettings(a.d.settings.ourSettings(), r.Settings)
		}
		if off, ok := offsets[r.ID]; ok && !self {
			si.ClockOffsetMs = ptr(off.Milliseconds())
		}
		return si
	})
}

// convertAll converts the records a registry listing returned, or passes
// its error on.
func convertAll[R, T any](recs []R, err error, convert func(R) T) ([]T, error) {
	if err != nil {
		return nil, err
	}
	out := make([]T, 0, len(recs))
	for _, r := range recs {
		out = append(out, convert(r))
	}
	return out, nil
}

func (a *adminBackend) SetDraining(ctx context.Context, id string, draining bool) error {
	if id == "" || id == "self" {
		id = a.d.cfg.ServerID
	}
	reg := a.d.registry()
	if _, err := reg.Server(ctx, id); errors.Is(err, registry.ErrNotFound) {
		return fmt.Errorf("%w: server %s is not a member of the group", adminapi.ErrNotFound, id)
	} else if err != nil {
		return err
	}
	was, err := reg.Draining(ctx, id)
	if err != nil {
		return err
	}
	if err := reg.SetDraining(ctx, id, draining); err != nil {
		return err
	}
	if was == draining {
		return nil // idempotent: nothing changed, no event
	}
	// One event for the group, by the broker that made the change.
	kind := event.ServerUndrained
	if draining {
		kind = event.ServerDraining
	}
	a.d.bus.Emit(event.Event{Kind: kind, Server: id, Time: a.d.clk.Now()})
	return nil
}

func ptr[T any](v T) *T { return &v }

// lookupGroup resolves the admin group name to a gid; "" means none (-1).
func lookupGroup(name string) (int, error) {
	if name == "" {
		return -1, nil
	}
	g, err := user.LookupGroup(name)
	if err != nil {
		return -1, err
	}
	return strconv.Atoi(g.Gid)
}

func tokenInfo(t registry.TokenRecord) adminapi.TokenInfo {
	return adminapi.TokenInfo{ID: t.ID, Kind: t.Kind, User: t.User, Label: t.Label, RegisteredBy: t.RegisteredBy,
		Registered: time.UnixMilli(t.RegisteredUnixMs), Disabled: t.Disabled}
}

func (a *adminBackend) Tokens(ctx context.Context) ([]adminapi.TokenInfo, error) {
	ts, err := a.d.registry().Tokens(ctx)
	return convertAll(ts, err, tokenInfo)
}

// registerable checks that id names a locate-only card: key-holding tokens
// (soft, hce) are enrolled with a pairing code so that their key is known.
func registerable(id string) (string, error) {
	kind, _, err := tokens.ParseID(id)
	if err != nil {
		return "", fmt.Errorf("%w: %v", adminapi.ErrInvalid, err)
	}
	if kind != "uid" && kind != "piv" {
		return "", fmt.Errorf("%w: %s tokens are enrolled with a pairing code (hotdeskctl token pair)", adminapi.ErrInvalid, kind)
	}
	// Only ids a reader produces: anything else is a token no card will
	// ever present (or a second spelling of one that will).
	if kind == "uid" && !uidTokenRe.MatchString(id) {
		return "", fmt.Errorf("%w: %q: a card UID is 4 to 10 bytes in lower-case hex, as readers report it (e.g. uid.04a1b2c3)", adminapi.ErrInvalid, id)
	}
	if kind == "piv" && !pivTokenRe.MatchString(id) {
		return "", fmt.Errorf("%w: %q: a PIV CHUID GUID is 32 lower-case hex digits", adminapi.ErrInvalid, id)
	}
	return kind, nil
}

var (
	uidTokenRe = regexp.MustCompile(`^uid\.([0-9a-f]{2}){4,10}$`)
	pivTokenRe = regexp.MustCompile(`^piv\.[0-9a-f]{32}$`)
)

// checkUser refuses a token for a user this host does not know (NSS): its
// desktop could never run as that user.
func checkUser(name string) error {
	if name == "" {
		return fmt.Errorf("%w: a token needs a user", adminapi.ErrInvalid)
	}
	if _, err := user.Lookup(name); err != nil {
		var unknown user.UnknownUserError
		if errors.As(err, &unknown) {
			return fmt.Errorf("%w: user %q is not known on this host", adminapi.ErrInvalid, name)
		}
		return fmt.Errorf("user %q: %w", name, err)
	}
	return nil
}

func (a *adminBackend) RegisterToken(ctx context.Context, by string, req adminapi.RegisterRequest) (adminapi.TokenInfo, error) {
	kind, err := registerable(req.ID)
	if err != nil {
		return adminapi.TokenInfo{}, err
	}
	// The dashboard's form comes here without the API's checks.
	if err := errors.Join(checkUser(req.User), adminapi.CheckLabel(req.Label)); err != nil {
		return adminapi.TokenInfo{}, err
	}
	rec := registry.TokenRecord{ID: req.ID, Kind: kind, User: req.User, Label: req.Label,
		RegisteredBy: by, RegisteredUnixMs: a.d.clk.Now().UnixMilli()}
	if err := a.d.registry().EnrollToken(ctx, rec); errors.Is(err, registry.ErrExists) {
		return adminapi.TokenInfo{}, fmt.Errorf("%w: token %s is already registered", adminapi.ErrInvalid, req.ID)
	} else if err != nil {
		return adminapi.TokenInfo{}, err
	}
	a.d.bus.Emit(event.Event{Kind: event.TokenRegistered, Server: a.d.cfg.ServerID, Token: rec.ID, User: rec.User, Reason: "by " + by, Time: a.d.clk.Now()})
	return tokenInfo(rec), nil
}

func (a *adminBackend) AliasToken(ctx context.Context, by, id string, req adminapi.AliasRequest) (adminapi.TokenInfo, error) {
	of, err := a.d.registry().Token(ctx, req.Of)
	if errors.Is(err, registry.ErrNotFound) {
		return adminapi.TokenInfo{}, fmt.Errorf("%w: token %s", adminapi.ErrNotFound, req.Of)
	} else if err != nil {
		return adminapi.TokenInfo{}, err
	}
	return a.RegisterToken(ctx, by, adminapi.RegisterRequest{ID: id, User: of.User, Label: req.Label})
}

func (a *adminBackend) SetTokenDisabled(ctx context.Context, id string, disabled bool) error {
	var user string
	var changed bool // of the attempt that was written
	err := a.d.registry().UpdateToken(ctx, id, func(t *registry.TokenRecord) {
		changed, user = t.Disabled != disabled, t.User
		t.Disabled = disabled
	})
	if err != nil {
		return tokenError(id, err)
	}
	if !changed {
		return nil // idempotent: nothing changed, no event
	}
	kind := event.TokenEnabled
	if disabled {
		kind = event.TokenDisabled
	}
	a.d.bus.Emit(event.Event{Kind: kind, Server: a.d.cfg.ServerID, Token: id, User: user, Time: a.d.clk.Now()})
	return nil
}

func (a *adminBackend) DeleteToken(ctx context.Context, id string) error {
	// The user, for the event: read before, as the other token events
	// name it (best effort: the delete decides whether there was a token).
	t, _ := a.d.registry().Token(ctx, id)
	if err := a.d.registry().DeleteToken(ctx, id); err != nil {
		return tokenError(id, err)
	}
	a.d.bus.Emit(event.Event{Kind: event.TokenDeleted, Server: a.d.cfg.ServerID, Token: id, User: t.User, Time: a.d.clk.Now()})
	return nil
}

// tokenError tells the admin API's client which of its mistakes err is: no
// such token (404) or an id the registry cannot hold (400).
func tokenError(id string, err error) error {
	switch {
	case errors.Is(err, registry.ErrNotFound):
		return fmt.Errorf("%w: token %s", adminapi.ErrNotFound, id)
	case errors.Is(err, registry.ErrInvalidKey):
		return fmt.Errorf("%w: token %q: %w", adminapi.ErrInvalid, id, err)
	}
	return err
}
