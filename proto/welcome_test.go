package proto_test

import (
	"testing"
	"time"

	"github.com/hotdesk/hotdesk/proto"
)

func TestWelcomePingEvery(t *testing.T) {
	tests := []struct {
		ms   uint32
		want time.Duration
	}{
		{0, proto.DefaultPingInterval}, // absent: the protocol's default
		{1, time.Millisecond},
		{833, 833 * time.Millisecond},
		{15000, 15 * time.Second},
		{60000, time.Minute},
	}
	for _, tt := range tests {
		w := proto.Welcome{PingInterval: tt.ms}
		if got := w.PingEvery(); got != tt.want {
			t.Errorf("Welcome{PingInterval: %d}.PingEvery() = %v; want %v", tt.ms, got, tt.want)
		}
	}
	if proto.DefaultPingInterval != 15*time.Second {
		t.Errorf("DefaultPingInterval = %v; want 15s (PROTOCOL.md §10)", proto.DefaultPingInterval)
	}
}
