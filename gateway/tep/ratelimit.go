package tep

import (
	"sync"
	"time"
)

// tokenBucket limits the rate of ICMP errors the TEP generates. A nil
// *tokenBucket never allows.
type tokenBucket struct {
	mu     sync.Mutex
	now    func() time.Time
	rate   float64 // tokens per second
	burst  float64
	tokens float64
	last   time.Time
}

func newTokenBucket(rate float64, burst int, now func() time.Time) *tokenBucket {
	return &tokenBucket{now: now, rate: rate, burst: float64(burst), tokens: float64(burst), last: now()}
}

func (b *tokenBucket) allow() bool {
	if b == nil {
		return false
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	now := b.now()
	if d := now.Sub(b.last); d > 0 {
		b.tokens = min(b.burst, b.tokens+d.Seconds()*b.rate)
	}
	b.last = now
	if b.tokens < 1 {
		return false
	}
	b.tokens--
	return true
}
