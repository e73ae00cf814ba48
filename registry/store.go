package registry

import (
	"errors"
	"fmt"

	"github.com/hashicorp/go-hclog"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// Store is the part of the registry that needs no server lease: token
// records, pairing codes (under leases of their own), drain flags, the
// command queue this server serves, the group's event log and the watches
// on them, and reads of the server and session records. It holds no state
// of its own besides the etcd client, so it is valid for as long as the
// client is, across every lease the server takes (every Registry); the
// daemon builds one with NewStore and hands it to whatever must outlive a
// lease change (pairing, the token watch, group commands). A Registry
// embeds the Store of its server. Safe for concurrent use.
type Store struct {
	kv      clientv3.KV
	watcher clientv3.Watcher
	leases  clientv3.Lease
	opts    options
	log     hclog.Logger
	id      string // the server whose store this is (commands, events, drain flags)

	failLeases *failureLeases // shared by the failure counts (CountFailure)
	rw         *rewinds       // the client's, shared by its stores (see rewind.go)
	cs         *clientState
}

// NewStore returns server's lease-independent view of the registry on cli.
// Of the options, WithPrefix, WithCallTimeout, WithLogger and WithClock
// apply; the lease options are ignored.
func NewStore(cli *clientv3.Client, server string, opts ...Option) (*Store, error) {
	o := defaultOptions()
	for _, opt := range opts {
		opt(&o)
	}
	if err := validateKey(server); err != nil {
		return nil, fmt.Errorf("registry: new store: server id: %w", err)
	}
	if cli == nil {
		return nil, errors.New("registry: new store: nil etcd client")
	}
	return newStore(cli, server, o), nil
}

func newStore(cli *clientv3.Client, server string, o options) *Store {
	cs := clientStateOf(cli)
	s := &Store{watcher: cli.Watcher, leases: cli.Lease, opts: o, log: o.logger, id: server,
		failLeases: &failureLeases{}, rw: cs.rw, cs: cs}
	s.kv = spaceKV{KV: cli.KV, note: func(err error) { cs.space.note(err, s.log) }}
	return s
}
