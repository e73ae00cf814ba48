package main

import (
	"bytes"
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"slices"
	"strconv"
	"sync"
	"time"

	"github.com/hotdesk/hotdesk/proto"
)

// dialStagger is how long a dial round waits for one candidate before it
// also starts the next (PROTOCOL.md §11).
const dialStagger = 250 * time.Millisecond

// srvTimeout bounds one DNS SRV lookup.
const srvTimeout = 2 * time.Second

// errNoCandidates reports a group with no address to dial.
var errNoCandidates = errors.New("group: no broker address to connect to")

// group is the terminal's view of its server group: the configured broker
// addresses and trust anchors (pins or CA roots) and what the last Welcome
// from a trusted broker said about the members (PROTOCOL.md §11). It is
// safe for concurrent use.
type group struct {
	servers []string       // configured addresses, in order
	pins    [][]byte       // configured fingerprints
	roots   *x509.CertPool // CA roots instead of pins
	srv     string         // DNS SRV name listing brokers, optional
	lookup  srvLookupFunc  // resolves srv; net.DefaultResolver.LookupSRV

	mu      sync.Mutex
	members []proto.Member // learned from the last Welcome
	learned [][]byte       // fingerprints of members
	// statePath and anchors: where learned members are kept, and under
	// which trust anchors (persist, group_state.go); "" keeps nothing.
	statePath, anchors string
}

// srvLookupFunc has the shape of (*net.Resolver).LookupSRV.
type srvLookupFunc func(ctx context.Context, service, proto, name string) (string, []*net.SRV, error)

// newGroup checks the configuration: at least one address (or an SRV
// name), and pins xor roots.
func newGroup(servers []string, pins [][]byte, roots *x509.CertPool, srv string) (*group, error) {
	if len(servers) == 0 && srv == "" {
		return nil, errNoCandidates
	}
	if (len(pins) == 0) == (roots == nil) {
		return nil, errors.New("group: need either pinned fingerprints or CA roots")
	}
	for _, s := range servers {
		if _, _, err := net.SplitHostPort(s); err != nil {
			return nil, fmt.Errorf("group: server %q: %w", s, err)
		}
	}
	for _, p := range pins {
		if len(p) != sha256.Size {
			return nil, fmt.Errorf("group: pin is %d bytes; want %d", len(p), sha256.Size)
		}
	}
	return &group{servers: slices.Clone(servers), pins: pins, roots: roots, srv: srv,
		lookup: net.DefaultResolver.LookupSRV}, nil
}

// learn takes the members of a Welcome from a trusted broker (PROTOCOL.md
// §11): they replace what was learned before; an empty list changes
// nothing. Invalid members are dropped. It reports whether the list
// changed.
func (g *group) learn(ms []proto.Member) bool {
	if len(ms) == 0 {
		return false
	}
	var keep []proto.Member
	var fps [][]byte
	for _, m := range ms {
		if _, _, err := net.SplitHostPort(m.Addr); err != nil || len(m.Fingerprint) != sha256.Size || m.ServerID == "" {
			continue
		}
		if len(keep) == proto.MaxMembers {
			break
		}
		m.Fingerprint = bytes.Clone(m.Fingerprint)
		keep = append(keep, m)
		fps = append(fps, m.Fingerprint)
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	changed := !slices.EqualFunc(keep, g.members, func(a, b proto.Member) bool {
		return a.ServerID == b.ServerID && a.Addr == b.Addr && bytes.Equal(a.Fingerprint, b.Fingerprint) && a.Draining == b.Draining
	})
	g.members, g.learned = keep, fps
	return changed
}

// Members returns the members learned last.
func (g *group) Members() []proto.Member {
	g.mu.Lock()
	defer g.mu.Unlock()
	return slices.Clone(g.members)
}

// trusted reports whether fp is a configured or learned fingerprint
// (constant-time comparisons).
func (g *group) trusted(fp []byte) bool {
	g.mu.Lock()
	learned := g.learned
	g.mu.Unlock()
	ok := 0
	for _, p := range g.pins {
		ok |= subtle.ConstantTimeCompare(p, fp)
	}
	for _, p := range learned {
		ok |= subtle.ConstantTimeCompare(p, fp)
	}
	return ok == 1
}

// tlsFor returns the TLS configuration for a broker of the group at addr:
// with pins, any trusted fingerprint (as it is when the handshake runs);
// with CA roots, X.509 verification for addr's host.
func (g *group) tlsFor(addr string) (*tls.Config, error) {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return nil, fmt.Errorf("group: %w", err)
	}
	if g.roots != nil {
		return proto.ClientTLSConfig(host, nil, g.roots)
	}
	return proto.PinnedTLSConfig(host, func(fp []byte) error {
		if !g.trusted(fp) {
			return fmt.Errorf("%w: %s is not a fingerprint of the group", proto.ErrPinMismatch, proto.FormatFingerprint(fp))
		}
		return nil
	}), nil
}

// candidates returns the addresses to try, each once: configured servers,
// SRV targets (by priority), then learned members, non-draining before
// draining; avoid (the broker just lost) goes last.
func (g *group) candidates(ctx context.Context, avoid string) []string {
	var out, draining []string
	seen := map[string]bool{}
	add := func(list *[]string, a string) {
		if a != "" && !seen[a] {
			seen[a] = true
			*list = append(*list, a)
		}
	}
	for _, s := range g.servers {
		add(&out, s)
	}
	if g.srv != "" {
		lctx, cancel := context.WithTimeout(ctx, srvTimeout)
		_, srvs, err := g.lookup(lctx, "", "", g.srv)
		cancel()
		if err == nil { // net.Resolver returns them sorted by priority and weight
			for _, s := range srvs {
				host := s.Target
				if n := len(host); n > 0 && host[n-1] == '.' {
					host = host[:n-1]
				}
				add(&out, net.JoinHostPort(host, strconv.Itoa(int(s.Port))))
			}
		}
	}
	for _, m := range g.Members() {
		if m.Draining {
			add(&draining, m.Addr)
		} else {
			add(&out, m.Addr)
		}
	}
	out = append(out, draining...)
	if i := slices.Index(out, avoid); i >= 0 {
		out = append(append(out[:i:i], out[i+1:]...), avoid)
	}
	return out
}

// dialFunc connects to one broker and completes the handshake.
type dialFunc func(ctx context.Context, addr string, cfg *tls.Config) (*link, error)

// dialAny dials the candidates, starting the next one every stagger while
// none has completed, and returns the first link that completes its
// handshake; the others are cancelled and closed. If every candidate
// fails it returns their errors joined.
func (g *group) dialAny(ctx context.Context, cands []string, stagger time.Duration, dial dialFunc) (*link, error) {
	if len(cands) == 0 {
		return nil, errNoCandidates
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	type result struct {
		l   *link
		err error
	}
	results := make(chan result, len(cands))
	start := func(addr string) {
		cfg, err := g.tlsFor(addr)
		if err != nil {
			results <- result{err: err}
			return
		}
		go func() {
			l, err := dial(ctx, addr, cfg)
			results <- result{l: l, err: err}
		}()
	}
	next, pending := 0, 0
	var errs []error
	var won *link
	timer := time.NewTimer(0)
	defer timer.Stop()
	// Once ctx ends the round only waits for the dials in flight: its
	// Done, always ready from then on, must not be selected again (the
	// loop would spin, adding ctx.Err() to errs on each turn).
	cancelled := ctx.Done()
	for won == nil && (next < len(cands) || pending > 0) {
		var tick <-chan time.Time
		if next < len(cands) {
			tick = timer.C
		}
		select {
		case <-tick:
			start(cands[next])
			next++
			pending++
			timer.Reset(stagger)
		case r := <-results:
			pending--
			if r.err != nil {
				errs = append(errs, r.err)
				// A refused candidate need not hold up the next one.
				if next < len(cands) {
					timer.Reset(0)
				}
				continue
			}
			won = r.l
		case <-cancelled:
			errs = append(errs, ctx.Err())
			next = len(cands)
			cancelled = nil
		}
	}
	cancel()
	// Close the links that lost the race.
	for ; pending > 0; pending-- {
		if r := <-results; r.l != nil {
			r.l.close()
		}
	}
	if won != nil {
		return won, nil
	}
	return nil, errors.Join(errs...)
}
