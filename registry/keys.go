package registry

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"unicode"
	"unicode/utf8"

	"go.etcd.io/etcd/api/v3/mvccpb"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// validateKey checks a session key or record id before it becomes part of
// an etcd key: it must name exactly one entry directly under its directory.
func validateKey(k string) error {
	switch {
	case k == "":
		return fmt.Errorf("%w: empty", ErrInvalidKey)
	case len(k) > MaxKeyLen:
		return fmt.Errorf("%w: %d bytes, more than %d", ErrInvalidKey, len(k), MaxKeyLen)
	case !utf8.ValidString(k):
		return fmt.Errorf("%w: not UTF-8", ErrInvalidKey)
	case k == "." || k == "..":
		return fmt.Errorf("%w: %q", ErrInvalidKey, k)
	}
	for _, c := range k {
		if c == '/' || unicode.IsSpace(c) || unicode.IsControl(c) || c == utf8.RuneError {
			return fmt.Errorf("%w: %q has character %q", ErrInvalidKey, k, c)
		}
	}
	return nil
}

func (r *Store) serverKey(id string) string   { return r.opts.prefix + "servers/" + id }
func (r *Store) sessionKey(key string) string { return r.opts.prefix + "sessions/" + key }
func (r *Store) tokenKey(id string) string    { return r.opts.prefix + "tokens/" + id }
func (r *Store) pairingKey(id string) string  { return r.opts.prefix + "pairing/" + id }
func (r *Store) pairedKey(id string) string   { return r.opts.prefix + "paired/" + id }

// get reads one key; ErrNotFound if it is absent.
func (r *Store) get(ctx context.Context, key string, opts ...clientv3.OpOption) (*mvccpb.KeyValue, error) {
	cctx, cancel := r.callCtx(ctx)
	defer cancel()
	resp, err := r.kv.Get(cctx, key, opts...)
	if err != nil {
		return nil, err
	}
	if len(resp.Kvs) == 0 {
		return nil, ErrNotFound
	}
	return resp.Kvs[0], nil
}

// remove deletes one key; ErrNotFound if it is absent.
func (r *Store) remove(ctx context.Context, key string) error {
	cctx, cancel := r.callCtx(ctx)
	defer cancel()
	resp, err := r.kv.Delete(cctx, key)
	if err != nil {
		return err
	}
	if resp.Deleted == 0 {
		return ErrNotFound
	}
	return nil
}

// listRecords is list decoding every value with decode: the records directly
// under dir, in key order, as one snapshot. Undecodable values are skipped
// and logged, what naming them.
func listRecords[T any](ctx context.Context, r *Store, dir, what string, decode func(name string, kv *mvccpb.KeyValue) (T, error)) ([]T, error) {
	var out []T
	err := r.list(ctx, dir, func(name string, kv *mvccpb.KeyValue) {
		rec, err := decode(name, kv)
		if err != nil {
			r.log.Warn("skipping undecodable "+what, "key", string(kv.Key), "error", err)
			return
		}
		out = append(out, rec)
	})
	return out, err
}

// decodeRecord decodes the JSON record stored under id; idOf points at the
// record's own id, which is set to id if empty and must equal it otherwise
// (ErrCorrupt, naming it what).
func decodeRecord[T any](id string, val []byte, what string, idOf func(*T) *string) (T, error) {
	var rec T
	if err := json.Unmarshal(val, &rec); err != nil {
		return rec, fmt.Errorf("%w: %v", ErrCorrupt, err)
	}
	if p := idOf(&rec); *p == "" {
		*p = id
	} else if *p != id {
		return rec, fmt.Errorf("%w: %s %q under key %q", ErrCorrupt, what, *p, id)
	}
	return rec, nil
}

// list calls fn for every key directly under dir (which ends in "/"), in key
// order, reading pages of listPageSize keys at one revision so the listing is
// a consistent snapshot. name is the key without dir.
func (r *Store) list(ctx context.Context, dir string, fn func(name string, kv *mvccpb.KeyValue)) error {
	return r.scan(ctx, dir, func(name string, kv *mvccpb.KeyValue) {
		if validateKey(name) != nil {
			return // e.g. a deeper path written by hand
		}
		fn(name, kv)
	})
}

// scan calls fn for every key under dir (any depth), in key order, reading
// pages of listPageSize keys at one revision. name is the key without dir.
func (r *Store) scan(ctx context.Context, dir string, fn func(name string, kv *mvccpb.KeyValue)) error {
	end := clientv3.GetPrefixRangeEnd(dir)
	from := dir
	var rev int64
	for {
		opts := []clientv3.OpOption{clientv3.WithRange(end), clientv3.WithLimit(listPageSize)}
		if rev != 0 {
			opts = append(opts, clientv3.WithRev(rev))
		}
		cctx, cancel := r.callCtx(ctx)
		resp, err := r.kv.Get(cctx, from, opts...)
		cancel()
		if err != nil {
			return err
		}
		if rev == 0 {
			rev = resp.Header.Revision
		}
		for _, kv := range resp.Kvs {
			fn(strings.TrimPrefix(string(kv.Key), dir), kv)
		}
		if !resp.More || len(resp.Kvs) == 0 {
			return nil
		}
		from = string(resp.Kvs[len(resp.Kvs)-1].Key) + "\x00"
	}
}
