package defaults

import (
	"testing"
	"time"
)

func TestSet(t *testing.T) {
	tests := []struct {
		name      string
		have, def time.Duration
		want      time.Duration
	}{
		{"zero takes the default", 0, time.Second, time.Second},
		{"negative takes the default", -time.Minute, time.Second, time.Second},
		{"set stays", 3 * time.Second, time.Second, 3 * time.Second},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			v := tt.have
			Set(&v, tt.def)
			if v != tt.want {
				t.Errorf("Set(%v, %v) = %v; want %v", tt.have, tt.def, v, tt.want)
			}
		})
	}
	n := 0
	Set(&n, 5)
	if n != 5 {
		t.Errorf("Set(int 0, 5) = %d; want 5", n)
	}
}
