package config

import (
	"fmt"
	"net/netip"
	"sort"
)

// The pool checks. Everything the lease manager (gateway/lease, pool construction and
// reservations) and the routes into the TUN device would refuse at start is refused here
// first, with the field that is wrong: `check-config` and `run` both validate with Validate,
// and a start fails on a pool only for reasons of the host (a route that exists already).
// TestConfigRefusesWhatLeasesRefuse (package gateway) holds the two sets of checks together.

// specialV4 lists the IPv4 blocks that are no pool: the kernel does not route them to a
// tunnel device (or the route would be every address), and no host can use one as its address.
// The limited broadcast address comes before 240.0.0.0/4, which holds it, for its own name.
var specialV4 = []struct {
	block netip.Prefix
	what  string
}{
	{netip.MustParsePrefix("255.255.255.255/32"), "the limited broadcast address"},
	{netip.MustParsePrefix("0.0.0.0/8"), `"this network" (0.0.0.0/8)`},
	{netip.MustParsePrefix("127.0.0.0/8"), "loopback (127.0.0.0/8)"},
	{netip.MustParsePrefix("169.254.0.0/16"), "link-local (169.254.0.0/16)"},
	{netip.MustParsePrefix("224.0.0.0/4"), "multicast (224.0.0.0/4)"},
	{netip.MustParsePrefix("240.0.0.0/4"), "reserved (class E, 240.0.0.0/4)"},
}

// span is an inclusive range of IPv4 addresses as integers.
type span struct{ lo, hi uint32 }

func u32(a netip.Addr) uint32 {
	b := a.As4()
	return uint32(b[0])<<24 | uint32(b[1])<<16 | uint32(b[2])<<8 | uint32(b[3])
}

func prefixSpan(p netip.Prefix) span {
	p = p.Masked()
	lo := u32(p.Addr())
	return span{lo, lo | uint32(uint64(1)<<(32-p.Bits())-1)}
}

func (s span) overlaps(o span) bool { return s.lo <= o.hi && o.lo <= s.hi }

// special returns why the addresses of s are no pool: "is multicast (224.0.0.0/4)" when s
// lies in such a block, else "includes multicast (224.0.0.0/4)" for the lowest block it
// overlaps.
func special(s span) (string, bool) {
	if s.lo == 0 && s.hi == ^uint32(0) {
		return "is every IPv4 address (the default route), not a pool", true
	}
	for _, sp := range specialV4 {
		if b := prefixSpan(sp.block); b.lo <= s.lo && s.hi <= b.hi {
			return "is " + sp.what, true
		}
	}
	for _, sp := range specialV4[1:] { // in address order; 240.0.0.0/4 holds the broadcast address
		if prefixSpan(sp.block).overlaps(s) {
			return "includes " + sp.what, true
		}
	}
	return "", false
}

// normalize sorts and merges overlapping or adjacent spans.
func normalize(in []span) []span {
	out := append([]span(nil), in...)
	sort.Slice(out, func(i, j int) bool { return out[i].lo < out[j].lo })
	merged := out[:0]
	for _, sp := range out {
		if k := len(merged) - 1; k >= 0 && uint64(sp.lo) <= uint64(merged[k].hi)+1 {
			merged[k].hi = max(merged[k].hi, sp.hi)
			continue
		}
		merged = append(merged, sp)
	}
	return merged
}

// subtract returns a minus b; both must be normalized.
func subtract(a, b []span) []span {
	var out []span
	for _, sp := range a {
		lo := uint64(sp.lo)
		for _, x := range b {
			if x.hi < sp.lo || x.lo > sp.hi || lo > uint64(sp.hi) {
				continue
			}
			if uint64(x.lo) > lo {
				out = append(out, span{uint32(lo), x.lo - 1})
			}
			lo = max(lo, uint64(x.hi)+1)
		}
		if lo <= uint64(sp.hi) {
			out = append(out, span{uint32(lo), sp.hi})
		}
	}
	return out
}

func contains(spans []span, v uint32) bool {
	for _, s := range spans {
		if s.lo <= v && v <= s.hi {
			return true
		}
	}
	return false
}

// poolItem is one prefix or range of a pool.
type poolItem struct {
	field, text string // "pools[1].ranges[0]", "10.0.0.1-10.0.0.9"
	span
}

// validatePools checks the pools one by one and against each other.
func (c *Config) validatePools() []error {
	if len(c.Pools) == 0 {
		return []error{bad("pools", "at least one pool is needed")}
	}
	var errs []error
	seen := map[string]bool{}
	var all []poolItem // every valid prefix and range so far, of every pool
	for i, p := range c.Pools {
		f := fmt.Sprintf("pools[%d]", i)
		if p.Name == "" {
			errs = append(errs, bad(f+".name", "a name is required"))
		} else if seen[p.Name] {
			errs = append(errs, bad(f+".name", "pool %q is defined twice", p.Name))
		}
		seen[p.Name] = true
		if len(p.Prefixes) == 0 && len(p.Ranges) == 0 {
			errs = append(errs, bad(f, "pool %q has no prefixes and no ranges", p.Name))
			continue
		}
		nerrs := len(errs)
		check := func(it poolItem) {
			if why, ok := special(it.span); ok {
				errs = append(errs, bad(it.field, "%s %s", it.text, why))
				return
			}
			for _, o := range all {
				if o.overlaps(it.span) {
					errs = append(errs, bad(it.field, "%s overlaps %s (%s)", it.text, o.field, o.text))
					return
				}
			}
			all = append(all, it)
		}
		for j, pr := range p.Prefixes {
			field := fmt.Sprintf("%s.prefixes[%d]", f, j)
			if !pr.IsValid() || !pr.Addr().Is4() || pr.Masked() != pr {
				errs = append(errs, bad(field, "%s is not an IPv4 network prefix (host bits must be zero)", pr))
				continue
			}
			check(poolItem{field, pr.String(), prefixSpan(pr)})
		}
		for j, r := range p.Ranges {
			field := fmt.Sprintf("%s.ranges[%d]", f, j)
			if !r.First.Is4() || !r.Last.Is4() || r.Last.Less(r.First) {
				errs = append(errs, bad(field, "first %s and last %s must be IPv4 with first <= last", r.First, r.Last))
				continue
			}
			check(poolItem{field, r.First.String() + "-" + r.Last.String(), span{u32(r.First), u32(r.Last)}})
		}
		for j, e := range p.Exclude {
			if !e.IsValid() || !e.Addr().Is4() {
				errs = append(errs, bad(fmt.Sprintf("%s.exclude[%d]", f, j), "%s is not an IPv4 prefix", e))
			}
		}
		if len(errs) > nerrs || !c.TEP.InnerV4.Is4() {
			continue // the addresses left to lease mean nothing yet
		}
		if in, usable := c.leasable(p); len(usable) == 0 {
			why := "exclude and exclude_network_broadcast remove every address"
			if rest := subtract(in, normalize(c.excluded(p, false))); len(rest) == 1 && rest[0] == (span{u32(c.TEP.InnerV4), u32(c.TEP.InnerV4)}) {
				why = fmt.Sprintf("its only address %s is tep.inner_v4, the gateway's own address (never leased)", c.TEP.InnerV4)
			}
			errs = append(errs, bad(f, "pool %q has no address to lease: %s", p.Name, why))
		}
	}
	return errs
}

// leasable returns the addresses of a valid pool (normalized) and those of them the lease
// manager hands out: without exclude, the network and broadcast addresses (with
// exclude_network_broadcast) and tep.inner_v4, as gateway.LeaseConfig and the lease manager
// build the pool.
func (c *Config) leasable(p Pool) (in, usable []span) {
	for _, pr := range p.Prefixes {
		if pr.IsValid() && pr.Addr().Is4() {
			in = append(in, prefixSpan(pr))
		}
	}
	for _, r := range p.Ranges {
		if r.First.Is4() && r.Last.Is4() && !r.Last.Less(r.First) {
			in = append(in, span{u32(r.First), u32(r.Last)})
		}
	}
	in = normalize(in)
	return in, subtract(in, normalize(c.excluded(p, true)))
}

// excluded returns what the lease manager removes from the pool p, with or without the
// gateway's inner address.
func (c *Config) excluded(p Pool, inner bool) []span {
	var ex []span
	if p.ExcludeNetworkBroadcast == nil || *p.ExcludeNetworkBroadcast {
		for _, pr := range p.Prefixes {
			if pr.IsValid() && pr.Addr().Is4() && pr.Bits() < 31 {
				s := prefixSpan(pr)
				ex = append(ex, span{s.lo, s.lo}, span{s.hi, s.hi})
			}
		}
	}
	for _, e := range p.Exclude {
		if e.IsValid() && e.Addr().Is4() {
			ex = append(ex, prefixSpan(e))
		}
	}
	if inner && c.TEP.InnerV4.Is4() {
		ex = append(ex, span{u32(c.TEP.InnerV4), u32(c.TEP.InnerV4)})
	}
	return ex
}

// checkStatic says why a static address cannot be reserved, if it cannot.
func (c *Config) checkStatic(a netip.Addr) (string, bool) {
	name := c.PoolOf(a)
	switch {
	case name == "":
		return fmt.Sprintf("%s is in no pool", a), false
	case a == c.TEP.InnerV4.Unmap():
		return fmt.Sprintf("%s is tep.inner_v4, the gateway's own address (never leased)", a), false
	}
	for _, p := range c.Pools {
		if p.Name != name {
			continue
		}
		if _, usable := c.leasable(p); !contains(usable, u32(a)) {
			return fmt.Sprintf("%s is excluded from pool %q (exclude, or exclude_network_broadcast)", a, name), false
		}
	}
	return "", true
}

// PoolOf returns the name of the pool that contains a, or "".
func (c *Config) PoolOf(a netip.Addr) string {
	if !a.Is4() {
		return ""
	}
	for _, p := range c.Pools {
		for _, pr := range p.Prefixes {
			if pr.Contains(a) {
				return p.Name
			}
		}
		for _, r := range p.Ranges {
			if !a.Less(r.First) && !r.Last.Less(a) {
				return p.Name
			}
		}
	}
	return ""
}

// PoolPrefixes covers each pool with prefixes (its ranges as the fewest prefixes that cover
// them exactly), by pool name; what access rules mean when they name a pool.
func (c *Config) PoolPrefixes() map[string][]netip.Prefix {
	out := make(map[string][]netip.Prefix, len(c.Pools))
	for _, p := range c.Pools {
		ps := append([]netip.Prefix(nil), p.Prefixes...)
		for _, r := range p.Ranges {
			if r.First.Is4() && r.Last.Is4() && r.First.Compare(r.Last) <= 0 {
				ps = append(ps, spanPrefixes(span{u32(r.First), u32(r.Last)})...)
			}
		}
		out[p.Name] = ps
	}
	return out
}

// RangePrefixes returns the fewest prefixes that cover the IPv4 range first..last exactly
// (what the TEP routes and BGP announces for a pool's range).
func RangePrefixes(first, last netip.Addr) []netip.Prefix {
	return spanPrefixes(span{u32(first), u32(last)})
}

// spanPrefixes returns the fewest prefixes that cover s exactly.
func spanPrefixes(s span) []netip.Prefix {
	var out []netip.Prefix
	lo, hi := uint64(s.lo), uint64(s.hi)
	for lo <= hi {
		bits := 32
		for bits > 0 && lo%(1<<(33-bits)) == 0 && lo+(1<<(33-bits))-1 <= hi {
			bits--
		}
		v := uint32(lo)
		out = append(out, netip.PrefixFrom(netip.AddrFrom4([4]byte{byte(v >> 24), byte(v >> 16), byte(v >> 8), byte(v)}), bits))
		lo += 1 << (32 - bits)
	}
	return out
}
