package console

import (
	"sync"
	"time"

	"github.com/dstmgw/dstm/gateway/admin"
)

// minSampleGap is the shortest interval over which throughput is computed: samples taken
// sooner (several browsers polling) reuse the last rates.
const minSampleGap = time.Second

// rate is a session's throughput in bytes a second.
type rate struct{ In, Out float64 }

// sampler turns the sessions' byte counters into throughput: each call of observe with
// counters at least minSampleGap newer than the last kept sample computes new rates. Only
// what pages ask for is sampled: nothing runs while nobody looks.
type sampler struct {
	now func() time.Time

	mu    sync.Mutex
	at    time.Time
	bytes map[string][2]uint64 // session → in, out at `at`
	rates map[string]rate
}

func newSampler(now func() time.Time) *sampler {
	return &sampler{now: now, bytes: map[string][2]uint64{}, rates: map[string]rate{}}
}

// observe takes the sessions' counters read at t and returns each session's throughput
// (zero for a session seen for the first time).
func (s *sampler) observe(t time.Time, sessions []admin.Session) map[string]rate {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.at.IsZero() || t.Sub(s.at) >= minSampleGap {
		gap := t.Sub(s.at).Seconds()
		rates := make(map[string]rate, len(sessions))
		bytes := make(map[string][2]uint64, len(sessions))
		for _, ss := range sessions {
			bytes[ss.ID] = [2]uint64{ss.BytesIn, ss.BytesOut}
			if prev, ok := s.bytes[ss.ID]; ok && !s.at.IsZero() && gap > 0 {
				rates[ss.ID] = rate{In: delta(ss.BytesIn, prev[0]) / gap, Out: delta(ss.BytesOut, prev[1]) / gap}
			}
		}
		s.at, s.bytes, s.rates = t, bytes, rates
	}
	out := make(map[string]rate, len(sessions))
	for _, ss := range sessions {
		out[ss.ID] = s.rates[ss.ID]
	}
	return out
}

// delta is cur-prev for counters that only grow (a reset reads as 0).
func delta(cur, prev uint64) float64 {
	if cur < prev {
		return 0
	}
	return float64(cur - prev)
}
