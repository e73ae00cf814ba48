package main

import (
	"context"
	"errors"
	"fmt"
	"os/user"
	"strconv"
	"time"

	"github.com/hotdesk/hotdesk/broker"
	"github.com/hotdesk/hotdesk/cmd/internal/adminapi"
	"github.com/hotdesk/hotdesk/proto"
	"github.com/hotdesk/hotdesk/registry"
)

// adminBackend serves the admin API from the running subsystems.
type adminBackend struct{ d *daemon }

var _ adminapi.Backend = (*adminBackend)(nil)

func (a *adminBackend) Sessions(ctx context.Context) ([]adminapi.SessionInfo, error) {
	ss := a.d.broker.Sessions()
	out := make([]adminapi.SessionInfo, 0, len(ss))
	for _, s := range ss {
		si := adminapi.SessionInfo{
			ID: s.ID, Token: s.Token, User: s.User, State: s.State.String(), Terminal: s.Terminal,
			ServerID: s.ServerID, Endpoint: s.Endpoint, PID: s.PID, Created: s.Created, Updated: s.Updated,
		}
		if !s.SuspendedAt.IsZero() {
			si.SuspendedAt = ptr(s.SuspendedAt)
			si.ExpiresAt = ptr(s.ExpiresAt)
		}
		out = append(out, si)
	}
	return out, nil
}

func (a *adminBackend) KillSession(ctx context.Context, id string) error {
	err := a.d.broker.Kill(ctx, id)
	if errors.Is(err, broker.ErrNotFound) {
		return fmt.Errorf("%w: session %s", adminapi.ErrNotFound, id)
	}
	return err
}

func (a *adminBackend) PairToken(ctx context.Context, createdBy string, req adminapi.PairRequest) (adminapi.PairResponse, error) {
	ttl := a.d.cfg.Pairing.CodeTTL
	if req.TTLSeconds > 0 {
		ttl = min(time.Duration(req.TTLSeconds)*time.Second, ttl)
	}
	if req.User == "" {
		return adminapi.PairResponse{}, errors.New("a user is required")
	}
	code, exp, err := a.d.pairer.Create(ctx, req.User, req.Label, createdBy, ttl)
	if err != nil {
		return adminapi.PairResponse{}, err
	}
	return adminapi.PairResponse{Code: code, Expires: exp}, nil
}

func (a *adminBackend) Ready() error { return a.d.broker.Ready() }

func (a *adminBackend) Servers(ctx context.Context) ([]adminapi.ServerInfo, error) {
	recs, err := a.d.registry().Servers(ctx)
	if err != nil {
		return nil, err
	}
	out := make([]adminapi.ServerInfo, 0, len(recs))
	for _, r := range recs {
		out = append(out, adminapi.ServerInfo{
			ID: r.ID, Addr: r.Addr, Fingerprint: proto.FormatFingerprint(r.Fingerprint),
			Sessions: r.Sessions, Capacity: r.Capacity, Weight: r.Weight, Draining: r.Draining,
			Started: time.UnixMilli(r.StartedUnixMs), Self: r.ID == a.d.cfg.ServerID,
		})
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
	return reg.SetDraining(ctx, id, draining)
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
