package main

import (
	"testing"
	"time"
)

// TestPixelsScenario runs a few rounds of the pixels scenario on the real
// parts (weston RDP, the attach gateway, hotdesk-term with FreeRDP under
// Xvfb). Every round checks what a person would: the screen of the
// terminal the token left goes black, the screen of the terminal it
// reached shows the session's frame. Only correctness is asserted, never a
// timing. Budget: about 40 s on a loaded 2-core machine.
func TestPixelsScenario(t *testing.T) {
	t.Parallel()
	const rounds = 3
	r, raw := runScenario(t, 3*time.Minute, "pixels", "a display component is missing",
		"-pixels-rounds", "3", "-pixels-size", "640x480", "-baseline", "20", "-nofsync")
	// Every round and every baseline connection showed the session's
	// frame (a round that did not is an error, not a sample).
	if r.N != rounds || r.Errors != 0 || r.BaselineN == nil || *r.BaselineN != rounds {
		t.Errorf("n = %d, errors = %d, baseline_n = %v; want %d, 0, %d", r.N, r.Errors, r.BaselineN, rounds, rounds)
	}
	for _, k := range []string{"broker_p50_ms", "transport_p50_ms", "rdp_connect_p50_ms", "baseline_p50_ms",
		"display_start_p50_ms", "first_frame_p50_ms", "complete_frame_p50_ms", "load_before", "display", "rdpwake"} {
		if _, ok := raw[k]; !ok {
			t.Errorf("key %q missing in %v", k, raw)
		}
	}
}

// TestFrameDiff: the comparison the scenario relies on tells a matching
// frame from a different one.
func TestFrameDiff(t *testing.T) {
	t.Parallel()
	const w, h = 64, 32
	a, b := make([]byte, w*h*4), make([]byte, w*h*4)
	for i := range a {
		a[i] = byte(i * 7)
	}
	copy(b, a)
	if d := frameDiff(a, b, w, h, 1, 0); d != 0 {
		t.Errorf("identical frames: diff = %v; want 0", d)
	}
	for i := 0; i < len(b); i += 4 * 5 { // every 5th pixel, blue channel
		b[i] ^= 0x80
	}
	if d := frameDiff(a, b, w, h, 1, pixelsTol); d < 0.19 || d > 0.21 {
		t.Errorf("every 5th pixel changed: diff = %v; want 0.2", d)
	}
	copy(b, a)
	b[0] += pixelsTol // within tolerance
	if d := frameDiff(a, b, w, h, 1, pixelsTol); d != 0 {
		t.Errorf("change within tolerance: diff = %v; want 0", d)
	}
}
