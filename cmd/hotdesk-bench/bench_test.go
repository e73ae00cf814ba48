package main

import (
	"bytes"
	"context"
	"encoding/json"
	"math"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hotdesk/hotdesk/internal/testutil"
)

// cardChildEnv is set to "1" in the environment of TestCardScenario's
// child test process.
const cardChildEnv = "HOTDESK_BENCH_CARD_CHILD"

// TestMain lets the test binary serve as the bench's etcd child process.
// It runs the scenario tests all at once unless -test.parallel is given:
// they wait on etcd, daemons and displays far more than they compute.
func TestMain(m *testing.M) {
	if dir := os.Getenv(childDirEnv); dir != "" {
		os.Exit(etcdChildMain(dir))
	}
	testutil.RaiseParallel(4)
	os.Exit(m.Run())
}

// logWriter sends the bench's stderr to the test log.
type logWriter struct {
	mu sync.Mutex
	t  *testing.T
}

func (w *logWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}

// runBench runs the bench with args in a temporary directory, within
// timeout, and returns its output: one JSON row per line, the etcd
// baseline first.
func runBench(t *testing.T, timeout time.Duration, args ...string) []string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	var out bytes.Buffer
	args = append(args, "-dir", t.TempDir())
	if err := run(ctx, args, &out, &logWriter{t: t}); err != nil {
		t.Fatalf("run(%q) = %v; want nil", args, err)
	}
	return strings.Split(strings.TrimSpace(out.String()), "\n")
}

// runScenario runs the baseline and scenario alone, with the further args,
// and returns the scenario's row, decoded and as raw JSON. A scenario that
// skipped (missing names what it needs) fails the test when CI=true and
// skips it otherwise.
func runScenario(t *testing.T, timeout time.Duration, scenario, missing string, args ...string) (row, map[string]any) {
	t.Helper()
	lines := runBench(t, timeout, append([]string{"-scenarios", scenario}, args...)...)
	if len(lines) != 2 {
		t.Fatalf("got %d output lines; want 2 (etcd_txn, %s):\n%s", len(lines), scenario, strings.Join(lines, "\n"))
	}
	var raw map[string]any
	if err := json.Unmarshal([]byte(lines[1]), &raw); err != nil {
		t.Fatalf("%s row is not one JSON object: %v\n%s", scenario, err, lines[1])
	}
	var r row
	if err := json.Unmarshal([]byte(lines[1]), &r); err != nil {
		t.Fatal(err)
	}
	if r.Scenario != scenario {
		t.Fatalf("scenario = %q; want %s", r.Scenario, scenario)
	}
	if r.Skipped {
		testutil.SkipOrFail(t, "%s scenario skipped (%s): %s", scenario, missing, r.Notes)
	}
	return r, raw
}

// TestQuickRun runs the quick mode for local, crossserver, crossserver_seq and race against
// a real 3-member etcd cluster and 3 brokers, and checks the shape of the
// output and the safety results — never the timings.
func TestQuickRun(t *testing.T) {
	t.Parallel()
	const trials = 15
	lines := runBench(t, 3*time.Minute, "-quick", "-scenarios", "local,crossserver,crossserver_seq,race", "-n", "15", "-baseline", "50")
	want := []string{"etcd_txn", "local", "crossserver", "crossserver_seq", "race"}
	if len(lines) != len(want) {
		t.Fatalf("got %d output lines; want %d (one JSON object per scenario):\n%s", len(lines), len(want), strings.Join(lines, "\n"))
	}
	var etcdP99 float64
	for i, line := range lines {
		var raw map[string]any
		if err := json.Unmarshal([]byte(line), &raw); err != nil {
			t.Fatalf("line %d is not one JSON object: %v\n%s", i, err, line)
		}
		for _, k := range []string{"scenario", "n", "p50_ms", "p99_ms", "etcd_txn_p99_ms", "ratio_p99", "errors", "notes"} {
			if _, ok := raw[k]; !ok {
				t.Errorf("line %d: key %q missing in %s", i, k, line)
			}
		}
		var r row
		if err := json.Unmarshal([]byte(line), &r); err != nil {
			t.Fatal(err)
		}
		if r.Scenario != want[i] {
			t.Errorf("line %d: scenario = %q; want %q", i, r.Scenario, want[i])
		}
		if r.N <= 0 || r.P50 <= 0 || r.P99 < r.P50 || r.EtcdP99 <= 0 {
			t.Errorf("%s: n = %d, p50 = %v, p99 = %v, etcd p99 = %v; want n > 0 and 0 < p50 <= p99, etcd p99 > 0", r.Scenario, r.N, r.P50, r.P99, r.EtcdP99)
		}
		if i == 0 {
			etcdP99 = r.P99
		}
		if r.EtcdP99 != etcdP99 {
			t.Errorf("%s: etcd_txn_p99_ms = %v; want the baseline's %v", r.Scenario, r.EtcdP99, etcdP99)
		}
		if wantRatio := r.P99 / r.EtcdP99; math.Abs(r.Ratio-wantRatio) > 0.01 {
			t.Errorf("%s: ratio_p99 = %v; want %v", r.Scenario, r.Ratio, wantRatio)
		}
		if r.Errors != 0 {
			t.Errorf("%s: errors = %d; want 0", r.Scenario, r.Errors)
		}
		if !strings.Contains(r.Notes, "NULL COMPOSITOR") {
			t.Errorf("%s: notes = %q; want the null compositor stated", r.Scenario, r.Notes)
		}
		if r.Scenario != "etcd_txn" {
			if _, ok := raw["target_ok"].(bool); !ok {
				t.Errorf("%s: target_ok = %v; want a bool", r.Scenario, raw["target_ok"])
			}
		}
		if r.Scenario == "local" || r.Scenario == "crossserver" || r.Scenario == "crossserver_seq" {
			// Each trial waited for the registry writes of the one before.
			if r.SettleP50 == nil || r.SettleP99 == nil || *r.SettleP99 < *r.SettleP50 {
				t.Errorf("%s: settle_p50_ms = %v, settle_p99_ms = %v; want both, p50 <= p99", r.Scenario, r.SettleP50, r.SettleP99)
			}
		}
		switch r.Scenario {
		case "crossserver":
			if r.RedirectP99 == nil || *r.RedirectP99 <= 0 || *r.RedirectP99 > r.P99 {
				t.Errorf("crossserver: redirect_p99_ms = %v; want in (0, p99 %v]", r.RedirectP99, r.P99)
			}
		case "crossserver_seq":
			if v, _ := raw["target_ok"].(bool); !v || r.N < crossserverSeqMin {
				t.Errorf("crossserver_seq: n = %d, target_ok = %v; want >= %d hot-desks, all attached", r.N, raw["target_ok"], crossserverSeqMin)
			}
		case "race":
			for _, k := range []string{"trials", "definite", "duplicates", "duplicates_hooks"} {
				if _, ok := raw[k]; !ok {
					t.Errorf("race: key %q missing in %s", k, line)
				}
			}
			if r.Trials == nil || r.Definite == nil || r.Duplicates == nil || r.DuplicatesHooks == nil {
				t.Fatalf("race: trials/definite/duplicates missing: %s", line)
			}
			if *r.Trials < 1 || (!r.Truncated && *r.Trials != trials) {
				t.Errorf("race: trials = %d (truncated %v); want %d", *r.Trials, r.Truncated, trials)
			}
			if *r.Definite != *r.Trials {
				t.Errorf("race: definite = %d; want every trial (%d)", *r.Definite, *r.Trials)
			}
			if *r.Duplicates != 0 || *r.DuplicatesHooks != 0 {
				t.Errorf("race: duplicates = %d (hooks %d); want 0", *r.Duplicates, *r.DuplicatesHooks)
			}
			if r.N != 3**r.Trials {
				t.Errorf("race: n = %d; want 3 outcomes per trial (%d)", r.N, 3**r.Trials)
			}
			if v, _ := raw["target_ok"].(bool); !v {
				t.Errorf("race: target_ok = %v; want true", raw["target_ok"])
			}
		}
	}
}

// TestStormRun: the storm scenario's 200 terminals all dial from the
// loopback address at once, more than a broker's default per-source and
// unauthenticated caps admit; the bench's brokers lift those (a site's
// terminals come from many addresses), and every hot-desk succeeds.
func TestStormRun(t *testing.T) {
	t.Parallel()
	r, raw := runScenario(t, 3*time.Minute, "storm", "", "-quick", "-terminals", "200", "-n", "200", "-baseline", "20")
	if r.Errors != 0 || r.N != 200 || raw["terminals"] != float64(200) {
		t.Fatalf("storm row %+v (terminals %v); want 200 operations by 200 terminals, no error", r, raw["terminals"])
	}
}

// TestCardScenario runs the card scenario against a real private pcscd with
// the vpcd virtual readers: the reader's part and the broker's part come
// out separately. Without pcscd it fails when CI=true and skips otherwise.
// Each run is a child process of its own (testutil.RunInChild):
// libpcsclite reads the daemon's socket once per process, and the card
// scenario starts a new pcscd, so a second run in one process (-count=2)
// talked to the first run's socket, gone, and failed every trial. The
// child runs beside the other scenarios: under their load libpcsclite 1.9
// now and then reported the watched reader unknown for one wait, which
// failed a card move (3 runs in 4); tokens/pcsc now checks the reader list
// before it counts a reader as gone (TestReaderReportedUnknown there).
func TestCardScenario(t *testing.T) {
	t.Parallel()
	if !testutil.InChild(cardChildEnv) {
		testutil.RunInChild(t, cardChildEnv)
		return
	}
	const trials = 3
	r, raw := runScenario(t, 2*time.Minute, "card", "pcscd with vpcd unavailable", "-quick", "-n", "3", "-baseline", "20")
	if r.N != trials || r.Errors != 0 || r.Truncated {
		t.Errorf("n = %d, errors = %d, truncated = %v; want %d, 0, false", r.N, r.Errors, r.Truncated, trials)
	}
	for _, k := range []string{"pcscd_detect_p50_ms", "pcscd_detect_p99_ms", "identify_p50_ms", "reader_p50_ms", "reader_p99_ms", "broker_p50_ms", "broker_p99_ms"} {
		if v, _ := raw[k].(float64); v <= 0 {
			t.Errorf("%s = %v; want > 0", k, raw[k])
		}
	}
	if r.BrokerP99 == nil || *r.BrokerP99 != r.P99 || r.BrokerP50 == nil || *r.BrokerP50 != r.P50 {
		t.Errorf("broker_p50/p99 = %v/%v; want the row's p50/p99 %v/%v", r.BrokerP50, r.BrokerP99, r.P50, r.P99)
	}
	// Parts, not wall-clock targets: the reader's part contains pcscd's
	// detection and the identification.
	if r.ReaderP50 != nil && r.PcscdDetectP50 != nil && *r.ReaderP50 < *r.PcscdDetectP50 {
		t.Errorf("reader_p50_ms = %v < pcscd_detect_p50_ms = %v; want the reader's part to contain the detection", *r.ReaderP50, *r.PcscdDetectP50)
	}
	if !strings.Contains(r.Notes, "pcscd_detect") {
		t.Errorf("notes = %q; want the parts explained", r.Notes)
	}
}

func TestParseScenarios(t *testing.T) {
	t.Parallel()
	tests := []struct {
		in      string
		want    string
		wantErr bool
	}{
		{in: "local", want: "local"},
		{in: "race, local,race,", want: "race,local"},
		{in: "local,crossserver,race,storm,scale", want: "local,crossserver,race,storm,scale"},
		{in: "", want: ""},
		{in: "card,local", want: "card,local"},
		{in: "lokal", wantErr: true},
	}
	for _, tt := range tests {
		got, err := parseScenarios(tt.in)
		if (err != nil) != tt.wantErr {
			t.Errorf("parseScenarios(%q) error = %v; want error %v", tt.in, err, tt.wantErr)
			continue
		}
		if s := strings.Join(got, ","); !tt.wantErr && s != tt.want {
			t.Errorf("parseScenarios(%q) = %q; want %q", tt.in, s, tt.want)
		}
	}
}

func TestQuantile(t *testing.T) {
	t.Parallel()
	ms := func(v ...int) []time.Duration {
		var out []time.Duration
		for _, x := range v {
			out = append(out, time.Duration(x)*time.Millisecond)
		}
		return out
	}
	hundred := make([]int, 100)
	for i := range hundred {
		hundred[i] = 100 - i // reversed: quantile sorts
	}
	tests := []struct {
		name string
		in   []time.Duration
		q    float64
		want time.Duration
	}{
		{"empty", nil, 0.99, 0},
		{"one", ms(7), 0.5, 7 * time.Millisecond},
		{"median odd", ms(3, 1, 2), 0.5, 2 * time.Millisecond},
		{"p99 of 100", ms(hundred...), 0.99, 99 * time.Millisecond},
		{"max", ms(hundred...), 1, 100 * time.Millisecond},
	}
	for _, tt := range tests {
		if got := quantile(tt.in, tt.q); got != tt.want {
			t.Errorf("%s: quantile(q=%v) = %v; want %v", tt.name, tt.q, got, tt.want)
		}
	}
}

func TestRunRefusesBadFlags(t *testing.T) {
	t.Parallel()
	tests := [][]string{
		{"-scenarios", "nope"},
		{"-n", "-1"},
		{"-sessions", "2000000"},
		{"extra"},
	}
	for _, args := range tests {
		var out bytes.Buffer
		if err := run(context.Background(), args, &out, &logWriter{t: t}); err == nil {
			t.Errorf("run(%q) = nil; want an error", args)
		}
		if out.Len() != 0 {
			t.Errorf("run(%q) wrote %q to stdout; want nothing", args, out.String())
		}
	}
}
