package auth

import (
	"slices"

	"github.com/dstmgw/dstm/auth/acl"
)

// Groups from the directory. A certificate issued at a sign-in carries the
// policy groups the company's directory put the user in (package sso maps
// them); they join the policy like groups listed on the identity's entry,
// after them. Groups the policy does not define are ignored, so a renamed or
// removed group never refuses a session.

// knownGroups keeps the groups the policy defines, in order, without
// duplicates.
func (p *Policy) knownGroups(groups []string) []string {
	var out []string
	for _, g := range groups {
		if _, ok := p.groupRules[g]; ok && !slices.Contains(out, g) {
			out = append(out, g)
		}
	}
	return out
}

// ResolveWith is Resolve for an identity that also belongs to groups (from
// its certificate). An identity the policy does not list is admitted when
// unknown identities are refused if at least one of its groups is defined:
// the directory lists it.
func (p *Policy) ResolveWith(identity string, groups []string) (Rule, error) {
	extra := p.knownGroups(groups)
	if len(extra) == 0 {
		return p.Resolve(identity)
	}
	if err := ValidIdentity(identity); err != nil {
		return Rule{}, err
	}
	listed := p.groups[identity]
	var layers []Rule
	if ir, ok := p.identityRules[identity]; ok {
		layers = append(layers, ir)
	}
	for _, g := range append(slices.Clone(listed), extra...) {
		layers = append(layers, p.groupRules[g])
	}
	layers = append(layers, p.defaultCfg)
	return cloneRule(finish(merge(layers))), nil
}

// AccessWith is Access for an identity that also belongs to groups: the
// identity's own access block, else the first of its listed groups and then
// of groups that sets one, else the default's.
func (p *Policy) AccessWith(identity string, groups []string) *acl.Set {
	extra := p.knownGroups(groups)
	if len(extra) == 0 {
		return p.Access(identity)
	}
	if s, ok := p.ownAccess[identity]; ok {
		return s
	}
	return p.accessFor(append(slices.Clone(p.groups[identity]), extra...))
}

// ResolveWith resolves against the current policy; see Policy.ResolveWith.
func (h *PolicyHolder) ResolveWith(identity string, groups []string) (Rule, error) {
	p := h.p.Load()
	if p == nil {
		return Rule{}, errNoPolicy
	}
	return p.ResolveWith(identity, groups)
}
