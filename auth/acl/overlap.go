package acl

import (
	"fmt"
	"net/netip"
)

// Shadowed reports, for rules that can never decide because an earlier rule
// of the same direction allows everything they allow, their field path
// (below field) and the earlier rule. Rules only allow, so rules cannot
// contradict each other; a shadowed rule is the usual sign of a mistake.
func (a *Access) Shadowed(field string) []string {
	var out []string
	for _, d := range []Dir{Outbound, Inbound} {
		rules := a.Outbound
		if d == Inbound {
			rules = a.Inbound
		}
		for j := range rules {
			for i := range j {
				if covers(rules[i], rules[j], d) {
					out = append(out, fmt.Sprintf("%s.%s[%d]: never decides: %s[%d] (%s) already allows all of it", field, d, j, d, i, rules[i]))
					break
				}
			}
		}
	}
	return out
}

func covers(a, b Rule, d Dir) bool {
	for _, pb := range b.nets(d) {
		if !within(pb, a.nets(d)) {
			return false
		}
	}
	for cls := range numClasses {
		for _, rb := range ruleSpans(b, cls) {
			ok := false
			for _, ra := range ruleSpans(a, cls) {
				ok = ok || (ra.Lo <= rb.Lo && rb.Hi <= ra.Hi)
			}
			if !ok {
				return false
			}
		}
	}
	return true
}

func within(p netip.Prefix, in []netip.Prefix) bool {
	for _, q := range in {
		if q.Bits() <= p.Bits() && q.Contains(p.Addr()) {
			return true
		}
	}
	return false
}

// Outside returns the outbound destinations (field path below field,
// prefix) that lie wholly outside routes, and the routes (index) that no
// outbound rule reaches into at all. routes are a split tunnel's pushed
// prefixes; with a full tunnel (no routes) nothing is outside.
func (a *Access) Outside(routes []netip.Prefix) (dests []string, unused []int) {
	if len(routes) == 0 {
		return nil, nil
	}
	for i, r := range a.Outbound {
		for k, p := range r.To {
			if !overlapsAny(p, routes) {
				dests = append(dests, fmt.Sprintf("outbound[%d].to[%d]", i, k))
			}
		}
	}
	for k, rt := range routes {
		used := false
		for _, r := range a.Outbound {
			used = used || overlapsAny(rt, r.To)
		}
		if !used {
			unused = append(unused, k)
		}
	}
	return dests, unused
}

func overlapsAny(p netip.Prefix, in []netip.Prefix) bool {
	for _, q := range in {
		if p.Overlaps(q) {
			return true
		}
	}
	return false
}
