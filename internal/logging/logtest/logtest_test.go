package logtest

import (
	"sync"
	"testing"

	"github.com/rs/zerolog"
)

func TestSink(t *testing.T) {
	var s Sink
	log := zerolog.New(&s)
	var wg sync.WaitGroup
	for i := range 8 {
		wg.Go(func() { log.Info().Int("n", i).Str("k", "v").Msg("hello") })
	}
	wg.Wait()
	log.Warn().Msg("other")
	if n := len(s.Lines(t)); n != 9 {
		t.Fatalf("%d lines, want 9", n)
	}
	tests := []struct {
		msg  string
		want map[string]any
		n    int
	}{
		{"hello", nil, 8},
		{"hello", map[string]any{"k": "v", "level": "info"}, 8},
		{"hello", map[string]any{"n": float64(3)}, 1},
		{"hello", map[string]any{"k": "w"}, 0},
		{"other", map[string]any{"level": "warn"}, 1},
		{"missing", nil, 0},
	}
	for _, tt := range tests {
		if got := len(s.Find(t, tt.msg, tt.want)); got != tt.n {
			t.Errorf("Find(%q, %v) = %d lines, want %d", tt.msg, tt.want, got, tt.n)
		}
	}
}
