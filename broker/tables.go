package broker

// Tables returns the number of entries in each of the broker's in-memory
// tables, by a fixed name: what a long-running broker holds for the
// sessions, terminals, tokens and sources it has seen. Each is bounded by
// what is live (sessions, connected terminals, tokens being worked on) or
// by a cap of its own (the token cache, tickets, the claim view); the
// daemon exports them as hotdesk_internal_entries{table} so that a soak
// test, or an operator watching a broker that has run for weeks, sees
// whether any grows with the number of distinct ones seen.
func (b *Broker) Tables() map[string]int {
	out := make(map[string]int, 12)
	b.mu.Lock()
	out["broker_sessions"] = len(b.byID)
	out["broker_sessions_by_token"] = len(b.byToken)
	out["broker_terminals"] = len(b.terms)
	out["broker_token_cache"] = len(b.tokenCache)
	out["broker_tickets"] = len(b.tickets)
	out["broker_claims_seen"] = len(b.claims.seen)
	termGate, attachGate := b.termGate, b.attachGate
	b.mu.Unlock()
	out["broker_token_locks"] = b.keys.len()
	out["broker_user_locks"] = b.userLocks.len()
	for name, g := range map[string]*connGate{"terminal": termGate, "attach": attachGate} {
		n, u := 0, 0
		if g != nil {
			g.mu.Lock()
			n, u = len(g.bySource), len(g.unauthBySource)
			g.mu.Unlock()
		}
		out["broker_"+name+"_sources"] = n
		out["broker_"+name+"_unauth_sources"] = u
	}
	return out
}

// len returns the number of keys locked or waited for.
func (k *keyLock) len() int {
	k.mu.Lock()
	defer k.mu.Unlock()
	return len(k.locks)
}
