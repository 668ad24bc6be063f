package auth

import (
	"errors"
	"fmt"
	"net/netip"
	"slices"

	"github.com/dstmgw/dstm/auth/acl"
)

// PolicyTest is one entry of policy.tests: what an identity (or a
// hypothetical identity in Groups) may and may not reach. Targets are
// "ADDR:PORT/tcp", "ADDR:PORT/udp" or "ADDR/icmp"; inbound targets name
// the peer's address and the client's port.
type PolicyTest struct {
	Identity     string   `yaml:"identity,omitempty"`
	Groups       []string `yaml:"groups,omitempty"`
	Allow        []string `yaml:"allow,omitempty"`
	Deny         []string `yaml:"deny,omitempty"`
	AllowInbound []string `yaml:"allow_inbound,omitempty"`
	DenyInbound  []string `yaml:"deny_inbound,omitempty"`
}

// someLease is the client address policy tests and explanations use: rules
// never look at the client's own address.
func someLease() netip.Addr { return netip.AddrFrom4([4]byte{100, 64, 0, 2}) }

func defaultField() string             { return "policy.default.access" }
func groupField(g string) string       { return fmt.Sprintf("policy.groups[%q].access", g) }
func identityField(n string) string    { return fmt.Sprintf("policy.identities[%q].access", n) }
func testField(i int, k string) string { return fmt.Sprintf("policy.tests[%d].%s", i, k) }

// compileAccess compiles each layer's access block once; identities share
// the Set of the layer they inherit it from.
func (p *Policy) compileAccess(cfg PolicyConfig) error {
	var errs []error
	pools := func(name string) ([]netip.Prefix, bool) {
		ps, ok := cfg.Pools[name]
		return ps, ok
	}
	compile := func(field string, a *acl.Access) *acl.Set {
		s, err := acl.CompileWith(field, a, pools)
		if err != nil {
			errs = append(errs, err)
		}
		return s
	}
	p.defaultAccess = compile(defaultField(), cfg.Default.Access)
	p.groupAccess = make(map[string]*acl.Set, len(cfg.Groups))
	for _, name := range sortedKeys(cfg.Groups) {
		p.groupAccess[name] = compile(groupField(name), cfg.Groups[name].Access)
	}
	p.identityAccess = make(map[string]*acl.Set, len(cfg.Identities))
	p.ownAccess = make(map[string]*acl.Set)
	p.groups = make(map[string][]string, len(cfg.Identities))
	for _, name := range sortedKeys(cfg.Identities) {
		ir := cfg.Identities[name]
		p.groups[name] = slices.Clone(ir.Groups)
		s := compile(identityField(name), ir.Access)
		if s != nil {
			p.ownAccess[name] = s
		} else {
			s = p.accessFor(ir.Groups)
		}
		p.identityAccess[name] = s
	}
	return errors.Join(errs...)
}

// accessFor returns the Set an identity in groups inherits: the first group
// that sets access, else the default's.
func (p *Policy) accessFor(groups []string) *acl.Set {
	for _, g := range groups {
		if s := p.groupAccess[g]; s != nil {
			return s
		}
	}
	return p.defaultAccess
}

// Access returns the compiled access rules of identity; nil means no access
// control. Unlisted identities get the default's (also when unknown
// identities are refused: they never get a session). The TEP calls it for
// every session, on its own node too: it needs nothing but the policy.
func (p *Policy) Access(identity string) *acl.Set {
	if s, ok := p.identityAccess[identity]; ok {
		return s
	}
	return p.defaultAccess
}

// Explanation says how the policy judges the first packet of a flow.
type Explanation struct {
	Allowed bool
	Access  string // field path of the access block in force; "" when none
	Rule    string // field path of the rule that allows it; "" when none
	Text    string // one line for people
}

// Explain judges the first packet of a flow to (outbound) or from
// (inbound) target for identity by the rules alone: a packet no rule allows
// still passes as a reply to a flow the other side opened.
func (p *Policy) Explain(identity string, d acl.Dir, t acl.Target) Explanation {
	if _, ok := p.identityAccess[identity]; !ok && p.refuseUnknown {
		return Explanation{Text: fmt.Sprintf("%s is not listed and unknown identities are refused: no session at all", identity)}
	}
	return explain(p.Access(identity), identity, d, t)
}

func explain(s *acl.Set, who string, d acl.Dir, t acl.Target) Explanation {
	verb := "reach"
	if d == acl.Inbound {
		verb = "be reached from"
	}
	if s == nil {
		return Explanation{Allowed: true, Text: fmt.Sprintf("%s may %s %s: no access rules apply (the policy sets no access), everything passes", who, verb, t)}
	}
	e := Explanation{Access: s.Name()}
	r := s.Match(d, t.Flow(d, someLease()))
	if r == acl.NoRule {
		e.Text = fmt.Sprintf("%s may not %s %s: no %s rule of %s allows it (only replies to flows the other side opened pass)", who, verb, t, d, s.Name())
		return e
	}
	e.Allowed, e.Rule = true, s.RulePath(d, r)
	e.Text = fmt.Sprintf("%s may %s %s: allowed by %s (%s)", who, verb, t, e.Rule, s.Rule(d, r))
	return e
}

// runTests checks policy.tests against the compiled policy; each failure
// names its field and the rule that decided.
func (p *Policy) runTests(tests []PolicyTest) error {
	var errs []error
	for i, tc := range tests {
		field := fmt.Sprintf("policy.tests[%d]", i)
		s, who, err := p.testSubject(tc)
		if err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", field, err))
			continue
		}
		for _, c := range []struct {
			key   string
			list  []string
			d     acl.Dir
			allow bool
		}{
			{"allow", tc.Allow, acl.Outbound, true},
			{"deny", tc.Deny, acl.Outbound, false},
			{"allow_inbound", tc.AllowInbound, acl.Inbound, true},
			{"deny_inbound", tc.DenyInbound, acl.Inbound, false},
		} {
			for j, raw := range c.list {
				f := fmt.Sprintf("%s[%d]", testField(i, c.key), j)
				t, err := acl.ParseTarget(raw)
				if err != nil {
					errs = append(errs, fmt.Errorf("%s: %w", f, err))
					continue
				}
				if e := explain(s, who, c.d, t); e.Allowed != c.allow {
					errs = append(errs, fmt.Errorf("%s: test failed: %s", f, e.Text))
				}
			}
		}
	}
	return errors.Join(errs...)
}

// testSubject returns the Set a test judges: its identity's, or that of a
// hypothetical identity in its groups.
func (p *Policy) testSubject(tc PolicyTest) (*acl.Set, string, error) {
	switch {
	case tc.Identity != "" && len(tc.Groups) > 0:
		return nil, "", errors.New("name an identity or groups, not both")
	case tc.Identity != "":
		if err := ValidIdentity(tc.Identity); err != nil {
			return nil, "", fmt.Errorf("identity: %w", err)
		}
		if _, ok := p.identityAccess[tc.Identity]; !ok && p.refuseUnknown {
			return nil, "", fmt.Errorf("identity: %q is not listed and unknown identities are refused", tc.Identity)
		}
		return p.Access(tc.Identity), tc.Identity, nil
	case len(tc.Groups) > 0:
		for k, g := range tc.Groups {
			if _, ok := p.groupPools[g]; !ok {
				return nil, "", fmt.Errorf("groups[%d]: unknown group %q", k, g)
			}
		}
		return p.accessFor(tc.Groups), fmt.Sprintf("a member of %v", tc.Groups), nil
	}
	return nil, "", errors.New("name an identity or groups")
}
