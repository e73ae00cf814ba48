package soft

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"

	"github.com/hotdesk/hotdesk/internal/clock"
	"github.com/hotdesk/hotdesk/tokens"
)

// Reader is the reader name of software-token events.
const Reader = "soft"

// ErrNotInserted is returned by Remove for a token that is not inserted.
var ErrNotInserted = errors.New("soft: token not inserted")

// watchBuffer is the capacity of each Watch channel.
const watchBuffer = 16

var _ tokens.Provider = (*Provider)(nil)

// Provider is the tokens.Provider of software tokens: keys of a Keystore are
// "inserted" and "removed" on command (Insert, Remove), and every current
// watcher gets the event. Events are delivered in order; Insert and Remove
// block while a watcher's buffer is full, until it is drained or the
// watcher's context ends. With no watcher the events are not kept, but the
// inserted state is (see Inserted). Inserting an inserted token again
// re-presents it (a new Inserted event), as re-tapping a badge does.
type Provider struct {
	ks  *Keystore
	clk clock.Clock

	mu       sync.Mutex
	watchers []*watcher
	inserted []string // token ids, in insertion order
}

type watcher struct {
	ctx context.Context
	mu  sync.Mutex // held while sending and when closing
	ch  chan tokens.Event
	// closed is set under mu when ch is closed.
	closed bool
}

// NewProvider returns a Provider for the keys of ks, stamping events with
// clk (clock.Real if nil).
func NewProvider(ks *Keystore, clk clock.Clock) *Provider {
	if clk == nil {
		clk = clock.Real{}
	}
	return &Provider{ks: ks, clk: clk}
}

// Watch returns a stream of the Provider's events from now on. The channel
// is closed after ctx is cancelled; the caller must drain it until then.
func (p *Provider) Watch(ctx context.Context) (<-chan tokens.Event, error) {
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("soft: watch: %w", err)
	}
	w := &watcher{ctx: ctx, ch: make(chan tokens.Event, watchBuffer)}
	p.mu.Lock()
	p.watchers = append(p.watchers, w)
	p.mu.Unlock()
	go func() {
		<-ctx.Done()
		p.mu.Lock()
		p.watchers = slices.DeleteFunc(p.watchers, func(x *watcher) bool { return x == w })
		p.mu.Unlock()
		w.mu.Lock()
		w.closed = true
		close(w.ch)
		w.mu.Unlock()
	}()
	return w.ch, nil
}

// Insert presents the key named name: every watcher gets an Inserted event
// with its token id and Reader "soft". ErrNotFound if the keystore has no
// such key.
func (p *Provider) Insert(name string) error {
	key, err := p.ks.Get(name)
	if err != nil {
		return err
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if !slices.Contains(p.inserted, key.Token) {
		p.inserted = append(p.inserted, key.Token)
	}
	p.emit(tokens.Event{Kind: tokens.Inserted, Token: key.Token, Reader: Reader, At: p.clk.Now()})
	return nil
}

// Remove takes the key named name out: every watcher gets a Removed event.
// ErrNotFound if the keystore has no such key, ErrNotInserted if it is not
// inserted.
func (p *Provider) Remove(name string) error {
	key, err := p.ks.Get(name)
	if err != nil {
		return err
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	i := slices.Index(p.inserted, key.Token)
	if i < 0 {
		return fmt.Errorf("%w: %q", ErrNotInserted, name)
	}
	p.inserted = slices.Delete(p.inserted, i, i+1)
	p.emit(tokens.Event{Kind: tokens.Removed, Token: key.Token, Reader: Reader, At: p.clk.Now()})
	return nil
}

// Inserted returns the token ids currently inserted, in insertion order.
func (p *Provider) Inserted() []string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return slices.Clone(p.inserted)
}

// emit delivers ev to every watcher; p.mu is held, which keeps events of
// concurrent Insert/Remove calls in one order for all watchers.
func (p *Provider) emit(ev tokens.Event) {
	for _, w := range p.watchers {
		w.mu.Lock()
		if !w.closed {
			select {
			case w.ch <- ev:
			case <-w.ctx.Done():
			}
		}
		w.mu.Unlock()
	}
}
