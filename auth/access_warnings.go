package auth

import (
	"fmt"
	"strings"

	"github.com/dstmgw/dstm/auth/acl"
)

// PolicyWarning is a valid policy setting with a likely mistake:
// `check-config` prints them, the gateway logs them at start.
type PolicyWarning struct {
	Field string
	Text  string
}

// Warnings returns the policy's likely mistakes, in a fixed order: access
// rules that never decide, and access rules that disagree with the routes
// pushed to the same identities (a split tunnel without access rules, an
// allowed destination the client does not route into the tunnel, a route
// no rule allows).
func (p *Policy) Warnings(cfg PolicyConfig) []PolicyWarning {
	var out []PolicyWarning
	// Judged on the compiled blocks: their rules list the prefixes of the pools they name.
	shadow := func(s *acl.Set) {
		if s == nil {
			return
		}
		a := s.Access()
		for _, w := range a.Shadowed(s.Name()) {
			f, text, _ := strings.Cut(w, ": ")
			out = append(out, PolicyWarning{f, text})
		}
	}
	shadow(p.defaultAccess)
	for _, g := range sortedKeys(cfg.Groups) {
		shadow(p.groupAccess[g])
	}
	for _, n := range sortedKeys(cfg.Identities) {
		if cfg.Identities[n].Access != nil {
			shadow(p.identityAccess[n])
		}
	}
	seen := map[string]bool{}
	check := func(who, field string, r Rule, s *acl.Set) {
		key := fmt.Sprintf("%p %v", s, r.Routes)
		if len(r.Routes) == 0 || seen[key] {
			return
		}
		seen[key] = true
		if s == nil {
			out = append(out, PolicyWarning{field, fmt.Sprintf("split routes %v without access rules: routes are advice, "+
				"the client may send to any address through the gateway (set access, docs/decisions/0009-access-rules.md)", r.Routes)})
			return
		}
		a := s.Access()
		dests, unused := a.Outside(r.Routes)
		for _, d := range dests {
			out = append(out, PolicyWarning{s.Name() + "." + d, fmt.Sprintf("outside the routes pushed to %s %v: "+
				"the client does not send it into the tunnel", who, r.Routes)})
		}
		for _, k := range unused {
			out = append(out, PolicyWarning{s.Name(), fmt.Sprintf("route %s pushed to %s: no outbound rule of %s allows any of it", r.Routes[k], who, s.Name())})
		}
	}
	if !p.refuseUnknown {
		check("unlisted identities", "policy.default", p.defaultRule, p.defaultAccess)
	}
	for _, n := range sortedKeys(p.identities) {
		check(n, fmt.Sprintf("policy.identities[%q]", n), p.identities[n], p.identityAccess[n])
	}
	return out
}
