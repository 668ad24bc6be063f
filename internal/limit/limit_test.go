package limit

import (
	"net/netip"
	"testing"
	"time"
)

func TestSemaphore(t *testing.T) {
	s := NewSemaphore(2)
	r1, ok1 := s.TryAcquire()
	_, ok2 := s.TryAcquire()
	if _, ok3 := s.TryAcquire(); !ok1 || !ok2 || ok3 {
		t.Fatalf("acquire: %v %v %v, want true true false", ok1, ok2, ok3)
	}
	r1()
	r1() // a second release frees nothing more
	if s.InUse() != 1 {
		t.Fatalf("in use %d after one release", s.InUse())
	}
	if _, ok := s.TryAcquire(); !ok {
		t.Fatal("the released slot is not free")
	}
	if _, ok := s.TryAcquire(); ok {
		t.Fatal("a double release freed two slots")
	}
}

func TestPerSource(t *testing.T) {
	a1 := netip.MustParseAddr("2001:db8:1:2::1")
	a2 := netip.MustParseAddr("2001:db8:1:2::2")    // same /64
	other := netip.MustParseAddr("2001:db8:1:3::1") // another /64
	v4 := netip.MustParseAddr("192.0.2.1")
	mapped := netip.MustParseAddr("::ffff:192.0.2.1") // the same IPv4 source
	p := NewPerSource(2, 3)
	steps := []struct {
		addr netip.Addr
		want bool
	}{
		{a1, true}, {a1, true}, {a1, false}, // per address
		{a2, true}, {a2, false}, // per /64: 3
		{other, true},
		{v4, true}, {mapped, true}, {v4, false},
	}
	for i, s := range steps {
		if got := p.Acquire(s.addr); got != s.want {
			t.Fatalf("step %d: Acquire(%v) = %v, want %v", i, s.addr, got, s.want)
		}
	}
	p.Release(a1)
	if !p.Acquire(a2) {
		t.Fatal("a release in the /64 did not make room for its other address")
	}
	for _, a := range []netip.Addr{a1, a2, a2, other, v4, v4} {
		p.Release(a)
	}
	if len(p.addrs) != 0 || len(p.nets) != 0 {
		t.Fatalf("counters left: %v %v", p.addrs, p.nets)
	}
}

func TestTokenBucket(t *testing.T) {
	now := time.Unix(0, 0)
	b := NewTokenBucket(10, 2, func() time.Time { return now })
	//lint:ignore SA4000 each Allow takes a token
	if !b.Allow() || !b.Allow() || b.Allow() {
		t.Fatal("burst of 2 not enforced")
	}
	now = now.Add(100 * time.Millisecond) // one token at 10/s
	if !b.Allow() || b.Allow() {
		t.Fatal("refill of one token not enforced")
	}
	now = now.Add(time.Hour)
	//lint:ignore SA4000 each Allow takes a token
	if !b.Allow() || !b.Allow() || b.Allow() {
		t.Fatal("the bucket filled beyond its burst")
	}
	var nilBucket *TokenBucket
	if nilBucket.Allow() {
		t.Fatal("a nil bucket allowed")
	}
}

func TestSourceRate(t *testing.T) {
	now := time.Unix(0, 0)
	r := NewSourceRate(1, 2, 1024, func() time.Time { return now })
	a1 := netip.MustParseAddr("2001:db8:1:2::1")
	a2 := netip.MustParseAddr("2001:db8:1:2::ffff") // same /64: same bucket
	other := netip.MustParseAddr("2001:db8:9::1")
	if !r.Allow(a1) || !r.Allow(a2) || r.Allow(a1) {
		t.Fatal("the /64 shares one bucket of burst 2")
	}
	if r.slot(other) != r.slot(a1) && !r.Allow(other) {
		t.Fatal("another /64 is limited by the first")
	}
	v4 := netip.MustParseAddr("192.0.2.1")
	if !r.Allow(v4) || r.slot(v4) != r.slot(netip.MustParseAddr("::ffff:192.0.2.1")) {
		t.Fatal("an IPv4 source and its mapped form are not one source")
	}
	now = now.Add(time.Second)
	if !r.Allow(a1) || r.Allow(a1) {
		t.Fatal("refill of one token a second not enforced")
	}
}
