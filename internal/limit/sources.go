package limit

import (
	"net/netip"
	"sync"
)

// PerSource counts what each source holds against two caps: one per address and one per IPv6
// /64, what one IPv6 host or LAN gets, so that a host cannot escape its address's cap by using
// more addresses of its prefix. IPv4 sources are counted per address only.
type PerSource struct {
	perAddr, perNet int
	mu              sync.Mutex
	addrs           map[netip.Addr]int
	nets            map[netip.Prefix]int
}

// NewPerSource returns counters with the given caps (each at least 1).
func NewPerSource(perAddr, perNet int) *PerSource {
	return &PerSource{
		perAddr: max(1, perAddr), perNet: max(1, perNet),
		addrs: map[netip.Addr]int{}, nets: map[netip.Prefix]int{},
	}
}

// Acquire counts one more for a, unless a or its /64 is at its cap.
func (p *PerSource) Acquire(a netip.Addr) bool {
	a = a.Unmap().WithZone("")
	net, hasNet := prefix64(a)
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.addrs[a] >= p.perAddr || (hasNet && p.nets[net] >= p.perNet) {
		return false
	}
	p.addrs[a]++
	if hasNet {
		p.nets[net]++
	}
	return true
}

// Release undoes one Acquire of a that succeeded.
func (p *PerSource) Release(a netip.Addr) {
	a = a.Unmap().WithZone("")
	net, hasNet := prefix64(a)
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.addrs[a]--; p.addrs[a] <= 0 {
		delete(p.addrs, a)
	}
	if hasNet {
		if p.nets[net]--; p.nets[net] <= 0 {
			delete(p.nets, net)
		}
	}
}

// Held returns what a holds.
func (p *PerSource) Held(a netip.Addr) int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.addrs[a.Unmap().WithZone("")]
}

func prefix64(a netip.Addr) (netip.Prefix, bool) {
	if !a.Is6() {
		return netip.Prefix{}, false
	}
	return netip.PrefixFrom(a, 64).Masked(), true
}
