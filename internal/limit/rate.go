package limit

import (
	"hash/maphash"
	"net/netip"
	"time"
)

// SourceRate limits events per second and source: an IPv6 /64 (a host can use any address of
// it) or an IPv4 address. Sources share a fixed number of buckets by a keyed hash, so memory
// does not grow with them; a source colliding with a flooding one is limited with it. There is
// no tighter bucket per IPv6 address: checked before the /64's, it would let one host drain
// every address bucket of its /64; checked after, it would protect nothing.
type SourceRate struct {
	seed    maphash.Seed
	buckets []*TokenBucket
}

// NewSourceRate returns a limiter of rate events a second, bursts of burst, per source, over
// n shared buckets; now is the clock (time.Now when nil).
func NewSourceRate(rate float64, burst, n int, now func() time.Time) *SourceRate {
	r := &SourceRate{seed: maphash.MakeSeed(), buckets: make([]*TokenBucket, max(1, n))}
	for i := range r.buckets {
		r.buckets[i] = NewTokenBucket(rate, burst, now)
	}
	return r
}

// Allow takes one token of a's source if there is one.
func (r *SourceRate) Allow(a netip.Addr) bool { return r.buckets[r.slot(a)].Allow() }

func (r *SourceRate) slot(a netip.Addr) int {
	a = a.Unmap()
	if a.Is4() {
		v4 := a.As4()
		return int(maphash.Bytes(r.seed, v4[:]) % uint64(len(r.buckets)))
	}
	v6 := a.As16()
	return int(maphash.Bytes(r.seed, v6[:8]) % uint64(len(r.buckets)))
}

// Shared reports whether a and b share a bucket (one source, or a hash collision).
func (r *SourceRate) Shared(a, b netip.Addr) bool { return r.slot(a) == r.slot(b) }
