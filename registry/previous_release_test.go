package registry_test

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"os"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/hotdesk/hotdesk/internal/clock"
	"github.com/hotdesk/hotdesk/internal/event"
	"github.com/hotdesk/hotdesk/registry"
	"github.com/hotdesk/hotdesk/registry/etcdtest"
)

// previousRelease is the registry a hotdeskd of the previous release
// (f477c10) left in etcd: testdata/f477c10/records.txt, key under the
// prefix, a tab, the value, as its etcd held them (how they were captured
// is said at the top of the file).
func previousRelease(t *testing.T) [][2]string {
	t.Helper()
	f, err := os.Open("testdata/f477c10/records.txt")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var recs [][2]string
	sc := bufio.NewScanner(f)
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		k, v, ok := strings.Cut(line, "\t")
		if !ok {
			t.Fatalf("records.txt: no tab in %q", line)
		}
		recs = append(recs, [2]string{k, v})
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	return recs
}

// capturedAt is a moment while the fixture's lockouts were in force
// (2026-12-03 16:26:10 UTC).
var capturedAt = time.UnixMilli(1796315170000)

// TestPreviousReleaseRecords: an upgraded broker on the etcd of the
// previous release reads what that release wrote: its server record (and
// the group settings in it), session claims (a locked one, an active
// one), tokens, redeemed pairing codes, terminals, lockouts, failure
// counts, the drain flag and events, and takes over the claims of its own
// server's desktops (Reclaim, as adoption does after an in-place upgrade)
// keeping their fences. Every record also decodes field for field into this
// release's types (a field renamed or dropped would lose what the previous
// release stored).
func TestPreviousReleaseRecords(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(context.Background(), waitBound)
	defer cancel()
	recs := previousRelease(t)
	for _, r := range recs {
		var into any
		switch dir, _, _ := strings.Cut(r[0], "/"); dir {
		case "servers":
			into = new(registry.ServerRecord)
		case "sessions":
			into = new(registry.Session)
		case "tokens":
			into = new(registry.TokenRecord)
		case "paired":
			into = new(registry.Pairing)
		case "terminals":
			into = new(registry.TerminalRecord)
		case "lockouts":
			into = new(registry.Lockout)
		case "failures":
			into = new(registry.Failures)
		case "events":
			into = new(event.Event)
		default:
			continue // drain/: read by Draining below
		}
		dec := json.NewDecoder(bytes.NewReader([]byte(r[1])))
		dec.DisallowUnknownFields()
		if err := dec.Decode(into); err != nil {
			t.Errorf("%s: %v (the previous release wrote %s)", r[0], err, r[1])
		}
	}

	cli := etcdtest.Client(t, etcdtest.Start(t))
	for _, r := range recs {
		if _, err := cli.Put(ctx, registry.DefaultPrefix+r[0], r[1]); err != nil {
			t.Fatal(err)
		}
	}
	clk := clock.NewFake(capturedAt)
	s := newStore(t, cli, "up2", registry.WithClock(clk))

	servers, err := s.Servers(ctx)
	if err != nil || len(servers) != 1 {
		t.Fatalf("Servers = %+v, %v; want up1", servers, err)
	}
	if up1 := servers[0]; up1.ID != "up1" || up1.Version != "f477c10" || len(up1.Fingerprint) != 32 ||
		up1.Settings["auth.max_failures"] != "5" || up1.Settings["session.reconnect_grace"] != "" {
		t.Errorf("server up1 = %+v; want version f477c10, its fingerprint, settings without session.reconnect_grace", up1)
	}
	if d, err := s.Draining(ctx, "up1"); err != nil || !d {
		t.Errorf("Draining(up1) = %v, %v; want true", d, err)
	}
	toks, err := s.Tokens(ctx)
	if err != nil || len(toks) != 5 {
		t.Fatalf("Tokens = %d, %v; want 5", len(toks), err)
	}
	if i := slices.IndexFunc(toks, func(r registry.TokenRecord) bool { return r.ID == "uid.04a1b2c3d4" }); i < 0 ||
		toks[i].Kind != "uid" || toks[i].User != "upgb" {
		t.Errorf("tokens %+v: want uid.04a1b2c3d4 of upgb", toks)
	}
	// The pairing codes' traces end 10 minutes after they were made.
	ps := newStore(t, cli, "up2", registry.WithClock(clock.NewFake(time.UnixMilli(1796314900000))))
	if p, err := ps.RedeemedPairing(ctx, "KWFS"); err != nil || p.TokenID != "soft.xkq2oibhqye76nja7ufz5awtyxrm57rd" || p.User != "upga" {
		t.Errorf("RedeemedPairing(KWFS) = %+v, %v", p, err)
	}
	if terms, err := s.Terminals(ctx); err != nil || len(terms) != 4 {
		t.Errorf("Terminals = %+v, %v; want 4", terms, err)
	}
	var keys []string
	los, err := s.Lockouts(ctx)
	for _, lo := range los {
		keys = append(keys, lo.Key)
	}
	if want := []string{"terminal:term-1@127.0.0.1", "token:soft.xkq2oibhqye76nja7ufz5awtyxrm57rd", "user:upga"}; err != nil || !slices.Equal(keys, want) {
		t.Errorf("Lockouts = %v, %v; want %v", keys, err, want)
	}
	if fc, err := s.FailureCounts(ctx); err != nil || len(fc) != 1 || fc[0].Key != "source:127.0.0.1" || fc[0].Count != 10 {
		t.Errorf("FailureCounts = %+v, %v", fc, err)
	}
	evs, err := s.RecentEvents(ctx, 100)
	if err != nil || len(evs) != 14 {
		t.Fatalf("RecentEvents = %d, %v; want 14", len(evs), err)
	}
	for _, b := range evs {
		var e event.Event
		if err := json.Unmarshal(b, &e); err != nil || e.Kind == "" || e.Server != "up1" || e.Time.IsZero() {
			t.Errorf("event %s: %+v, %v", b, e, err)
		}
	}

	// The upgraded up1 (its record gone with the previous run's lease)
	// finds its sessions and takes their claims over.
	if _, err := cli.Delete(ctx, registry.DefaultPrefix+"servers/up1"); err != nil {
		t.Fatal(err)
	}
	reg := newReg(t, cli, "up1", registry.WithClock(clk))
	claims, err := reg.Sessions(ctx)
	if err != nil || len(claims) != 3 {
		t.Fatalf("Sessions = %+v, %v; want 3", claims, err)
	}
	for _, c := range claims {
		if c.Session.ServerID != "up1" || c.Fence == 0 {
			t.Errorf("claim %+v", c)
		}
		got, ok, err := reg.Reclaim(ctx, c, c.Session)
		if err != nil || !ok || got.Fence != c.Fence {
			t.Errorf("Reclaim(%s) = %+v, %v, %v; want it taken over with fence %d", c.Session.ID, got, ok, err, c.Fence)
		}
		switch c.Session.ID {
		case "s-52lbybrgxsb2po3p":
			if !c.Session.Locked || c.Session.State != "suspended" || c.Session.LastTerminal != "term-1" || c.Session.SuspendedUnixMs == 0 {
				t.Errorf("locked session: %+v", c.Session)
			}
		case "s-46c5aanqs2rrzgj2":
			if c.Session.Locked || c.Session.State != "active" || c.Session.Terminal != "term-5" {
				t.Errorf("active session: %+v", c.Session)
			}
		}
	}
}
