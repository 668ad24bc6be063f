package acl

import (
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"strconv"
	"strings"
)

// protocol classes of the compiled tables
const (
	clsTCP = iota
	clsUDP
	clsICMP
	clsOther
	numClasses
)

func class(proto uint8) int {
	switch proto {
	case ipTCP:
		return clsTCP
	case ipUDP:
		return clsUDP
	case ipICMP:
		return clsICMP
	}
	return clsOther
}

// NoRule is what Set.Match returns when no rule allows a packet.
const NoRule = -1

// Set is one compiled access block, immutable and safe for concurrent use;
// sessions with the same resolved policy share one.
type Set struct {
	name   string // field path of the access block, e.g. policy.groups["eng"].access
	reject bool
	cfg    Access
	dirs   [2]table
}

// table finds the first rule that allows an address, protocol class and
// port: the address space is cut at every prefix boundary into intervals,
// each with, per class, sorted disjoint port spans naming the first rule
// that covers them. A lookup is two binary searches.
type table struct {
	starts []uint32   // interval i is [starts[i], starts[i+1]); starts[0] == 0
	spans  []*classes // per interval; nil: no rule covers it
}

type classes [numClasses][]span

type span struct {
	lo, hi uint16
	rule   int32
}

// Compile compiles a validated access block that names no pools; name is
// its field path (for explanations, logs and metric labels). A nil access
// compiles to nil: no access control.
func Compile(name string, a *Access) (*Set, error) { return CompileWith(name, a, nil) }

// Pools returns the prefixes of a lease pool, false for an unknown pool.
type Pools func(name string) ([]netip.Prefix, bool)

// CompileWith is Compile for blocks whose rules may name pools: their
// prefixes join the rule's own (the compiled rule lists them).
func CompileWith(name string, a *Access, pools Pools) (*Set, error) {
	if a == nil {
		return nil, nil
	}
	if err := a.Validate(name); err != nil {
		return nil, err
	}
	cfg, err := resolvePools(name, cloneAccess(*a), pools)
	if err != nil {
		return nil, err
	}
	s := &Set{name: name, reject: a.Reject, cfg: cfg}
	s.dirs[Outbound] = compileDir(cfg.Outbound, Outbound)
	s.dirs[Inbound] = compileDir(cfg.Inbound, Inbound)
	return s, nil
}

// resolvePools moves the prefixes of the pools each rule names into its To
// or From (without repeats); a, a clone, is changed in place.
func resolvePools(name string, a Access, pools Pools) (Access, error) {
	var errs []error
	for _, d := range []Dir{Outbound, Inbound} {
		rules, key := a.Outbound, "to_pools"
		if d == Inbound {
			rules, key = a.Inbound, "from_pools"
		}
		for i := range rules {
			r := &rules[i]
			names, nets := r.ToPools, &r.To
			if d == Inbound {
				names, nets = r.FromPools, &r.From
			}
			*nets = slices.Clone(*nets)
			for k, p := range names {
				var ps []netip.Prefix
				ok := pools != nil
				if ok {
					ps, ok = pools(p)
				}
				if !ok {
					errs = append(errs, fmt.Errorf("%s.%s[%d].%s[%d]: unknown pool %q", name, d, i, key, k, p))
					continue
				}
				for _, q := range ps {
					if !slices.Contains(*nets, q) {
						*nets = append(*nets, q)
					}
				}
			}
		}
	}
	return a, errors.Join(errs...)
}

func cloneAccess(a Access) Access {
	a.Outbound, a.Inbound = slices.Clone(a.Outbound), slices.Clone(a.Inbound)
	return a
}

func (r Rule) nets(d Dir) []netip.Prefix {
	if d == Inbound {
		return r.From
	}
	return r.To
}

func u32(a netip.Addr) uint32 {
	b := a.As4()
	return uint32(b[0])<<24 | uint32(b[1])<<16 | uint32(b[2])<<8 | uint32(b[3])
}

func prefixRange(p netip.Prefix) (first, last uint32) {
	first = u32(p.Masked().Addr())
	return first, first | uint32(uint64(1)<<(32-p.Bits())-1)
}

func compileDir(rules []Rule, d Dir) table {
	cuts := []uint32{0}
	for _, r := range rules {
		for _, p := range r.nets(d) {
			first, last := prefixRange(p)
			cuts = append(cuts, first)
			if last != ^uint32(0) {
				cuts = append(cuts, last+1)
			}
		}
	}
	slices.Sort(cuts)
	cuts = slices.Compact(cuts)
	t := table{starts: cuts, spans: make([]*classes, len(cuts))}
	shared := map[string]*classes{} // intervals covered by the same rules share their spans
	var covering []int
	for i, start := range cuts {
		covering = covering[:0]
		for ri, r := range rules {
			for _, p := range r.nets(d) {
				if first, last := prefixRange(p); first <= start && start <= last {
					covering = append(covering, ri)
					break
				}
			}
		}
		if len(covering) == 0 {
			continue
		}
		key := fmt.Sprint(covering)
		if c, ok := shared[key]; ok {
			t.spans[i] = c
			continue
		}
		c := buildClasses(rules, covering)
		shared[key] = c
		t.spans[i] = c
	}
	return t
}

// ruleSpans returns the port ranges rule r allows in protocol class cls.
func ruleSpans(r Rule, cls int) []PortRange {
	all := []PortRange{{0, 0xffff}}
	switch r.Proto {
	case ProtoTCP:
		if cls != clsTCP {
			return nil
		}
	case ProtoUDP:
		if cls != clsUDP {
			return nil
		}
	case ProtoICMP:
		if cls != clsICMP {
			return nil
		}
		return all
	}
	if len(r.Ports) == 0 {
		return all
	}
	if cls != clsTCP && cls != clsUDP {
		return nil // ports with proto any mean tcp and udp
	}
	return r.Ports
}

// buildClasses makes, per class, the disjoint spans of the covering rules
// (in rule order), each naming the first rule that allows it.
func buildClasses(rules []Rule, covering []int) *classes {
	c := new(classes)
	for cls := range numClasses {
		cuts := []uint32{}
		for _, ri := range covering {
			for _, pr := range ruleSpans(rules[ri], cls) {
				cuts = append(cuts, uint32(pr.Lo), uint32(pr.Hi)+1)
			}
		}
		slices.Sort(cuts)
		cuts = slices.Compact(cuts)
		var out []span
		for k := 0; k+1 < len(cuts); k++ {
			lo, hi := cuts[k], cuts[k+1]-1
			rule := firstCovering(rules, covering, cls, lo)
			if rule == NoRule {
				continue
			}
			if n := len(out); n > 0 && out[n-1].rule == rule && uint32(out[n-1].hi)+1 == lo {
				out[n-1].hi = uint16(hi)
				continue
			}
			out = append(out, span{uint16(lo), uint16(hi), rule})
		}
		c[cls] = out
	}
	return c
}

func firstCovering(rules []Rule, covering []int, cls int, port uint32) int32 {
	for _, ri := range covering {
		for _, pr := range ruleSpans(rules[ri], cls) {
			if uint32(pr.Lo) <= port && port <= uint32(pr.Hi) {
				return int32(ri)
			}
		}
	}
	return NoRule
}

// Match returns the index of the first rule of direction d that allows f,
// or NoRule. It looks at the address, protocol and destination port only
// (Decide handles fragments and replies) and does not allocate.
func (s *Set) Match(d Dir, f *Flow) int32 {
	addr, port := f.Dst, f.DstPort
	if d == Inbound {
		addr = f.Src
	}
	cls := class(f.Proto)
	if cls == clsICMP || cls == clsOther {
		port = 0
	}
	return s.dirs[d].lookup(addr, cls, port)
}

func (t *table) lookup(addr [4]byte, cls int, port uint16) int32 {
	a := uint32(addr[0])<<24 | uint32(addr[1])<<16 | uint32(addr[2])<<8 | uint32(addr[3])
	i, found := slices.BinarySearch(t.starts, a)
	if !found {
		i--
	}
	c := t.spans[i]
	if c == nil {
		return NoRule
	}
	sp := c[cls]
	lo, hi := 0, len(sp)
	for lo < hi {
		m := int(uint(lo+hi) >> 1)
		switch {
		case port < sp[m].lo:
			hi = m
		case port > sp[m].hi:
			lo = m + 1
		default:
			return sp[m].rule
		}
	}
	return NoRule
}

// Name returns the access block's field path.
func (s *Set) Name() string { return s.name }

// Reject reports whether denied packets are answered (TCP RST, ICMP
// administratively prohibited) rather than dropped silently.
func (s *Set) Reject() bool { return s.reject }

// RulePath returns the field path of rule i of direction d.
func (s *Set) RulePath(d Dir, i int32) string {
	return s.name + "." + d.String() + "[" + strconv.Itoa(int(i)) + "]"
}

// Rule returns rule i of direction d as configured.
func (s *Set) Rule(d Dir, i int32) Rule {
	if d == Inbound {
		return s.cfg.Inbound[i]
	}
	return s.cfg.Outbound[i]
}

// Access returns a copy of the compiled configuration.
func (s *Set) Access() Access { return cloneAccess(s.cfg) }

// String describes rule r briefly, e.g. "to 10.0.0.0/8 tcp 80,443".
func (r Rule) String() string {
	var b strings.Builder
	switch {
	case len(r.To) > 0 || len(r.ToPools) > 0:
		fmt.Fprintf(&b, "to %v", r.To)
		if len(r.ToPools) > 0 {
			fmt.Fprintf(&b, " (pools %v)", r.ToPools)
		}
	default:
		fmt.Fprintf(&b, "from %v", r.From)
		if len(r.FromPools) > 0 {
			fmt.Fprintf(&b, " (pools %v)", r.FromPools)
		}
	}
	proto := r.Proto
	if proto == "" {
		proto = ProtoAny
	}
	b.WriteString(" " + proto)
	for i, p := range r.Ports {
		if i == 0 {
			b.WriteString(" ")
		} else {
			b.WriteString(",")
		}
		b.WriteString(p.String())
	}
	return b.String()
}
