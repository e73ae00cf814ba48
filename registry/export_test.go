package registry

import clientv3 "go.etcd.io/etcd/client/v3"

// InjectFaults wraps s's KV and Lease clients (a nil wrapper keeps that
// one) before s is used: the external tests' fault injection, for what a
// real etcd cannot be made to do on cue.
func InjectFaults(s *Store, kv func(clientv3.KV) clientv3.KV, leases func(clientv3.Lease) clientv3.Lease) {
	if kv != nil {
		s.kv = kv(s.kv)
	}
	if leases != nil {
		s.leases = leases(s.leases)
	}
}
