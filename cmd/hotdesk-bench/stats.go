package main

import (
	"math"
	"slices"
	"time"
)

// row is one line of the bench's output: one JSON object per scenario.
// Fields after Notes are scenario-specific and omitted when not measured.
type row struct {
	Scenario string  `json:"scenario"`
	N        int     `json:"n"`
	P50      float64 `json:"p50_ms"`
	P99      float64 `json:"p99_ms"`
	Max      float64 `json:"max_ms"`
	EtcdP99  float64 `json:"etcd_txn_p99_ms"`
	Ratio    float64 `json:"ratio_p99"`
	TargetOK *bool   `json:"target_ok,omitempty"`
	Target   string  `json:"target,omitempty"`
	Errors   int     `json:"errors"`
	// Truncated: the scenario's time budget ran out before n was reached.
	Truncated bool   `json:"truncated,omitempty"`
	EtcdFsync bool   `json:"etcd_fsync"`
	Notes     string `json:"notes"`

	// local, crossserver, crossserver_seq: between two trials the bench
	// waits until the registry shows the previous session suspended (the
	// owner's background registry writes have landed); not part of p50/p99.
	SettleP50 *float64 `json:"settle_p50_ms,omitempty"`
	SettleP99 *float64 `json:"settle_p99_ms,omitempty"`
	// crossserver
	RedirectP50 *float64 `json:"redirect_p50_ms,omitempty"`
	RedirectP99 *float64 `json:"redirect_p99_ms,omitempty"`
	DialP50     *float64 `json:"dial_p50_ms,omitempty"`
	DialP99     *float64 `json:"dial_p99_ms,omitempty"`
	OwnerP50    *float64 `json:"owner_p50_ms,omitempty"`
	OwnerP99    *float64 `json:"owner_p99_ms,omitempty"`
	// TLSResumed counts the redirects whose TLS handshake was a session
	// resumption (-tls-resume).
	TLSResumed *int `json:"tls_resumed,omitempty"`
	// race
	Trials          *int `json:"trials,omitempty"`
	Definite        *int `json:"definite,omitempty"`
	Duplicates      *int `json:"duplicates,omitempty"`
	DuplicatesHooks *int `json:"duplicates_hooks,omitempty"`
	Redirected      *int `json:"redirected,omitempty"`
	// storm
	Terminals *int     `json:"terminals,omitempty"`
	OpsPerSec *float64 `json:"ops_per_s,omitempty"`
	// scale
	Sessions        *int     `json:"sessions,omitempty"`
	BytesPerSession *float64 `json:"bytes_per_session,omitempty"`
	HeapBeforeMB    *float64 `json:"heap_before_mb,omitempty"`
	HeapAfterMB     *float64 `json:"heap_after_mb,omitempty"`
	// card: the reader's part (pcscd noticing the card, the identification
	// APDUs, both together as the terminal agent sees them) apart from the
	// broker's (TokenInserted → Attached; the same as p50/p99).
	PcscdDetectP50 *float64 `json:"pcscd_detect_p50_ms,omitempty"`
	PcscdDetectP99 *float64 `json:"pcscd_detect_p99_ms,omitempty"`
	IdentifyP50    *float64 `json:"identify_p50_ms,omitempty"`
	IdentifyP99    *float64 `json:"identify_p99_ms,omitempty"`
	ReaderP50      *float64 `json:"reader_p50_ms,omitempty"`
	ReaderP99      *float64 `json:"reader_p99_ms,omitempty"`
	BrokerP50      *float64 `json:"broker_p50_ms,omitempty"`
	BrokerP99      *float64 `json:"broker_p99_ms,omitempty"`
	// pixels: the parts of a hot-desk as a person sees it (see pixelsNotes),
	// the same measurement without hotdesk (baseline: FreeRDP straight at
	// weston), the display command and the machine's load average
	// (1, 5, 15 min) before and after.
	Rounds           *int     `json:"rounds,omitempty"`
	DisplayStartP50  *float64 `json:"display_start_p50_ms,omitempty"`
	DisplayStartP99  *float64 `json:"display_start_p99_ms,omitempty"`
	TransportP50     *float64 `json:"transport_p50_ms,omitempty"`
	TransportP99     *float64 `json:"transport_p99_ms,omitempty"`
	RDPConnectP50    *float64 `json:"rdp_connect_p50_ms,omitempty"`
	RDPConnectP99    *float64 `json:"rdp_connect_p99_ms,omitempty"`
	FirstFrameP50    *float64 `json:"first_frame_p50_ms,omitempty"`
	FirstFrameP99    *float64 `json:"first_frame_p99_ms,omitempty"`
	CompleteFrameP50 *float64 `json:"complete_frame_p50_ms,omitempty"`
	CompleteFrameP99 *float64 `json:"complete_frame_p99_ms,omitempty"`
	BaselineN        *int     `json:"baseline_n,omitempty"`
	BaselineP50      *float64 `json:"baseline_p50_ms,omitempty"`
	BaselineP99      *float64 `json:"baseline_p99_ms,omitempty"`
	Display          string   `json:"display,omitempty"`
	// RDPWake: the display client ran with hotdesk-rdpwake preloaded.
	RDPWake    *bool  `json:"rdpwake,omitempty"`
	LoadBefore string `json:"load_before,omitempty"`
	LoadAfter  string `json:"load_after,omitempty"`
	// Skipped: a component the scenario needs is missing (see notes).
	Skipped bool `json:"skipped,omitempty"`
}

func ptr[T any](v T) *T { return &v }

// ms converts d to milliseconds rounded to the microsecond.
func ms(d time.Duration) float64 { return round3(float64(d) / float64(time.Millisecond)) }

func round3(f float64) float64 { return math.Round(f*1000) / 1000 }

// quantile returns the q-quantile (0 < q ≤ 1) of ds by the nearest-rank
// method; 0 for no samples. ds is sorted in place.
func quantile(ds []time.Duration, q float64) time.Duration {
	if len(ds) == 0 {
		return 0
	}
	slices.Sort(ds)
	i := int(math.Ceil(q*float64(len(ds)))) - 1
	return ds[min(max(i, 0), len(ds)-1)]
}

// p50p99 returns the median and the 99th percentile of ds in milliseconds,
// as a row's optional parts take them.
func p50p99(ds []time.Duration) (p50, p99 *float64) {
	return ptr(ms(quantile(ds, .5))), ptr(ms(quantile(ds, .99)))
}

// fill sets n, p50, p99, max and the ratio to the etcd baseline from samples.
func (r *row) fill(samples []time.Duration, etcdP99 float64) {
	r.N = len(samples)
	r.P50, r.P99, r.Max = ms(quantile(samples, 0.50)), ms(quantile(samples, 0.99)), ms(quantile(samples, 1))
	r.EtcdP99 = etcdP99
	if etcdP99 > 0 {
		r.Ratio = round3(r.P99 / etcdP99)
	}
}

// fillSettle records the waits between trials (bench.settle).
func (r *row) fillSettle(waits []time.Duration) {
	if len(waits) > 0 {
		r.SettleP50, r.SettleP99 = p50p99(waits)
	}
}
