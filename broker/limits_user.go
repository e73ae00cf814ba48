package broker

import (
	"context"
	"errors"
	"fmt"

	"github.com/hotdesk/hotdesk/auth"
	"github.com/hotdesk/hotdesk/proto"
	"github.com/hotdesk/hotdesk/registry"
)

// LimitedClaimer is the optional registry capability behind per-user session
// limits: a claim that the registry admits only while the session's user
// holds fewer than max sessions in the whole group, decided in the same etcd
// transaction that creates the claim, so two brokers admitting one user at
// once cannot both pass a count of max-1. *registry.Registry implements it;
// without it (a test's wrapper) the broker counts, then claims, which is
// atomic within this broker only.
type LimitedClaimer interface {
	ClaimLimited(ctx context.Context, key string, s registry.Session, max int) (registry.Claim, bool, error)
}

var _ LimitedClaimer = (*registry.Registry)(nil)

// userLimit is the per-user session limit that applies to a new session of
// token for user, 0 if none. Kiosk sessions all carry one label user
// ("kiosk"), not a person: a per-user limit would be one limit shared by
// every kiosk token.
func (b *Broker) userLimit(token, user string) int {
	pol := b.policy(token, user)
	if pol.MaxSessions <= 0 || pol.Kind == auth.KindKiosk || user == "" {
		return 0
	}
	return pol.MaxSessions
}

// claimNew claims token for the new session rec of user under the per-user
// limit max (0: none). A user at the limit gets a terminal error
// (ErrSessionLimited) and nothing is claimed.
func (b *Broker) claimNew(ctx context.Context, token string, rec registry.Session, max int) (registry.Claim, bool, error) {
	reg := b.registry()
	lc, atomic := reg.(LimitedClaimer)
	if max > 0 && atomic {
		c, won, err := lc.ClaimLimited(ctx, token, rec, max)
		var le *registry.UserLimitError
		if errors.As(err, &le) {
			b.limitHit(LimitSessionsPerUser, "")
			b.blog.Warn(string(LimitSessionsPerUser), "session refused: per-user limit reached",
				"user", logValue(rec.User), "sessions", le.Sessions, "max", le.Max)
			return registry.Claim{}, false, fail(proto.ErrSessionLimited,
				fmt.Sprintf("%s already has %d sessions (the most allowed)", rec.User, le.Sessions), nil)
		}
		if err != nil {
			return registry.Claim{}, false, fail(proto.ErrUnavailable, "registry unavailable", err)
		}
		return c, won, nil
	}
	if max > 0 {
		if err := b.checkUserLimit(ctx, token, rec.User); err != nil {
			var ie *insertError
			if errors.As(err, &ie) && ie.code == proto.ErrSessionLimited {
				b.limitHit(LimitSessionsPerUser, "")
			}
			return registry.Claim{}, false, err
		}
	}
	c, won, err := reg.Claim(ctx, token, rec)
	if err != nil {
		return registry.Claim{}, false, fail(proto.ErrUnavailable, "registry unavailable", err)
	}
	return c, won, nil
}
