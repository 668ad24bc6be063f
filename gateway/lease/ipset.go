package lease

import (
	"net/netip"
	"sort"
)

// span is an inclusive range of IPv4 addresses as integers.
type span struct{ lo, hi uint32 }

func (s span) size() uint64 { return uint64(s.hi) - uint64(s.lo) + 1 }

// ipset is a set of IPv4 addresses as sorted, disjoint, non-adjacent spans:
// a /8 with nothing taken is one span.
type ipset struct {
	spans []span
	n     uint64
}

func newIPSet(spans []span) ipset {
	s := ipset{spans: normalize(spans)}
	for _, sp := range s.spans {
		s.n += sp.size()
	}
	return s
}

// normalize sorts and merges overlapping or adjacent spans.
func normalize(in []span) []span {
	out := append([]span(nil), in...)
	sort.Slice(out, func(i, j int) bool { return out[i].lo < out[j].lo })
	merged := out[:0]
	for _, sp := range out {
		if k := len(merged) - 1; k >= 0 && uint64(sp.lo) <= uint64(merged[k].hi)+1 {
			if sp.hi > merged[k].hi {
				merged[k].hi = sp.hi
			}
			continue
		}
		merged = append(merged, sp)
	}
	return merged
}

// subtract returns a minus b; both must be normalized.
func subtract(a, b []span) []span {
	var out []span
	j := 0
	for _, sp := range a {
		lo := uint64(sp.lo)
		for j < len(b) && b[j].hi < sp.lo {
			j++
		}
		for k := j; k < len(b) && b[k].lo <= sp.hi && lo <= uint64(sp.hi); k++ {
			if uint64(b[k].lo) > lo {
				out = append(out, span{uint32(lo), b[k].lo - 1})
			}
			lo = uint64(b[k].hi) + 1
		}
		if lo <= uint64(sp.hi) {
			out = append(out, span{uint32(lo), sp.hi})
		}
	}
	return out
}

func (s *ipset) len() uint64 { return s.n }

func (s *ipset) find(v uint32) int {
	return sort.Search(len(s.spans), func(i int) bool { return s.spans[i].hi >= v })
}

func (s *ipset) contains(v uint32) bool {
	i := s.find(v)
	return i < len(s.spans) && s.spans[i].lo <= v
}

func (s *ipset) remove(v uint32) bool {
	i := s.find(v)
	if i == len(s.spans) || s.spans[i].lo > v {
		return false
	}
	sp := s.spans[i]
	switch {
	case sp.lo == v && sp.hi == v:
		s.spans = append(s.spans[:i], s.spans[i+1:]...)
	case sp.lo == v:
		s.spans[i].lo++
	case sp.hi == v:
		s.spans[i].hi--
	default:
		s.spans = append(s.spans, span{})
		copy(s.spans[i+2:], s.spans[i+1:])
		s.spans[i] = span{sp.lo, v - 1}
		s.spans[i+1] = span{v + 1, sp.hi}
	}
	s.n--
	return true
}

func (s *ipset) add(v uint32) bool {
	i := s.find(v)
	if i < len(s.spans) && s.spans[i].lo <= v {
		return false
	}
	joinPrev := i > 0 && s.spans[i-1].hi+1 == v
	joinNext := i < len(s.spans) && v+1 == s.spans[i].lo
	switch {
	case joinPrev && joinNext:
		s.spans[i-1].hi = s.spans[i].hi
		s.spans = append(s.spans[:i], s.spans[i+1:]...)
	case joinPrev:
		s.spans[i-1].hi = v
	case joinNext:
		s.spans[i].lo = v
	default:
		s.spans = append(s.spans, span{})
		copy(s.spans[i+1:], s.spans[i:])
		s.spans[i] = span{v, v}
	}
	s.n++
	return true
}

func u32(a netip.Addr) uint32 {
	b := a.As4()
	return uint32(b[0])<<24 | uint32(b[1])<<16 | uint32(b[2])<<8 | uint32(b[3])
}

func addr4(v uint32) netip.Addr {
	return netip.AddrFrom4([4]byte{byte(v >> 24), byte(v >> 16), byte(v >> 8), byte(v)})
}

func prefixSpan(p netip.Prefix) span {
	p = p.Masked()
	lo := u32(p.Addr())
	bits := p.Bits()
	hi := lo | uint32(uint64(1)<<(32-bits)-1)
	return span{lo, hi}
}

// nextFrom returns the smallest member >= cursor, wrapping around to the
// smallest member. With the cursor just past the last address taken this
// is the low end of a span, so taking it never splits a span.
func (s *ipset) nextFrom(cursor uint32) (uint32, bool) {
	if s.n == 0 {
		return 0, false
	}
	i := s.find(cursor)
	if i == len(s.spans) {
		return s.spans[0].lo, true
	}
	return max(s.spans[i].lo, cursor), true
}
