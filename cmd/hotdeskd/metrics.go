package main

import (
	"context"
	"encoding/json"
	"net"
	"net/http"
	"slices"
	"sync/atomic"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/hotdesk/hotdesk/broker"
	"github.com/hotdesk/hotdesk/cmd/internal/httpserve"
	"github.com/hotdesk/hotdesk/internal/event"
	"github.com/hotdesk/hotdesk/internal/version"
)

// metrics are the daemon's Prometheus metrics, on an injected registry.
// Counters and the latency histogram are fed from the broker's events;
// gauges are read from the subsystems at scrape time.
type metrics struct {
	reg        *prometheus.Registry
	hotdesk    *prometheus.HistogramVec
	logins     *prometheus.CounterVec
	lockouts   prometheus.Counter
	redirects  prometheus.Counter
	orphans    prometheus.Counter
	restored   prometheus.Counter
	events     *prometheus.CounterVec
	limits     *limitCounters
	pending    map[string]time.Time // terminal+token → token event time
	maxPending int
	pendingLen atomic.Int64 // len(pending), for hotdesk_internal_entries
}

// maxPendingInserts bounds the token events waiting for their attach.
const maxPendingInserts = 10000

func newMetrics(d *daemon, bus *broker.Bus) *metrics {
	m := &metrics{
		reg: prometheus.NewRegistry(),
		hotdesk: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "hotdesk_broker_hotdesk_duration_seconds",
			Help:    "Token event at this broker to the session attached there; path=redirected when the terminal was sent here by another broker.",
			Buckets: []float64{.0005, .001, .002, .005, .01, .02, .05, .1, .2, .5, 1, 2, 5, 10, 30},
		}, []string{"path"}),
		logins: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "hotdesk_auth_logins_total", Help: "Login decisions by outcome (granted, refused, lockout).",
		}, []string{"outcome"}),
		lockouts:  prometheus.NewCounter(prometheus.CounterOpts{Name: "hotdesk_auth_lockouts_total", Help: "Logins refused because the token, user or terminal was locked out."}),
		redirects: prometheus.NewCounter(prometheus.CounterOpts{Name: "hotdesk_broker_redirects_total", Help: "Terminals redirected to another member of the group."}),
		orphans:   prometheus.NewCounter(prometheus.CounterOpts{Name: "hotdesk_broker_orphans_total", Help: "Sessions orphaned (their token taken by another server while this one had lost its lease)."}),
		restored:  prometheus.NewCounter(prometheus.CounterOpts{Name: "hotdesk_broker_orphans_restored_total", Help: "Orphans given back to their token once it had no session any more."}),
		events: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "hotdesk_broker_events_total", Help: "Broker events by kind.",
		}, []string{"kind"}),
		pending:    map[string]time.Time{},
		maxPending: maxPendingInserts,
	}
	if d.limits == nil {
		d.limits = newLimitCounters()
	}
	m.limits = d.limits
	tables := prometheus.NewDesc("hotdesk_internal_entries",
		"Entries in the daemon's in-memory tables, by table (a fixed set of names): each is bounded by what is live or by a cap of its own.",
		[]string{"table"}, nil)
	dropped := prometheus.NewDesc("hotdesk_broker_events_dropped_total",
		"Events a subscriber of this broker's events lost by falling behind, by subscriber (registry: the group's event log, presence, metrics, hook).",
		[]string{"subscriber"}, nil)
	clocks := prometheus.NewDesc("hotdesk_group_clock_offset_seconds",
		"How far each other member's clock is ahead of this broker's (negative: behind), from its last readings (every 15 s); beyond 1 s either way the group's lockouts, pairing codes and terminal listings go wrong.",
		[]string{"server"}, nil)
	disk := prometheus.NewDesc("hotdesk_disk_free_bytes",
		"Bytes left on the filesystem of each of the daemon's directories (data_dir, compositor.state_dir), checked every 2 s: when data_dir's is full no desktop can start, and the embedded etcd stops the daemon once the room set aside for it is used up.",
		[]string{"dir"}, nil)
	reserve := prometheus.NewDesc("hotdesk_disk_reserve_bytes",
		"Room set aside for the embedded etcd in data_dir/reserve (128 MiB; 0 once given back because the disk filled, or while the disk has not the room to spare); absent with an etcd cluster.",
		nil, nil)
	certs := prometheus.NewDesc("hotdesk_certificate_expiry_timestamp_seconds",
		"When each certificate the daemon loaded at start expires (Unix time; of a CA bundle, its first to expire), by configuration key (tls.cert_file, dashboard.cert_file, etcd.cert_file, etcd.ca_file).",
		[]string{"cert"}, nil)
	sessions := prometheus.NewDesc("hotdesk_broker_sessions", "Sessions this broker runs, by state (orphaned counted apart).", []string{"state"}, nil)
	m.reg.MustRegister(m.hotdesk, m.logins, m.lockouts, m.redirects, m.orphans, m.restored, m.events,
		m.limits.broker, m.limits.auth,
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "hotdesk_broker_terminals_connected", Help: "Terminals connected to this broker."},
			func() float64 { return float64(d.presence.connected()) }),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "hotdesk_registry_lease_healthy", Help: "1 while the registry lease is held and renewed in time."},
			func() float64 { return boolf(d.broker.Ready() == nil) }),
		collectorFunc{desc: clocks, collect: func(ch chan<- prometheus.Metric) {
			for id, off := range d.clocks.offsets() {
				ch <- prometheus.MustNewConstMetric(clocks, prometheus.GaugeValue, off.Seconds(), id)
			}
		}},
		collectorFunc{desc: disk, collect: func(ch chan<- prometheus.Metric) {
			if d.disk == nil {
				return
			}
			for dir, n := range d.disk.freeBytes() {
				ch <- prometheus.MustNewConstMetric(disk, prometheus.GaugeValue, float64(n), dir)
			}
		}},
		collectorFunc{desc: reserve, collect: func(ch chan<- prometheus.Metric) {
			if d.disk == nil {
				return
			}
			if n, ok := d.disk.reserveBytes(); ok {
				ch <- prometheus.MustNewConstMetric(reserve, prometheus.GaugeValue, float64(n))
			}
		}},
		collectorFunc{desc: certs, collect: func(ch chan<- prometheus.Metric) {
			if d.certs == nil {
				return
			}
			for key, at := range d.certs.expiries() {
				ch <- prometheus.MustNewConstMetric(certs, prometheus.GaugeValue, float64(at.Unix()), key)
			}
		}},
		collectorFunc{desc: dropped, collect: func(ch chan<- prometheus.Metric) {
			for name, n := range bus.DroppedBy() {
				ch <- prometheus.MustNewConstMetric(dropped, prometheus.CounterValue, float64(n), name)
			}
		}},
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "hotdesk_registry_history_revisions", Help: "Revisions etcd still keeps past the oldest one this broker noted (checked every 10 min; reset when etcd compacts its history): one that only grows is a cluster that never compacts, and stops taking writes at its quota."},
			func() float64 {
				if d.history == nil {
					return 0
				}
				return float64(d.history.revisions())
			}),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "hotdesk_registry_etcd_full", Help: "1 while etcd refuses this broker's writes for want of space (its NOSPACE alarm: the database reached --quota-backend-bytes): no session can be created or moved until an administrator compacts, defragments and disarms it."},
			func() float64 {
				if d.store == nil {
					return 0
				}
				_, full := d.store.SpaceRefused()
				return boolf(full)
			}),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "hotdesk_group_settings_differ", Help: "Members of the group whose group-wide settings (lease_ttl, login policies, lockout limits…) differ from this broker's, at the last comparison (every 15 s)."},
			func() float64 {
				if d.settings == nil {
					return 0
				}
				return float64(d.settings.differing())
			}),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "hotdesk_build_info", Help: "Always 1; the version is a label.",
			ConstLabels: prometheus.Labels{"version": version.String()}}, func() float64 { return 1 }),
		collectorFunc{desc: tables, collect: func(ch chan<- prometheus.Metric) {
			for name, n := range d.tables(m) {
				ch <- prometheus.MustNewConstMetric(tables, prometheus.GaugeValue, float64(n), name)
			}
		}},
		collectorFunc{desc: sessions, collect: func(ch chan<- prometheus.Metric) {
			counts := map[string]int{"creating": 0, "active": 0, "suspended": 0, "orphaned": 0}
			for _, s := range d.broker.Sessions() {
				if s.Orphaned {
					counts["orphaned"]++
					continue
				}
				counts[s.State.String()]++
			}
			for st, n := range counts {
				ch <- prometheus.MustNewConstMetric(sessions, prometheus.GaugeValue, float64(n), st)
			}
		}},
	)
	return m
}

// limitCounters count what the daemon's limits refuse. Their labels are
// limit names from a fixed set (and a listener name), never a user, token,
// terminal or address: the series are bounded. They are built before the
// subsystems that report to them and registered by newMetrics.
type limitCounters struct {
	// broker: hotdesk_broker_limit_refusals_total{limit, listener}.
	broker *prometheus.CounterVec
	// auth: hotdesk_auth_limit_refusals_total{limit}: logins refused by
	// the pending-login limits, and by lockouts (limit="lockout").
	auth *prometheus.CounterVec
}

// limitLockout is the auth limit label of a login refused by a lockout.
const limitLockout = "lockout"

func newLimitCounters() *limitCounters {
	l := &limitCounters{
		broker: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "hotdesk_broker_limit_refusals_total",
			Help: "Refusals by the broker's limits: connections (limit max_connections, max_connections_per_source, max_unauthenticated, max_unauthenticated_per_source; listener terminal or attach; at max_connections and max_unauthenticated also the connections evicted to admit a newcomer), sessions (max_sessions on this server, max_sessions_per_user in the group), attach tickets revoked (max_tickets_per_session), pairing attempts (pairing_rate), token events of one terminal connection (token_events_per_second).",
		}, []string{"limit", "listener"}),
		auth: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "hotdesk_auth_limit_refusals_total",
			Help: "Logins refused before PAM by a limit: max_pending_logins, max_pending_logins_per_source, max_pending_logins_per_user, max_pending_logins_per_terminal, or a failure lockout (lockout).",
		}, []string{"limit"}),
	}
	// Every series exists from the start (at 0), so a rate is defined
	// before the first refusal.
	for _, ls := range []string{"terminal", "attach"} {
		for _, lim := range []broker.Limit{broker.LimitConnections, broker.LimitConnectionsPerSource, broker.LimitUnauthenticated, broker.LimitUnauthenticatedPerSource} {
			l.broker.WithLabelValues(string(lim), ls)
		}
	}
	for _, lim := range []broker.Limit{broker.LimitSessions, broker.LimitSessionsPerUser, broker.LimitTicketsPerSession, broker.LimitPairing, broker.LimitTokenEvents} {
		l.broker.WithLabelValues(string(lim), "")
	}
	for _, lim := range authLimits {
		l.auth.WithLabelValues(lim)
	}
	return l
}

// authLimits are the label values of hotdesk_auth_limit_refusals_total.
var authLimits = []string{"max_pending_logins", "max_pending_logins_per_source", "max_pending_logins_per_user",
	"max_pending_logins_per_terminal", limitLockout}

// brokerRefused is broker.Limits.OnLimit.
func (l *limitCounters) brokerRefused(limit broker.Limit, listener string) {
	l.broker.WithLabelValues(string(limit), listener).Inc()
}

// authRefused is auth.GateConfig.OnRefused. A name outside the known set
// (a newer gate) is counted as "other", keeping the series bounded.
func (l *limitCounters) authRefused(limit string) {
	if !slices.Contains(authLimits, limit) {
		limit = "other"
	}
	l.auth.WithLabelValues(limit).Inc()
}

func boolf(b bool) float64 {
	if b {
		return 1
	}
	return 0
}

// collectorFunc is a collector with one description.
type collectorFunc struct {
	desc    *prometheus.Desc
	collect func(chan<- prometheus.Metric)
}

func (c collectorFunc) Describe(ch chan<- *prometheus.Desc) { ch <- c.desc }
func (c collectorFunc) Collect(ch chan<- prometheus.Metric) { c.collect(ch) }

// observe updates the metrics for one event. Called from one goroutine.
func (m *metrics) observe(e event.Event) {
	defer func() { m.pendingLen.Store(int64(len(m.pending))) }()
	m.events.WithLabelValues(string(e.Kind)).Inc()
	key := e.Terminal + "\x00" + e.Token
	switch e.Kind {
	case event.TokenInserted:
		if len(m.pending) >= m.maxPending {
			clear(m.pending)
		}
		m.pending[key] = e.Time
	case event.TokenRemoved, event.TokenRefused, event.TerminalRedirected:
		delete(m.pending, key)
		if e.Kind == event.TerminalRedirected {
			m.redirects.Inc()
		}
	case event.SessionAttached, event.SessionResumed, event.SessionTakeover:
		if t0, ok := m.pending[key]; ok {
			delete(m.pending, key)
			path := "local"
			if e.Hops > 0 {
				path = "redirected"
			}
			m.hotdesk.WithLabelValues(path).Observe(e.Time.Sub(t0).Seconds())
		}
	case event.LoginGranted:
		m.logins.WithLabelValues("granted").Inc()
	case event.LoginRefused:
		m.logins.WithLabelValues("refused").Inc()
	case event.LoginLockout:
		m.logins.WithLabelValues("lockout").Inc()
		m.lockouts.Inc()
		m.limits.auth.WithLabelValues(limitLockout).Inc()
	case event.SessionOrphaned:
		m.orphans.Inc()
	case event.SessionRestored:
		m.restored.Inc()
	}
}

// run feeds the metrics from sub until it closes or ctx ends.
func (m *metrics) run(ctx context.Context, sub *broker.Subscription) {
	sub.Each(ctx, m.observe)
}

// handler serves /metrics, /livez and /readyz.
func (m *metrics) handler(ready func() error) http.Handler {
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", promhttp.HandlerFor(m.reg, promhttp.HandlerOpts{MaxRequestsInFlight: 4, Timeout: 10 * time.Second}))
	mux.HandleFunc("GET /livez", func(w http.ResponseWriter, _ *http.Request) {
		writeHealth(w, http.StatusOK, "ok", "")
	})
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, _ *http.Request) {
		if err := ready(); err != nil {
			writeHealth(w, http.StatusServiceUnavailable, "not ready", err.Error())
			return
		}
		writeHealth(w, http.StatusOK, "ready", "")
	})
	return mux
}

func writeHealth(w http.ResponseWriter, code int, status, reason string) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(code)
	v := map[string]string{"status": status, "version": version.String()}
	if reason != "" {
		v["error"] = reason
	}
	_ = json.NewEncoder(w).Encode(v)
}

// serveMetrics serves h on ln until ctx ends.
func serveMetrics(ctx context.Context, ln net.Listener, h http.Handler, logger hclog.Logger) error {
	srv := &http.Server{
		Handler: h, ReadHeaderTimeout: 5 * time.Second, ReadTimeout: 10 * time.Second,
		WriteTimeout: 30 * time.Second, IdleTimeout: time.Minute, MaxHeaderBytes: 16 << 10,
		ErrorLog: logger.StandardLogger(&hclog.StandardLoggerOptions{InferLevels: true}),
	}
	return httpserve.Serve(ctx, srv, ln, 2*time.Second)
}

// tables returns the entries of the daemon's in-memory tables by name
// (hotdesk_internal_entries): the broker's (Broker.Tables), terminal
// presence, the login failure limiter, the account checks' answers and
// the token events waiting for their attach (m's own).
func (d *daemon) tables(m *metrics) map[string]int {
	out := map[string]int{}
	if d.broker != nil {
		out = d.broker.Tables()
	}
	if p := d.presence; p != nil {
		p.mu.Lock()
		out["presence_terminals"] = len(p.terms)
		out["presence_last_terminal"] = len(p.lastTerm)
		p.mu.Unlock()
	}
	if d.lockouts != nil && d.lockouts.limiter != nil {
		out["auth_limiter_keys"] = d.lockouts.limiter.Len()
	}
	if d.accounts != nil {
		out["auth_account_cache"] = d.accounts.Len()
	}
	out["metrics_pending_inserts"] = int(m.pendingLen.Load())
	return out
}
