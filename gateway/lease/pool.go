package lease

import (
	"fmt"
	"hash/fnv"
	"sort"
)

// pool is the in-memory cache of one pool's free space, kept in three places
// in the order Offer uses them: clean (free addresses nobody remembers,
// walked by a cursor so that a released address is reused as late as
// possible), freeSticky (free addresses in some identity's index, oldest
// first) and held (oldest first). Free reserved addresses are in none.
type pool struct {
	name       string
	spans      []span // every address of the pool, exclusions removed
	size       uint64
	clean      ipset
	cursor     uint32
	freeSticky slotList
	held       slotList
	offered    int
	active     int
	heldN      int
}

// PoolStats counts the addresses of one pool by state.
type PoolStats struct {
	Name    string
	Size    uint64
	Free    uint64
	Offered int
	Active  int
	Held    int
}

func (p *pool) stats() PoolStats {
	used := uint64(p.offered + p.active + p.heldN)
	return PoolStats{Name: p.name, Size: p.size, Free: p.size - used, Offered: p.offered, Active: p.active, Held: p.heldN}
}

func poolSpans(pc PoolConfig) ([]span, error) {
	if pc.Name == "" {
		return nil, fmt.Errorf("%w: pool without a name", ErrInvalidConfig)
	}
	var in, ex []span
	for _, p := range pc.Prefixes {
		if !p.IsValid() || !p.Addr().Is4() {
			return nil, fmt.Errorf("%w: pool %q: %v is not an IPv4 prefix", ErrInvalidConfig, pc.Name, p)
		}
		sp := prefixSpan(p)
		in = append(in, sp)
		if pc.ExcludeNetworkBroadcast && p.Bits() < 31 {
			ex = append(ex, span{sp.lo, sp.lo}, span{sp.hi, sp.hi})
		}
	}
	for _, r := range pc.Ranges {
		if !r.First.Is4() || !r.Last.Is4() || r.Last.Less(r.First) {
			return nil, fmt.Errorf("%w: pool %q: bad range %v-%v", ErrInvalidConfig, pc.Name, r.First, r.Last)
		}
		in = append(in, span{u32(r.First), u32(r.Last)})
	}
	for _, p := range pc.Exclude {
		if !p.IsValid() || !p.Addr().Is4() {
			return nil, fmt.Errorf("%w: pool %q: exclusion %v is not an IPv4 prefix", ErrInvalidConfig, pc.Name, p)
		}
		ex = append(ex, prefixSpan(p))
	}
	if err := checkOverlap(pc.Name, in); err != nil {
		return nil, err
	}
	spans := subtract(normalize(in), normalize(ex))
	if len(spans) == 0 {
		return nil, fmt.Errorf("%w: pool %q has no usable address", ErrInvalidConfig, pc.Name)
	}
	return spans, nil
}

func checkOverlap(name string, in []span) error {
	s := append([]span(nil), in...)
	sort.Slice(s, func(i, j int) bool { return s[i].lo < s[j].lo })
	for i := 1; i < len(s); i++ {
		if s[i].lo <= s[i-1].hi {
			return fmt.Errorf("%w: pool %q: %v overlaps %v", ErrInvalidConfig, name, addr4(s[i].lo), addr4(s[i-1].lo))
		}
	}
	return nil
}

func newPool(name string, spans []span) *pool {
	p := &pool{name: name, spans: spans, clean: newIPSet(spans)}
	p.size = p.clean.len()
	p.cursor = spans[0].lo
	return p
}

// startFor returns where the gateway named owner starts taking clean
// addresses: a point of the pool that depends on the name, so that gateways
// sharing a store do not all race for the same first address.
func startFor(owner string, spans []span) uint32 {
	h := fnv.New64a()
	h.Write([]byte(owner))
	var size uint64
	for _, sp := range spans {
		size += uint64(sp.hi-sp.lo) + 1
	}
	off := h.Sum64() % size
	for _, sp := range spans {
		if n := uint64(sp.hi-sp.lo) + 1; off >= n {
			off -= n
			continue
		}
		return sp.lo + uint32(off)
	}
	return spans[0].lo
}

// span lookup over all pools.
type poolSpan struct {
	span
	p *pool
}

// poolFor returns the pool that contains addr; excluded addresses are in none.
func (m *Manager) poolFor(v uint32) *pool {
	i := sort.Search(len(m.spans), func(i int) bool { return m.spans[i].hi >= v })
	if i < len(m.spans) && m.spans[i].lo <= v {
		return m.spans[i].p
	}
	return nil
}

func (m *Manager) addPoolLocked(pc PoolConfig) (*pool, error) {
	if _, dup := m.pools[pc.Name]; dup {
		return nil, fmt.Errorf("%w: duplicate pool %q", ErrInvalidConfig, pc.Name)
	}
	spans, err := poolSpans(pc)
	if err != nil {
		return nil, err
	}
	for _, sp := range spans {
		i := sort.Search(len(m.spans), func(i int) bool { return m.spans[i].hi >= sp.lo })
		if i < len(m.spans) && m.spans[i].lo <= sp.hi {
			return nil, fmt.Errorf("%w: pool %q overlaps pool %q at %v", ErrInvalidConfig, pc.Name, m.spans[i].p.name, addr4(max(sp.lo, m.spans[i].lo)))
		}
	}
	p := newPool(pc.Name, spans)
	if m.cfg.Owner != "" {
		p.cursor = startFor(m.cfg.Owner, spans)
	}
	for _, sp := range spans {
		m.spans = append(m.spans, poolSpan{sp, p})
	}
	sort.Slice(m.spans, func(i, j int) bool { return m.spans[i].lo < m.spans[j].lo })
	m.pools[pc.Name] = p
	m.poolOrder = append(m.poolOrder, p)
	return p, nil
}
