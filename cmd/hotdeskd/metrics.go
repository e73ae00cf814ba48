package main

import (
	"context"
	"encoding/json"
	"errors"
	"net"
	"net/http"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/hotdesk/hotdesk/broker"
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
	events     *prometheus.CounterVec
	pending    map[string]time.Time // terminal+token → token event time
	maxPending int
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
		events: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "hotdesk_broker_events_total", Help: "Broker events by kind.",
		}, []string{"kind"}),
		pending:    map[string]time.Time{},
		maxPending: maxPendingInserts,
	}
	sessions := prometheus.NewDesc("hotdesk_broker_sessions", "Sessions this broker runs, by state (orphaned counted apart).", []string{"state"}, nil)
	m.reg.MustRegister(m.hotdesk, m.logins, m.lockouts, m.redirects, m.orphans, m.events,
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "hotdesk_broker_terminals_connected", Help: "Terminals connected to this broker."},
			func() float64 { return float64(d.presence.connected()) }),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "hotdesk_registry_lease_healthy", Help: "1 while the registry lease is held and renewed in time."},
			func() float64 { return boolf(d.broker.Ready() == nil) }),
		prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "hotdesk_broker_events_dropped_total", Help: "Events subscribers (registry, presence, metrics, hook) lost by falling behind."},
			func() float64 { return float64(bus.Dropped()) }),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "hotdesk_build_info", Help: "Always 1; the version is a label.",
			ConstLabels: prometheus.Labels{"version": version.String()}}, func() float64 { return 1 }),
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
func (m *metrics) observe(e broker.Event) {
	m.events.WithLabelValues(string(e.Kind)).Inc()
	key := e.Terminal + "\x00" + e.Token
	switch e.Kind {
	case broker.TokenInserted:
		if len(m.pending) >= m.maxPending {
			clear(m.pending)
		}
		m.pending[key] = e.Time
	case broker.TokenRemoved, broker.TokenRefused, broker.TerminalRedirected:
		delete(m.pending, key)
		if e.Kind == broker.TerminalRedirected {
			m.redirects.Inc()
		}
	case broker.SessionAttached, broker.SessionResumed, broker.SessionTakeover:
		if t0, ok := m.pending[key]; ok {
			delete(m.pending, key)
			path := "local"
			if e.Hops > 0 {
				path = "redirected"
			}
			m.hotdesk.WithLabelValues(path).Observe(e.Time.Sub(t0).Seconds())
		}
	case broker.LoginGranted:
		m.logins.WithLabelValues("granted").Inc()
	case broker.LoginRefused:
		m.logins.WithLabelValues("refused").Inc()
	case broker.LoginLockout:
		m.logins.WithLabelValues("lockout").Inc()
		m.lockouts.Inc()
	case broker.SessionOrphaned:
		m.orphans.Inc()
	}
}

// run feeds the metrics from sub until it closes or ctx ends.
func (m *metrics) run(ctx context.Context, sub *broker.Subscription) {
	for {
		select {
		case <-ctx.Done():
			return
		case e, ok := <-sub.C:
			if !ok {
				return
			}
			m.observe(e)
		}
	}
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
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(ln) }()
	select {
	case err := <-errc:
		if errors.Is(err, http.ErrServerClosed) {
			return nil
		}
		return err
	case <-ctx.Done():
	}
	sctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	if err := srv.Shutdown(sctx); err != nil {
		srv.Close()
	}
	<-errc
	return nil
}
